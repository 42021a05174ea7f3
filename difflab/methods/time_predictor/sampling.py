"""Per-sample-time samplers: TP sampling with its coefficients at g(x) (the seed's Algorithm 3).

The shared samplers (:mod:`difflab.samplers`) take a step's coefficients (α, σ, β, ᾱ) from the
grid, so with :class:`TimePredictorSampling` only the model sees g(x) (difflab's default). The
original algorithm also takes β(g(x)) and the score s(x, g(x)) = -ε̂ / σ(g(x)) in the
Euler–Maruyama step. The samplers here do that for every sampler: same signature as the shared
ones, ``sampler(model, x, ts, *, y=None, generator=None, noise_sampler=None, callback=None,
return_trajectory=False, progress=False, clip_denoised=False, **options) -> SampleResult`` (built on
:class:`difflab.samplers.base.Run`), with α, σ, β taken per sample at the output's own
time ``out.t`` (B,) (for TP: the clamped g(x)); the step sizes and the times stepped to stay the
grid's. With a model whose ``out.t`` is the grid time they reproduce the shared samplers (a
second route to the same numbers). Shapes: x (B, ...); ts (N+1,) decreasing in [0, 1].

:func:`tp_sample` and :func:`sampler_for` pick these for a model that asks for them
(``TimePredictorSampling(..., use_in_coefficients=True)``, anywhere in a wrapper stack) and the
shared samplers otherwise.
"""
from __future__ import annotations

import math

import torch

from difflab.process.gaussian import reverse_log_variance
from difflab.process.param import bcast, denoise
from difflab.process.schedules import F64
from difflab.samplers import SAMPLERS, SampleResult, get_spec, grid_diffusion, grid_for, sample
from difflab.samplers.base import Run, check_grid, noise_fn
from difflab.samplers.core import pf_drift

from .wrapper import wants_per_sample_coefficients


def _coefs_at(model, out, like):
    """(α, σ, β) at the output's own time ``out.t``, each (B, 1, ...) like ``like``: per sample, since
    a predicted time g(x) differs per sample from the grid's."""
    t, s = out.t.detach().to("cpu", F64), model.schedule
    return bcast(s.alpha(t), like), bcast(s.sigma(t), like), bcast(s.beta(t), like)


def _sqrt(v):
    """√max(v, 0) of a grid float (math, as always) or of a per-sample tensor (a predicted time's)."""
    return math.sqrt(max(v, 0.0)) if isinstance(v, float) else v.clamp_min(0.0).sqrt()


def _posterior_step_at(out, x, ab_t, t_to: float, schedule, clip_denoised: bool, var_type: str):
    """The ancestral step from per-sample times t (given as ᾱ_t, (B, 1, ...)) to the grid time
    ``t_to``: q(x_s | x_t, x̂0) of the two-time process ᾱ_{t|s} = ᾱ_t / ᾱ_s. A sample already at or
    below s (t <= s) stays where it is: the step's coefficients are taken at t = s (mean x, std 0),
    the limit as t decreases to s (std 1e-10: the variance's log is floored at 1e-20). Returns (mean,
    std, x̂0); the variance is the shared dispatch's (:func:`~difflab.process.gaussian.reverse_log_variance`),
    with this step's β and β̃."""
    ab_s = float(schedule.alpha_bar(t_to))
    x0, _ = denoise(out.eps, x, ab_t.sqrt(), (1 - ab_t).clamp_min(0).sqrt(), clip_denoised)
    ab_t = ab_t.clamp(max=ab_s)
    a_step = ab_t / ab_s
    b_step = 1 - a_step
    denom = (1 - ab_t).clamp_min(1e-20)
    mean = math.sqrt(ab_s) * b_step / denom * x0 + a_step.sqrt() * (1 - ab_s) / denom * x
    small = b_step * (1 - ab_s) / denom
    log_large = torch.log(b_step.clamp_min(1e-20))
    log_var = reverse_log_variance(var_type, torch.log(small.clamp_min(1e-20)), log_large, log_large, out.var_out)
    return mean, torch.exp(0.5 * log_var), x0


# ---------------------------------------------------------------------------- discrete-step samplers
@torch.no_grad()
def tp_ancestral(model, x, ts, *, y=None, clip_denoised=False, var_type=None, generator=None, noise_sampler=None,
                 callback=None, return_trajectory=False, progress=False) -> SampleResult:
    """DDPM ancestral sampling whose every step is the posterior from ᾱ(out.t) to the next grid time."""
    ts = check_grid(ts)
    vt = var_type or model.var_type
    diff = grid_diffusion(model.schedule, ts, vt)  # the grid's times (and its check that ts ends at 0)
    noise = noise_fn(noise_sampler, generator)
    run = Run(model, x, ts, y, callback=callback, return_trajectory=return_trajectory, progress=progress,
              desc="tp-ancestral")
    N = diff.num_timesteps
    for n in range(N):
        k = N - 1 - n
        out = run.eps(x, float(diff.times[k]))
        a = _coefs_at(model, out, x)[0]
        mean, std, x0 = _posterior_step_at(out, x, a**2, float(ts[n + 1]), model.schedule, clip_denoised, vt)
        x = mean + std * noise(n, x) if k > 0 else mean
        run.step(n, x, x0)
    return run.result(x)


