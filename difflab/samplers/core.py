"""Samplers: short functions with one signature over a model callable and a time grid.

    result = sampler(model, x, ts, *, y=None, generator=None, noise_sampler=None, callback=None,
                     return_trajectory=False, progress=False, clip_denoised=False, **options)

* ``x``: (B, ...) the state at time ``ts[0]`` (pure noise for ts[0] = 1, or any intermediate x_t).
* ``ts``: (N+1,) decreasing times in [0, 1]; the sampler steps ts[n] -> ts[n+1]. For a discrete
  model, a grid on its trained times (:func:`difflab.samplers.time_grid`) is exactly a respaced process.
* ``noise_sampler(n, like) -> tensor``: the fresh noise of step n (default: ``randn`` from ``generator``).
* ``callback(i, t, x, x0_pred)`` after every step: x is the state at t = ts[i+1], x0_pred the x̂0 the
  step used. ``return_trajectory`` is built on the same hook.
* ``clip_denoised``: x̂0 clamped to [-1, 1] (and ε re-derived from it) wherever a step forms x̂0.
* Samplers run under ``torch.no_grad()``; a wrapper that needs gradients (guidance) enables them itself.
* Returns a :class:`SampleResult` with the final x, the network evaluations used, and on request the
  trajectory (N+1, B, ...) and the x̂0 predicted at every step (N, B, ...) — progressive generation.

Samplers know no method: a method that needs another step rule (per-sample times, shifted times) has
its own sampler beside the method and registers it (:mod:`difflab.samplers.registry`).
"""
from __future__ import annotations

import math

import torch

from difflab.process.gaussian import GaussianDiffusion
from difflab.samplers.base import Run, SampleResult, check_grid, noise_fn


def grid_diffusion(schedule, ts: torch.Tensor, var_type: str = "fixed_small") -> GaussianDiffusion:
    """The discrete process whose steps are the grid's intervals (ts must end at 0): a respaced
    process with betas re-derived from ᾱ at the grid times."""
    if float(ts[-1]) != 0.0:
        raise ValueError(f"this sampler's grid must end at t = 0 (the data), got {float(ts[-1])}")
    times = ts[:-1].flip(0)
    return GaussianDiffusion.from_alphas_cumprod(schedule.alpha_bar(times), var_type=var_type, times=times, schedule=schedule)


# ---------------------------------------------------------------------------- discrete-step samplers
@torch.no_grad()
def ancestral(model, x, ts, *, y=None, clip_denoised=False, var_type=None, generator=None, noise_sampler=None,
              callback=None, return_trajectory=False, progress=False) -> SampleResult:
    """DDPM ancestral sampling (Ho et al. 2020, Alg. 2) with the reverse variance of ``var_type``
    (default the model's); on a coarse grid this is Improved DDPM's respaced sampler."""
    ts = check_grid(ts)
    diff = grid_diffusion(model.schedule, ts, var_type or model.var_type)
    noise = noise_fn(noise_sampler, generator)
    run = Run(model, x, ts, y, callback=callback, return_trajectory=return_trajectory, progress=progress, desc="ancestral")
    N = diff.num_timesteps
    for n in range(N):
        k = N - 1 - n
        i = torch.full((x.shape[0],), k, dtype=torch.long, device=x.device)
        out = run.eps(x, float(diff.times[k]))
        p = diff.p_mean_variance(out, x, i, clip_denoised, var_type or model.var_type)
        x = p["mean"] + torch.exp(0.5 * p["log_variance"]) * noise(n, x) if k > 0 else p["mean"]
        run.step(n, x, p["pred_x0"])
    return run.result(x)


@torch.no_grad()
def ddim(model, x, ts, *, y=None, eta=0.0, clip_denoised=False, generator=None, noise_sampler=None, callback=None,
         return_trajectory=False, progress=False) -> SampleResult:
    """DDIM (Song et al. 2021): x_s = √ᾱ_s x̂0 + √(1-ᾱ_s-σ²) ε̂ + σ z, σ = η·√((1-ᾱ_s)/(1-ᾱ_t)·(1-ᾱ_t/ᾱ_s))."""
    ts = check_grid(ts)
    ab = model.schedule.alpha_bar(ts).tolist()
    noise = noise_fn(noise_sampler, generator)
    run = Run(model, x, ts, y, callback=callback, return_trajectory=return_trajectory, progress=progress, desc="ddim",
              clip=clip_denoised)
    for n in range(len(ts) - 1):
        a_t, a_s = ab[n], ab[n + 1]
        x0, eps, _ = run.denoised(x, float(ts[n]), math.sqrt(a_t), math.sqrt(1 - a_t))
        sig = eta * math.sqrt(max((1 - a_s) / (1 - a_t) * (1 - a_t / a_s), 0.0))
        x = math.sqrt(a_s) * x0 + math.sqrt(max(1 - a_s - sig**2, 0.0)) * eps
        if sig > 0:
            x = x + sig * noise(n, x)
        run.step(n, x, x0)
    return run.result(x)


# ---------------------------------------------------------------------------- SDE / ODE samplers
def _coefs(model, ts):
    s = model.schedule
    return s.alpha(ts).tolist(), s.sigma(ts).tolist(), s.beta(ts).tolist()


def final_denoise(run: Run, model, x, ts, denoise_last: bool):
    """Tweedie's x̂0 at the last grid time (one more evaluation) when the grid stops above 0."""
    t = float(ts[-1])
    if not denoise_last or t == 0.0:
        return x
    s = model.schedule
    return run.denoised(x, t, float(s.alpha(t)), float(s.sigma(t)))[0]


