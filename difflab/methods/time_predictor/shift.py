"""The TP family's training-free relatives: wrappers that choose the time a model is evaluated at (or
scale its ε) without a trained g. Each makes a new model from an old one and works with every sampler.

    TimeShiftSampling(model, data_var, window=0.1, cutoff=0.3)   # Li et al. 2024, the variance criterion
    ConstantShift(model, shift=0.01)                             # evaluate at t + ξ
    EpsilonScaling(model, scale=1.005, slope=0.0)                # Ning et al. 2023: ε / (b + k t)

Shapes: x (B, ...); times (B,) float64 in [0, 1] (t = 0 data, t = 1 noise).
"""
from __future__ import annotations

from dataclasses import replace

import torch

from difflab.errors import ConfigError
from difflab.models import ModelOutput, ModelWrapper
from difflab.process.schedules import F64, DiscreteSchedule

from .wrapper import TimePredictorSampling


def pixel_variance(x: torch.Tensor) -> torch.Tensor:
    """(B,) float64: each sample's variance over its own coordinates (pixels), about its own mean."""
    return x.detach().reshape(x.shape[0], -1).to(F64).var(dim=1, unbiased=False)


def marginal_pixel_variance(schedule, t, data_var: float, dim: int) -> torch.Tensor:
    """E over q(x_t) of :func:`pixel_variance`: α_t² m + σ_t² (D - 1)/D, with m the data's mean
    per-sample pixel variance and D the number of coordinates (x_t = α_t x0 + σ_t z, z independent)."""
    t = torch.as_tensor(t, dtype=F64)
    return schedule.alpha(t) ** 2 * data_var + schedule.sigma(t) ** 2 * (dim - 1) / dim


def mixture_pixel_variance(mixture) -> float:
    """m of a :class:`~difflab.process.toy.GaussianMixture` in closed form: Σ_k w_k (tr(C Σ_k) + μ_kᵀ C μ_k) / D,
    C = I - 11ᵀ/D (the centring matrix: pixel variance is about each sample's own mean)."""
    D = mixture.dim
    C = torch.eye(D, dtype=F64) - 1.0 / D
    covs, mu = mixture.covs, mixture.means
    per = torch.einsum("ij,kji->k", C, covs) + torch.einsum("ki,ij,kj->k", mu, C, mu)
    return float((mixture.weights * per).sum() / D)


def data_pixel_variance(x0: torch.Tensor) -> float:
    """m for :class:`TimeShiftSampling`: the mean of :func:`pixel_variance` over data samples (N, ...)."""
    return float(pixel_variance(x0).mean())


