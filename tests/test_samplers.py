"""Samplers with the exact toy model: they reproduce the data, converge at their order, and agree
with a second route (respaced process, closed-form Gaussian output moments)."""
import math

import pytest
import torch

from difflab.metrics.toy import mmd_permutation_test
from difflab.models import exact_mixture_model
from difflab.process import (GaussianDiffusion, GaussianMixture, VPLinear, cosine_betas, linear_betas, ring_mixture,
                             spaced_diffusion)
from difflab.samplers import (SAMPLERS, ancestral, ddim, euler_maruyama, interpolate, pf_euler, pf_heun, sample,
                              time_grid)

F64 = torch.float64
MIX = ring_mixture(8, radius=2.0, std=0.3)


@pytest.mark.parametrize("process", ["discrete", "vp"])
@pytest.mark.parametrize("name,steps", [("ancestral", 500), ("ddim", 200), ("euler_maruyama", 500),
                                        ("pf_euler", 200), ("pf_heun", 50), ("pf_adaptive", 0)])
def test_samplers_reproduce_the_mixture(process, name, steps):
    """Two-sample MMD test (RBF kernels, 100 permutations) of 1000 samples against 1000 true draws:
    every sampler at enough steps passes at level 0.01."""
    sched = GaussianDiffusion(linear_betas(1000)).schedule if process == "discrete" else VPLinear()
    model = exact_mixture_model(MIX, sched)
    g = torch.Generator().manual_seed(1)
    r = sample(model, (1000, 2), sampler=name, steps=steps or 1, generator=g, dtype=F64)
    truth = MIX.sample(1000, torch.Generator().manual_seed(2))
    mmd2, p = mmd_permutation_test(r.x, truth, num_permutations=100, seed=0)
    assert p > 0.01, f"{name}: MMD² {mmd2:.2e}, p = {p}"
    assert abs(float(MIX.log_prob(r.x).mean() - MIX.log_prob(truth).mean())) < 0.1


def test_few_step_samplers_are_detectably_wrong():
    """The two-sample test has power: 5 Euler steps do not pass it."""
    model = exact_mixture_model(MIX, VPLinear())
    r = sample(model, (1000, 2), sampler="pf_euler", steps=5, generator=torch.Generator().manual_seed(1), dtype=F64)
    _, p = mmd_permutation_test(r.x, MIX.sample(1000, torch.Generator().manual_seed(2)), num_permutations=100)
    assert p < 0.01


