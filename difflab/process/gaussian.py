"""Discrete Gaussian diffusion (DDPM / Improved DDPM): forward process, posterior, reverse-step
mean and variance, and the variational-bound terms.

Shapes: ``x0``, ``x_t``: (B, ...) any data shape; ``i``: (B,) int64 step indices in [0, T).
Per-step coefficients are float64 tables of length T, gathered and cast to the data dtype.

Variance types (what the reverse step's variance is):
  * ``fixed_small``: the posterior variance β̃_i (DDPM's lower bound),
  * ``fixed_large``: β_i, with β̃_1 at i = 0 (so the decoder is not degenerate),
  * ``learned``: the model's variance head is log σ² directly,
  * ``learned_range``: the head v in [-1, 1] interpolates log σ² = ½(v+1) log β + ½(1-v) log β̃.
"""
from __future__ import annotations

import math

import torch

from .schedules import F64, DiscreteSchedule

VAR_TYPES = ("fixed_small", "fixed_large", "learned", "learned_range")


def _gather(table: torch.Tensor, i: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """table[i] reshaped to broadcast against ``like`` (B, ...)."""
    v = table.to(like.device)[i.to(like.device)].to(like.dtype)
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over all but the batch dimension, (B,)."""
    return x.reshape(x.shape[0], -1).mean(1)


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor,
                                        bins: int = 256) -> torch.Tensor:
    """log P(x) elementwise (nats) for data on ``bins`` levels scaled to [-1, 1], under a Gaussian
    integrated over each level's bin; the two edge bins take the tails, so the probabilities of the
    ``bins`` levels sum to 1. Uses the exact normal CDF (``torch.special.ndtr``)."""
    half = 1.0 / (bins - 1)
    inv = torch.exp(-log_scale)
    upper = torch.special.ndtr((x - mean + half) * inv)
    lower = torch.special.ndtr((x - mean - half) * inv)
    log_cdf_plus = torch.log(upper.clamp_min(1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - lower).clamp_min(1e-12))
    log_delta = torch.log((upper - lower).clamp_min(1e-12))
    return torch.where(x < -1 + 1e-3, log_cdf_plus, torch.where(x > 1 - 1e-3, log_one_minus_cdf_min, log_delta))


def reverse_log_variance(var_type: str, log_small, log_large, log_beta, var_out=None):
    """The one dispatch of the reverse step's log-variance (see the module docstring), from the step's
    log β̃ (``log_small``), the log β used by 'fixed_large' (``log_large``; β̃ at the first step), the
    log β that 'learned_range' interpolates to (``log_beta``) and the model's variance head ``var_out``.
    Every argument broadcasts against the data, so per-index tables and per-sample values both work."""
    if var_type == "fixed_small":
        return log_small
    if var_type == "fixed_large":
        return log_large
    if var_type not in VAR_TYPES:
        raise ValueError(f"unknown var_type {var_type!r}; expected one of {VAR_TYPES}")
    if var_out is None:
        raise ValueError(f"var_type {var_type!r} needs the model's variance output (a network with doubled output channels)")
    if var_type == "learned":
        return var_out
    frac = (var_out + 1) / 2  # learned_range
    return frac * log_beta + (1 - frac) * log_small


class GaussianDiffusion:
    """A discrete Gaussian diffusion with ``T = len(betas)`` steps.

    Args:
        betas: (T,) β_i.
        var_type: default reverse variance (see module docstring); a model may override it.
        times: (T,) continuous time the model is shown at each index. Default ``(i+1)/T``; a
            respaced process keeps the original times (see :mod:`difflab.process.respace`).
        schedule: the continuous view; default the exact interpolation of this process's ᾱ.
    """

    def __init__(self, betas: torch.Tensor, var_type: str = "fixed_small", times: torch.Tensor | None = None,
                 schedule=None):
        if var_type not in VAR_TYPES:
            raise ValueError(f"unknown var_type {var_type!r}; expected one of {VAR_TYPES}")
        b = torch.as_tensor(betas, dtype=F64)
        if b.dim() != 1 or (b <= 0).any() or (b > 1).any():
            raise ValueError("betas must be a 1-D tensor in (0, 1]")
        self.betas = b
        self.var_type = var_type
        T = self.num_timesteps = b.shape[0]
        self.times = index_times(T) if times is None else torch.as_tensor(times, dtype=F64)
        ac = torch.cumprod(1.0 - b, 0)
        self._schedule = schedule
        self.alphas_cumprod = ac
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=F64), ac[:-1]])
        self.sqrt_alphas_cumprod = ac.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1 - ac).sqrt()
        self.sqrt_recip_alphas_cumprod = (1 / ac).sqrt()
        self.sqrt_recipm1_alphas_cumprod = (1 / ac - 1).sqrt()
        # Posterior q(x_{i-1} | x_i, x0).
        self.posterior_variance = b * (1 - self.alphas_cumprod_prev) / (1 - ac)
        # β̃_0 = 0: clip the log at index 0 to β̃_1 (the decoder still needs a finite variance).
        pv1 = self.posterior_variance[1] if T > 1 else b[0]
        self.posterior_log_variance_clipped = torch.log(torch.cat([pv1.reshape(1), self.posterior_variance[1:]]))
        self.posterior_mean_coef1 = b * self.alphas_cumprod_prev.sqrt() / (1 - ac)
        self.posterior_mean_coef2 = (1 - self.alphas_cumprod_prev) * (1 - b).sqrt() / (1 - ac)

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: torch.Tensor, **kw) -> "GaussianDiffusion":
        """Re-derive β_i = 1 - ᾱ_i / ᾱ_{i-1} from a (T,) increasing-noise ᾱ sequence."""
        ac = torch.as_tensor(alphas_cumprod, dtype=F64)
        prev = torch.cat([torch.ones(1, dtype=F64), ac[:-1]])
        return cls(1 - ac / prev, **kw)

    @property
    def schedule(self) -> DiscreteSchedule:
        """The continuous view: ᾱ(times[i]) equals alphas_cumprod[i]."""
        if self._schedule is None:
            self._schedule = DiscreteSchedule(self.alphas_cumprod)
        return self._schedule

    def model_time(self, i: torch.Tensor) -> torch.Tensor:
        """(B,) float64 continuous time the model sees at indices ``i``."""
        return self.times.to(i.device)[i]

    # ------------------------------------------------------------------ forward process
    def q_mean_variance(self, x0, i):
        """Mean, variance and log-variance of q(x_i | x0)."""
        mean = _gather(self.sqrt_alphas_cumprod, i, x0) * x0
        var = _gather(1.0 - self.alphas_cumprod, i, x0)
        return mean, var, torch.log(var)

    def q_sample(self, x0, i, noise=None):
        """x_i = sqrt(ᾱ_i) x0 + sqrt(1-ᾱ_i) ε."""
        noise = torch.randn_like(x0) if noise is None else noise
        return _gather(self.sqrt_alphas_cumprod, i, x0) * x0 + _gather(self.sqrt_one_minus_alphas_cumprod, i, x0) * noise

    def q_posterior(self, x0, x_t, i):
        """Mean, variance and clipped log-variance of q(x_{i-1} | x_i, x0)."""
        mean = _gather(self.posterior_mean_coef1, i, x_t) * x0 + _gather(self.posterior_mean_coef2, i, x_t) * x_t
        return mean, _gather(self.posterior_variance, i, x_t), _gather(self.posterior_log_variance_clipped, i, x_t)

    # ------------------------------------------------------------------ reverse process
    def x0_from_eps(self, x_t, i, eps):
        return _gather(self.sqrt_recip_alphas_cumprod, i, x_t) * x_t - _gather(self.sqrt_recipm1_alphas_cumprod, i, x_t) * eps

    def eps_from_x0(self, x_t, i, x0):
        return (_gather(self.sqrt_recip_alphas_cumprod, i, x_t) * x_t - x0) / _gather(self.sqrt_recipm1_alphas_cumprod, i, x_t)

    def model_log_variance(self, i, like, var_out=None, var_type=None):
        """Log-variance of p(x_{i-1} | x_i) for ``var_type`` (``var_out`` is the model's variance head)."""
        large = torch.log(torch.cat([self.posterior_variance[1:2] if self.num_timesteps > 1 else self.betas[:1],
                                     self.betas[1:]]))
        log_var = reverse_log_variance(var_type or self.var_type, _gather(self.posterior_log_variance_clipped, i, like),
                                       _gather(large, i, like), _gather(torch.log(self.betas), i, like), var_out)
        return log_var.expand_as(like)

    def p_mean_variance(self, out, x_t, i, clip_denoised: bool = False, var_type=None):
        """The reverse step p(x_{i-1} | x_i) from a model output.

        Args:
            out: a :class:`difflab.models.ModelOutput` (``eps``, optional ``var_out``).
        Returns:
            dict with ``mean``, ``log_variance``, ``pred_x0`` (each shaped like x_t).
        """
        pred_x0 = self.x0_from_eps(x_t, i, out.eps)
        if clip_denoised:
            pred_x0 = pred_x0.clamp(-1, 1)
        mean, _, _ = self.q_posterior(pred_x0, x_t, i)
        log_var = self.model_log_variance(i, x_t, out.var_out, var_type)
        return {"mean": mean, "log_variance": log_var, "pred_x0": pred_x0}

    # ------------------------------------------------------------------ variational bound
    def prior_bpd(self, x0) -> torch.Tensor:
        """KL(q(x_T | x0) || N(0, I)) in bits/dim, (B,)."""
        T = torch.full((x0.shape[0],), self.num_timesteps - 1, dtype=torch.long, device=x0.device)
        mean, _, log_var = self.q_mean_variance(x0, T)
        return mean_flat(normal_kl(mean, log_var, torch.zeros_like(mean), torch.zeros_like(mean))) / math.log(2.0)

    def vb_terms_bpd(self, out, x0, x_t, i, clip_denoised: bool = False, var_type=None):
        """The bound's term at indices i, in bits/dim, (B,): KL(q(x_{i-1}|x_i,x0) || p(x_{i-1}|x_i))
        for i > 0 and the discretized decoder's -log p(x0 | x_1) for i = 0. Also returns pred_x0."""
        true_mean, _, true_log_var = self.q_posterior(x0, x_t, i)
        p = self.p_mean_variance(out, x_t, i, clip_denoised, var_type)
        kl = mean_flat(normal_kl(true_mean, true_log_var, p["mean"], p["log_variance"])) / math.log(2.0)
        nll = -mean_flat(discretized_gaussian_log_likelihood(x0, p["mean"], 0.5 * p["log_variance"])) / math.log(2.0)
        return torch.where(i == 0, nll, kl), p["pred_x0"]


def index_times(num_timesteps: int) -> torch.Tensor:
    """(T,) continuous times (i+1)/T of the indices of a T-step process."""
    return (torch.arange(num_timesteps, dtype=F64) + 1) / num_timesteps
