"""The one place where a prediction is converted: ε ↔ x̂0 at (α, σ), and per-sample coefficients
broadcast against data. Pure tensor functions; every sampler, loss and wrapper uses these.

Shapes: ``x``, ``eps``, ``x0``: (B, ...); ``alpha``, ``sigma``: (B,) tensors or Python floats.
"""
from __future__ import annotations

import torch


def bcast(v, like: torch.Tensor) -> torch.Tensor | float:
    """(B,) -> (B, 1, ..., 1) in like's dtype and device; a Python float passes through."""
    if isinstance(v, (int, float)):
        return float(v)
    return v.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


def eps_to_x0(eps, x, alpha, sigma):
    """x̂0 = (x - σ ε) / α (Tweedie's denoised estimate from an ε-prediction)."""
    return (x - bcast(sigma, x) * eps) / bcast(alpha, x)


def x0_to_eps(x0, x, alpha, sigma):
    """ε = (x - α x̂0) / σ, the ε that a given x̂0 implies at x."""
    return (x - bcast(alpha, x) * x0) / bcast(sigma, x)


def v_to_eps(v, x, alpha, sigma):
    """ε from a v-prediction v = α ε - σ x0 (on a VP schedule α² + σ² = 1): ε = α v + σ x."""
    return bcast(alpha, x) * v + bcast(sigma, x) * x


def denoise(eps, x, alpha, sigma, clip: bool = False):
    """(x̂0, ε) at x: with ``clip``, x̂0 is clamped to [-1, 1] and ε re-derived from it, so a step
    built from either stays consistent (how image samplers keep x̂0 in the data range)."""
    x0 = eps_to_x0(eps, x, alpha, sigma)
    if not clip:
        return x0, eps
    x0 = x0.clamp(-1, 1)
    return x0, x0_to_eps(x0, x, alpha, sigma)


__all__ = ["bcast", "denoise", "eps_to_x0", "v_to_eps", "x0_to_eps"]
