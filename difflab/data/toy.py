"""Embedded 2-D toy distributions (no files).

Scale: every toy is centred at the origin and scaled by one isotropic factor (shapes are kept)
so that its mean per-coordinate variance, E|x|² / 2, is 1; the mixtures are built on round
numbers instead and come to 1.0025. All samples are float32 (N, 2), drawn in float64 from a
seeded torch.Generator.

    toy:ring8         8 Gaussians, std 0.05, means on the circle of radius √2 at angles 2πk/8
    toy:grid25        25 Gaussians, std 0.05, means on the 5×5 grid {-2..2}/√2 squared
    toy:moons         the two half-moons (raw noise 0.05), labels = moon (0 upper, 1 lower)
    toy:swissroll     the 2-D swiss roll t(cos t, sin t), t ~ U[1.5π, 4.5π] (raw noise 0.3)
    toy:checkerboard  uniform on the 8 dark squares of a 4×4 board, |x|, |y| ≤ √3, squares of side √3/2
    toy:gaussian      one Gaussian, mean 0, covariance [[1.5, 0.5], [0.5, 0.5]]

ring8, grid25 and moons carry labels (component / moon index); the others have none.
Moons, swissroll and checkerboard are generated in raw units and mapped by
``data = (raw - center) * scale`` with the constants from :func:`toy_normalization`, which are
computed from the exact distribution, not from the sample.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from difflab.errors import DataError

from difflab.process.schedules import F64

TOY_DATASETS = ("toy:ring8", "toy:grid25", "toy:moons", "toy:swissroll", "toy:checkerboard", "toy:gaussian")
DEFAULT_TOY_SAMPLES = 50_000
TOY_NUM_CLASSES = {"toy:ring8": 8, "toy:grid25": 25, "toy:moons": 2}  # the toys that carry labels

RING_RADIUS, RING_STD = math.sqrt(2.0), 0.05
GRID_SPACING, GRID_STD = 1 / math.sqrt(2.0), 0.05
MOONS_NOISE = 0.05
SWISSROLL_NOISE = 0.3
SWISSROLL_T = (1.5 * math.pi, 4.5 * math.pi)
GAUSSIAN_COV = ((1.5, 0.5), (0.5, 0.5))
# Dark squares of the raw 4×4 board over [-2, 2]²: cells (i, j), i, j in {-2, -1, 0, 1}, i + j even.
CHECKER_CELLS = tuple((i, j) for i in range(-2, 2) for j in range(-2, 2) if (i + j) % 2 == 0)


def toy_mixture_params(name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(means (K, 2), stds (K,), weights (K,)), float64, of toy:ring8 or toy:grid25."""
    if name == "toy:ring8":
        ang = torch.arange(8, dtype=F64) * (2 * math.pi / 8)
        means = RING_RADIUS * torch.stack([torch.cos(ang), torch.sin(ang)], 1)
        std = RING_STD
    elif name == "toy:grid25":
        c = (torch.arange(5, dtype=F64) - 2) * GRID_SPACING
        means = torch.cartesian_prod(c, c)
        std = GRID_STD
    else:
        raise DataError(f"{name!r} is not a Gaussian-mixture toy; expected toy:ring8 or toy:grid25"
                        " (or toy:gaussian for toy_mixture)")
    k = means.shape[0]
    return means, torch.full((k,), std, dtype=F64), torch.full((k,), 1 / k, dtype=F64)


def toy_mixture(name: str):
    """The exact distribution of toy:ring8, toy:grid25 or toy:gaussian as a process.toy.GaussianMixture."""
    from difflab.process.toy import GaussianMixture  # lazy: data must import without the process package

    if name == "toy:gaussian":
        return GaussianMixture(torch.zeros(1, 2, dtype=F64), covs=torch.tensor([GAUSSIAN_COV], dtype=F64))
    means, stds, weights = toy_mixture_params(name)
    return GaussianMixture(means, stds=stds, weights=weights)


@lru_cache(maxsize=None)
def _swissroll_moments() -> tuple[tuple[float, float], tuple[float, float]]:
    """Mean and variance of t(cos t, sin t), t ~ U[a, b], by 200-point Gauss-Legendre (exact to fp64)."""
    a, b = SWISSROLL_T
    nodes, w = np.polynomial.legendre.leggauss(200)
    t = 0.5 * (b - a) * nodes + 0.5 * (a + b)
    w = w / 2  # weights of the uniform density on [a, b] after the change of variables
    xy = np.stack([t * np.cos(t), t * np.sin(t)])
    mean = (w * xy).sum(1)
    var = (w * xy**2).sum(1) - mean**2
    return tuple(mean), tuple(var)


