"""How much of a trajectory's energy the first J temporal Fourier modes hold (to choose M and J)."""
from __future__ import annotations

import torch

from difflab.process.schedules import F64

__all__ = ["mode_energy_fraction", "trajectory_spectrum"]


def trajectory_spectrum(traj: torch.Tensor) -> torch.Tensor:
    """Power spectrum over the M time points of trajectories (N, M, ...): (M//2 + 1,) fractions of the
    total energy per Fourier mode, averaged over samples and coordinates.

    Energies follow Parseval for a real signal: the DC mode (and the Nyquist mode for even M) count
    once, every other one-sided mode twice (it stands for ±j). The fractions sum to 1.
    """
    X = torch.fft.rfft(traj.to(F64), dim=1)
    power = (X.abs() ** 2).transpose(0, 1).reshape(X.shape[1], -1).mean(1)
    M = traj.shape[1]
    mult = torch.full_like(power, 2.0)
    mult[0] = 1.0
    if M % 2 == 0:
        mult[-1] = 1.0
    e = power * mult
    return e / e.sum()


def mode_energy_fraction(traj: torch.Tensor, modes: int) -> float:
    """Fraction of the trajectories' energy in the first ``modes`` Fourier modes (what J modes keep)."""
    return float(trajectory_spectrum(traj)[:modes].sum())
