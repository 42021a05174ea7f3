"""Samplers: short functions with one signature over a model callable and a time grid.

    result = sampler(model, x, ts, *, y=None, generator=None, noise_sampler=None,
                     return_trajectory=False, progress=False, **options)

* ``x``: (B, ...) the state at time ``ts[0]`` (pure noise for ts[0] = 1, or any intermediate x_t).
* ``ts``: (N+1,) decreasing times in [0, 1]; the sampler steps ts[n] -> ts[n+1]. For a discrete
  model, a grid on its trained times (:func:`time_grid`) is exactly a respaced process.
* ``noise_sampler(n, like) -> tensor``: the fresh noise of step n (default: ``randn`` from ``generator``).
* Samplers run under ``torch.no_grad()``; a wrapper that needs gradients (guidance) enables them itself.
* Returns a :class:`SampleResult` with the final x, the network evaluations used, and on request the
  trajectory (N+1, B, ...) and the x̂0 predicted at every step (N, B, ...) — progressive generation.
* A step's coefficients (α, σ, β, ᾱ) are the grid's, unless the model output asks for its own time
  (``out.time_in_coefficients`` true, set by time-predictor sampling): then they are taken per sample
  at ``out.t`` (see :func:`_out_coefs`); the step sizes stay the grid's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..models import bcast
from ..process.gaussian import GaussianDiffusion
from ..process.respace import respace
from ..process.schedules import F64, DiscreteSchedule


@dataclass
class SampleResult:
    x: torch.Tensor
    nfe: int
    times: torch.Tensor
    trajectory: torch.Tensor | None = None
    x0_preds: torch.Tensor | None = None


class _Recorder:
    """Collects the trajectory and x̂0 predictions when asked, and counts network evaluations."""

    def __init__(self, x, ts, keep: bool):
        self.keep, self.ts, self.nfe = keep, ts, 0
        self.xs = [x] if keep else None
        self.x0s = [] if keep else None

    def step(self, x, x0=None):
        if self.keep:
            self.xs.append(x)
            if x0 is not None:
                self.x0s.append(x0)

    def result(self, x) -> SampleResult:
        traj = torch.stack(self.xs) if self.keep else None
        x0s = torch.stack(self.x0s) if self.keep and self.x0s else None
        return SampleResult(x=x, nfe=self.nfe, times=self.ts, trajectory=traj, x0_preds=x0s)


def _check_grid(ts) -> torch.Tensor:
    ts = torch.as_tensor(ts, dtype=F64).reshape(-1)
    if ts.numel() < 2 or not bool((ts[1:] < ts[:-1]).all()) or ts[-1] < 0 or ts[0] > 1:
        raise ValueError(f"time grid must be strictly decreasing in [0, 1] with at least 2 points, got {ts.tolist()[:6]}...")
    return ts


def _noise_fn(noise_sampler, generator):
    if noise_sampler is not None:
        return noise_sampler
    return lambda n, like: torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)


def _eval(model, x, t: float, y, rec: _Recorder):
    rec.nfe += 1
    return model(x, torch.full((x.shape[0],), t, dtype=F64, device=x.device), y)


def _out_coefs(model, out, like):
    """(α, σ, β) at the output's own time ``out.t``, each (B, 1, ...) like ``like``, when the output
    asks for it (``time_in_coefficients``); None otherwise, and the step uses the grid's numbers.

    Only time-predictor sampling sets the flag: its outputs belong to a predicted time g(x) that
    differs per sample from the grid's, and its original form (Algorithm 3) evaluates β and the
    score at that time too."""
    if not getattr(out, "time_in_coefficients", False):
        return None
    t, s = out.t.detach().to("cpu", F64), model.schedule
    return bcast(s.alpha(t), like), bcast(s.sigma(t), like), bcast(s.beta(t), like)


def _sqrt(v):
    """√max(v, 0) of a grid float (math, as always) or of a per-sample tensor (a predicted time's)."""
    return math.sqrt(max(v, 0.0)) if isinstance(v, float) else v.clamp_min(0.0).sqrt()


def _posterior_step_at(out, x, ab_t, t_to: float, schedule, clip_denoised: bool, var_type: str):
    """The ancestral step from per-sample times t (given as ᾱ_t, (B, 1, ...)) to the grid time
    ``t_to``: q(x_s | x_t, x̂0) of the two-time process ᾱ_{t|s} = ᾱ_t / ᾱ_s. A sample already at or
    below s (t <= s) stays where it is: the step's coefficients are taken at t = s (mean x, std 0),
    the limit as t decreases to s. Returns (mean, std, x̂0); 'learned_range' interpolates between
    this step's β and β̃."""
    ab_s = float(schedule.alpha_bar(t_to))
    x0 = (x - (1 - ab_t).clamp_min(0).sqrt() * out.eps) / ab_t.sqrt()
    if clip_denoised:
        x0 = x0.clamp(-1, 1)
    ab_t = ab_t.clamp(max=ab_s)
    a_step = ab_t / ab_s
    b_step = 1 - a_step
    denom = (1 - ab_t).clamp_min(1e-20)
    mean = math.sqrt(ab_s) * b_step / denom * x0 + a_step.sqrt() * (1 - ab_s) / denom * x
    small = b_step * (1 - ab_s) / denom
    if var_type == "fixed_small":
        var = small
    elif var_type == "fixed_large":
        var = b_step
    elif var_type == "learned":
        var = torch.exp(out.var_out)
    elif var_type == "learned_range":
        frac = (out.var_out + 1) / 2
        var = torch.exp(frac * torch.log(b_step.clamp_min(1e-20)) + (1 - frac) * torch.log(small.clamp_min(1e-20)))
    else:
        raise ValueError(f"unknown var_type {var_type!r}")
    return mean, var.clamp_min(0).sqrt(), x0


def _steps(n: int, progress: bool, desc: str):
    if not progress:
        return range(n)
    from tqdm.auto import tqdm
    return tqdm(range(n), desc=desc, leave=False)


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
              return_trajectory=False, progress=False) -> SampleResult:
    """DDPM ancestral sampling (Ho et al. 2020, Alg. 2) with the reverse variance of ``var_type``
    (default the model's); on a coarse grid this is Improved DDPM's respaced sampler."""
    ts = _check_grid(ts)
    vt = var_type or model.var_type
    diff = grid_diffusion(model.schedule, ts, vt)
    noise, rec = _noise_fn(noise_sampler, generator), _Recorder(x, ts, return_trajectory)
    N = diff.num_timesteps
    for n in _steps(N, progress, "ancestral"):
        k = N - 1 - n
        i = torch.full((x.shape[0],), k, dtype=torch.long, device=x.device)
        out = _eval(model, x, float(diff.times[k]), y, rec)
        c = _out_coefs(model, out, x)
        if c is not None:
            mean, std, x0 = _posterior_step_at(out, x, c[0] ** 2, float(ts[n + 1]), model.schedule, clip_denoised, vt)
            x = mean + std * noise(n, x) if k > 0 else mean
            rec.step(x, x0)
            continue
        p = diff.p_mean_variance(out, x, i, clip_denoised, vt)
        x = p["mean"] + torch.exp(0.5 * p["log_variance"]) * noise(n, x) if k > 0 else p["mean"]
        rec.step(x, p["pred_x0"])
    return rec.result(x)


