"""Sample-quality metrics computed on feature matrices: FID, KID, IS, precision/recall.

Everything here is pure math on features that some network has already produced (difflab's own
MNIST evaluator, or the FID Inception network): rows are samples, columns are feature dimensions.
Inputs may be numpy arrays or torch tensors; the arithmetic is numpy float64 (the precision/recall
distances use torch.cdist in chunks). Results are Python floats.

Shapes: N, M samples, D feature dimensions, C classes.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg
import torch
from scipy.special import rel_entr

from difflab.errors import DataError, DifflabError


def as_features(feats, what: str = "features", min_rows: int = 1) -> np.ndarray:
    """(N, D) float64 numpy array from a numpy array or tensor; DataError on a bad shape or NaN/inf."""
    if isinstance(feats, torch.Tensor):
        feats = feats.detach().cpu().double().numpy()
    a = np.asarray(feats, dtype=np.float64)
    if a.ndim != 2:
        raise DataError(f"{what}: expected a (N, D) matrix, got shape {a.shape}")
    if a.shape[0] < min_rows:
        raise DataError(f"{what}: needs at least {min_rows} rows, got {a.shape[0]}")
    if not np.isfinite(a).all():
        raise DataError(f"{what}: contains NaN or inf values ({int((~np.isfinite(a)).sum())} entries)")
    return a


# ---------------------------------------------------------------------- Fréchet distance

def feature_stats(feats) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) (divisor N - 1) of features (N, D), float64."""
    f = as_features(feats, min_rows=2)
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def frechet_distance(mu1, cov1, mu2, cov2, eps: float = 1e-6) -> float:
    """Fréchet distance between N(μ1, Σ1) and N(μ2, Σ2): ‖μ1 - μ2‖² + tr(Σ1 + Σ2 - 2 (Σ1 Σ2)^{1/2}).

    This is the squared 2-Wasserstein distance between the two Gaussians (what "FID" reports).
    (Σ1 Σ2)^{1/2} is scipy.linalg.sqrtm of the (non-symmetric) product. Two standard repairs:
    if the product is singular enough that sqrtm returns non-finite values, both covariances get
    eps·I added and the root is taken again; and rounding leaves a small imaginary part on an
    otherwise real root, which is dropped (DifflabError if it is not small, > 1e-3 on the diagonal
    relative to the scale of the covariances).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    cov1, cov2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    d = mu1.shape[0]
    if mu2.shape != (d,) or cov1.shape != (d, d) or cov2.shape != (d, d):
        raise DataError(f"frechet_distance: expected mu (D,) and cov (D, D) with one D, got {mu1.shape}, {cov1.shape}, {mu2.shape}, {cov2.shape}")
    covmean = scipy.linalg.sqrtm(cov1 @ cov2)
    if not np.isfinite(covmean).all():
        offset = eps * np.eye(d)
        covmean = scipy.linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
    if np.iscomplexobj(covmean):
        scale = max(1.0, float(np.abs(np.diag(cov1)).max()), float(np.abs(np.diag(cov2)).max()))
        worst = float(np.abs(np.diag(covmean).imag).max())
        if worst > 1e-3 * scale:
            raise DifflabError(f"frechet_distance: sqrtm(cov1 @ cov2) has an imaginary diagonal part of {worst:.3g}; the covariances are not positive semi-definite")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(covmean))


def fid_from_features(f1, f2) -> float:
    """Fréchet distance between the Gaussians fitted to two feature matrices (N, D) and (M, D)."""
    return frechet_distance(*feature_stats(f1), *feature_stats(f2))


# ---------------------------------------------------------------------- KID

def _unbiased_mmd2(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    """Unbiased MMD² from kernel blocks (m, m), (n, n), (m, n): diagonals of kxx and kyy left out."""
    m, n = kxx.shape[0], kyy.shape[0]
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def kid(f1, f2, subsets: int = 100, subset_size: int = 1000, degree: int = 3, gamma: float | None = None,
        coef0: float = 1.0, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al., 2018): unbiased MMD² with k(x, y) = (γ x·y + c)^d.

    Averaged over ``subsets`` random subsets of ``subset_size`` rows of each matrix (drawn without
    replacement within a subset; capped at the smaller N). γ defaults to 1/D. Returns (mean, std)
    over subsets; the mean is an unbiased estimate of MMD² and may be slightly negative.
    """
    x, y = as_features(f1, "f1", 2), as_features(f2, "f2", 2)
    if x.shape[1] != y.shape[1]:
        raise DataError(f"kid: feature dimensions differ, {x.shape[1]} vs {y.shape[1]}")
    if subsets < 1 or subset_size < 2:
        raise DifflabError(f"kid: subsets={subsets}, subset_size={subset_size}; need subsets >= 1 and subset_size >= 2")
    m = min(subset_size, x.shape[0], y.shape[0])
    g = 1.0 / x.shape[1] if gamma is None else float(gamma)
    rng = np.random.default_rng(seed)
    vals = np.empty(subsets)
    for s in range(subsets):
        a = x[rng.choice(x.shape[0], m, replace=False)]
        b = y[rng.choice(y.shape[0], m, replace=False)]
        vals[s] = _unbiased_mmd2((g * a @ a.T + coef0) ** degree, (g * b @ b.T + coef0) ** degree,
                                 (g * a @ b.T + coef0) ** degree)
    return float(vals.mean()), float(vals.std())


