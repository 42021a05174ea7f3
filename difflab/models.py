"""Models as callables: a network plus its schedule answers "ε (or x̂0, or score) at (x, t)".

The one contract every sampler, loss and wrapper in difflab relies on::

    out = model(x, t, y=None)      # x: (B, ...), t: (B,) float times in [0, 1], y: (B,) labels or None
    out.eps                        # (B, ...) predicted noise
    out.var_out                    # (B, ...) raw variance head, or None (learned variances)
    out.t                          # (B,) the time the prediction belongs to (a time predictor may change it)
    model.schedule                 # continuous view: alpha(t), sigma(t), beta(t) (difflab.process.schedules)
    model.var_type                 # how the variance head is meant ('fixed_small', ..., 'learned_range')

Wrappers (time-predictor sampling, discriminator and classifier guidance) take a model and return a
model, so they work with every sampler and stack.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from difflab.process.param import bcast, eps_to_x0, v_to_eps, x0_to_eps  # noqa: F401 (re-exported)

PREDICTIONS = ("eps", "x0", "v")


@dataclass
class ModelOutput:
    eps: torch.Tensor
    t: torch.Tensor
    var_out: torch.Tensor | None = None

    def detach_mean(self) -> "ModelOutput":
        """The same output with the mean part cut from the graph (Improved DDPM's L_vlb: only the
        variance learns from the bound)."""
        return replace(self, eps=self.eps.detach())


class DiffusionModel(nn.Module):
    """A network ``net(x, t, y) -> tensor`` read as a diffusion model on ``schedule``.

    Args:
        net: any network with difflab's network contract (see :mod:`difflab.nets`).
        schedule: the continuous schedule (for a discrete process, ``diffusion.schedule``).
        prediction: what the network's (first half of the) output is: 'eps', 'x0' or 'v'.
        var_type: the process's variance type; 'learned' / 'learned_range' mean the network's output
            has doubled channels, the second half being the variance head.
    """

    def __init__(self, net: nn.Module, schedule, prediction: str = "eps", var_type: str = "fixed_small"):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise ValueError(f"unknown prediction {prediction!r}; expected one of {PREDICTIONS}")
        self.net = net
        self.schedule = schedule
        self.prediction = prediction
        self.var_type = var_type

    @property
    def learn_sigma(self) -> bool:
        return self.var_type in ("learned", "learned_range")

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> ModelOutput:
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
        h = self.net(x, t.to(x.dtype), y)
        var_out = None
        if self.learn_sigma:
            h, var_out = h.chunk(2, dim=1)
        if self.prediction == "eps":
            eps = h
        else:
            a, s = self.schedule.alpha(t.detach().cpu()), self.schedule.sigma(t.detach().cpu())
            eps = x0_to_eps(h, x, a, s) if self.prediction == "x0" else v_to_eps(h, x, a, s)
        return ModelOutput(eps=eps, t=t, var_out=var_out)


class ModelWrapper(nn.Module):
    """Base for wrappers that make a new model from an old one; schedule and var_type pass through."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    @property
    def schedule(self):
        return self.inner.schedule

    @property
    def var_type(self):
        return self.inner.var_type


class FunctionModel(nn.Module):
    """A model from a plain function ``eps_fn(x, t, y) -> ε`` (exact toy models, adapters)."""

    def __init__(self, eps_fn, schedule, var_type: str = "fixed_small"):
        super().__init__()
        self.eps_fn, self.schedule, self.var_type = eps_fn, schedule, var_type

    def forward(self, x, t, y=None) -> ModelOutput:
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
        return ModelOutput(eps=self.eps_fn(x, t, y), t=t)


def exact_mixture_model(mixture, schedule) -> FunctionModel:
    """The ideal ε-model of a :class:`~difflab.process.toy.GaussianMixture` under ``schedule``:
    ε*(x, t) = -σ(t) ∇ log p_t(x), in closed form."""

    def eps_fn(x, t, y=None):
        tc = t.detach().to("cpu", torch.float64)
        a, s = schedule.alpha(tc), schedule.sigma(tc)
        score = mixture.score(x.to("cpu", torch.float64), a, s)  # differentiable: ODE likelihoods need div
        return (-bcast(s, score) * score).to(device=x.device, dtype=x.dtype)

    return FunctionModel(eps_fn, schedule)


class ExactReverseModel(nn.Module):
    """The best Gaussian reverse step of a discrete process for a mixture: exact ε and, as a
    'learned' log-variance head, the moment-matched variance β̃_i + c_i² Var[x0 | x_i] (c_i the
    posterior's x0 coefficient). With it the variational bound of the toy world is nearly tight."""

    var_type = "learned"

    def __init__(self, mixture, diffusion):
        super().__init__()
        self.mixture, self.diffusion = mixture, diffusion
        self.schedule = diffusion.schedule

    def forward(self, x, t, y=None) -> ModelOutput:
        d = self.diffusion
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
        i = torch.searchsorted(d.times, t.detach().cpu().double().clamp(max=float(d.times[-1]))).clamp(max=d.num_timesteps - 1)
        a, s = d.sqrt_alphas_cumprod[i], d.sqrt_one_minus_alphas_cumprod[i]
        xd = x.to("cpu", torch.float64)
        score = self.mixture.score(xd, a, s)
        var0 = self.mixture.posterior_var_x0(xd, a, s)
        log_var = torch.log(d.posterior_variance[i][:, None] + d.posterior_mean_coef1[i][:, None] ** 2 * var0)
        log_var = torch.where((i == 0)[:, None], torch.log(d.posterior_mean_coef1[i][:, None] ** 2 * var0).clamp_min(
            d.posterior_log_variance_clipped[0]), log_var)
        eps = -bcast(s, score) * score
        return ModelOutput(eps=eps.to(x.dtype), t=t, var_out=log_var.reshape(x.shape).to(x.dtype))
