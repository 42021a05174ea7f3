"""Exact metrics for toy data drawn from a known GaussianMixture.

With the true density at hand, sample quality needs no feature network: the mean log-density of
the samples under the truth, two-sample distances to fresh true samples (sliced W2, RBF MMD with a
permutation test), and per-mode statistics (which modes are hit, with which weights).

Shapes: N, M points, D dimensions, K mixture components. Inputs may be numpy or torch; the
arithmetic is torch float64; results are Python floats (or lists for per-mode values).
"""
from __future__ import annotations


import numpy as np
import torch
from scipy.stats import chi2

from difflab.errors import DataError, DifflabError

from difflab.process.schedules import F64
DEFAULT_BANDWIDTHS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


def _points(x, what: str, dim: int | None = None, min_rows: int = 1) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().cpu().to(F64)
    if x.dim() != 2:
        raise DataError(f"{what}: expected points of shape (N, D), got {tuple(x.shape)}")
    if dim is not None and x.shape[1] != dim:
        raise DataError(f"{what}: expected D={dim} columns, got {x.shape[1]}")
    if x.shape[0] < min_rows:
        raise DataError(f"{what}: needs at least {min_rows} points, got {x.shape[0]}")
    if not torch.isfinite(x).all():
        raise DataError(f"{what}: contains NaN or inf values")
    return x


def mean_log_density(samples, mixture) -> float:
    """E_samples[log p(x)] under the true mixture; for true samples it estimates -entropy(p)."""
    x = _points(samples, "samples", mixture.dim)
    return float(mixture.log_prob(x).mean())


