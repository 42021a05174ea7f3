"""TP sampling as a model wrapper: the inner model evaluated at the predicted time g(x), per sample."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from difflab.errors import ConfigError
from difflab.models import ModelOutput, ModelWrapper
from difflab.process.schedules import F64, DiscreteSchedule


@dataclass
class PredictedTimeOutput(ModelOutput):
    """A model output evaluated at a predicted time: ``t`` = g(x) (B,), ``nominal_t`` the grid's (B,)."""

    nominal_t: torch.Tensor | None = None


class TimePredictorSampling(ModelWrapper):
    """TP sampling as a model wrapper: each call evaluates the inner model at g(x) per sample.

    Args:
        model: any model (the difflab contract); wrappers stack.
        predictor: ``g(x) -> (B,)`` times: a :class:`TimePredictor`, an :class:`OracleTimePredictor`
            or any callable.
        clamp: (t_lo, t_hi) bounds on g(x). Default: (1/T, 1) for a discrete process (its first
            trained time), (predictor's t_min or 1e-3, 1) otherwise.
        window: clamp g(x) further to [t - window, t + window] around the sampler's nominal time t
            (the windowed TP variant); ``window=0`` is the plain model bit for bit.
        x0_readout: read the model's x̂0 at g(x) and hand the sampler the ε that gives that x̂0 at the
            nominal time, ε' = (x - α_t x̂0)/σ_t (so the sampler's own grid arithmetic, in every sampler,
            denoises as if the state were at g(x)); samples whose chosen time is the nominal one keep
            the model's ε exactly. Not with ``use_in_coefficients``.
        use_in_coefficients: also evaluate the sampler's α, σ, β at g(x) (the original Algorithm 3:
            β(g(x)) and s(x, g(x)) in the Euler–Maruyama step); default False: only the model
            sees g(x), the sampler's arithmetic stays the grid's. The shared samplers
            (:mod:`difflab.samplers`) always use the grid's coefficients; the per-sample ones are
            :data:`~difflab.methods.time_predictor.sampling.TP_SAMPLERS`, which
            :func:`~difflab.methods.time_predictor.sampling.tp_sample` and ``sampler_for`` pick for
            a model with this flag (also when other wrappers stack above it).

    forward(x, t, y=None) -> :class:`PredictedTimeOutput` with t = clamp(g(x)); the nominal t is
    ignored except for being reported. When g returns the nominal time, every sampler's output is
    bit-for-bit the original's.
    """

    def __init__(self, model, predictor: Callable[[torch.Tensor], torch.Tensor] | None, *,
                 clamp: tuple[float, float] | None = None, window: float | None = None,
                 use_in_coefficients: bool = False, x0_readout: bool = False, record: bool = False):
        super().__init__(model)
        self.predictor = predictor
        if use_in_coefficients and x0_readout:
            raise ConfigError("a time wrapper takes either use_in_coefficients (per-sample samplers) or x0_readout "
                              "(x̂0 at the chosen time, every sampler), not both")
        self.x0_readout = x0_readout
        self.history: list[tuple[torch.Tensor, torch.Tensor]] | None = [] if record else None
        if clamp is None:
            sched = model.schedule
            lo = 1.0 / sched.num_timesteps if isinstance(sched, DiscreteSchedule) else 1e-3
            lo = max(lo, float(getattr(getattr(predictor, "scale", predictor), "t_min", 0.0)))
            clamp = (lo, 1.0)
        self.clamp = (float(clamp[0]), float(clamp[1]))
        if not 0.0 <= self.clamp[0] < self.clamp[1] <= 1.0:
            raise ConfigError(f"TP clamp {clamp}; expected 0 <= t_lo < t_hi <= 1")
        if window is not None and not window >= 0:
            raise ConfigError(f"TP window {window}; expected a time span >= 0 (or None for no window)")
        self.window = None if window is None else float(window)
        self.use_in_coefficients = use_in_coefficients

    def predict_time(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) float64 clamp(g(x)) on x's device."""
        t = torch.as_tensor(self.predictor(x)).reshape(x.shape[0]).to(device=x.device, dtype=F64)
        return t.clamp(*self.clamp)

    def choose_time(self, x: torch.Tensor, nominal: torch.Tensor) -> torch.Tensor:
        """(B,) float64: the time the inner model is evaluated at, for states x at nominal times (B,)
        float64. Here clamp(g(x)), then the window around the nominal time; subclasses choose otherwise."""
        t_hat = self.predict_time(x)
        if self.window is not None:  # last, so that a zero window gives the nominal time exactly
            t_hat = torch.minimum(torch.maximum(t_hat, nominal - self.window), nominal + self.window)
        return t_hat

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> PredictedTimeOutput:
        nominal = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
        t_hat = self.choose_time(x, nominal.to(F64))
        if self.history is not None:
            self.history.append((nominal.detach().to("cpu", F64).clone(), t_hat.detach().to("cpu", F64).clone()))
        out = self.inner(x, t_hat, y)
        if not self.x0_readout:
            return PredictedTimeOutput(eps=out.eps, t=t_hat, var_out=out.var_out, nominal_t=nominal)
        eps = x0_read_at(self.schedule, out.eps, x, t_hat, nominal.to(F64))
        return PredictedTimeOutput(eps=eps, t=nominal, var_out=out.var_out, nominal_t=nominal)


def x0_read_at(schedule, eps: torch.Tensor, x: torch.Tensor, t_chosen: torch.Tensor, t_nominal: torch.Tensor):
    """ε at ``t_nominal`` whose x̂0 is the one ``eps`` gives at ``t_chosen`` (both (B,) float64):
    x̂0 = (x - σ_c ε)/α_c, ε' = (x - α_n x̂0)/σ_n = (σ_c α_n ε + (α_c - α_n) x) / (α_c σ_n). Where the two
    times are equal the model's ε is returned exactly."""
    tc, tn = t_chosen.detach().to("cpu", F64), t_nominal.detach().to("cpu", F64)
    ac, sc, an, sn = schedule.alpha(tc), schedule.sigma(tc), schedule.alpha(tn), schedule.sigma(tn)
    shape = (-1,) + (1,) * (x.dim() - 1)
    k_eps = (sc * an / (ac * sn)).to(device=x.device, dtype=x.dtype).reshape(shape)
    k_x = ((ac - an) / (ac * sn)).to(device=x.device, dtype=x.dtype).reshape(shape)
    same = (tc == tn).to(x.device).reshape(shape)
    return torch.where(same, eps, k_eps * eps + k_x * x)


def wants_per_sample_coefficients(model) -> bool:
    """True when ``model`` is, or wraps (through ``.inner``), a :class:`TimePredictorSampling` with
    ``use_in_coefficients``: its steps belong to the per-sample samplers."""
    while model is not None:
        if isinstance(model, TimePredictorSampling) and model.use_in_coefficients:
            return True
        model = getattr(model, "inner", None)
    return False
