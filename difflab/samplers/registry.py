"""The sampler registry: each sampler's name, function and facts, stated once.

Code that must know how a sampler behaves (how many evaluations a step costs, whether it draws
noise, whether its grid must reach t = 0, which options it takes) asks :data:`SPECS` instead of
checking names. A new sampler (in difflab or beside a method) is one :func:`register_sampler` call,
and the sampler contract tests then run over it.
"""
from __future__ import annotations

from typing import Callable

from difflab.samplers import core, solvers
from difflab.samplers.base import SamplerSpec


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
for _spec in solvers.SPECS:  # the few-step solvers (difflab/samplers/solvers.py)
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
