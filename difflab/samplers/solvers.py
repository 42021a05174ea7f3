"""Few-step ODE/SDE solvers (GitHub issue #16): DPM-Solver++(2M, 3M, SDE-2M), UniPC, EDM's
Euler and Heun, and iPNDM, with the shared sampler signature of :mod:`difflab.samplers.core`.

Every solver steps from α, σ (and λ = log α/σ) at the grid times alone, so on a grid of a discrete
model's trained times it is exactly the same solver run on the respaced process. A step into t = 0
exactly (σ = 0, λ = ∞) is the lower-order update there — x̂0 — as diffusers' ``final_sigmas_type="zero"``
does; on a grid that stops above 0 every step keeps its full order and ``denoise`` adds Tweedie's
x̂0 at the end (one more evaluation), as the probability-flow samplers do.

DPM-Solver++(3M) weights x̂0'' with its exact Taylor coefficient, twice the ``-α_t φ₃ D2`` of the
dpm-solver / diffusers / k-diffusion 3M code (which makes theirs second order globally; measured
here 1.8-1.9 against 3.1-3.2): it is third order, and does not reproduce diffusers' ``solver_order=3``.
"""
from __future__ import annotations

import math

import torch

from difflab.samplers.base import Run, SampleResult, SamplerSpec, check_grid, noise_fn
from difflab.samplers.core import final_denoise


def _coefs(model, ts):
    """α, σ and λ = log(α/σ) at the grid times as Python floats (λ = ∞ where σ = 0)."""
    s = model.schedule
    al, sg = s.alpha(ts), s.sigma(ts)
    return al.tolist(), sg.tolist(), (torch.log(al) - torch.log(sg)).tolist()


def _run(model, x, ts, y, clip_denoised, callback, return_trajectory, progress, desc):
    return Run(model, x, ts, y, callback=callback, return_trajectory=return_trajectory, progress=progress, desc=desc,
               clip=clip_denoised)


# ---------------------------------------------------------------------------- DPM-Solver++ family
@torch.no_grad()
def dpmpp_2m(model, x, ts, *, y=None, denoise=True, clip_denoised=False, generator=None, noise_sampler=None,
             callback=None, return_trajectory=False, progress=False) -> SampleResult:
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++"): multistep second order in λ with data prediction."""
    ts = check_grid(ts)
    al, sg, lam = _coefs(model, ts)
    run = _run(model, x, ts, y, clip_denoised, callback, return_trajectory, progress, "dpmpp-2m")
    prev = None
    for n in range(len(ts) - 1):
        x0, _, _ = run.denoised(x, float(ts[n]), al[n], sg[n])
        if sg[n + 1] == 0:
            x = x0  # into the data: the first-order update (λ = ∞) is x̂0
        else:
            h = lam[n + 1] - lam[n]
            d = x0 if prev is None else x0 + (x0 - prev) * (0.5 * h / (lam[n] - lam[n - 1]))
            x = (sg[n + 1] / sg[n]) * x - (al[n + 1] * math.expm1(-h)) * d
        prev = x0
        run.step(n, x, x0)
    return run.result(final_denoise(run, model, x, ts, denoise))


@torch.no_grad()
def dpmpp_3m(model, x, ts, *, y=None, denoise=True, clip_denoised=False, generator=None, noise_sampler=None,
             callback=None, return_trajectory=False, progress=False) -> SampleResult:
    """DPM-Solver++(3M) (Lu et al. 2022, "DPM-Solver++"): multistep third order in λ with data prediction
    (first- and second-order warm start; x̂0'' with its exact weight, see the module note)."""
    ts = check_grid(ts)
    al, sg, lam = _coefs(model, ts)
    run = _run(model, x, ts, y, clip_denoised, callback, return_trajectory, progress, "dpmpp-3m")
    hist = []  # the x̂0 of the last two steps, newest last
    for n in range(len(ts) - 1):
        x0, _, _ = run.denoised(x, float(ts[n]), al[n], sg[n])
        if sg[n + 1] == 0:
            x = x0
        else:
            h = lam[n + 1] - lam[n]
            p1 = math.expm1(-h)  # e^{-h} - 1
            x = (sg[n + 1] / sg[n]) * x - (al[n + 1] * p1) * x0
            if len(hist) == 1:  # second order (midpoint form, as diffusers' warm-up)
                x = x - (0.5 * al[n + 1] * p1 * h / (lam[n] - lam[n - 1])) * (x0 - hist[-1])
            elif len(hist) == 2:
                r0, r1 = (lam[n] - lam[n - 1]) / h, (lam[n - 1] - lam[n - 2]) / h
                d10, d11 = (x0 - hist[-1]) / r0, (hist[-1] - hist[-2]) / r1
                d1 = d10 + (d10 - d11) * (r0 / (r0 + r1))
                d2 = (d10 - d11) / (r0 + r1)  # ≈ h² x̂0''/2
                # x̂0'' enters with weight α_t ∫_0^h e^{-u} (h-u)²/2 du = α_t (h²/2 - h - p1), i.e. twice the
                # -α_t φ₃ of dpm-solver's / diffusers' / k-diffusion's 3M code (which is thus 2nd order globally)
                x = x + (al[n + 1] * (p1 / h + 1)) * d1 - (2 * al[n + 1] * ((p1 + h) / h**2 - 0.5)) * d2
        hist = (hist + [x0])[-2:]
        run.step(n, x, x0)
    return run.result(final_denoise(run, model, x, ts, denoise))


