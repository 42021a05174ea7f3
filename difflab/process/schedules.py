"""Noise schedules, discrete and continuous, and the conversions between the two views.

Conventions used everywhere in difflab:

* Discrete processes have ``T`` steps with indices ``i = 0 .. T-1`` (improved-diffusion's indexing;
  index ``i`` is DDPM's step ``i+1``). ``alphas_cumprod[i]`` is ᾱ of index ``i``.
* The continuous time of index ``i`` is ``t_i = (i + 1) / T``; ``t = 0`` is the data (ᾱ = 1).
  ``index_to_time`` / ``time_to_index`` convert.
* A *schedule* in the continuous view is any object with ``log_alpha_bar(t)`` for ``t`` in [0, 1];
  from it follow the marginal mean coefficient ``alpha(t) = sqrt(ᾱ)``, the std ``sigma(t) = sqrt(1-ᾱ)``,
  the VP-SDE rate ``beta(t) = -d log ᾱ / dt`` and the log-SNR. Samplers only ever talk to this view.

Every array here is float64; callers cast to their working dtype when they index.
"""
from __future__ import annotations

import math

import torch

from .param import bcast

F64 = torch.float64


# ----------------------------------------------------------------------------- discrete betas
def linear_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM's linear schedule, (T,) float64. The endpoints are scaled by 1000/T so that any T
    describes the same continuous process as T = 1000 (Improved DDPM's convention)."""
    scale = 1000.0 / num_timesteps
    return torch.linspace(scale * beta_start, scale * beta_end, num_timesteps, dtype=F64)


def cosine_alpha_bar(t: torch.Tensor | float, s: float = 0.008) -> torch.Tensor:
    """Improved DDPM's ᾱ(t) = f(t)/f(0), f(t) = cos²(π/2 · (t+s)/(1+s)), for t in [0, 1] (float64)."""
    t = torch.as_tensor(t, dtype=F64)
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return f / math.cos(s / (1 + s) * math.pi / 2) ** 2


def betas_for_alpha_bar(num_timesteps: int, alpha_bar_fn, max_beta: float = 0.999) -> torch.Tensor:
    """β_i = min(1 - ᾱ(t_{i+1}) / ᾱ(t_i), max_beta) on the grid t_i = i/T, (T,) float64."""
    t = torch.arange(num_timesteps + 1, dtype=F64) / num_timesteps
    ab = alpha_bar_fn(t)
    return torch.clamp(1 - ab[1:] / ab[:-1], max=max_beta)


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Improved DDPM's cosine schedule, (T,) float64, β clipped at ``max_beta`` near t = 1."""
    return betas_for_alpha_bar(num_timesteps, lambda t: cosine_alpha_bar(t, s), max_beta)


def make_betas(name: str, num_timesteps: int, **kw) -> torch.Tensor:
    """Betas by name: 'linear' or 'cosine'."""
    if name == "linear":
        return linear_betas(num_timesteps, **kw)
    if name == "cosine":
        return cosine_betas(num_timesteps, **kw)
    raise ValueError(f"unknown discrete schedule {name!r}; expected 'linear' or 'cosine'")


# ----------------------------------------------------------------------------- conversions
def index_to_time(i, num_timesteps: int) -> torch.Tensor:
    """Continuous time of discrete index i: t = (i + 1) / T."""
    return (torch.as_tensor(i, dtype=F64) + 1) / num_timesteps


def time_to_index(t, num_timesteps: int) -> torch.Tensor:
    """Inverse of :func:`index_to_time` (a float index; round it for a table look-up)."""
    return torch.as_tensor(t, dtype=F64) * num_timesteps - 1


class Schedule:
    """Continuous-time VP schedule: everything derives from ``log_alpha_bar(t)``.

    ``t`` may be a float or a tensor of any shape; results are float64 tensors of the same shape.
    """

    def log_alpha_bar(self, t) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def beta(self, t) -> torch.Tensor:
        """β(t) = -d log ᾱ / dt, the VP-SDE rate (autograd on the closed form by default)."""
        t = torch.as_tensor(t, dtype=F64).detach().requires_grad_(True)
        with torch.enable_grad():
            lab = self.log_alpha_bar(t)
            (g,) = torch.autograd.grad(lab.sum(), t)
        return -g.detach()

    def alpha_bar(self, t) -> torch.Tensor:
        return torch.exp(self.log_alpha_bar(t))

    def alpha(self, t) -> torch.Tensor:
        """Marginal mean coefficient sqrt(ᾱ(t))."""
        return torch.exp(0.5 * self.log_alpha_bar(t))

    def sigma(self, t) -> torch.Tensor:
        """Marginal std sqrt(1 - ᾱ(t)), computed stably for small t."""
        return torch.sqrt(-torch.expm1(self.log_alpha_bar(t)))

    def perturb(self, x0: torch.Tensor, t, noise: torch.Tensor) -> torch.Tensor:
        """x_t = α(t) x0 + σ(t) ε: the forward process q(x_t | x0) in one jump; ``t`` a float or (B,)."""
        if isinstance(t, (int, float)):
            return float(self.alpha(float(t))) * x0 + float(self.sigma(float(t))) * noise
        tc = torch.as_tensor(t).detach().to("cpu", F64)
        return bcast(self.alpha(tc), x0) * x0 + bcast(self.sigma(tc), x0) * noise

    def log_snr(self, t) -> torch.Tensor:
        lab = self.log_alpha_bar(t)
        return lab - torch.log(-torch.expm1(lab))

    def t_from_log_snr(self, log_snr, tol: float = 1e-12) -> torch.Tensor:
        """Invert λ(t) (monotone decreasing) by bisection on [0, 1]."""
        target = torch.as_tensor(log_snr, dtype=F64)
        lo = torch.zeros_like(target)
        hi = torch.ones_like(target)
        for _ in range(60):
            mid = (lo + hi) / 2
            above = self.log_snr(mid.clamp_min(tol)) > target
            lo = torch.where(above, mid, lo)
            hi = torch.where(above, hi, mid)
        return (lo + hi) / 2


class VPLinear(Schedule):
    """Song et al.'s VP-SDE: β(t) = β_min + t(β_max - β_min), log ᾱ(t) = -(β_min t + ½(β_max-β_min) t²)."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)

    def log_alpha_bar(self, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=F64)
        return -(self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2)

    def beta(self, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=F64)
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def __repr__(self):
        return f"VPLinear(beta_min={self.beta_min}, beta_max={self.beta_max})"


class VPCosine(Schedule):
    """The cosine ᾱ(t) as a continuous schedule (log ᾱ clamped so ᾱ(1) stays positive)."""

    def __init__(self, s: float = 0.008, min_log_alpha_bar: float = -30.0):
        self.s, self.min_lab = float(s), float(min_log_alpha_bar)

    def log_alpha_bar(self, t) -> torch.Tensor:
        return torch.log(cosine_alpha_bar(t, self.s)).clamp_min(self.min_lab)

    def __repr__(self):
        return f"VPCosine(s={self.s})"


class DiscreteSchedule(Schedule):
    """The continuous view of a discrete process: log ᾱ interpolated linearly between the knots
    t_i = (i+1)/T (with log ᾱ(0) = 0), so β(t) is piecewise constant and ᾱ(t_i) equals the
    discrete ᾱ_i exactly. This is the β(t) that "matches" a DDPM: its VP-SDE marginals at t_i are
    the DDPM marginals at index i."""

    def __init__(self, alphas_cumprod: torch.Tensor):
        ab = torch.as_tensor(alphas_cumprod, dtype=F64)
        self.num_timesteps = ab.shape[0]
        self.knots = torch.arange(self.num_timesteps + 1, dtype=F64) / self.num_timesteps
        self.log_ab = torch.cat([torch.zeros(1, dtype=F64), torch.log(ab)])

    def log_alpha_bar(self, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=F64).clamp(0.0, 1.0)
        x = t * self.num_timesteps
        lo = torch.clamp(torch.floor(x), max=self.num_timesteps - 1).long()
        w = x - lo.to(F64)
        return self.log_ab[lo] * (1 - w) + self.log_ab[lo + 1] * w

    def beta(self, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=F64).clamp(0.0, 1.0)
        # The rate on the interval that ends at t (so β(t_i) is the rate of the step into index i).
        seg = torch.clamp(torch.ceil(t * self.num_timesteps) - 1, 0, self.num_timesteps - 1).long()
        return -(self.log_ab[seg + 1] - self.log_ab[seg]) * self.num_timesteps

    def __repr__(self):
        return f"DiscreteSchedule(T={self.num_timesteps})"


def make_schedule(name: str, **kw) -> Schedule:
    """Continuous schedule by name: 'vp-linear' (beta_min, beta_max) or 'vp-cosine' (s)."""
    if name == "vp-linear":
        return VPLinear(kw.get("beta_min", 0.1), kw.get("beta_max", 20.0))
    if name == "vp-cosine":
        return VPCosine(kw.get("s", 0.008))
    raise ValueError(f"unknown continuous schedule {name!r}; expected 'vp-linear' or 'vp-cosine'")
