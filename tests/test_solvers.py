"""The few-step solvers (difflab.samplers.solvers): each converges at its order on the exact toy world,
each update is exact on the polynomial class its order claims, DPM-Solver++(2M), its SDE variant and
UniPC equal diffusers' schedulers step for step, and each keeps the sampler contract."""
import math

import pytest
import torch

from difflab.metrics.toy import mmd_permutation_test
from difflab.models import FunctionModel, exact_mixture_model
from difflab.process import GaussianDiffusion, VPLinear, linear_betas, ring_mixture
from difflab.process.param import x0_to_eps
from difflab.samplers import ddim, pf_adaptive, time_grid
from difflab.samplers.solvers import (SPECS, dpmpp_2m, dpmpp_2m_sde, dpmpp_3m, edm_euler, edm_heun, ipndm,
                                      unipc)

from conftest import Counting

F64 = torch.float64
MIX = ring_mixture(8, radius=2.0, std=0.3)
VP = VPLinear()
DISCRETE = GaussianDiffusion(linear_betas(1000))
BY_NAME = {s.name: s for s in SPECS}


def _x(n=64, seed=0):
    return torch.randn(n, 2, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _log_snr_grid(n, t_max=1.0, t_min=1e-3, schedule=VP):
    """(n+1,) times uniform in log-SNR from t_max to t_min (the ends exactly)."""
    lo, hi = (float(schedule.log_snr(torch.tensor(t, dtype=F64))) for t in (t_max, t_min))
    ts = schedule.t_from_log_snr(torch.linspace(lo, hi, n + 1, dtype=F64))
    ts[0], ts[-1] = t_max, t_min
    return ts


def _rates(errors):
    return [math.log2(a / b) for a, b in zip(errors, errors[1:])]


# ---------------------------------------------------------------------------- convergence order
@pytest.fixture(scope="module")
def world():
    """x_T (100 points) and the probability-flow ODE solved from t = 1 to t_min = 1e-3 by dopri5 at
    rtol = atol = 1e-10 (its own error there, ~1e-8, is 300x below the smallest solver error measured)."""
    model = exact_mixture_model(MIX, VP)
    xT = _x(100)
    ref = pf_adaptive(model, xT, torch.tensor([1.0, 1e-3], dtype=F64), rtol=1e-10, atol=1e-10, denoise=False).x
    return model, xT, ref


# Measured on this world (grid uniform in log-SNR, 1 -> 1e-3), rates at 32->64->128->256 steps:
#   dpmpp_2m 2.07 2.03 2.02 | dpmpp_3m 3.17 3.17 3.10 | unipc 2.85 3.01 3.03 | edm_euler 1.01 1.01 1.00
#   edm_heun 2.11 2.05 2.03 | ipndm 1.81 1.93 1.99
# UniPC is UniP-2 + UniC-2: third order (the corrector raises the predictor's order by one at no extra
# evaluation). iPNDM's fixed Adams–Bashforth weights assume equal steps in σ̃; on this grid σ̃ is geometric,
# so each step's weights are off by O(h) and the method is second order (see the σ̃-uniform test below).
@pytest.mark.parametrize("fn,order", [(dpmpp_2m, 2), (dpmpp_3m, 3), (unipc, 3), (edm_euler, 1), (edm_heun, 2),
                                      (ipndm, 2)], ids=lambda v: getattr(v, "__name__", str(v)))
def test_ode_solvers_converge_at_their_order(world, fn, order):
    """Mean error at t_min against the fine solution as steps double: log2 of the last two error ratios
    is the solver's order within ±0.25 (final states at t_min compared, no jump to 0)."""
    model, xT, ref = world
    e = [float((fn(model, xT, _log_snr_grid(n), denoise=False).x - ref).norm(dim=1).mean()) for n in (32, 64, 128, 256)]
    rates = _rates(e)
    assert all(a > b for a, b in zip(e, e[1:])), (fn.__name__, e)
    assert all(abs(r - order) < 0.25 for r in rates[-2:]), (fn.__name__, e, rates)


def test_ipndm_is_higher_order_on_equal_sigma_steps_up_to_its_warm_start():
    """On a grid of equal σ̃ steps (t 0.5 -> 0.2, from noised data) iPNDM's AB-4 body is fourth order, but its
    lower-order warm start (AB-1, AB-2, AB-3 on the first steps; the AB-2 step's O(h³) local error) caps the
    global order: measured 2.62, 2.95, 2.99 at 8->16->32->64 steps (with the warm start replaced by exact
    states the rate climbs to 3.7, heading to 4), against ~2 on the log-SNR grid above."""
    model = exact_mixture_model(MIX, VP)
    t0, t1 = 0.5, 0.2
    st = [float(VP.sigma(torch.tensor(t, dtype=F64)) / VP.alpha(torch.tensor(t, dtype=F64))) for t in (t0, t1)]

    def grid(n):
        ts = VP.t_from_log_snr(-2 * torch.log(torch.linspace(st[0], st[1], n + 1, dtype=F64)))
        ts[0], ts[-1] = t0, t1
        return ts

    x0 = MIX.sample(100, torch.Generator().manual_seed(1))
    xs = VP.perturb(x0, t0, _x(100, seed=2))
    ref = pf_adaptive(model, xs, torch.tensor([t0, t1], dtype=F64), rtol=1e-12, atol=1e-12, denoise=False).x
    e = [float((ipndm(model, xs, grid(n), denoise=False).x - ref).norm(dim=1).mean()) for n in (8, 16, 32, 64)]
    rates = _rates(e)
    assert all(abs(r - 3) < 0.25 for r in rates[-2:]), (e, rates)


# ---------------------------------------------------------------------------- exactness on polynomials
def _poly(coefs, s):
    """Σ_k c_k s^k for vector coefficients c_k (2,) and s a (B,) tensor -> (B, 2)."""
    return sum(c[None, :] * s[:, None] ** k for k, c in enumerate(coefs))


COEFS = [torch.tensor(v, dtype=F64) for v in ([0.3, -0.2], [0.5, 0.1], [-0.2, 0.25], [0.05, -0.04])]


def _x0_model(degree):
    """A model whose x̂0 is a polynomial in λ = log(α/σ) (the same for every x): the data-prediction ODE is
    then y' = e^λ x̂0(λ) for y = x/σ, so the error in y of an update exact on such x̂0 stays constant."""

    def eps_fn(x, t, y=None):
        a, s = VP.alpha(t), VP.sigma(t)
        return x0_to_eps(_poly(COEFS[:degree + 1], torch.log(a / s)), x, a, s)

    return FunctionModel(eps_fn, VP)


def _eps_model(degree):
    """A model whose ε is a polynomial in σ̃ = σ/α: the ODE is then dx̃/dσ̃ = ε(σ̃) for x̃ = x/α."""

    def eps_fn(x, t, y=None):
        return _poly(COEFS[:degree + 1], VP.sigma(t) / VP.alpha(t)).expand_as(x)

    return FunctionModel(eps_fn, VP)


def _y_errors_x0(fn, degree, ts):
    """(N+1,) max error in y = x/σ along the trajectory; exact y(λ) from ∫ e^λ λ^k dλ = e^λ (1; λ-1;
    λ²-2λ+2; λ³-3λ²+6λ-6) for k = 0..3."""
    x = _x(8)
    r = fn(_x0_model(degree), x, ts, return_trajectory=True, denoise=False)
    a, s = VP.alpha(ts), VP.sigma(ts)
    lam = torch.log(a / s)
    basis = [torch.ones_like(lam), lam - 1, lam**2 - 2 * lam + 2, lam**3 - 3 * lam**2 + 6 * lam - 6]
    F = torch.exp(lam)[:, None] * sum(c[None, :] * b[:, None] for c, b in zip(COEFS[:degree + 1], basis))
    y_exact = x[None] / s[0] + (F - F[0])[:, None, :]
    return ((r.trajectory / s[:, None, None]) - y_exact).abs().amax(dim=(1, 2))


def test_dpmpp_3m_update_is_exact_on_quadratic_x0():
    """Once warmed up (steps 0 and 1 are first and second order), a DPM-Solver++(3M) step integrates x̂0 quadratic
    in λ exactly, on a non-uniform grid (uniform in t): the error in y = x/σ stops changing after step 1; for
    cubic x̂0 it keeps changing. This holds only with x̂0'' weighted by α_t ∫_0^h e^{-u}(h-u)²/2 du; the 3M
    code of dpm-solver / diffusers / k-diffusion weights D2 half as much (-α_t φ₃ D2), which fails here and
    is second order in the convergence test. (2M's midpoint form, the paper's Algorithm 2, weights D1 by
    -½α_t(e^{-h}-1), equal to the exact α_t(1 + (e^{-h}-1)/h) only to O(h²): second order, exact on no
    non-constant class, so it has no such check.)"""
    ts = torch.linspace(0.9, 0.05, 9, dtype=F64)
    err = _y_errors_x0(dpmpp_3m, 2, ts)
    assert float(err[2:].max() - err[2:].min()) < 1e-12 * float(err.max()) + 1e-13, err
    assert float(err[-1]) > 1e-4  # the warm-up's error is real (the check is not trivially zero)
    cubic = _y_errors_x0(dpmpp_3m, 3, ts)
    assert float(cubic[2:].max() - cubic[2:].min()) > 1e-4, cubic


@pytest.mark.parametrize("fn,degree,warm", [(edm_heun, 1, 0), (ipndm, 3, 3)], ids=["edm_heun", "ipndm"])
def test_sigma_space_updates_are_exact_on_their_polynomial_class(fn, degree, warm):
    """Heun (trapezoid) is exact for ε linear in σ̃, and iPNDM's AB-4 for ε cubic in σ̃ on equal σ̃ steps
    after its three warm-up steps: the error in x̃ = x/α stops changing."""
    ts = VP.t_from_log_snr(-2 * torch.log(torch.linspace(3.0, 0.5, 9, dtype=F64)))
    x = _x(8)
    r = fn(_eps_model(degree), x, ts, return_trajectory=True, denoise=False)
    st = VP.sigma(ts) / VP.alpha(ts)
    prim = sum(c[None, :] * st[:, None] ** (k + 1) / (k + 1) for k, c in enumerate(COEFS[:degree + 1]))
    exact = x[None] / VP.alpha(ts[0]) + (prim - prim[0])[:, None, :]
    err = (r.trajectory / VP.alpha(ts)[:, None, None] - exact).abs().amax(dim=(1, 2))
    steady = err[warm:]
    assert float(steady.max() - steady.min()) < 1e-9, err
    if warm:
        assert float(err[-1]) > 1e-4


def test_edm_euler_is_ddim():
    """Euler in EDM's variables is DDIM with η = 0 (Karras et al. 2022, §3): same numbers on both processes."""
    for schedule in (VP, DISCRETE.schedule):
        model = exact_mixture_model(MIX, schedule)
        ts = time_grid(schedule, 12)
        torch.testing.assert_close(edm_euler(model, _x(), ts).x, ddim(model, _x(), ts).x, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------- diffusers
def _drive(sch, model, xT, steps, T=1000, sigmas64=None, noises=None):
    """Run a diffusers scheduler on the difflab model (its integer timestep k shown as t = (k+1)/T); returns
    the final x and the same grid as difflab times: (k+1)/T, then 0 (``final_sigmas_type="zero"``)."""
    sch.set_timesteps(steps)
    if sigmas64 is not None:  # the scheduler's σ table in float64 instead of its float32 one
        sch.sigmas = torch.cat([sigmas64[sch.timesteps], torch.zeros(1, dtype=F64)])
    x = xT.clone()
    for n, k in enumerate(sch.timesteps):
        eps = model(x, torch.full((x.shape[0],), (int(k) + 1) / T, dtype=F64)).eps
        kw = {} if noises is None else {"variance_noise": noises[n]}
        x = sch.step(eps, k, x, **kw).prev_sample
    return x, torch.cat([(sch.timesteps.to(F64) + 1) / T, torch.zeros(1, dtype=F64)])


def _schedulers(betas):
    """diffusers 0.42's DPM-Solver++(2M) and UniPC-bh2 with every option that matters spelled out: the final
    step goes to σ = 0 and is first order there (final_sigmas_type="zero", lower_order_final), no Karras /
    exponential σs, no thresholding, the midpoint 2M form."""
    from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

    common = dict(num_train_timesteps=1000, trained_betas=betas, prediction_type="epsilon", thresholding=False,
                  use_karras_sigmas=False, final_sigmas_type="zero", lower_order_final=True, solver_order=2)
    return {
        "dpmpp_2m": lambda sp: DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_type="midpoint",
                                                           euler_at_final=False, timestep_spacing=sp, **common),
        "dpmpp_2m_sde": lambda sp: DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++",
                                                               solver_type="midpoint", euler_at_final=False,
                                                               timestep_spacing=sp, **common),
        "unipc": lambda sp: UniPCMultistepScheduler(solver_type="bh2", predict_x0=True, disable_corrector=[],
                                                    timestep_spacing=sp, **common),
    }


