"""DSNO's time grids: the M recorded times of a trajectory, and a solver grid that passes through them."""
from __future__ import annotations

import math

import torch

from difflab.errors import ConfigError

from difflab.process.schedules import F64
SPACINGS = ("uniform", "quadratic")

__all__ = ["SPACINGS", "refine_grid", "trajectory_times"]


def trajectory_times(M: int, spacing: str = "quadratic", t_max: float = 1.0, t_min: float = 0.0) -> torch.Tensor:
    """(M,) float64 decreasing times from t_max (the noise x_T) to t_min (the sample), both included.

    'uniform' in t, or 'quadratic' t_m = t_min + (t_max - t_min)(1 - m/(M-1))², denser near the data
    where trajectories bend most.
    """
    if M < 2:
        raise ConfigError(f"M = {M}: a trajectory needs at least 2 times (the start t=1 and the sample t=0)")
    if spacing not in SPACINGS:
        raise ConfigError(f"spacing = {spacing!r}; expected one of {', '.join(SPACINGS)}")
    u = torch.linspace(0, 1, M, dtype=F64)
    if spacing == "uniform":
        return t_max + (t_min - t_max) * u
    return t_min + (t_max - t_min) * (1 - u) ** 2


def refine_grid(times: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A sampler grid that passes exactly through every recorded time.

    Each of the M-1 intervals [t_m, t_{m+1}] is cut into k = ceil(steps / (M-1)) equal steps.
    Returns (grid (N+1,) float64 decreasing, idx (M,) int64) with grid[idx] == times.
    """
    times = torch.as_tensor(times, dtype=F64)
    k = max(1, math.ceil(steps / (len(times) - 1)))
    parts = [times[:1]]
    for a, b in zip(times[:-1], times[1:]):
        parts.append(a + (b - a) * torch.arange(1, k + 1, dtype=F64) / k)
    grid = torch.cat(parts)
    grid[k::k] = times[1:]  # the recorded times bit for bit, not a+(b-a)·k/k
    return grid, torch.arange(len(times)) * k