def pf_drift(eps, x, beta, sigma):
    """Probability-flow ODE dx/dt = -½β(t) (x + ∇log p_t) = -½β(t) (x - ε/σ)."""
    return -0.5 * beta * (x - eps / sigma)


@torch.no_grad()
def euler_maruyama(model, x, ts, *, y=None, denoise=True, clip_denoised=False, generator=None, noise_sampler=None,
                   callback=None, return_trajectory=False, progress=False) -> SampleResult:
    """Euler–Maruyama on the reverse VP-SDE dx = [-½β x - β ∇log p_t] dt + √β dw̄ (Song et al. 2021);
    the last step adds no noise."""
    ts = check_grid(ts)
    al, sg, be = _coefs(model, ts)
    noise = noise_fn(noise_sampler, generator)
    run = Run(model, x, ts, y, callback=callback, return_trajectory=return_trajectory, progress=progress,
              desc="euler-maruyama", clip=clip_denoised)
    N = len(ts) - 1
    for n in range(N):
        dt = float(ts[n + 1] - ts[n])
        a, s, b = al[n], sg[n], be[n]
        x0, eps, _ = run.denoised(x, float(ts[n]), a, s)
        x = x + (-0.5 * b * x + b / s * eps) * dt
        if n < N - 1:
            x = x + math.sqrt(max(b * -dt, 0.0)) * noise(n, x)
        run.step(n, x, x0)
    return run.result(final_denoise(run, model, x, ts, denoise))


@torch.no_grad()
def pf_euler(model, x, ts, *, y=None, denoise=True, clip_denoised=False, generator=None, noise_sampler=None,
             callback=None, return_trajectory=False, progress=False) -> SampleResult:
    """Euler's method on the probability-flow ODE (deterministic; one evaluation per step)."""
    ts = check_grid(ts)
    al, sg, be = _coefs(model, ts)
    run = Run(model, x, ts, y, callback=callback, return_trajectory=return_trajectory, progress=progress,
              desc="pf-euler", clip=clip_denoised)
    for n in range(len(ts) - 1):
        x0, eps, _ = run.denoised(x, float(ts[n]), al[n], sg[n])
        x = x + float(ts[n + 1] - ts[n]) * pf_drift(eps, x, be[n], sg[n])
        run.step(n, x, x0)
    return run.result(final_denoise(run, model, x, ts, denoise))


@torch.no_grad()
def pf_heun(model, x, ts, *, y=None, denoise=True, clip_denoised=False, generator=None, noise_sampler=None,
            callback=None, return_trajectory=False, progress=False) -> SampleResult:
    """Heun's second-order method on the probability-flow ODE (Karras et al. 2022, Alg. 1 without
    churn): two evaluations per step, Euler on a last step that ends at t = 0."""
    ts = check_grid(ts)
    al, sg, be = _coefs(model, ts)
    run = Run(model, x, ts, y, callback=callback, return_trajectory=return_trajectory, progress=progress,
              desc="pf-heun", clip=clip_denoised)
    for n in range(len(ts) - 1):
        dt = float(ts[n + 1] - ts[n])
        x0, eps, _ = run.denoised(x, float(ts[n]), al[n], sg[n])
        d = pf_drift(eps, x, be[n], sg[n])
        x_next = x + dt * d
        if float(ts[n + 1]) > 0:
            _, eps2, _ = run.denoised(x_next, float(ts[n + 1]), al[n + 1], sg[n + 1])
            x_next = x + dt * 0.5 * (d + pf_drift(eps2, x_next, be[n + 1], sg[n + 1]))
        x = x_next
        run.step(n, x, x0)
    return run.result(final_denoise(run, model, x, ts, denoise))


@torch.no_grad()
def pf_adaptive(model, x, ts, *, y=None, rtol=1e-5, atol=1e-5, method="dopri5", denoise=True, clip_denoised=False,
                generator=None, noise_sampler=None, callback=None, return_trajectory=False,
                progress=False) -> SampleResult:
    """The probability-flow ODE solved by an adaptive Runge–Kutta method (torchdiffeq); the
    trajectory, if asked, is the dense solution at the grid times (the callback sees those too)."""
    from torchdiffeq import odeint

    ts = check_grid(ts)
    if float(ts[-1]) == 0.0:
        raise ValueError("pf_adaptive needs a grid that stops above t = 0 (e.g. 1e-3): the ODE is singular at 0")
    sched = model.schedule
    run = Run(model, x, ts, y, callback=None, return_trajectory=False, progress=False, desc="pf-adaptive",
              clip=clip_denoised)
    t_end = float(ts[-1])

    def f(t, xt):
        # Runge–Kutta stages may overshoot the end time (the answer there is interpolated); the
        # drift is frozen at t_end beyond it, since below 0 the schedule has no meaning.
        tf = max(float(t), t_end)
        _, eps, _ = run.denoised(xt, tf, float(sched.alpha(tf)), float(sched.sigma(tf)))
        return pf_drift(eps, xt, float(sched.beta(tf)), float(sched.sigma(tf)))

    dense = return_trajectory or callback is not None
    t_eval = ts.to(x.device, x.dtype) if dense else torch.stack([ts[0], ts[-1]]).to(x.device, x.dtype)
    sol = odeint(f, x, t_eval, rtol=rtol, atol=atol, method=method)
    if callback is not None:
        for i in range(1, len(ts)):
            callback(i - 1, float(ts[i]), sol[i], None)
    out = final_denoise(run, model, sol[-1], ts, denoise)
    return SampleResult(x=out, nfe=run.nfe, times=ts, trajectory=sol if return_trajectory else None)


__all__ = ["ancestral", "ddim", "euler_maruyama", "grid_diffusion", "pf_adaptive", "final_denoise", "pf_drift", "pf_euler", "pf_heun"]
