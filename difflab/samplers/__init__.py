"""Samplers over model callables (see :mod:`difflab.samplers.core` for the shared signature)."""
from .core import (SAMPLERS, SampleResult, ancestral, ddim, euler_maruyama, grid_diffusion, interpolate, pf_adaptive,
                   pf_euler, pf_heun, sample, slerp, time_grid)
from .batched import generate

__all__ = ["SAMPLERS", "SampleResult", "ancestral", "ddim", "generate", "euler_maruyama", "grid_diffusion", "interpolate",
           "pf_adaptive", "pf_euler", "pf_heun", "sample", "slerp", "time_grid"]