@torch.no_grad()
def ddim(model, x, ts, *, y=None, eta=0.0, clip_denoised=False, generator=None, noise_sampler=None,
         return_trajectory=False, progress=False) -> SampleResult:
    """DDIM (Song et al. 2021): x_s = √ᾱ_s x̂0 + √(1-ᾱ_s-σ²) ε̂ + σ z, σ = η·√((1-ᾱ_s)/(1-ᾱ_t)·(1-ᾱ_t/ᾱ_s))."""
    ts = _check_grid(ts)
    ab = model.schedule.alpha_bar(ts).tolist()
    noise, rec = _noise_fn(noise_sampler, generator), _Recorder(x, ts, return_trajectory)
    for n in _steps(len(ts) - 1, progress, "ddim"):
        out = _eval(model, x, float(ts[n]), y, rec)
        eps, c = out.eps, _out_coefs(model, out, x)
        a_t, a_s = ab[n] if c is None else c[0] ** 2, ab[n + 1]
        x0 = (x - _sqrt(1 - a_t) * eps) / _sqrt(a_t)
        if clip_denoised:
            x0 = x0.clamp(-1, 1)
            eps = (x - _sqrt(a_t) * x0) / _sqrt(1 - a_t)
        sig = eta * _sqrt((1 - a_s) / (1 - a_t) * (1 - a_t / a_s))
        x = _sqrt(a_s) * x0 + _sqrt(1 - a_s - sig**2) * eps
        if (sig > 0) if c is None else eta > 0:
            x = x + sig * noise(n, x)
        rec.step(x, x0)
    return rec.result(x)