@torch.no_grad()
def tp_ddim(model, x, ts, *, y=None, eta=0.0, clip_denoised=False, generator=None, noise_sampler=None, callback=None,
            return_trajectory=False, progress=False) -> SampleResult:
    """DDIM with ᾱ_t = α(out.t)² per sample and ᾱ_s the next grid time's."""
    ts = check_grid(ts)
    ab = model.schedule.alpha_bar(ts).tolist()
    noise = noise_fn(noise_sampler, generator)
    run = Run(model, x, ts, y, callback=callback, return_trajectory=return_trajectory, progress=progress,
              desc="tp-ddim")
    for n in range(len(ts) - 1):
        out = run.eps(x, float(ts[n]))
        a_t, a_s = _coefs_at(model, out, x)[0] ** 2, ab[n + 1]
        x0, eps = denoise(out.eps, x, _sqrt(a_t), _sqrt(1 - a_t), clip_denoised)
        sig = eta * _sqrt((1 - a_s) / (1 - a_t) * (1 - a_t / a_s))
        x = _sqrt(a_s) * x0 + _sqrt(1 - a_s - sig**2) * eps
        if eta > 0:
            x = x + sig * noise(n, x)
        run.step(n, x, x0)
    return run.result(x)


# ---------------------------------------------------------------------------- SDE / ODE samplers
def _denoised_at(run: Run, model, x, t: float):
    """(x̂0, ε, α, σ, β) from one evaluation at grid time t, with x̂0 and the coefficients at out.t."""
    out = run.eps(x, t)
    a, s, b = _coefs_at(model, out, x)
    x0, eps = denoise(out.eps, x, a, s, run.clip)
    return x0, eps, a, s, b


def _final_denoise(run: Run, model, x, ts, denoise_last: bool):
    """Tweedie's x̂0 at the last grid time (one more evaluation) when the grid stops above 0."""
    if not denoise_last or float(ts[-1]) == 0.0:
        return x
    return _denoised_at(run, model, x, float(ts[-1]))[0]


@torch.no_grad()
def tp_euler_maruyama(model, x, ts, *, y=None, denoise=True, clip_denoised=False, generator=None, noise_sampler=None,
                      callback=None, return_trajectory=False, progress=False) -> SampleResult:
    """Euler–Maruyama on the reverse VP-SDE with β and σ at out.t (Algorithm 3):
    x ← x + [-½β(t̂) x + β(t̂)/σ(t̂) ε̂] dt + √(β(t̂) |dt|) z, t̂ = g(x); the last step adds no noise."""
    ts = check_grid(ts)
    noise = noise_fn(noise_sampler, generator)
    run = Run(model, x, ts, y, callback=callback, return_trajectory=return_trajectory, progress=progress,
              desc="tp-euler-maruyama", clip=clip_denoised)
    N = len(ts) - 1
    for n in range(N):
        dt = float(ts[n + 1] - ts[n])
        x0, eps, _, s, b = _denoised_at(run, model, x, float(ts[n]))
        x = x + (-0.5 * b * x + b / s * eps) * dt
        if n < N - 1:
            x = x + _sqrt(b * -dt) * noise(n, x)
        run.step(n, x, x0)
    return run.result(_final_denoise(run, model, x, ts, denoise))


@torch.no_grad()
def tp_pf_euler(model, x, ts, *, y=None, denoise=True, clip_denoised=False, generator=None, noise_sampler=None,
                callback=None, return_trajectory=False, progress=False) -> SampleResult:
    """Euler's method on the probability-flow ODE with β and σ at out.t."""
    ts = check_grid(ts)
    run = Run(model, x, ts, y, callback=callback, return_trajectory=return_trajectory, progress=progress,
              desc="tp-pf-euler", clip=clip_denoised)
    for n in range(len(ts) - 1):
        x0, eps, _, s, b = _denoised_at(run, model, x, float(ts[n]))
        x = x + float(ts[n + 1] - ts[n]) * pf_drift(eps, x, b, s)
        run.step(n, x, x0)
    return run.result(_final_denoise(run, model, x, ts, denoise))