class TimeShiftSampling(TimePredictorSampling):
    """Time-Shift Sampler (Li et al., ICLR 2024): evaluate at the time in a window whose marginal pixel variance best matches the state's.

    At every evaluation at a nominal time t > ``cutoff``, each sample's own pixel variance s²(x) is
    compared with :func:`marginal_pixel_variance` at the candidate times τ in [t - window, t + window]
    (the trained times for a discrete process, a grid of ``resolution`` times otherwise, and t itself);
    the model is evaluated at the τ that minimises |s²(x) - v(τ)| (ties: the nominal time). At or below
    the cutoff, and with ``window=0``, the nominal time is kept exactly. The sampler's arithmetic stays
    the grid's (``x0_readout``: x̂0 read at τ; ``use_in_coefficients``: the per-sample samplers, as in
    the paper's TS-DDIM/TS-DDPM), see :class:`TimePredictorSampling`. ``record=True`` keeps every
    call's (nominal, chosen) times in ``history`` (the chosen-against-nominal diagnostic).

    Args:
        data_var: m, the data's mean per-sample pixel variance (:func:`data_pixel_variance`).
        window: the half-width of the window, in units of t (0.02 is 20 of 1000 trained steps).
        cutoff: no shift at nominal times at or below this.
    """

    def __init__(self, model, data_var: float, *, window: float = 0.05, cutoff: float = 0.0,
                 resolution: int = 1000, use_in_coefficients: bool = False, x0_readout: bool = False,
                 record: bool = False):
        if not (window >= 0 and window <= 1):
            raise ConfigError(f"time-shift window {window}; expected a half-width in t in [0, 1]")
        if not 0 <= cutoff <= 1:
            raise ConfigError(f"time-shift cutoff {cutoff}; expected a time in [0, 1]")
        if not data_var >= 0:
            raise ConfigError(f"time-shift data variance {data_var}; expected a per-pixel variance >= 0")
        super().__init__(model, None, window=window, use_in_coefficients=use_in_coefficients,
                         x0_readout=x0_readout, record=record)
        self.data_var, self.cutoff = float(data_var), float(cutoff)
        sched = model.schedule
        if isinstance(sched, DiscreteSchedule):
            cand = torch.arange(1, sched.num_timesteps + 1, dtype=F64) / sched.num_timesteps
        else:
            cand = torch.linspace(self.clamp[0], 1.0, int(resolution), dtype=F64)
        self.candidates = cand[(cand >= self.clamp[0]) & (cand <= self.clamp[1])]

    def _candidate_variances(self, dim: int) -> torch.Tensor:
        """v(τ) at every candidate time for data of ``dim`` coordinates (computed once per dim)."""
        cache = self.__dict__.setdefault("_v", {})
        if dim not in cache:
            cache[dim] = marginal_pixel_variance(self.schedule, self.candidates, self.data_var, dim)
        return cache[dim]

    def match(self, s2: torch.Tensor, nominal: torch.Tensor, dim: int) -> torch.Tensor:
        """(B,) float64: for pixel variances s2 (B,) at nominal times (B,), the time within the window
        (candidates and the nominal time itself) whose v(τ) is closest; ties go to the nominal time."""
        cand = torch.cat([nominal[:, None], self.candidates.expand(nominal.shape[0], -1)], dim=1)  # (B, 1 + K)
        v = torch.cat([marginal_pixel_variance(self.schedule, nominal, self.data_var, dim)[:, None],
                       self._candidate_variances(dim).expand(nominal.shape[0], -1)], dim=1)
        cost = (s2[:, None] - v).abs().masked_fill((cand - nominal[:, None]).abs() > self.window + 1e-12, float("inf"))
        return cand.gather(1, cost.argmin(dim=1, keepdim=True)).squeeze(1)  # argmin: first minimum = nominal on ties

    def choose_time(self, x: torch.Tensor, nominal: torch.Tensor) -> torch.Tensor:
        nominal = nominal.detach().to("cpu", F64)
        if self.window == 0:
            return nominal.to(x.device)
        chosen = self.match(pixel_variance(x).cpu(), nominal, x[0].numel())
        return torch.where(nominal > self.cutoff, chosen, nominal).to(x.device)


class StepTimeMap(TimePredictorSampling):
    """A per-step time map: at nominal time t_k the model is evaluated at τ_k (one time per step, every sample; the Time-Shift criterion averaged over a pilot run, :func:`calibrate_step_times`).

    ``mapping``: {nominal t: τ}; a nominal time not in it (to 1e-9) is kept. An identity map is the
    plain model bit for bit.
    """

    def __init__(self, model, mapping: dict, *, use_in_coefficients: bool = False, x0_readout: bool = False,
                 record: bool = False):
        super().__init__(model, None, use_in_coefficients=use_in_coefficients, x0_readout=x0_readout, record=record)
        self.mapping = {float(k): float(v) for k, v in mapping.items()}
        self._keys = torch.tensor(sorted(self.mapping), dtype=F64)
        self._vals = torch.tensor([self.mapping[k] for k in sorted(self.mapping)], dtype=F64)

    def choose_time(self, x: torch.Tensor, nominal: torch.Tensor) -> torch.Tensor:
        if not self.mapping:
            return nominal
        nom = nominal.detach().to("cpu", F64)
        j = (nom[:, None] - self._keys[None, :]).abs().argmin(dim=1)
        hit = (nom - self._keys[j]).abs() <= 1e-9
        return torch.where(hit, self._vals[j], nom).to(nominal.device)


