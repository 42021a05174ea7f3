"""The one-shot DSNO sampler: one network evaluation decodes the whole trajectory from x_T."""
from __future__ import annotations

import torch

from difflab.samplers import SampleResult

from .model import DSNO

__all__ = ["dsno_sample"]


@torch.no_grad()
def dsno_sample(dsno: DSNO, x_T: torch.Tensor, return_trajectory: bool = False, y=None) -> SampleResult:
    """One network evaluation from x_T (B, ...): ``r.x`` the sample (the decoded point at t = 0), and with
    ``return_trajectory`` the whole decoded trajectory ``r.trajectory`` (M, B, ...) at ``r.times``."""
    traj = dsno(x_T, y)
    return SampleResult(x=traj[:, -1], nfe=1, times=dsno.times.to(torch.float64).cpu(),
                        trajectory=traj.transpose(0, 1) if return_trajectory else None)