@pytest.mark.parametrize("spacing", ["linspace", "trailing"])
@pytest.mark.parametrize("steps", [5, 10, 20])
def test_solvers_equal_diffusers_schedulers(steps, spacing):
    """Same discrete model (linear β, T = 1000), same x_T, same timesteps (and for the SDE the same noise):
    difflab's dpmpp_2m / dpmpp_2m_sde / unipc equal diffusers' DPMSolverMultistep('dpmsolver++' /
    'sde-dpmsolver++') / UniPCMultistep('bh2') to 1e-5 of the sample scale (~2.5); measured max |diff| ≤ 1.2e-6
    (2M), 6.0e-7 (UniPC), 1.6e-6 (SDE). What is left is diffusers' float32: its σ table is float32, and
    DPMSolverMultistep casts the sample to float32 in step(). The SDE runs with the σ table in float64: its
    coefficients take h = λ_t - λ_s from float32 logs directly (e^{-h}, √(1-e^{-2h})), which alone makes
    up to 2.2e-5 at 20 steps. With that table UniPC, which keeps the sample's dtype, agrees to 1e-12: the
    same algorithm, corrector included."""
    from difflab.interop.peers import discrete_betas

    pytest.importorskip("diffusers")
    model = exact_mixture_model(MIX, DISCRETE.schedule)
    xT = _x(256)
    make = _schedulers(discrete_betas(DISCRETE.schedule, 1000).numpy())
    ab = DISCRETE.alphas_cumprod.to(F64)
    sigmas64 = ((1 - ab) / ab).sqrt()
    zs = [_x(256, seed=100 + n).float().double() for n in range(steps)]  # diffusers casts the noise to float32
    for name, fn in [("dpmpp_2m", dpmpp_2m), ("dpmpp_2m_sde", dpmpp_2m_sde), ("unipc", unipc)]:
        sde = name == "dpmpp_2m_sde"
        ref, ts = _drive(make[name](spacing), model, xT, steps, noises=zs if sde else None,
                         sigmas64=sigmas64 if sde else None)
        if spacing == "trailing":  # diffusers' trailing timesteps are difflab's default discrete grid
            torch.testing.assert_close(ts, time_grid(DISCRETE.schedule, steps), rtol=0, atol=1e-15)
        got = fn(model, xT, ts, noise_sampler=lambda n, like: zs[n]).x
        diff = float((got - ref).abs().max())
        assert diff < 1e-5 * float(ref.abs().max()), (name, steps, spacing, diff)
    ref, ts = _drive(make["unipc"](spacing), model, xT, steps, sigmas64=sigmas64)
    torch.testing.assert_close(unipc(model, xT, ts).x, ref, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------- sampler contract


@pytest.fixture(params=["discrete", "vp"])
def model(request):
    return exact_mixture_model(MIX, DISCRETE.schedule if request.param == "discrete" else VP)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
class TestContract:
    @pytest.mark.parametrize("steps", [1, 2, 3, 7])
    def test_nfe_is_the_spec(self, spec, model, steps):
        for t_min, denoise, extra in [(0.0, True, 0), (1e-3, False, 0), (1e-3, True, 1)]:
            counting = Counting(model)
            r = spec.fn(counting, _x(), time_grid(model.schedule, steps, t_min=t_min), denoise=denoise,
                        generator=torch.Generator().manual_seed(0))
            assert r.nfe == counting.calls == spec.nfe(steps, t_min) + extra, (t_min, denoise)

    def test_seed_and_generator(self, spec, model):
        ts = time_grid(model.schedule, 6)
        a, b, c = (spec.fn(model, _x(), ts, generator=torch.Generator().manual_seed(s)).x for s in (0, 0, 1))
        assert torch.equal(a, b) and bool(torch.isfinite(a).all())
        assert torch.equal(a, c) != spec.stochastic

    def test_callback_sees_every_step_and_the_last_step_is_x0(self, spec, model):
        ts = time_grid(model.schedule, 7)
        seen = []
        r = spec.fn(model, _x(), ts, generator=torch.Generator().manual_seed(0), return_trajectory=True,
                    callback=lambda i, t, x, x0: seen.append((i, t, x, x0)))
        assert [s[0] for s in seen] == list(range(7)) and [s[1] for s in seen] == ts[1:].tolist()
        assert torch.equal(seen[-1][2], r.x) and torch.equal(r.trajectory[-1], r.x)
        assert all(s[3] is not None and s[3].shape == r.x.shape for s in seen)
        # the step into t = 0 (σ = 0, λ = ∞) is finite and lands on the last step's x̂0
        torch.testing.assert_close(r.x, seen[-1][3], rtol=1e-12, atol=1e-12)

    def test_clip_keeps_x0_in_range(self, spec, model):
        ts = time_grid(model.schedule, 8)
        x0s = {}
        for clip in (False, True):
            x0s[clip] = []
            spec.fn(model, 2 * _x(), ts, clip_denoised=clip, generator=torch.Generator().manual_seed(0),
                    callback=lambda i, t, x, x0: x0s[clip].append(x0))
        assert all(float(v.abs().max()) <= 1.0 for v in x0s[True])
        assert max(float(v.abs().max()) for v in x0s[False]) > 1.2  # clipping had something to do

    def test_denoise_at_t_min_is_tweedie(self, spec, model):
        ts = time_grid(model.schedule, 6, t_min=0.05)
        g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
        xt = spec.fn(model, _x(), ts, denoise=False, generator=g()).x
        x0 = spec.fn(model, _x(), ts, denoise=True, generator=g()).x
        s = model.schedule
        eps = model(xt, torch.full((xt.shape[0],), 0.05, dtype=F64)).eps
        torch.testing.assert_close(x0, (xt - float(s.sigma(0.05)) * eps) / float(s.alpha(0.05)), rtol=1e-12, atol=1e-12)


def test_specs_state_the_facts():
    assert [s.name for s in SPECS] == ["dpmpp_2m", "dpmpp_3m", "dpmpp_2m_sde", "unipc", "edm_euler", "edm_heun",
                                       "ipndm"]
    assert [s.name for s in SPECS if s.stochastic] == ["dpmpp_2m_sde"]
    assert BY_NAME["edm_heun"].nfe(10) == 19 and BY_NAME["edm_heun"].nfe(10, 1e-3) == 20
    assert all(s.nfe(10) == 10 for s in SPECS if s.name != "edm_heun")
    assert all(s.clip and not s.ends_at_zero and s.default_t_min == 0.0 for s in SPECS)


# ---------------------------------------------------------------------------- SDE-DPM-Solver++(2M)
def test_sde_solver_reproduces_the_mixture():
    """1000 samples at 100 steps against 1000 true draws: the two-sample MMD test (100 permutations) passes at
    level 0.01 and the mean log-likelihood under the mixture matches to 0.1 (measured 0.03; at 10 steps it
    is off by 0.21, so that criterion has power; the discrete process is covered by the diffusers test)."""
    model = exact_mixture_model(MIX, VP)
    truth = MIX.sample(1000, torch.Generator().manual_seed(2))

    def draw(steps):
        g = torch.Generator().manual_seed(1)
        return dpmpp_2m_sde(model, torch.randn(1000, 2, dtype=F64, generator=g), time_grid(VP, steps), generator=g).x

    x = draw(100)
    mmd2, p = mmd_permutation_test(x, truth, num_permutations=100, seed=0)
    assert p > 0.01, (mmd2, p)
    assert abs(float(MIX.log_prob(x).mean() - MIX.log_prob(truth).mean())) < 0.1
    assert abs(float(MIX.log_prob(draw(10)).mean() - MIX.log_prob(truth).mean())) > 0.15


def test_sde_solver_differs_from_the_ode_solver_at_few_steps():
    """From the same x_T at 5 steps the SDE's samples are not the ODE's (fresh noise each step), and with the
    noise switched off it is still another map (its drift takes e^{-h} where the ODE takes σ_t/σ_s alone)."""
    model = exact_mixture_model(MIX, VP)
    ts = time_grid(VP, 5)
    ode = dpmpp_2m(model, _x(256), ts).x
    sde = dpmpp_2m_sde(model, _x(256), ts, generator=torch.Generator().manual_seed(0)).x
    quiet = dpmpp_2m_sde(model, _x(256), ts, noise_sampler=lambda n, like: torch.zeros_like(like)).x
    assert float((sde - ode).norm(dim=1).mean()) > 0.3
    assert float((quiet - ode).norm(dim=1).mean()) > 0.05


@pytest.mark.parametrize("name,kname", [("dpmpp_2m", "dpmpp_2m"), ("edm_euler", "euler"), ("edm_heun", "heun")])
def test_kdiffusion_peer_equals_the_solver_on_its_grid(name, kname):
    """The k-diffusion peer drives the model through KDiffusionDenoiser on k-diffusion's Karras σ grid; on
    the same grid (the times whose σ/α are those σ) difflab's solver of the same algorithm gives the same
    samples, to k-diffusion's float32 σ table: a check of the adapter (x = x0 + σ n, D = x - σ ε̂, the time
    read from σ) and of the peer rows in the solver benchmark."""
    from difflab.errors import DifflabError
    from difflab.interop.peers import kdiffusion_sample, kdiffusion_sigmas

    try:
        sigmas = kdiffusion_sigmas(DISCRETE.schedule, 6)
    except DifflabError as e:
        pytest.skip(str(e))
    model = exact_mixture_model(MIX, DISCRETE.schedule)
    xT = _x(256)
    nfe = 11 if kname == "heun" else 6
    # k-diffusion starts at x = σ_max n, i.e. x_1 = σ(1) n in difflab's x_t: give it n / σ(1) to start alike.
    got = kdiffusion_sample(model, xT.shape, kname, nfe, x=xT / float(DISCRETE.schedule.sigma(1.0)))
    s32 = sigmas.float().double()[:-1]
    ts = torch.cat([DISCRETE.schedule.t_from_log_snr(-2 * torch.log(s32)).clamp(1e-6, 1.0), torch.zeros(1, dtype=F64)])
    ref = BY_NAME[name].fn(model, xT, ts).x
    assert float(ts[0]) == pytest.approx(1.0, abs=1e-6) and float(ts[-2]) == pytest.approx(1e-3, abs=1e-6)
    diff = float((got - ref).abs().max())
    assert diff < 1e-5 * float(ref.abs().max()), (name, diff)
    assert float((got - xT).abs().max()) > 0.5  # it moved: not an identity on both sides