@torch.no_grad()
def calibrate_step_times(model, data_var: float, shape, *, sampler: str = "ddim", steps: int = 10,
                         window: float = 0.1, cutoff: float = 0.0, n: int = 512, seed: int = 12345,
                         **options) -> dict:
    """{nominal t_k: τ_k} for :class:`StepTimeMap`: a pilot run of the plain ``steps``-step ``sampler``
    (``n`` samples of ``shape`` per sample, its own seed), and at each evaluated time t_k > ``cutoff``
    the time τ within ±``window`` whose :func:`marginal_pixel_variance` is closest to the mean pixel
    variance of the pilot's states there (the mean over n states reads the noise level far better
    than one image's variance does; the map is fixed afterwards, so samples do not depend on their
    batch)."""
    from difflab.samplers import SAMPLERS, time_grid

    grid = time_grid(model.schedule, steps)
    x = torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed))
    states = {float(grid[0]): x}
    SAMPLERS[sampler](model, x, grid, generator=torch.Generator().manual_seed(seed + 1),
                      callback=lambda i, t, xs, x0: states.__setitem__(float(grid[i + 1]), xs), **options)
    probe = TimeShiftSampling(model, data_var, window=window, cutoff=cutoff)
    dim = int(torch.tensor(shape).prod())
    times = [t for t in states if t > cutoff and t > 0]
    s2 = torch.tensor([float(pixel_variance(states[t]).mean()) for t in times], dtype=F64)
    chosen = probe.match(s2, torch.tensor(times, dtype=F64), dim)
    return dict(zip(times, chosen.tolist()))


class ConstantShift(TimePredictorSampling):
    """A constant shift of the evaluation time (Chen et al.'s asymmetric interval, the seed's t + ξ): the model is evaluated at clamp(t + ξ).

    ``shift=0`` is the plain model bit for bit; the clamp defaults as for :class:`TimePredictorSampling`.
    """

    def __init__(self, model, shift: float, *, clamp=None, use_in_coefficients: bool = False,
                 x0_readout: bool = False, record: bool = False):
        if not -1 < shift < 1:
            raise ConfigError(f"time shift {shift}; expected a shift of t in (-1, 1), e.g. 0.01")
        super().__init__(model, None, clamp=clamp, use_in_coefficients=use_in_coefficients, x0_readout=x0_readout,
                         record=record)
        self.shift = float(shift)

    def choose_time(self, x: torch.Tensor, nominal: torch.Tensor) -> torch.Tensor:
        return nominal if self.shift == 0 else (nominal + self.shift).clamp(*self.clamp)


class EpsilonScaling(ModelWrapper):
    """Epsilon scaling (Ning et al. 2023): the model's ε divided by λ(t) = scale + slope · t, against exposure bias.

    ``scale=1, slope=0`` is the plain model bit for bit; the output's time is the inner one's.
    """

    def __init__(self, model, scale: float = 1.0, slope: float = 0.0):
        super().__init__(model)
        if not (scale > 0 and scale + slope > 0):
            raise ConfigError(f"epsilon scaling {scale} + {slope} t; expected λ(t) > 0 on [0, 1], e.g. 1.005")
        self.scale, self.slope = float(scale), float(slope)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> ModelOutput:
        out = self.inner(x, t, y)
        if self.slope == 0:
            return out if self.scale == 1 else replace(out, eps=out.eps / self.scale)
        tc = torch.as_tensor(out.t, dtype=F64).reshape(-1).expand(x.shape[0]).to("cpu")
        lam = (self.scale + self.slope * tc).to(device=x.device, dtype=out.eps.dtype).reshape((-1,) + (1,) * (x.dim() - 1))
        return replace(out, eps=out.eps / lam)


__all__ = ["ConstantShift", "EpsilonScaling", "StepTimeMap", "TimeShiftSampling", "calibrate_step_times", "data_pixel_variance", "marginal_pixel_variance",
           "mixture_pixel_variance", "pixel_variance"]