@torch.no_grad()
def dpmpp_2m_sde(model, x, ts, *, y=None, denoise=True, clip_denoised=False, generator=None, noise_sampler=None,
                 callback=None, return_trajectory=False, progress=False) -> SampleResult:
    """SDE-DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++"), midpoint form as diffusers'
    ``algorithm_type="sde-dpmsolver++"``: x_t = (σ_t/σ_s) e^{-h} x + α_t (1 - e^{-2h}) D + σ_t √(1-e^{-2h}) z."""
    ts = check_grid(ts)
    al, sg, lam = _coefs(model, ts)
    noise = noise_fn(noise_sampler, generator)
    run = _run(model, x, ts, y, clip_denoised, callback, return_trajectory, progress, "dpmpp-2m-sde")
    prev = None
    for n in range(len(ts) - 1):
        x0, _, _ = run.denoised(x, float(ts[n]), al[n], sg[n])
        if sg[n + 1] == 0:
            x = x0  # e^{-h} = 0 and σ_t = 0: no noise is left to add
        else:
            h = lam[n + 1] - lam[n]
            d = x0 if prev is None else x0 + (x0 - prev) * (0.5 * h / (lam[n] - lam[n - 1]))
            one_m = -math.expm1(-2 * h)  # 1 - e^{-2h}
            x = (sg[n + 1] / sg[n] * math.exp(-h)) * x + (al[n + 1] * one_m) * d
            x = x + (sg[n + 1] * math.sqrt(one_m)) * noise(n, x)
        prev = x0
        run.step(n, x, x0)
    return run.result(final_denoise(run, model, x, ts, denoise))


# ---------------------------------------------------------------------------- UniPC
def _bh2_b(hh: float, order: int) -> list[float]:
    """UniPC's b_i = i!·hφ_{i+1}(hh) / B(h), i = 1..order, with B(h) = e^{hh} - 1 (bh2), hh = -h."""
    b_h = math.expm1(hh)
    phi, fact, out = b_h / hh - 1, 1, []
    for i in range(1, order + 1):
        out.append(phi * fact / b_h)
        fact *= i + 1
        phi = phi / hh - 1 / fact
    return out


@torch.no_grad()
def unipc(model, x, ts, *, y=None, denoise=True, clip_denoised=False, generator=None, noise_sampler=None,
          callback=None, return_trajectory=False, progress=False) -> SampleResult:
    """UniPC (Zhao et al. 2023): the UniP-2 predictor with the UniC corrector (B(h) = e^h - 1, "bh2", data
    prediction) after every step but the last, as diffusers' ``UniPCMultistepScheduler(solver_order=2)``;
    the corrector reuses the evaluation at the predicted state (no extra one), so the trajectory and the
    callback see the predicted state, which the next step corrects."""
    ts = check_grid(ts)
    al, sg, lam = _coefs(model, ts)
    run = _run(model, x, ts, y, clip_denoised, callback, return_trajectory, progress, "unipc")
    m = []  # x̂0 at the last two grid times, newest last
    x_last = order = None
    for n in range(len(ts) - 1):
        x0, _, _ = run.denoised(x, float(ts[n]), al[n], sg[n])
        if n > 0:  # UniC of the step ts[n-1] -> ts[n], with the predictor's order
            h = lam[n] - lam[n - 1]
            b_h = math.expm1(-h)
            xc = (sg[n] / sg[n - 1]) * x_last - (al[n] * b_h) * m[-1]
            if order == 1:
                xc = xc - (al[n] * b_h * 0.5) * (x0 - m[-1])
            else:
                r = (lam[n - 2] - lam[n - 1]) / h
                b1, b2 = _bh2_b(-h, 2)
                rho0 = (b1 - b2) / (1 - r)  # solve [[1, 1], [r, 1]] ρ = b
                xc = xc - (al[n] * b_h) * (rho0 * (m[-2] - m[-1]) / r + (b1 - rho0) * (x0 - m[-1]))
            x = xc
        m = (m + [x0])[-2:]
        x_last = x
        order = 1 if n == 0 or sg[n + 1] == 0 else 2
        if sg[n + 1] == 0:
            x = x0
        else:  # UniP-2 (bh2, order 2 uses ρ = ½: DPM-Solver++(2M)'s midpoint step)
            h = lam[n + 1] - lam[n]
            d = x0 if order == 1 else x0 + (x0 - m[-2]) * (0.5 * h / (lam[n] - lam[n - 1]))
            x = (sg[n + 1] / sg[n]) * x - (al[n + 1] * math.expm1(-h)) * d
        run.step(n, x, x0)
    return run.result(final_denoise(run, model, x, ts, denoise))


