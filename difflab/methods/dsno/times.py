"""DSNO's time grids: the M recorded times of a trajectory, and a solver grid that passes through them."""
from __future__ import annotations

import math

import torch

from difflab.errors import ConfigError
from difflab.samplers.api import SMALLEST_T  # where a log-SNR grid stops before its step into t = 0

from difflab.process.schedules import F64
SPACINGS = ("uniform", "quadratic")
REFINES = ("t", "logsnr")  # how each interval between recorded times is cut into solver steps

__all__ = ["REFINES", "SPACINGS", "refine_grid", "trajectory_times"]


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


def refine_grid(times: torch.Tensor, steps: int, refine: str = "t", schedule=None) -> tuple[torch.Tensor, torch.Tensor]:
    """A sampler grid that passes exactly through every recorded time.

    Each of the M-1 intervals [t_m, t_{m+1}] is cut into k = ceil(steps / (M-1)) steps, equal in t
    (``refine="t"``) or in log-SNR λ of ``schedule`` (``"logsnr"``, where DPM-Solver's steps are taken; an
    interval that ends at t = 0, where λ = ∞, is cut uniformly in λ down to t = 1e-3 and its last step goes
    to 0). Returns (grid (N+1,) float64 decreasing, idx (M,) int64) with grid[idx] == times.
    """
    if refine not in REFINES:
        raise ConfigError(f"refine = {refine!r}; expected one of {', '.join(REFINES)}")
    if refine == "logsnr" and schedule is None:
        raise ConfigError("refine = 'logsnr' needs the schedule whose log-SNR cuts the intervals")
    times = torch.as_tensor(times, dtype=F64)
    k = max(1, math.ceil(steps / (len(times) - 1)))
    parts = [times[:1]]
    u = torch.arange(1, k + 1, dtype=F64) / k
    for a, b in zip(times[:-1], times[1:]):
        if refine == "t":
            parts.append(a + (b - a) * u)
            continue
        lo = b if b > 0 else torch.tensor(min(SMALLEST_T, float(a) / 2), dtype=F64)
        n = k if b > 0 else k - 1  # into t = 0: k-1 steps uniform in λ to `lo`, then the step to 0
        la, lb = schedule.log_snr(a), schedule.log_snr(lo)
        inner = schedule.t_from_log_snr(la + (lb - la) * torch.arange(1, n + 1, dtype=F64) / max(n, 1)).to(F64)
        parts.append(inner if b > 0 else torch.cat([inner, b.reshape(1)]))
    grid = torch.cat(parts)
    grid[k::k] = times[1:]  # the recorded times bit for bit
    if not bool((grid[1:] < grid[:-1]).all()):
        raise ConfigError(f"the refined grid is not strictly decreasing ({steps} steps over times {times.tolist()})")
    return grid, torch.arange(len(times)) * k
