"""The TP family's training-free relatives (issue #21): Time-Shift, a constant shift, ε scaling.

Closed forms and second routes: the per-sample pixel variance of the data and of q(x_t) against their
closed forms for a Gaussian mixture; Time-Shift's chosen times against an independent root solve of
v(τ) = s²(x); the x̂0 readout against x̂0 formed at the chosen time. The bit-for-bit no-op cases are in
the wrapper contract (tests/test_wrapper_contract.py).
"""
import pytest
import torch

from difflab.errors import ConfigError
from difflab.methods.time_predictor import (ConstantShift, EpsilonScaling, StepTimeMap, TimeShiftSampling,
                                            calibrate_step_times, data_pixel_variance,
                                            marginal_pixel_variance, mixture_pixel_variance, pixel_variance,
                                            tp_sample)
from difflab.models import FunctionModel, exact_mixture_model
from difflab.process import GaussianDiffusion, GaussianMixture, VPLinear, linear_betas
from difflab.samplers import sample, time_grid

F64 = torch.float64
D = 256
# six "images" with 32 of 256 pixels on (each the same pixel variance), each blurred by its own std
_ON = torch.cat([torch.ones(32), -torch.ones(D - 32)]).to(torch.float64)
MEANS = torch.stack([_ON[torch.randperm(D, generator=torch.Generator().manual_seed(k))] for k in range(6)])
STDS = torch.tensor([0.2, 0.3, 0.25, 0.2, 0.35, 0.3], dtype=torch.float64)
MIX = GaussianMixture(MEANS, stds=STDS)
DISCRETE = GaussianDiffusion(linear_betas(1000)).schedule


def _closed_form_m(mix: GaussianMixture) -> float:
    """E[pixel variance] of a mixture: Σ_k w_k (tr(C Σ_k) + μ_kᵀ C μ_k) / D with C = I - 11ᵀ/D."""
    C = torch.eye(D, dtype=F64) - 1.0 / D
    return float(sum(w * (torch.trace(C @ S) + mu @ C @ mu) / D
                     for w, mu, S in zip(mix.weights, mix.means, mix.covs)))


def _data(n: int, g: torch.Generator) -> torch.Tensor:
    """n draws of MIX (isotropic components: mean + std · z, quicker than the general sampler in D = 256)."""
    k = torch.randint(0, 6, (n,), generator=g)
    return MEANS[k] + STDS[k, None] * torch.randn(n, D, generator=g, dtype=F64)