def sliced_wasserstein2(x, y, num_projections: int = 256, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance SW2 = sqrt(E_θ W2²(θᵀx, θᵀy)), θ uniform on the unit sphere.

    Returned NOT squared (same units as the data). Each 1-D W2² is the mean squared difference of
    the sorted projections, so x and y must hold the same number of points (N, D). A pure shift
    y = x + v gives E_θ (θ·v)² = |v|²/D, i.e. SW2 = |v|/sqrt(D).
    """
    x, y = _points(x, "x"), _points(y, "y", min_rows=1)
    if x.shape != y.shape:
        raise DataError(f"sliced_wasserstein2: x and y need the same shape (N, D), got {tuple(x.shape)} and {tuple(y.shape)}")
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(x.shape[1], num_projections, generator=g, dtype=F64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px, _ = (x @ theta).sort(dim=0)
    py, _ = (y @ theta).sort(dim=0)
    return float(((px - py) ** 2).mean().sqrt())


# ---------------------------------------------------------------------- MMD

def _rbf_gram(z: torch.Tensor, bandwidths) -> torch.Tensor:
    """Σ_h exp(-|a - b|² / (2h²)) over all pairs of rows of z, (N, N)."""
    d2 = torch.cdist(z, z).pow_(2)
    return sum(torch.exp(-d2 / (2.0 * h * h)) for h in bandwidths)


def _mmd2_from_gram(k: torch.Tensor, idx_x: torch.Tensor, idx_y: torch.Tensor) -> float:
    kxx, kyy, kxy = k[idx_x][:, idx_x], k[idx_y][:, idx_y], k[idx_x][:, idx_y]
    m, n = len(idx_x), len(idx_y)
    return float((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
                 + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1)) - 2 * kxy.mean())


def mmd_rbf(x, y, bandwidths=DEFAULT_BANDWIDTHS) -> float:
    """Unbiased MMD² between samples x (N, D) and y (M, D) with a sum of RBF kernels.

    k(a, b) = Σ_h exp(-|a - b|² / (2h²)); the bandwidths h are in data units (the defaults suit
    data of unit scale, like the ring and grid mixtures). Unbiased: can be slightly negative.
    """
    x, y = _points(x, "x", min_rows=2), _points(y, "y", x.shape[1], min_rows=2)
    k = _rbf_gram(torch.cat([x, y]), bandwidths)
    n = x.shape[0]
    return _mmd2_from_gram(k, torch.arange(n), torch.arange(n, n + y.shape[0]))


def mmd_permutation_test(x, y, num_permutations: int = 200, seed: int = 0,
                         bandwidths=DEFAULT_BANDWIDTHS) -> tuple[float, float]:
    """(MMD², p-value) of the hypothesis that x and y come from one distribution.

    The null distribution is built by reshuffling the pooled points between the two sets;
    p = (1 + #{permuted MMD² >= observed}) / (1 + num_permutations), so p >= 1/(1 + P).
    """
    x, y = _points(x, "x", min_rows=2), _points(y, "y", x.shape[1], min_rows=2)
    k = _rbf_gram(torch.cat([x, y]), bandwidths)
    n, total = x.shape[0], x.shape[0] + y.shape[0]
    observed = _mmd2_from_gram(k, torch.arange(n), torch.arange(n, total))
    g = torch.Generator().manual_seed(seed)
    hits = 0
    for _ in range(num_permutations):
        perm = torch.randperm(total, generator=g)
        hits += _mmd2_from_gram(k, perm[:n], perm[n:]) >= observed
    return observed, (1 + hits) / (1 + num_permutations)


# ---------------------------------------------------------------------- modes

def mode_stats(samples, mixture, radius_std: float = 3.0, min_share: float = 0.1) -> dict:
    """Which modes the samples hit, and with which weights.

    Each sample goes to the component nearest in Mahalanobis distance; it is "on mode" when that
    distance is at most ``radius_std`` (for an isotropic component: within radius_std·std of the
    mean). A mode counts as covered when it receives at least ``min_share`` of the samples it
    would under the true mixture (n·w_k·min_share, and at least 1).

    Returns a dict:
        coverage: fraction of modes covered; num_missing and missing (indices) for the others.
        counts: (K,) on-mode samples per mode; weights: (K,) their fractions of the on-mode samples.
        off_mode_fraction: fraction of samples on no mode. For true samples it is about
            expected_off_mode = 1 - chi2_D.cdf(radius_std²) (0.011 for D=2, radius 3).
        weight_tv: total variation ½ Σ |weights - true weights|.
    """
    x = _points(samples, "samples", mixture.dim)
    n = x.shape[0]
    z = torch.einsum("kdj,nkd->nkj", mixture.eigvecs, x[:, None, :] - mixture.means[None])
    maha = (z**2 / mixture.eigvals[None]).sum(-1).sqrt()  # (N, K)
    dist, nearest = maha.min(dim=1)
    on = dist <= radius_std
    counts = torch.bincount(nearest[on], minlength=mixture.num_components).to(F64)
    n_on = float(counts.sum())
    weights = counts / n_on if n_on > 0 else torch.zeros_like(counts)
    need = torch.clamp(min_share * n * mixture.weights, min=1.0)
    covered = (counts >= need) & (mixture.weights > 0)
    present = mixture.weights > 0
    missing = torch.nonzero(present & ~covered).flatten().tolist()
    return {
        "coverage": float(covered.sum()) / int(present.sum()),
        "num_missing": len(missing),
        "missing": missing,
        "counts": counts.long().tolist(),
        "weights": weights.tolist(),
        "off_mode_fraction": 1.0 - n_on / n,
        "expected_off_mode": float(chi2.sf(radius_std**2, mixture.dim)),
        "weight_tv": 0.5 * float((weights - mixture.weights).abs().sum()),
    }


def toy_metrics(samples, mixture, n_ref: int | None = None, seed: int = 0, mmd_max_n: int = 1000) -> dict:
    """All toy metrics of ``samples`` (N, D) against ``n_ref`` fresh true samples (default N).

    Keys: mean_log_density (and ref_mean_log_density of the true samples, ≈ -entropy, for scale),
    sliced_w2 (not squared; on min(N, n_ref) points of each), mmd2 (RBF, unbiased; on at most
    ``mmd_max_n`` points of each), and the scalar mode statistics: coverage, num_missing,
    off_mode_fraction, weight_tv.
    """
    x = _points(samples, "samples", mixture.dim, min_rows=2)
    n_ref = x.shape[0] if n_ref is None else int(n_ref)
    if n_ref < 2:
        raise DifflabError(f"toy_metrics: n_ref={n_ref}, need at least 2 reference samples")
    ref = mixture.sample(n_ref, generator=torch.Generator().manual_seed(seed))
    m = min(x.shape[0], n_ref)
    mm = min(m, mmd_max_n)
    modes = mode_stats(x, mixture)
    return {
        "mean_log_density": mean_log_density(x, mixture),
        "ref_mean_log_density": mean_log_density(ref, mixture),
        "sliced_w2": sliced_wasserstein2(x[:m], ref[:m], seed=seed),
        "mmd2": mmd_rbf(x[:mm], ref[:mm]),
        **{key: modes[key] for key in ("coverage", "num_missing", "off_mode_fraction", "weight_tv")},
        "n_samples": x.shape[0],
        "n_ref": n_ref,
    }
