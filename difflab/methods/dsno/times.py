"""DSNO's time grids: the M recorded times of a trajectory, and a solver grid that passes through them."""
from __future__ import annotations

import torch

from difflab.errors import ConfigError
from difflab.process.schedules import F64
from difflab.samplers.api import REFINES, refine_grid  # the solver grid through the recorded times lives with the grids

SPACINGS = ("uniform", "quadratic")

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