@torch.no_grad()
def tp_pf_heun(model, x, ts, *, y=None, denoise=True, clip_denoised=False, generator=None, noise_sampler=None,
               callback=None, return_trajectory=False, progress=False) -> SampleResult:
    """Heun's method on the probability-flow ODE, each of the two drifts with β, σ at its output's
    time; Euler on a last step that ends at t = 0."""
    ts = check_grid(ts)
    run = Run(model, x, ts, y, callback=callback, return_trajectory=return_trajectory, progress=progress,
              desc="tp-pf-heun", clip=clip_denoised)
    for n in range(len(ts) - 1):
        dt = float(ts[n + 1] - ts[n])
        x0, eps, _, s, b = _denoised_at(run, model, x, float(ts[n]))
        d = pf_drift(eps, x, b, s)
        x_next = x + dt * d
        if float(ts[n + 1]) > 0:
            _, eps2, _, s2, b2 = _denoised_at(run, model, x_next, float(ts[n + 1]))
            x_next = x + dt * 0.5 * (d + pf_drift(eps2, x_next, b2, s2))
        x = x_next
        run.step(n, x, x0)
    return run.result(_final_denoise(run, model, x, ts, denoise))


@torch.no_grad()
def tp_pf_adaptive(model, x, ts, *, y=None, rtol=1e-5, atol=1e-5, method="dopri5", denoise=True, clip_denoised=False,
                   generator=None, noise_sampler=None, callback=None, return_trajectory=False,
                   progress=False) -> SampleResult:
    """The probability-flow ODE (β, σ at out.t) solved by an adaptive Runge–Kutta method
    (torchdiffeq); the trajectory, if asked, is the dense solution at the grid times (the callback
    sees those too)."""
    from torchdiffeq import odeint

    ts = check_grid(ts)
    if float(ts[-1]) == 0.0:
        raise ValueError("pf_adaptive needs a grid that stops above t = 0 (e.g. 1e-3): the ODE is singular at 0")
    run = Run(model, x, ts, y, callback=None, return_trajectory=False, progress=False, desc="tp-pf-adaptive",
              clip=clip_denoised)
    t_end = float(ts[-1])

    def f(t, xt):
        # Runge–Kutta stages may overshoot the end time (the answer there is interpolated); the
        # drift is frozen at t_end beyond it, since below 0 the schedule has no meaning.
        _, eps, _, s, b = _denoised_at(run, model, xt, max(float(t), t_end))
        return pf_drift(eps, xt, b, s)

    dense = return_trajectory or callback is not None
    t_eval = ts.to(x.device, x.dtype) if dense else torch.stack([ts[0], ts[-1]]).to(x.device, x.dtype)
    sol = odeint(f, x, t_eval, rtol=rtol, atol=atol, method=method)
    if callback is not None:
        for i in range(1, len(ts)):
            callback(i - 1, float(ts[i]), sol[i], None)
    out = _final_denoise(run, model, sol[-1], ts, denoise)
    return SampleResult(x=out, nfe=run.nfe, times=ts, trajectory=sol if return_trajectory else None)


TP_SAMPLERS = {
    "ancestral": tp_ancestral,
    "ddim": tp_ddim,
    "euler_maruyama": tp_euler_maruyama,
    "pf_euler": tp_pf_euler,
    "pf_heun": tp_pf_heun,
    "pf_adaptive": tp_pf_adaptive,
}


# ---------------------------------------------------------------------------- the front door
def sampler_for(model, name: str):
    """The sampler ``name`` for ``model``: ``TP_SAMPLERS[name]`` when the model asks for per-sample
    coefficients (see :func:`wants_per_sample_coefficients`), else the shared ``SAMPLERS[name]``.
    Each has the facts of the shared sampler of that name (``difflab.samplers.get_spec(name)``)."""
    get_spec(name)  # ValueError with a did-you-mean for an unknown name
    if not wants_per_sample_coefficients(model):
        return SAMPLERS[name]
    if name not in TP_SAMPLERS:
        raise ValueError(f"sampler {name!r} has no per-sample-time form for TP with use_in_coefficients; "
                         f"expected one of {', '.join(sorted(TP_SAMPLERS))} (or TP without coefficients)")
    return TP_SAMPLERS[name]


def tp_sample(model, shape, *, sampler: str = "ddim", steps: int = 50, ts=None, x=None, t_max: float = 1.0, y=None,
              generator=None, device="cpu", dtype=torch.float32, t_min: float | None = None, spacing: str = "auto",
              **options) -> SampleResult:
    """:func:`difflab.samplers.sample` for any model, TP with coefficients included: ``shape[0]``
    samples from prior noise at t_max (or the given ``x`` at ``t_max``) through
    :func:`sampler_for`'s sampler, on the same default grid."""
    if not wants_per_sample_coefficients(model):
        return sample(model, shape, sampler=sampler, steps=steps, ts=ts, x=x, t_max=t_max, y=y, generator=generator,
                      device=device, dtype=dtype, t_min=t_min, spacing=spacing, **options)
    fn = sampler_for(model, sampler)
    if ts is None:
        ts = grid_for(sampler, model.schedule, steps, t_max=t_max, t_min=t_min, spacing=spacing)
    if x is None:
        x = torch.randn(shape, generator=generator, dtype=dtype, device=device)
    return fn(model, x, ts, y=y, generator=generator, **options)