def toy_normalization(name: str) -> tuple[torch.Tensor, float]:
    """(center (2,), scale): data = (raw - center) * scale; (0, 1) for toys built at unit scale."""
    if name == "toy:moons":
        # Upper moon (cos t, sin t), lower (1 - cos t, 1/2 - sin t), t ~ U[0, π], each half the mass.
        center = (0.5, 0.25)
        var = (0.75 + MOONS_NOISE**2, 0.5625 - 1 / math.pi + MOONS_NOISE**2)
    elif name == "toy:swissroll":
        center, var = _swissroll_moments()
        var = tuple(v + SWISSROLL_NOISE**2 for v in var)
    elif name == "toy:checkerboard":
        # Each column and each row of the board holds two dark squares: both marginals are U[-2, 2].
        center, var = (0.0, 0.0), (4 / 3, 4 / 3)
    elif name in TOY_DATASETS:
        return torch.zeros(2, dtype=F64), 1.0
    else:
        raise DataError(f"unknown toy {name!r}; expected one of {', '.join(TOY_DATASETS)}")
    return torch.tensor(center, dtype=F64), 1 / math.sqrt(sum(var) / 2)


def _raw_moons(n: int, g: torch.Generator):
    label = torch.randint(0, 2, (n,), generator=g)
    t = torch.rand(n, dtype=F64, generator=g) * math.pi
    upper = torch.stack([torch.cos(t), torch.sin(t)], 1)
    lower = torch.stack([1 - torch.cos(t), 0.5 - torch.sin(t)], 1)
    x = torch.where(label[:, None] == 0, upper, lower)
    return x + MOONS_NOISE * torch.randn(n, 2, dtype=F64, generator=g), label


def _raw_swissroll(n: int, g: torch.Generator):
    a, b = SWISSROLL_T
    t = a + (b - a) * torch.rand(n, dtype=F64, generator=g)
    x = t[:, None] * torch.stack([torch.cos(t), torch.sin(t)], 1)
    return x + SWISSROLL_NOISE * torch.randn(n, 2, dtype=F64, generator=g), None


def _raw_checkerboard(n: int, g: torch.Generator):
    cells = torch.tensor(CHECKER_CELLS, dtype=F64)
    cell = cells[torch.randint(0, len(cells), (n,), generator=g)]
    return cell + torch.rand(n, 2, dtype=F64, generator=g), None


def _mixture(name: str, n: int, g: torch.Generator):
    means, stds, _ = toy_mixture_params(name)  # uniform weights
    k = torch.randint(0, means.shape[0], (n,), generator=g)
    return means[k] + stds[k, None] * torch.randn(n, 2, dtype=F64, generator=g), k


def _gaussian(n: int, g: torch.Generator):
    chol = torch.linalg.cholesky(torch.tensor(GAUSSIAN_COV, dtype=F64))
    return torch.randn(n, 2, dtype=F64, generator=g) @ chol.T, None


def sample_toy(name: str, n: int = DEFAULT_TOY_SAMPLES, seed: int = 0,
               stream: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """n samples of a toy: (x float32 (n, 2), labels int64 (n,) or None); the same for the same (seed, stream).

    Streams are independent draws for one seed (load_dataset uses 0 for "train", 1 for "test").
    """
    # torch's CPU generator keeps only 32 bits of its seed: mix (seed, stream) into them with a SeedSequence.
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, stream]).generate_state(1)[0]))
    if name in ("toy:ring8", "toy:grid25"):
        x, y = _mixture(name, n, g)
    elif name == "toy:gaussian":
        x, y = _gaussian(n, g)
    else:
        raw = {"toy:moons": _raw_moons, "toy:swissroll": _raw_swissroll, "toy:checkerboard": _raw_checkerboard}.get(name)
        if raw is None:
            raise DataError(f"unknown toy {name!r}; expected one of {', '.join(TOY_DATASETS)}")
        x, y = raw(n, g)
        center, scale = toy_normalization(name)
        x = (x - center) * scale
    return x.to(torch.float32), y
