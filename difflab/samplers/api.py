"""The front door: time grids, ``sample(model, shape, ...)`` from noise or from a given x_t, and
DDPM's interpolation."""
from __future__ import annotations

import math

import torch

from difflab.process.respace import respace
from difflab.process.schedules import F64, DiscreteSchedule
from difflab.samplers.registry import get_spec

GRID_SPACINGS = ("auto", "trailing", "respace", "uniform", "quadratic", "power", "logsnr", "karras")
GRID_PARAMS = {"karras": 7.0, "power": 0.8}  # spacings that take a ρ (``NAME:RHO``) and their defaults


def parse_spacing(spec: str) -> tuple[str, float | None]:
    """``'NAME'`` or ``'NAME:RHO'`` (karras, power) -> (name, ρ or None); ValueError naming the bad part."""
    name, sep, param = str(spec).partition(":")
    if name not in GRID_SPACINGS:
        raise ValueError(f"unknown grid spacing {name!r}; expected one of {', '.join(GRID_SPACINGS)} "
                         f"(karras and power take an exponent, e.g. power:0.8)")
    if not sep:
        return name, GRID_PARAMS.get(name)
    if name not in GRID_PARAMS:
        raise ValueError(f"grid spacing {name!r} takes no parameter (got {spec!r}); only "
                         f"{', '.join(GRID_PARAMS)} do, e.g. power:0.8")
    try:
        rho = float(param)
    except ValueError:
        rho = float("nan")
    if not (math.isfinite(rho) and rho > 0):
        raise ValueError(f"grid exponent {param!r} in {spec!r}; expected a positive number, e.g. {name}:{GRID_PARAMS[name]:g}")
    return name, rho


REFINES = ("t", "logsnr")  # how refine_grid cuts each interval between given times into solver steps
SMALLEST_T = 1e-3  # where a log-SNR or noise-level grid of a continuous model stops before its jump to t = 0


def _noise_level_grid(schedule, steps: int, t_max: float, t_min: float, spacing: str, rho: float) -> torch.Tensor:
    """'logsnr': uniform in λ = log(α/σ); 'karras': EDM's ρ-spacing of σ̃ = σ/α = e^{-λ} (the schedule's
    ``log_snr`` is log(α²/σ²) = 2λ)
    (σ̃_i = (σ̃_max^{1/ρ} + i/(N-1) (σ̃_min^{1/ρ} - σ̃_max^{1/ρ}))^ρ). A grid to t_min > 0 has its N+1 points
    from t_max to t_min; a grid to 0 has N points down to the smallest time (1/T for a discrete model,
    1e-3 otherwise), then 0. For a discrete model every point is rounded to its nearest trained time
    (as diffusers does with Karras sigmas); coinciding points are merged."""
    discrete = isinstance(schedule, DiscreteSchedule)
    lo = t_min if t_min > 0 else (1.0 / schedule.num_timesteps if discrete else SMALLEST_T)
    k = steps + 1 if t_min > 0 else steps
    lam_hi, lam_lo = float(schedule.log_snr(t_max)), float(schedule.log_snr(lo))
    u = torch.linspace(0, 1, k, dtype=F64) if k > 1 else torch.zeros(1, dtype=F64)
    if spacing == "logsnr":
        lam = lam_hi + (lam_lo - lam_hi) * u
    else:
        s_max, s_min = math.exp(-lam_hi / 2), math.exp(-lam_lo / 2)  # σ̃ at the ends
        lam = -2 * rho * torch.log(s_max ** (1 / rho) + u * (s_min ** (1 / rho) - s_max ** (1 / rho)))
    t = schedule.t_from_log_snr(lam).clamp(lo, t_max)
    t[0], t[-1] = t_max, lo
    if discrete:
        T = schedule.num_timesteps
        t = torch.unique(((t * T).round().clamp(1, T)) / T, sorted=True).flip(0)
    if t_min <= 0:
        t = torch.cat([t, torch.zeros(1, dtype=F64)])
    return t


