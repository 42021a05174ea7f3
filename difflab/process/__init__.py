"""The math of diffusion: schedules, the discrete Gaussian process, respacing, losses, likelihoods,
timestep samplers and a toy world with exact answers. Pure tensor code: no networks, no I/O."""
from .gaussian import VAR_TYPES, GaussianDiffusion, discretized_gaussian_log_likelihood, normal_kl
from .likelihood import dequantize, dequantized_bpd, ode_nll, vlb_bpd
from .losses import ddpm_losses, dsm_loss
from .respace import respace, spaced_diffusion
from .schedules import (DiscreteSchedule, Schedule, VPCosine, VPLinear, cosine_alpha_bar, cosine_betas,
                        index_to_time, linear_betas, make_betas, make_schedule, time_to_index)
from .timesteps import LossAwareSampler, UniformSampler, make_timestep_sampler
from .toy import GaussianMixture, grid_mixture, ring_mixture

__all__ = [n for n in dir() if not n.startswith("_")]