# ---------------------------------------------------------------------- Inception Score

def inception_score(probs, splits: int = 10) -> tuple[float, float]:
    """Inception Score exp(E_x KL(p(y|x) ‖ p(y))) of class probabilities (N, C), per split.

    The rows are cut into ``splits`` consecutive chunks, p(y) is the chunk's mean; returns
    (mean, std) over chunks. One-hot predictions with balanced classes give C; identical rows give 1.
    """
    p = as_features(probs, "probs", 1)
    if (p < 0).any() or not np.allclose(p.sum(1), 1.0, atol=1e-3):
        raise DataError("inception_score: probs must be non-negative rows that sum to 1 (softmax outputs), not logits")
    if not 1 <= splits <= p.shape[0]:
        raise DifflabError(f"inception_score: splits={splits}, need 1 <= splits <= N={p.shape[0]}")
    scores = []
    for chunk in np.array_split(p, splits):
        py = chunk.mean(0, keepdims=True)
        scores.append(np.exp(rel_entr(chunk, py).sum(1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


# ---------------------------------------------------------------------- precision / recall

def _kth_nn_radii(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """(N,) distance of each row of x to its k-th nearest other row of x."""
    out = []
    for i in range(0, x.shape[0], chunk):
        d = torch.cdist(x[i:i + chunk], x)
        out.append(d.topk(k + 1, dim=1, largest=False).values[:, k])  # column 0 is the point itself
    return torch.cat(out)


def _fraction_inside(query: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int) -> float:
    """Fraction of query rows within radii[j] of at least one centre j."""
    inside = 0
    for i in range(0, query.shape[0], chunk):
        d = torch.cdist(query[i:i + chunk], centres)
        inside += int((d <= radii[None, :]).any(dim=1).sum())
    return inside / query.shape[0]


def precision_recall(real_feats, fake_feats, k: int = 3, chunk: int = 1000) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019) with k-NN manifolds.

    Each sample set's manifold is the union of balls around its points with radius the distance
    to the point's k-th nearest neighbour in the same set. Precision is the fraction of fake
    samples inside the real manifold, recall the fraction of real samples inside the fake one.
    Both depend on the sample sizes: compare results at equal N and M. Distances in float64,
    computed in row chunks of ``chunk`` (memory chunk·max(N, M)·8 bytes).
    """
    r = torch.from_numpy(as_features(real_feats, "real_feats", k + 1))
    f = torch.from_numpy(as_features(fake_feats, "fake_feats", k + 1))
    if r.shape[1] != f.shape[1]:
        raise DataError(f"precision_recall: feature dimensions differ, {r.shape[1]} vs {f.shape[1]}")
    if k < 1:
        raise DifflabError(f"precision_recall: k={k}, need k >= 1")
    precision = _fraction_inside(f, r, _kth_nn_radii(r, k, chunk), chunk)
    recall = _fraction_inside(r, f, _kth_nn_radii(f, k, chunk), chunk)
    return precision, recall


# ---------------------------------------------------------------------- intervals

def _sym_sqrt(cov: np.ndarray) -> np.ndarray:
    """The symmetric PSD square root of a covariance (eigenvalues clipped at 0)."""
    w, v = np.linalg.eigh((cov + cov.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_to_reference(mu, cov, mu_ref, sqrt_cov_ref, trace_cov_ref: float) -> float:
    """The Fréchet distance to a fixed reference N(μ_r, Σ_r) given Σ_r^{1/2}: the same number as
    :func:`frechet_distance`, via tr (Σ Σ_r)^{1/2} = tr (Σ_r^{1/2} Σ Σ_r^{1/2})^{1/2}, a symmetric
    eigenvalue problem (fast and stable: what the bootstrap repeats hundreds of times)."""
    m = sqrt_cov_ref @ cov @ sqrt_cov_ref
    root = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    diff = np.asarray(mu) - np.asarray(mu_ref)
    return float(diff @ diff + np.trace(cov) + trace_cov_ref - 2.0 * root)


def fid_interval(feats, mu_ref, cov_ref, *, n_boot: int = 100, level: float = 0.95, seed: int = 0) -> dict:
    """FID of generated features (N, D) against fixed reference statistics, with a bootstrap interval.

    The plug-in FID is biased upwards at finite N (by about tr Σ / N and more), so the interval is the
    *basic* bootstrap one, [2F - q_hi, 2F - q_lo] with q the quantiles of the FID of ``n_boot``
    resamples (with replacement) of the generated rows: the resamples carry the same bias, so the
    interval is for the Fréchet distance between the two distributions themselves (the closed form
    it is tested against), clipped at 0. The reference statistics (from tens of thousands of real
    images) are taken as exact. Returns fid (plug-in), lo, hi, debiased (2F - mean of the
    resamples), se (std of the resamples), n_boot.
    """
    f = as_features(feats, "feats", 2)
    mu_ref, cov_ref = np.asarray(mu_ref, np.float64), np.asarray(cov_ref, np.float64)
    if not 0 < level < 1 or n_boot < 2:
        raise DifflabError(f"fid_interval: level={level}, n_boot={n_boot}; need 0 < level < 1 and n_boot >= 2")
    sq, tr_ref = _sym_sqrt(cov_ref), float(np.trace(cov_ref))
    fid = frechet_to_reference(f.mean(0), np.cov(f, rowvar=False), mu_ref, sq, tr_ref)
    rng = np.random.default_rng(seed)
    n = f.shape[0]
    boot = np.empty(n_boot)
    for b in range(n_boot):
        r = f[rng.integers(0, n, n)]
        boot[b] = frechet_to_reference(r.mean(0), np.cov(r, rowvar=False), mu_ref, sq, tr_ref)
    a = (1 - level) / 2
    q_lo, q_hi = np.quantile(boot, [a, 1 - a])
    return {"fid": fid, "lo": max(0.0, 2 * fid - float(q_hi)), "hi": max(0.0, 2 * fid - float(q_lo)),
            "debiased": 2 * fid - float(boot.mean()), "se": float(boot.std(ddof=1)), "n_boot": n_boot}


def paired_fid_comparison(feats_a, feats_b, mu_ref, cov_ref, *, n_boot: int = 200, level: float = 0.95,
                          seed: int = 0, paired: bool | None = None) -> dict:
    """FID of two generated feature sets (N, D) against the same reference, compared: the ratio
    FID_a / FID_b and the difference FID_a − FID_b, each with a 95% basic-bootstrap interval.

    ``paired`` (default: when both have N rows): row i of both sets came from the same starting noise
    (two samplers or a method and its base run with the same seeds), so each resample draws the same
    rows from both. The noise common to both then cancels and the interval is far narrower than two
    independent intervals' extremes, the right test of "does the method change the FID" (an interval
    excluding 1, or 0, is a difference). Unpaired sets are resampled independently.
    Returns fid_a, fid_b, ratio, ratio_lo, ratio_hi, diff, diff_lo, diff_hi, paired, n_boot.
    """
    fa, fb = as_features(feats_a, "feats_a", 2), as_features(feats_b, "feats_b", 2)
    if fa.shape[1] != fb.shape[1]:
        raise DifflabError(f"paired_fid_comparison: feature widths {fa.shape[1]} and {fb.shape[1]} differ")
    paired = (len(fa) == len(fb)) if paired is None else bool(paired)
    if paired and len(fa) != len(fb):
        raise DifflabError(f"paired_fid_comparison: paired sets need the same rows, got {len(fa)} and {len(fb)}")
    if not 0 < level < 1 or n_boot < 2:
        raise DifflabError(f"paired_fid_comparison: level={level}, n_boot={n_boot}; need 0 < level < 1, n_boot >= 2")
    mu_ref, cov_ref = np.asarray(mu_ref, np.float64), np.asarray(cov_ref, np.float64)
    sq, tr_ref = _sym_sqrt(cov_ref), float(np.trace(cov_ref))

    def fid(f):
        return frechet_to_reference(f.mean(0), np.cov(f, rowvar=False), mu_ref, sq, tr_ref)

    a, b = fid(fa), fid(fb)
    rng = np.random.default_rng(seed)
    ratios, diffs = np.empty(n_boot), np.empty(n_boot)
    for k in range(n_boot):
        ia = rng.integers(0, len(fa), len(fa))
        ib = ia if paired else rng.integers(0, len(fb), len(fb))
        ra, rb = fid(fa[ia]), fid(fb[ib])
        ratios[k], diffs[k] = ra / rb if rb > 0 else np.nan, ra - rb
    q = [(1 - level) / 2, (1 + level) / 2]
    r_lo, r_hi = np.nanquantile(ratios, q)
    d_lo, d_hi = np.quantile(diffs, q)
    ratio = a / b if b > 0 else float("nan")
    return {"fid_a": a, "fid_b": b, "ratio": ratio, "ratio_lo": max(0.0, 2 * ratio - float(r_hi)),
            "ratio_hi": 2 * ratio - float(r_lo), "diff": a - b, "diff_lo": 2 * (a - b) - float(d_hi),
            "diff_hi": 2 * (a - b) - float(d_lo), "paired": paired, "n_boot": n_boot}


def kid_blocks(f1, f2, block: int = 1000, degree: int = 3, gamma: float | None = None, coef0: float = 1.0,
               seed: int = 0) -> tuple[float, float, int]:
    """KID's standard error from independent blocks: the rows of f1 (generated) and f2 (real) are split
    into k disjoint blocks of ``block`` rows (capped so that k >= 2), the unbiased MMD² of each block pair
    is one independent estimate; returns (mean, standard error std/√k, k). NaN SE when k < 2."""
    x, y = as_features(f1, "f1", 4), as_features(f2, "f2", 4)
    m = max(2, min(block, x.shape[0] // 2, y.shape[0] // 2))
    k = min(x.shape[0] // m, y.shape[0] // m)
    g = 1.0 / x.shape[1] if gamma is None else float(gamma)
    rng = np.random.default_rng(seed)
    px, py = rng.permutation(x.shape[0]), rng.permutation(y.shape[0])
    vals = np.empty(k)
    for j in range(k):
        a, b = x[px[j * m:(j + 1) * m]], y[py[j * m:(j + 1) * m]]
        vals[j] = _unbiased_mmd2((g * a @ a.T + coef0) ** degree, (g * b @ b.T + coef0) ** degree,
                                 (g * a @ b.T + coef0) ** degree)
    se = float(vals.std(ddof=1) / np.sqrt(k)) if k >= 2 else float("nan")
    return float(vals.mean()), se, int(k)


def interval_over_seeds(values, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi): Student's t interval of the mean of per-seed estimates (K >= 2 independent runs)."""
    from scipy.stats import t as student_t

    v = np.asarray(values, np.float64)
    if v.size < 2:
        raise DifflabError(f"interval_over_seeds: needs at least 2 seeds, got {v.size}")
    half = float(student_t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)