def time_grid(schedule, steps: int, *, t_max: float = 1.0, t_min: float = 0.0, spacing: str = "auto",
              rho: float | None = None) -> torch.Tensor:
    """(steps+1,) decreasing times from t_max to t_min.

    For a :class:`DiscreteSchedule` the interior points are the process's own trained times:
    'trailing' (the "auto" default) keeps the trained steps top-1, top-1-top/N, ... (diffusers'
    "trailing" spacing), so all N evaluations fall at t >= t_max/N and the last step jumps to the
    data; 'respace' uses Improved DDPM's section respacing (``respace(T, str(steps))``), which keeps
    step 0 and so spends one evaluation on t = 1/T -> 0 (ancestral sampling on either grid is exactly
    the respaced process over the kept steps). Otherwise 'uniform' in t or 'quadratic' (denser near 0);
    'power' (t_i = t_max (i/N)^ρ, default ρ = 0.8: denser near t_max, its last step into the data longer;
    ρ = 1 is 'trailing' on a discrete model and 'uniform' otherwise, ρ = 2 is 'quadratic'), or by noise
    level: 'logsnr' (uniform in log-SNR, DPM-Solver's) and 'karras' (EDM's ρ-spacing of σ/α, default
    ρ = 7), see :func:`_noise_level_grid`. ``spacing`` may carry the exponent ('power:0.8', 'karras:5');
    ``rho`` overrides it.
    """
    spacing, param = parse_spacing(spacing)
    rho = param if rho is None else rho
    if spacing == "auto":
        spacing = "trailing" if isinstance(schedule, DiscreteSchedule) else "uniform"
    if spacing == "power" and not isinstance(schedule, DiscreteSchedule):
        u = torch.linspace(0, 1, steps + 1, dtype=F64)
        return t_min + (t_max - t_min) * (1 - u) ** rho
    if spacing in ("respace", "trailing", "power"):
        if not isinstance(schedule, DiscreteSchedule):
            raise ValueError(f"grid spacing {spacing!r} picks trained steps of a discrete process; this schedule is "
                             f"continuous: use 'uniform' or 'quadratic'")
        T = schedule.num_timesteps
        top = min(max(int(round(t_max * T)), 1), T)  # trained indices 0 .. top-1 lie in (0, t_max]
        n = min(steps, top)
        if spacing == "trailing" or steps == 1:  # one step must start at the top (respace's "1" keeps index 0)
            kept = sorted({int(round(top - k * top / n)) - 1 for k in range(n)})
        elif spacing == "power":  # trailing with the fraction i/N of the trained steps raised to ρ
            kept = sorted({max(int(round(top * (i / n) ** rho)), 1) - 1 for i in range(1, n + 1)})
        else:
            kept = respace(top, str(n))
        times = (torch.tensor(kept, dtype=F64) + 1) / T
        times = times[times > t_min]
        return torch.cat([times.flip(0), torch.tensor([t_min], dtype=F64)])
    if spacing in ("logsnr", "karras"):
        return _noise_level_grid(schedule, steps, t_max, t_min, spacing, rho)
    u = torch.linspace(0, 1, steps + 1, dtype=F64)
    if spacing == "uniform":
        return t_max + (t_min - t_max) * u
    if spacing == "quadratic":
        return t_min + (t_max - t_min) * (1 - u) ** 2
    raise ValueError(f"unknown grid spacing {spacing!r}; expected one of {', '.join(GRID_SPACINGS)}")


def sample(model, shape, *, sampler: str = "ddim", steps: int = 50, ts=None, x=None, t_max: float = 1.0, y=None,
           generator=None, device="cpu", dtype=torch.float32, t_min: float | None = None, spacing: str = "auto",
           **options):
    """Draw ``shape[0]`` samples with ``sampler``: from prior noise at t_max = 1, or from a given
    state ``x`` at ``t_max`` (SDEdit, interpolation, the posterior from a shared x_t).

    ``steps`` is the number of grid intervals (ignored by the adaptive solver, which picks its own);
    ``t_min`` defaults to the sampler's (0, or 1e-3 for 'pf_adaptive'); ``spacing`` (one of
    :data:`GRID_SPACINGS`) defaults to the sampler's ``default_grid``; ``ts`` overrides the grid.
    """
    spec = get_spec(sampler)
    if ts is None:
        ts = grid_for(sampler, model.schedule, steps, t_max=t_max, t_min=t_min, spacing=spacing)
    if x is None:
        x = torch.randn(shape, generator=generator, dtype=dtype, device=device)
    return spec.fn(model, x, ts, y=y, generator=generator, **options)


