"""The sampler registry: each sampler's name, function and facts, stated once.

Code that must know how a sampler behaves (how many evaluations a step costs, whether it draws
noise, whether its grid must reach t = 0, which options it takes) asks :data:`SPECS` instead of
checking names. A new sampler (in difflab or beside a method) is one :func:`register_sampler` call,
and the sampler contract tests then run over it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from difflab.samplers import core


@dataclass(frozen=True)
class SamplerSpec:
    """Facts about a sampler.

    stochastic: draws fresh noise (so the seed matters after x_T).
    evals_per_step: network evaluations per grid interval (None: adaptive, the solver chooses).
    last_step_evals: evaluations of a last interval that ends at t = 0 (Heun: 1, Euler there).
    clip: takes ``clip_denoised`` (x̂0 clamped to [-1, 1] wherever a step forms it).
    ends_at_zero: the grid must end at t = 0 (a discrete reverse chain down to the data).
    default_t_min: where the default grid stops (the adaptive ODE solver cannot reach 0).
    respaces: steps from ᾱ at the grid times alone, so a grid of a discrete model's trained times is
        exactly the respaced process over them (ancestral, DDIM); samplers that use β(t) integrate the
        continuous-time view instead.
    default_grid: the grid spacing :func:`difflab.samplers.sample` uses when none is asked for ("auto":
        trailing trained steps for a discrete model, uniform in t otherwise).
    options: the sampler's own keyword options beyond the shared signature.
    """

    name: str
    fn: Callable
    stochastic: bool
    evals_per_step: int | None = 1
    last_step_evals: int | None = None
    clip: bool = True
    ends_at_zero: bool = False
    default_t_min: float = 0.0
    respaces: bool = False
    default_grid: str = "auto"
    options: tuple[str, ...] = field(default_factory=tuple)

    def nfe(self, steps: int, t_min: float = 0.0) -> int | None:
        """Evaluations of a run over ``steps`` intervals (None for an adaptive sampler)."""
        if self.evals_per_step is None:
            return None
        last = self.evals_per_step if self.last_step_evals is None or t_min > 0 else self.last_step_evals
        return self.evals_per_step * (steps - 1) + last

    def steps_for(self, nfe: int) -> int | None:
        """The most grid intervals (to t = 0) whose evaluations fit in a budget of ``nfe``; None for an
        adaptive sampler, or when no run of a multi-evaluation sampler fits with two intervals or more
        (one Heun interval to 0 is just Euler)."""
        if self.evals_per_step is None or nfe < 1:
            return None
        steps = max((s for s in range(1, nfe + 1) if self.nfe(s) <= nfe), default=None)
        if steps is None or (self.evals_per_step > 1 and steps < 2):
            return None
        return steps


SPECS: dict[str, SamplerSpec] = {}
SAMPLERS: dict[str, Callable] = {}  # name -> function, for callers that only need to call one


def register_sampler(spec: SamplerSpec) -> SamplerSpec:
    """Add a sampler to the registry (ValueError if the name is taken by another function)."""
    old = SPECS.get(spec.name)
    if old is not None and old.fn is not spec.fn:
        raise ValueError(f"a sampler named {spec.name!r} is already registered")
    SPECS[spec.name] = spec
    SAMPLERS[spec.name] = spec.fn
    return spec


for _spec in (
    SamplerSpec("ancestral", core.ancestral, stochastic=True, ends_at_zero=True, respaces=True, options=("var_type",)),
    SamplerSpec("ddim", core.ddim, stochastic=False, respaces=True, options=("eta",)),
    SamplerSpec("euler_maruyama", core.euler_maruyama, stochastic=True, options=("denoise",)),
    SamplerSpec("pf_euler", core.pf_euler, stochastic=False, options=("denoise",)),
    SamplerSpec("pf_heun", core.pf_heun, stochastic=False, evals_per_step=2, last_step_evals=1, options=("denoise",)),
    SamplerSpec("pf_adaptive", core.pf_adaptive, stochastic=False, evals_per_step=None, default_t_min=1e-3,
                options=("rtol", "atol", "method", "denoise")),
):
    register_sampler(_spec)


def get_spec(name: str) -> SamplerSpec:
    """The spec of a registered sampler, or ValueError listing them (with a did-you-mean)."""
    if name not in SPECS:
        import difflib

        near = difflib.get_close_matches(name, SPECS, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ValueError(f"unknown sampler {name!r}; expected one of {sorted(SPECS)}{hint}")
    return SPECS[name]


__all__ = ["SAMPLERS", "SPECS", "SamplerSpec", "get_spec", "register_sampler"]