# ---------------------------------------------------------------------------- EDM variables
def _edm(model, ts):
    """α, σ and σ̃ = σ/α at the grid times (in x̃ = x/α the ODE is dx̃/dσ̃ = (x̃ - x̂0)/σ̃ = ε)."""
    s = model.schedule
    al, sg = s.alpha(ts), s.sigma(ts)
    return al.tolist(), sg.tolist(), (sg / al).tolist()


@torch.no_grad()
def edm_euler(model, x, ts, *, y=None, denoise=True, clip_denoised=False, generator=None, noise_sampler=None,
              callback=None, return_trajectory=False, progress=False) -> SampleResult:
    """Euler on dx̃/dσ̃ = (x̃ - x̂0)/σ̃ in EDM's variables (Karras et al. 2022); this is DDIM with η = 0."""
    ts = check_grid(ts)
    al, sg, st = _edm(model, ts)
    run = _run(model, x, ts, y, clip_denoised, callback, return_trajectory, progress, "edm-euler")
    for n in range(len(ts) - 1):
        x0, eps, _ = run.denoised(x, float(ts[n]), al[n], sg[n])
        x = al[n + 1] * (x / al[n] + (st[n + 1] - st[n]) * eps)
        run.step(n, x, x0)
    return run.result(final_denoise(run, model, x, ts, denoise))


@torch.no_grad()
def edm_heun(model, x, ts, *, y=None, denoise=True, clip_denoised=False, generator=None, noise_sampler=None,
             callback=None, return_trajectory=False, progress=False) -> SampleResult:
    """Heun's method on dx̃/dσ̃ = (x̃ - x̂0)/σ̃ in EDM's variables (Karras et al. 2022, Alg. 1 without churn):
    two evaluations per step, Euler on a last step that ends at σ = 0."""
    ts = check_grid(ts)
    al, sg, st = _edm(model, ts)
    run = _run(model, x, ts, y, clip_denoised, callback, return_trajectory, progress, "edm-heun")
    for n in range(len(ts) - 1):
        x0, eps, _ = run.denoised(x, float(ts[n]), al[n], sg[n])
        xt, ds = x / al[n], st[n + 1] - st[n]
        x_next = al[n + 1] * (xt + ds * eps)
        if sg[n + 1] > 0:
            _, eps2, _ = run.denoised(x_next, float(ts[n + 1]), al[n + 1], sg[n + 1])
            x_next = al[n + 1] * (xt + ds * 0.5 * (eps + eps2))
        x = x_next
        run.step(n, x, x0)
    return run.result(final_denoise(run, model, x, ts, denoise))


_AB = ((1.0,), (1.5, -0.5), (23 / 12, -16 / 12, 5 / 12), (55 / 24, -59 / 24, 37 / 24, -9 / 24))  # Adams–Bashforth 1-4


@torch.no_grad()
def ipndm(model, x, ts, *, y=None, denoise=True, clip_denoised=False, generator=None, noise_sampler=None,
          callback=None, return_trajectory=False, progress=False) -> SampleResult:
    """Improved PNDM (Zhang & Chen 2023, DEIS paper): Adams–Bashforth of orders 1-4 (lower-order warm start)
    with the fixed equal-step coefficients on dx̃/dσ̃ = ε; one evaluation per step, x̂0 on a step into σ = 0."""
    ts = check_grid(ts)
    al, sg, st = _edm(model, ts)
    run = _run(model, x, ts, y, clip_denoised, callback, return_trajectory, progress, "ipndm")
    hist = []  # ε of the last three steps, newest last
    for n in range(len(ts) - 1):
        x0, eps, _ = run.denoised(x, float(ts[n]), al[n], sg[n])
        ds = [eps] + hist[::-1]
        if sg[n + 1] == 0:
            x = x0
        else:
            d = sum(c * e for c, e in zip(_AB[len(ds) - 1], ds))
            x = al[n + 1] * (x / al[n] + (st[n + 1] - st[n]) * d)
        hist = (hist + [eps])[-3:]
        run.step(n, x, x0)
    return run.result(final_denoise(run, model, x, ts, denoise))


SPECS = [
    SamplerSpec("dpmpp_2m", dpmpp_2m, stochastic=False, respaces=True, options=("denoise",)),
    SamplerSpec("dpmpp_3m", dpmpp_3m, stochastic=False, respaces=True, options=("denoise",)),
    SamplerSpec("dpmpp_2m_sde", dpmpp_2m_sde, stochastic=True, respaces=True, options=("denoise",)),
    SamplerSpec("unipc", unipc, stochastic=False, respaces=True, options=("denoise",)),
    SamplerSpec("edm_euler", edm_euler, stochastic=False, respaces=True, options=("denoise",)),
    SamplerSpec("edm_heun", edm_heun, stochastic=False, evals_per_step=2, last_step_evals=1, respaces=True,
                options=("denoise",)),
    SamplerSpec("ipndm", ipndm, stochastic=False, respaces=True, options=("denoise",)),
]

__all__ = ["SPECS", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m", "edm_euler", "edm_heun", "ipndm", "unipc"]