# ---------------------------------------------------------------------------- SDE / ODE samplers
def _coefs(model, ts):
    s = model.schedule
    return s.alpha(ts).tolist(), s.sigma(ts).tolist(), s.beta(ts).tolist()


def _denoise(model, x, ts, y, rec, denoise: bool):
    """Tweedie's x̂0 at the last grid time (one more evaluation) when the grid stops above 0."""
    t = float(ts[-1])
    if not denoise or t == 0.0:
        return x
    s = model.schedule
    out = _eval(model, x, t, y, rec)
    c = _out_coefs(model, out, x)
    if c is not None:
        return (x - c[1] * out.eps) / c[0]
    return (x - float(s.sigma(t)) * out.eps) / float(s.alpha(t))


@torch.no_grad()
def euler_maruyama(model, x, ts, *, y=None, denoise=True, generator=None, noise_sampler=None,
                   return_trajectory=False, progress=False) -> SampleResult:
    """Euler–Maruyama on the reverse VP-SDE dx = [-½β x - β ∇log p_t] dt + √β dw̄ (Song et al. 2021);
    the last step adds no noise."""
    ts = _check_grid(ts)
    al, sg, be = _coefs(model, ts)
    noise, rec = _noise_fn(noise_sampler, generator), _Recorder(x, ts, return_trajectory)
    N = len(ts) - 1
    for n in _steps(N, progress, "euler-maruyama"):
        dt = float(ts[n + 1] - ts[n])
        out = _eval(model, x, float(ts[n]), y, rec)
        eps, c = out.eps, _out_coefs(model, out, x)
        a, s, b = (al[n], sg[n], be[n]) if c is None else c
        x0 = (x - s * eps) / a
        x = x + (-0.5 * b * x + b / s * eps) * dt
        if n < N - 1:
            x = x + _sqrt(b * -dt) * noise(n, x)
        rec.step(x, x0)
    return rec.result(_denoise(model, x, ts, y, rec, denoise))


def _ode_drift(eps, x, beta, sigma):
    """Probability-flow ODE dx/dt = -½β(t) (x + ∇log p_t) = -½β(t) (x - ε/σ)."""
    return -0.5 * beta * (x - eps / sigma)


@torch.no_grad()
def pf_euler(model, x, ts, *, y=None, denoise=True, generator=None, noise_sampler=None,
             return_trajectory=False, progress=False) -> SampleResult:
    """Euler's method on the probability-flow ODE (deterministic; one evaluation per step)."""
    ts = _check_grid(ts)
    al, sg, be = _coefs(model, ts)
    rec = _Recorder(x, ts, return_trajectory)
    for n in _steps(len(ts) - 1, progress, "pf-euler"):
        out = _eval(model, x, float(ts[n]), y, rec)
        eps, c = out.eps, _out_coefs(model, out, x)
        a, s, b = (al[n], sg[n], be[n]) if c is None else c
        x0 = (x - s * eps) / a
        x = x + float(ts[n + 1] - ts[n]) * _ode_drift(eps, x, b, s)
        rec.step(x, x0)
    return rec.result(_denoise(model, x, ts, y, rec, denoise))