def grid_for(sampler: str, schedule, steps: int, *, t_max: float = 1.0, t_min: float | None = None,
             spacing: str = "auto") -> torch.Tensor:
    """The default grid of ``sampler``: :func:`time_grid` down to the sampler's ``default_t_min``, or just
    the two ends for an adaptive solver (it picks its own steps)."""
    spec = get_spec(sampler)
    t_min = spec.default_t_min if t_min is None else t_min
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps = {steps!r}; expected a positive integer")
    if isinstance(schedule, DiscreteSchedule) and steps > schedule.num_timesteps and spec.evals_per_step is not None:
        raise ValueError(f"steps = {steps} exceeds the model's {schedule.num_timesteps} trained timesteps; "
                         f"expected 1 .. {schedule.num_timesteps}")
    if spec.evals_per_step is None:
        return torch.tensor([t_max, t_min], dtype=F64)
    return time_grid(schedule, steps, t_max=t_max, t_min=t_min, spacing=spec.default_grid if spacing == "auto" else spacing)


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
    eps = torch.randn(x_a.shape, generator=generator, dtype=x_a.dtype, device=x_a.device)
    za, zb = s.perturb(x_a, float(t0), eps), s.perturb(x_b, float(t0), eps)
    mix = torch.cat([(1 - float(l)) * za + float(l) * zb for l in lambdas])
    return sample(model, mix.shape, sampler=sampler, steps=steps, x=mix, t_max=t0, y=y, generator=generator,
                  **options).x


def refine_grid(times: torch.Tensor, steps: int, refine: str = "t", schedule=None) -> tuple[torch.Tensor, torch.Tensor]:
    """A sampler grid that passes exactly through every given time (DSNO's recorded times, a teacher grid).

    Each of the M-1 intervals [t_m, t_{m+1}] is cut into k = ceil(steps / (M-1)) steps, equal in t
    (``refine="t"``) or in log-SNR λ of ``schedule`` (``"logsnr"``, where DPM-Solver's steps are taken; an
    interval that ends at t = 0, where λ = ∞, is cut uniformly in λ down to t = 1e-3 and its last step goes
    to 0). Returns (grid (N+1,) float64 decreasing, idx (M,) int64) with grid[idx] == times.
    """
    if refine not in REFINES:
        raise ValueError(f"refine = {refine!r}; expected one of {', '.join(REFINES)}")
    if refine == "logsnr" and schedule is None:
        raise ValueError("refine = 'logsnr' needs the schedule whose log-SNR cuts the intervals")
    times = torch.as_tensor(times, dtype=F64)
    k = max(1, math.ceil(steps / (len(times) - 1)))
    parts = [times[:1]]
    u = torch.arange(1, k + 1, dtype=F64) / k
    for a, b in zip(times[:-1], times[1:]):
        if refine == "t":
            parts.append(a + (b - a) * u)
            continue
        lo = b if b > 0 else torch.tensor(min(SMALLEST_T, float(a) / 2), dtype=F64)
        n = k if b > 0 else k - 1  # into t = 0: k-1 steps uniform in λ to `lo`, then the step to 0
        la, lb = schedule.log_snr(a), schedule.log_snr(lo)
        inner = schedule.t_from_log_snr(la + (lb - la) * torch.arange(1, n + 1, dtype=F64) / max(n, 1)).to(F64)
        parts.append(inner if b > 0 else torch.cat([inner, b.reshape(1)]))
    grid = torch.cat(parts)
    grid[k::k] = times[1:]  # the recorded times bit for bit
    if not bool((grid[1:] < grid[:-1]).all()):
        raise ValueError(f"the refined grid is not strictly decreasing ({steps} steps over times {times.tolist()})")
    return grid, torch.arange(len(times)) * k


__all__ = ["GRID_PARAMS", "GRID_SPACINGS", "REFINES", "grid_for", "parse_spacing", "interpolate", "refine_grid", "sample",
           "slerp", "time_grid"]