def _q(t: float, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x0 = _data(n, g)
    a, s = float(DISCRETE.alpha(torch.tensor(t))), float(DISCRETE.sigma(torch.tensor(t)))
    return a * x0 + s * torch.randn(x0.shape, generator=g, dtype=F64)


def test_pixel_variance_of_data_and_of_the_marginals_match_their_closed_forms():
    m = _closed_form_m(MIX)
    assert abs(mixture_pixel_variance(MIX) - m) < 1e-12  # the library's closed form (einsum) against this one
    x0 = _data(40000, torch.Generator().manual_seed(0))
    v = pixel_variance(x0)
    assert abs(data_pixel_variance(x0) - m) < 4 * float(v.std()) / 200
    for t in (0.1, 0.4, 0.8):
        vt = pixel_variance(_q(t, 20000, seed=int(t * 10)))
        want = float(marginal_pixel_variance(DISCRETE, t, m, D))
        assert abs(float(vt.mean()) - want) < 4 * float(vt.std()) / 20000**0.5


def _roots(s2: torch.Tensor, m: float) -> torch.Tensor:
    """The times τ with v(τ) = s² (B,), by bisection on the continuous schedule (v increases in τ when m < 1)."""
    lo, hi = torch.zeros_like(s2), torch.ones_like(s2)
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        below = marginal_pixel_variance(DISCRETE, mid, m, D) < s2
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return 0.5 * (lo + hi)


def test_time_shift_chooses_the_time_whose_marginal_variance_equals_the_states():
    m = _closed_form_m(MIX)
    assert m < (D - 1) / D  # v(τ) increases with τ, so each s² has one root
    model = exact_mixture_model(MIX, DISCRETE)
    ts = TimeShiftSampling(model, m, window=1.0, cutoff=0.0, record=True)
    for t in (0.15, 0.2, 0.25, 0.3):  # from ~0.4 on v(τ) flattens (ᾱ small): s² reads the time ever worse
        x = _q(t, 64, seed=7)
        out = ts(x, torch.full((64,), t, dtype=F64))
        s2 = pixel_variance(x)
        roots = _roots(s2, m)
        inside = (roots > 1e-3) & (roots < 1 - 1e-3)
        assert inside.float().mean() > 0.9
        # the chosen trained time is the root to the grid's resolution (1/T), sample by sample; a state
        # outside v's range gets the end of the clamp
        assert (out.t[inside] - roots[inside]).abs().max() <= 1.0 / 1000 + 1e-9
        assert torch.all((out.t[~inside] == 1e-3) | (out.t[~inside] == 1.0))
        # and the states' own time is read back (the noise level of q(x_t) is readable in D = 256)
        assert abs(float(out.t.median()) - t) < 0.05
    assert len(ts.history) == 4 and torch.equal(ts.history[0][0], torch.full((64,), 0.15, dtype=F64))


def test_time_shift_stays_in_its_window_and_above_its_cutoff():
    m = _closed_form_m(MIX)
    model = exact_mixture_model(MIX, DISCRETE)
    x = _q(0.6, 32, seed=3) * 1.3  # states noisier than their nominal time: the shift is to later times
    nominal = torch.full((32,), 0.4, dtype=F64)
    t = TimeShiftSampling(model, m, window=0.05, cutoff=0.0)(x, nominal).t
    assert torch.all((t - 0.4).abs() <= 0.05 + 1e-12) and torch.all(t > 0.4)
    assert torch.equal(TimeShiftSampling(model, m, window=0.05, cutoff=0.4)(x, nominal).t, nominal)


def test_x0_readout_denoises_at_the_chosen_time_in_the_samplers_own_arithmetic():
    m = _closed_form_m(MIX)
    model = exact_mixture_model(MIX, VPLinear())
    x, nominal = _q(0.7, 16, seed=5), torch.full((16,), 0.5, dtype=F64)
    plain = TimeShiftSampling(model, m, window=0.3)
    read = TimeShiftSampling(model, m, window=0.3, x0_readout=True)
    a = plain(x, nominal)
    b = read(x, nominal)
    s = model.schedule
    ac, sc = s.alpha(a.t)[:, None], s.sigma(a.t)[:, None]
    an, sn = s.alpha(nominal)[:, None], s.sigma(nominal)[:, None]
    assert (a.t != 0.5).all() and torch.equal(b.t, nominal)
    torch.testing.assert_close((x - sn * b.eps) / an, (x - sc * a.eps) / ac, rtol=1e-10, atol=1e-10)


def test_constant_shift_and_epsilon_scaling_are_their_formulas():
    seen = []

    def eps_fn(x, t, y=None):
        seen.append(t.clone())
        return x * 0.5

    inner = FunctionModel(eps_fn, VPLinear())
    x, t = torch.randn(4, 3, dtype=F64), torch.tensor([0.1, 0.5, 0.99, 0.5], dtype=F64)
    out = ConstantShift(inner, 0.02)(x, t)
    assert torch.allclose(seen[-1], torch.tensor([0.12, 0.52, 1.0, 0.52], dtype=F64)) and torch.equal(out.t, seen[-1])
    out = EpsilonScaling(inner, 1.01, 0.05)(x, t)
    torch.testing.assert_close(out.eps, x * 0.5 / (1.01 + 0.05 * t)[:, None], rtol=1e-14, atol=0)


def test_time_wrappers_with_coefficients_run_the_per_sample_samplers():
    m = _closed_form_m(MIX)
    model = exact_mixture_model(MIX, DISCRETE)
    x = torch.randn(8, D, dtype=F64, generator=torch.Generator().manual_seed(0))
    grid = time_grid(DISCRETE, 10)
    zero = tp_sample(TimeShiftSampling(model, m, window=0.0, use_in_coefficients=True), x.shape, sampler="ddim",
                     ts=grid, x=x)
    plain = sample(model, x.shape, sampler="ddim", ts=grid, x=x)
    torch.testing.assert_close(zero.x, plain.x, rtol=1e-12, atol=1e-12)  # a second route: per-sample = shared at t
    moved = tp_sample(TimeShiftSampling(model, m, window=0.05, use_in_coefficients=True), x.shape, sampler="ddim",
                      ts=grid, x=x)
    assert not torch.allclose(moved.x, plain.x)


@pytest.mark.parametrize("make", [
    lambda m: TimeShiftSampling(m, 0.5, window=-0.1),
    lambda m: TimeShiftSampling(m, 0.5, window=0.1, cutoff=2.0),
    lambda m: TimeShiftSampling(m, -1.0, window=0.1),
    lambda m: ConstantShift(m, 1.5),
    lambda m: EpsilonScaling(m, 0.0),
    lambda m: TimeShiftSampling(m, 0.5, window=0.1, use_in_coefficients=True, x0_readout=True),
])
def test_bad_settings_are_one_line_errors(make):
    with pytest.raises(ConfigError):
        make(exact_mixture_model(MIX, VPLinear()))


def test_calibrated_step_times_read_the_noise_level_of_the_pilot_states():
    """With the exact score and 50 ancestral steps the states follow the marginals, so each τ_k is t_k
    (to the pilot's sampling error: ±0.015 for n = 1024 where v(τ) is steep); with ε shrunk by 1.1 the
    states keep too much noise and every τ_k moves later."""
    m = _closed_form_m(MIX)
    model = exact_mixture_model(MIX, DISCRETE)
    exact = calibrate_step_times(model, m, (D,), sampler="ancestral", steps=50, window=0.2, n=1024)
    mid = {t: tau for t, tau in exact.items() if 0.1 < t < 0.45}
    assert len(mid) > 10 and max(abs(tau - t) for t, tau in mid.items()) <= 0.015
    biased = calibrate_step_times(EpsilonScaling(model, 1.1), m, (D,), sampler="ancestral", steps=50, window=0.2,
                                  n=1024)
    assert all(biased[t] > t + 0.025 for t in mid)
    wrapped = StepTimeMap(model, biased)
    t0 = sorted(mid)[3]
    assert float(wrapped(_q(t0, 4, seed=1), torch.full((4,), t0, dtype=F64)).t[0]) == biased[t0]


def test_time_shift_readings_read_diffused_real_data_at_its_own_time_and_stay_in_the_window():
    from difflab.methods.time_predictor import time_shift_readings

    m = _closed_form_m(MIX)
    model = exact_mixture_model(MIX, DISCRETE)
    r = time_shift_readings(model, m, _data(512, torch.Generator().manual_seed(9)).float(), sampler="ddim", steps=10,
                            window=0.05, n=128)
    assert len(r["chosen"]) == 10 and len(r["real"]) == 10
    for c in r["chosen"]:
        assert c["t"] - 0.05 - 1e-9 <= c["q10"] <= c["median"] <= c["q90"] <= c["t"] + 0.05 + 1e-9
    steep = [x for x in r["real"] if 0.1 <= x["t"] <= 0.3]
    assert steep and all(abs(x["median"] - x["t"]) < 0.03 for x in steep)