@torch.no_grad()
def pf_heun(model, x, ts, *, y=None, denoise=True, generator=None, noise_sampler=None,
            return_trajectory=False, progress=False) -> SampleResult:
    """Heun's second-order method on the probability-flow ODE (Karras et al. 2022, Alg. 1 without
    churn): two evaluations per step, Euler on a last step that ends at t = 0."""
    ts = _check_grid(ts)
    al, sg, be = _coefs(model, ts)
    rec = _Recorder(x, ts, return_trajectory)
    for n in _steps(len(ts) - 1, progress, "pf-heun"):
        dt = float(ts[n + 1] - ts[n])
        out = _eval(model, x, float(ts[n]), y, rec)
        eps, c = out.eps, _out_coefs(model, out, x)
        a, s, b = (al[n], sg[n], be[n]) if c is None else c
        x0 = (x - s * eps) / a
        d = _ode_drift(eps, x, b, s)
        x_next = x + dt * d
        if float(ts[n + 1]) > 0:
            out2 = _eval(model, x_next, float(ts[n + 1]), y, rec)
            c2 = _out_coefs(model, out2, x)
            _, s2, b2 = (None, sg[n + 1], be[n + 1]) if c2 is None else c2
            x_next = x + dt * 0.5 * (d + _ode_drift(out2.eps, x_next, b2, s2))
        x = x_next
        rec.step(x, x0)
    return rec.result(_denoise(model, x, ts, y, rec, denoise))


@torch.no_grad()
def pf_adaptive(model, x, ts, *, y=None, rtol=1e-5, atol=1e-5, method="dopri5", denoise=True, generator=None,
                noise_sampler=None, return_trajectory=False, progress=False) -> SampleResult:
    """The probability-flow ODE solved by an adaptive Runge–Kutta method (torchdiffeq); the
    trajectory, if asked, is the dense solution at the grid times."""
    from torchdiffeq import odeint

    ts = _check_grid(ts)
    if float(ts[-1]) == 0.0:
        raise ValueError("pf_adaptive needs a grid that stops above t = 0 (e.g. 1e-3): the ODE is singular at 0")
    sched = model.schedule
    rec = _Recorder(x, ts, False)
    t_end = float(ts[-1])

    def f(t, xt):
        # Runge–Kutta stages may overshoot the end time (the answer there is interpolated); the
        # drift is frozen at t_end beyond it, since below 0 the schedule has no meaning.
        tf = max(float(t), t_end)
        out = _eval(model, xt, tf, y, rec)
        c = _out_coefs(model, out, xt)
        if c is not None:
            return _ode_drift(out.eps, xt, c[2], c[1])
        return _ode_drift(out.eps, xt, float(sched.beta(tf)), float(sched.sigma(tf)))

    t_eval = ts.to(x.device, x.dtype) if return_trajectory else torch.stack([ts[0], ts[-1]]).to(x.device, x.dtype)
    sol = odeint(f, x, t_eval, rtol=rtol, atol=atol, method=method)
    out = _denoise(model, sol[-1], ts, y, rec, denoise)
    return SampleResult(x=out, nfe=rec.nfe, times=ts, trajectory=sol if return_trajectory else None)


SAMPLERS = {
    "ancestral": ancestral,
    "ddim": ddim,
    "euler_maruyama": euler_maruyama,
    "pf_euler": pf_euler,
    "pf_heun": pf_heun,
    "pf_adaptive": pf_adaptive,
}