def test_ode_solvers_converge_at_their_order():
    """Error against a fine Heun solution halves per doubling for Euler and quarters for Heun."""
    sched = VPLinear()
    model = exact_mixture_model(MIX, sched)
    xT = torch.randn(100, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    ref = pf_heun(model, xT, time_grid(sched, 1000, t_min=1e-2), denoise=False).x

    def err(f, n):
        return float((f(model, xT, time_grid(sched, n, t_min=1e-2), denoise=False).x - ref).norm(dim=1).mean())

    for f, order in [(pf_euler, 1), (pf_heun, 2)]:
        e = [err(f, n) for n in (25, 50, 100)]
        rates = [math.log2(e[i] / e[i + 1]) for i in range(2)]
        assert all(abs(r - order) < 0.25 for r in rates), (f.__name__, e, rates)


def _affine_moments(sampler, model, ts, mu_shape=(1,), **kw):
    """Exact mean and variance of a sampler's output for 1-D Gaussian data: with a linear score every
    step is affine in (x_T, z_1..z_N), so unit inputs recover the coefficients. Row 0: all zeros;
    row 1: x_T = 1; row k+2: unit noise at step k only."""
    N = len(ts) - 1
    B = N + 2
    x = torch.zeros(B, 1, dtype=F64)
    x[1] = 1.0

    def noise(n, like):
        z = torch.zeros_like(like)
        z[n + 2] = 1.0
        return z

    out = sampler(model, x, ts, noise_sampler=noise, **kw).x[:, 0]
    coef = out[1:] - out[0]
    return float(out[0]), float((coef**2).sum())


def test_euler_maruyama_weak_error_is_first_order():
    """Exact output moments for N(0.5, 0.5²) data: the mean error halves per doubling from the
    start; the variance error has two competing first-order terms (it changes sign near N = 80)
    and settles to first order beyond a few hundred steps."""
    data = GaussianMixture(torch.tensor([[0.5]]), stds=0.5)
    sched = VPLinear()
    model = exact_mixture_model(data, sched)
    moments = {n: _affine_moments(euler_maruyama, model, time_grid(sched, n), denoise=False)
               for n in (25, 50, 100, 200, 800, 1600)}
    mean_err = [abs(moments[n][0] - 0.5) for n in (25, 50, 100, 200)]
    assert all(abs(math.log2(a / b) - 1) < 0.05 for a, b in zip(mean_err, mean_err[1:])), mean_err
    var_rate = math.log2(abs(moments[800][1] - 0.25) / abs(moments[1600][1] - 0.25))
    assert 0.8 < var_rate < 1.2, var_rate
    assert abs(moments[1600][1] - 0.25) < 2e-4


def test_full_ancestral_variances_bracket_the_data_and_ddim_eta1_is_ddpm():
    """At T = 1000, for N(0.5, 0.5²) data: the mean is right to 1e-4; the reverse variance β̃
    (fixed_small) gives too little output variance and β (fixed_large) too much — Ho et al.'s two
    extremes — each within 2%; DDIM with η = 1 is ancestral sampling with β̃ (same moments)."""
    data = GaussianMixture(torch.tensor([[0.5]]), stds=0.5)
    d = GaussianDiffusion(linear_betas(1000))
    model = exact_mixture_model(data, d.schedule)
    ts = time_grid(d.schedule, 1000)
    m_s, v_s = _affine_moments(ancestral, model, ts, var_type="fixed_small")
    m_l, v_l = _affine_moments(ancestral, model, ts, var_type="fixed_large")
    m_d, v_d = _affine_moments(ddim, model, ts, eta=1.0)
    assert abs(m_s - 0.5) < 1e-4 and abs(m_l - 0.5) < 1e-4
    assert 0.245 < v_s < 0.25 < v_l < 0.255
    assert m_d == pytest.approx(m_s, abs=1e-9) and v_d == pytest.approx(v_s, abs=1e-9)


def test_grid_sampling_equals_the_respaced_process():
    """Route 1: ancestral on a coarse grid of trained times. Route 2: p_mean_variance of
    spaced_diffusion(d, '25') stepped by hand. Same noise, same result."""
    d = GaussianDiffusion(cosine_betas(1000), var_type="fixed_large")
    model = exact_mixture_model(MIX, d.schedule)
    model.var_type = "fixed_large"
    ts = time_grid(d.schedule, 25, spacing="respace")
    xT = torch.randn(64, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    zs = [torch.randn(64, 2, dtype=F64, generator=torch.Generator().manual_seed(k)) for k in range(25)]
    got = ancestral(model, xT, ts, noise_sampler=lambda n, like: zs[n]).x
    s = spaced_diffusion(d, "25")
    x = xT
    for n, k in enumerate(reversed(range(s.num_timesteps))):
        i = torch.full((64,), k)
        out = model(x, s.model_time(i))
        p = s.p_mean_variance(out, x, i)
        x = p["mean"] + (torch.exp(0.5 * p["log_variance"]) * zs[n] if k > 0 else 0)
    torch.testing.assert_close(got, x, rtol=1e-10, atol=1e-10)


def test_ddim_eta0_is_deterministic_and_nfe_counts():
    model = exact_mixture_model(MIX, VPLinear())
    xT = torch.randn(16, 2, dtype=F64)
    a = ddim(model, xT, time_grid(model.schedule, 10))
    b = ddim(model, xT, time_grid(model.schedule, 10), generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.x, b.x) and a.nfe == 10
    assert pf_heun(model, xT, time_grid(model.schedule, 10)).nfe == 19  # Euler on the last step into t = 0
    assert pf_heun(model, xT, time_grid(model.schedule, 10, t_min=1e-3)).nfe == 21  # 20 + the final denoising


def test_trajectory_and_progressive_x0():
    model = exact_mixture_model(MIX, VPLinear())
    g = torch.Generator().manual_seed(0)
    xT = torch.randn(32, 2, dtype=F64, generator=g)
    for name in ["ancestral", "ddim", "euler_maruyama", "pf_euler", "pf_heun"]:
        r = SAMPLERS[name](model, xT, time_grid(model.schedule, 20), return_trajectory=True,
                           generator=torch.Generator().manual_seed(0))
        assert r.trajectory.shape == (21, 32, 2) and r.x0_preds.shape == (20, 32, 2)
        assert torch.equal(r.trajectory[0], xT) and torch.equal(r.trajectory[-1], r.x)
        # x̂0 improves along the way: the last prediction is much nearer the final sample than the first
        first, last = (r.x0_preds[0] - r.x).norm(dim=1).mean(), (r.x0_preds[-1] - r.x).norm(dim=1).mean()
        assert last < 0.2 * first, name


def test_same_seed_same_samples_and_start_from_given_state():
    model = exact_mixture_model(MIX, VPLinear())
    a = sample(model, (8, 2), sampler="ancestral", steps=20, generator=torch.Generator().manual_seed(3), dtype=F64)
    b = sample(model, (8, 2), sampler="ancestral", steps=20, generator=torch.Generator().manual_seed(3), dtype=F64)
    assert torch.equal(a.x, b.x)
    # Starting at t = 1 from the same noise, passed explicitly, is ordinary sampling bit for bit.
    g = torch.Generator().manual_seed(3)
    xT = torch.randn((8, 2), generator=g, dtype=F64)
    c = sample(model, (8, 2), sampler="ancestral", steps=20, x=xT, generator=g, dtype=F64)
    assert torch.equal(a.x, c.x)


def test_interpolation_endpoints_and_shape():
    d = GaussianDiffusion(linear_betas(1000))
    model = exact_mixture_model(MIX, d.schedule)
    xa, xb = MIX.means[:1], MIX.means[4:5]
    out = interpolate(model, xa, xb, [0.0, 0.5, 1.0], t0=0.1, steps=50, sampler="ddim",
                      generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, 2)
    # From a light noise level the endpoints come back near their sources.
    assert float((out[0] - xa[0]).norm()) < 0.5 and float((out[2] - xb[0]).norm()) < 0.5


def test_bad_grid_and_sampler_name():
    model = exact_mixture_model(MIX, VPLinear())
    with pytest.raises(ValueError, match="strictly decreasing"):
        ddim(model, torch.zeros(2, 2, dtype=F64), torch.tensor([0.5, 0.7]))
    with pytest.raises(ValueError, match="did you mean 'ddim'"):
        sample(model, (2, 2), sampler="dddim")
    with pytest.raises(ValueError, match="end at t = 0"):
        ancestral(model, torch.zeros(2, 2, dtype=F64), torch.tensor([1.0, 0.1]))


def test_default_discrete_grid_is_trailing_and_is_a_respaced_process():
    """'trailing' keeps the trained steps 999, 799, ..., 199 for N = 5 (diffusers' trailing spacing), and
    ancestral sampling on it equals the respaced process over exactly those kept steps (second route)."""
    d = GaussianDiffusion(linear_betas(1000), var_type="fixed_small")
    ts = time_grid(d.schedule, 5)
    torch.testing.assert_close(ts, torch.tensor([1.0, 0.8, 0.6, 0.4, 0.2, 0.0], dtype=F64))
    assert time_grid(d.schedule, 5, spacing="respace")[-2] == 0.001  # respace keeps step 0
    half = time_grid(d.schedule, 4, t_max=0.5)
    torch.testing.assert_close(half, torch.tensor([0.5, 0.375, 0.25, 0.125, 0.0], dtype=F64))
    assert len(time_grid(d.schedule, 1000)) == 1001 and time_grid(d.schedule, 1000)[-2] == 0.001
    model = exact_mixture_model(MIX, d.schedule)
    xT = torch.randn(32, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    zs = [torch.randn(32, 2, dtype=F64, generator=torch.Generator().manual_seed(k)) for k in range(5)]
    got = ancestral(model, xT, ts, noise_sampler=lambda n, like: zs[n]).x
    s = spaced_diffusion(d, [199, 399, 599, 799, 999])
    x = xT
    for n, k in enumerate(reversed(range(s.num_timesteps))):
        i = torch.full((32,), k)
        p = s.p_mean_variance(model(x, s.model_time(i)), x, i)
        x = p["mean"] + (torch.exp(0.5 * p["log_variance"]) * zs[n] if k > 0 else 0)
    torch.testing.assert_close(got, x, rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match="continuous"):
        time_grid(VPLinear(), 5, spacing="trailing")


def test_one_step_grid_starts_at_the_top():
    d = GaussianDiffusion(linear_betas(1000))
    torch.testing.assert_close(time_grid(d.schedule, 1), torch.tensor([1.0, 0.0], dtype=F64))
    assert float(time_grid(d.schedule, 2)[0]) == 1.0
