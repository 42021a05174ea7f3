"""What every importer of a foreign discrete-time model shares: the time adapter and the grids.

A network trained by DDPM-style code sees the integer index ``k = 0 .. T-1`` of the step (or a
rescaled ``k * 1000 / T``); difflab shows its models the continuous time ``t = (k + 1) / T``
(:mod:`difflab.process.schedules`). :class:`TimestepAdapter` turns one into the other, so the
foreign network runs unchanged inside a :class:`difflab.models.DiffusionModel`.
"""
from __future__ import annotations

import torch
from torch import nn

from difflab.process.respace import respace
from difflab.process.schedules import F64

# float32 holds t = (k+1)/T to a relative 2^-24 ≈ 6e-8, which t·T magnifies to ≈ 6e-8·T: a
# float32 time that lands this close to an integer index is that index. (A time predictor's
# non-integer index is farther away than this almost surely, and stays fractional.)
SNAP_TOLERANCE_PER_STEP = 4e-7


def time_to_timestep(t: torch.Tensor, num_timesteps: int) -> torch.Tensor:
    """(B,) continuous times -> (B,) float64 step indices k = t·T - 1, snapped to the nearest
    integer when within float32 round-off of it (so the network sees exactly the integers it was
    trained on); times between the trained ones give fractional k, passed on as they are."""
    k = t.detach().to(F64) * num_timesteps - 1
    nearest = torch.round(k)
    return torch.where((k - nearest).abs() <= SNAP_TOLERANCE_PER_STEP * num_timesteps, nearest, k)


class TimestepAdapter(nn.Module):
    """Base for a network trained on step indices, shown difflab's continuous time.

    forward(x, t, y=None): x (B, C, H, W), t (B,) float times in [0, 1], y (B,) int64 labels or
    None -> the wrapped network's output (B, C_out, H, W) at step index k = t·T - 1.
    Subclasses implement ``call(x, timesteps, y)`` with timesteps (B,) float64 indices.
    """

    def __init__(self, net: nn.Module, num_timesteps: int):
        super().__init__()
        self.net = net
        self.num_timesteps = int(num_timesteps)

    def call(self, x: torch.Tensor, timesteps: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
        return self.call(x, time_to_timestep(t, self.num_timesteps).to(x.device), y)


def timesteps_to_grid(timesteps, num_timesteps: int, t_end: float = 0.0) -> torch.Tensor:
    """A foreign sampler's decreasing integer timesteps (e.g. a diffusers scheduler's
    ``scheduler.timesteps``) as difflab's time grid: (N+1,) float64 ``[(k+1)/T for k] + [t_end]``.

    ``t_end = 0`` ends at the data (ᾱ = 1: DDPM's last step, DDIM's ``set_alpha_to_one``);
    ``t_end = 1/T`` ends at index 0 (DDIM with ``set_alpha_to_one = False``)."""
    k = torch.as_tensor(timesteps, dtype=F64).reshape(-1)
    ts = torch.cat([(k + 1) / num_timesteps, torch.tensor([float(t_end)], dtype=F64)])
    if not bool((ts[1:] < ts[:-1]).all()):
        raise ValueError(f"timesteps must be strictly decreasing and above t_end, got {k.tolist()[:6]}...")
    return ts


def respacing_grid(num_timesteps: int, spec) -> torch.Tensor:
    """Improved DDPM's ``timestep_respacing`` (e.g. "250", "10,15,20", "ddim50") as difflab's time
    grid (N+1,) float64, ending at 0: ancestral sampling on it is exactly their respaced process."""
    kept = respace(num_timesteps, spec)
    return timesteps_to_grid(sorted(kept, reverse=True), num_timesteps)


__all__ = ["TimestepAdapter", "respacing_grid", "time_to_timestep", "timesteps_to_grid"]