# ---------------------------------------------------------------------------- grids and the front door
def time_grid(schedule, steps: int, *, t_max: float = 1.0, t_min: float = 0.0, spacing: str = "auto") -> torch.Tensor:
    """(steps+1,) decreasing times from t_max to t_min.

    For a :class:`DiscreteSchedule` the interior points are the process's own trained times:
    'trailing' (the "auto" default) keeps the trained steps top-1, top-1-top/N, ... (diffusers'
    "trailing" spacing), so all N evaluations fall at t >= t_max/N and the last step jumps to the
    data; 'respace' uses Improved DDPM's section respacing (``respace(T, str(steps))``), which keeps
    step 0 and so spends one evaluation on t = 1/T -> 0 (ancestral sampling on either grid is exactly
    the respaced process over the kept steps). Otherwise 'uniform' in t or 'quadratic' (denser near 0).
    """
    if spacing == "auto":
        spacing = "trailing" if isinstance(schedule, DiscreteSchedule) else "uniform"
    if spacing in ("respace", "trailing"):
        if not isinstance(schedule, DiscreteSchedule):
            raise ValueError(f"grid spacing {spacing!r} picks trained steps of a discrete process; this schedule is "
                             f"continuous: use 'uniform' or 'quadratic'")
        T = schedule.num_timesteps
        top = min(max(int(round(t_max * T)), 1), T)  # trained indices 0 .. top-1 lie in (0, t_max]
        n = min(steps, top)
        if spacing == "trailing" or steps == 1:  # one step must start at the top (respace's "1" keeps index 0)
            kept = sorted({int(round(top - k * top / n)) - 1 for k in range(n)})
        else:
            kept = respace(top, str(n))
        times = (torch.tensor(kept, dtype=F64) + 1) / T
        times = times[times > t_min]
        return torch.cat([times.flip(0), torch.tensor([t_min], dtype=F64)])
    u = torch.linspace(0, 1, steps + 1, dtype=F64)
    if spacing == "uniform":
        return t_max + (t_min - t_max) * u
    if spacing == "quadratic":
        return t_min + (t_max - t_min) * (1 - u) ** 2
    raise ValueError(f"unknown grid spacing {spacing!r}; expected 'auto', 'trailing', 'respace', 'uniform' or 'quadratic'")


def sample(model, shape, *, sampler: str = "ddim", steps: int = 50, ts=None, x=None, y=None, generator=None,
           device="cpu", dtype=torch.float32, t_min: float | None = None, **options) -> SampleResult:
    """Draw ``shape[0]`` samples: prior noise (or the given ``x`` at ts[0]) through ``sampler``.

    ``steps`` is the number of grid intervals; ``t_min`` defaults to 0 for 'ancestral'/'ddim' and the
    ODE/SDE samplers, and to 1e-3 for 'pf_adaptive'.
    """
    if sampler not in SAMPLERS:
        import difflib
        near = difflib.get_close_matches(sampler, SAMPLERS, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {sorted(SAMPLERS)}{hint}")
    if ts is None and sampler == "pf_adaptive":  # the solver picks its own steps
        ts = torch.tensor([1.0, 1e-3 if t_min is None else t_min], dtype=F64)
    elif ts is None:
        ts = time_grid(model.schedule, steps, t_min=t_min or 0.0)
    if x is None:
        x = torch.randn(shape, generator=generator, dtype=dtype, device=device)
    return SAMPLERS[sampler](model, x, ts, y=y, generator=generator, **options)


def slerp(a: torch.Tensor, b: torch.Tensor, lam: float) -> torch.Tensor:
    """Spherical interpolation per sample (keeps the norm statistics of Gaussian noise)."""
    fa, fb = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    cos = (fa * fb).sum(1) / (fa.norm(dim=1) * fb.norm(dim=1))
    th = torch.acos(cos.clamp(-1, 1)).reshape(-1, *([1] * (a.dim() - 1)))
    return (torch.sin((1 - lam) * th) * a + torch.sin(lam * th) * b) / torch.sin(th).clamp_min(1e-8)


def interpolate(model, x_a, x_b, lambdas, *, t0: float = 0.5, steps: int = 50, sampler: str = "ancestral",
                generator=None, y=None, **options) -> torch.Tensor:
    """DDPM's interpolation: encode two images (1, ...) to x_t0 with q(x_t0 | x0) (one shared noise, so
    the mixed latent keeps the right noise level), mix the latents linearly, and run the reverse
    process from t0. Returns (len(lambdas), ...). At t0 = 1 the latents are pure noise; mix them with
    :func:`slerp` instead."""
    s = model.schedule
    a, sg = float(s.alpha(t0)), float(s.sigma(t0))
    eps = torch.randn(x_a.shape, generator=generator, dtype=x_a.dtype, device=x_a.device)
    za, zb = a * x_a + sg * eps, a * x_b + sg * eps
    mix = torch.cat([(1 - float(l)) * za + float(l) * zb for l in lambdas])
    ts = time_grid(s, steps, t_max=t0)
    return SAMPLERS[sampler](model, mix, ts, y=y, generator=generator, **options).x
