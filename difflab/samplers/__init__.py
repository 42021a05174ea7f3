"""Samplers over model callables (see :mod:`difflab.samplers.core` for the shared signature,
:mod:`difflab.samplers.registry` for each sampler's facts)."""
from difflab.samplers.api import GRID_SPACINGS, grid_for, interpolate, refine_grid, sample, slerp, time_grid
from difflab.samplers.base import SampleResult
from difflab.samplers.batched import generate
from difflab.samplers.core import ancestral, ddim, euler_maruyama, grid_diffusion, pf_adaptive, pf_euler, pf_heun
from difflab.samplers.solvers import dpmpp_2m, dpmpp_2m_sde, dpmpp_3m, edm_euler, edm_heun, ipndm, unipc
from difflab.samplers.registry import SAMPLERS, SPECS, SamplerSpec, get_spec, register_sampler

__all__ = ["GRID_SPACINGS", "SAMPLERS", "SPECS", "SampleResult", "SamplerSpec", "ancestral", "ddim", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m", "edm_euler", "edm_heun",
           "euler_maruyama", "ipndm", "unipc",
           "generate", "get_spec", "grid_for", "grid_diffusion", "interpolate", "pf_adaptive", "pf_euler", "pf_heun",
           "refine_grid", "register_sampler", "sample", "slerp", "time_grid"]
