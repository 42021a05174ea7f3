"""The diffusion math against closed forms and against second routes to the same number."""
import math

import pytest
import torch

from difflab.models import DiffusionModel, ModelOutput, exact_mixture_model
from difflab.process import (DiscreteSchedule, GaussianDiffusion, GaussianMixture, LossAwareSampler, UniformSampler,
                             VPLinear, cosine_alpha_bar, cosine_betas, ddpm_losses, discretized_gaussian_log_likelihood,
                             dsm_loss, index_to_time, linear_betas, respace, ring_mixture, spaced_diffusion,
                             time_to_index)

F64 = torch.float64


# ----------------------------------------------------------------------------- respacing
def _section(start, size, count):
    """Improved DDPM's stride for one section, written as a running sum (the float sum decides
    the .5 cases, exactly as the original accumulates its fractional index)."""
    stride = 1 if count <= 1 else (size - 1) / (count - 1)
    out, pos = [], 0.0
    for _ in range(count):
        out.append(start + round(pos))
        pos += stride
    return out


def test_respace_section_counts_300():
    got = respace(300, "10,15,20")
    assert got[:10] == list(range(0, 100, 11))  # stride (100-1)/(10-1) = 11 exactly
    # 99/14 = 7.0714…; the running sum after 7 strides is 49.4999… (not 49.5), so 149, not 150.
    assert got[10:25] == [100, 107, 114, 121, 128, 135, 142, 149, 157, 164, 171, 178, 185, 192, 199]
    assert got[25:] == _section(200, 100, 20)
    assert got[25] == 200 and got[-1] == 299 and len(got) == 45


def test_respace_ddim_and_single_sections():
    assert respace(1000, "ddim50") == list(range(0, 1000, 20))
    r = respace(1000, "250")
    assert len(r) == 250 and r[0] == 0 and r[-1] == 999 and r == _section(0, 1000, 250)
    r = respace(4000, "100")
    assert len(r) == 100 and r[0] == 0 and r[-1] == 3999
    assert all(40 <= b - a <= 41 for a, b in zip(r, r[1:]))  # stride 3999/99 = 40.39
    assert respace(10, [2, 3]) == [0, 4, 5, 7, 9]  # sections of 5: {0,4} and {5,7,9}


@pytest.mark.parametrize("spec,msg", [("10,200", "cannot divide a section of 150"), ("ddim299", "integer stride"),
                                      ("ddimx", "integer N"), ("a,b", "comma-separated")])
def test_respace_errors(spec, msg):
    with pytest.raises(ValueError, match=msg):
        respace(300, spec)


def test_spaced_process_keeps_alpha_bar_and_original_times():
    d = GaussianDiffusion(cosine_betas(1000))
    kept = respace(1000, "ddim50")
    s = spaced_diffusion(d, "ddim50")
    assert s.num_timesteps == 50 and s.timestep_map == kept
    torch.testing.assert_close(s.alphas_cumprod, d.alphas_cumprod[kept], rtol=1e-12, atol=0)
    torch.testing.assert_close(s.times, (torch.tensor(kept, dtype=F64) + 1) / 1000)
    # betas re-derived: β'_k = 1 - ᾱ_{s_k}/ᾱ_{s_{k-1}}
    torch.testing.assert_close(s.betas[1:], 1 - d.alphas_cumprod[kept[1:]] / d.alphas_cumprod[kept[:-1]])


# ----------------------------------------------------------------------------- schedules
def test_linear_betas_scale_with_T():
    b = linear_betas(1000)
    assert b[0] == pytest.approx(1e-4) and b[-1] == pytest.approx(0.02) and b.dtype == F64
    b4 = linear_betas(4000)
    assert b4[0] == pytest.approx(0.25e-4) and b4[-1] == pytest.approx(0.005)


def test_cosine_alpha_bar_closed_form_and_clip():
    T, s = 1000, 0.008
    b = cosine_betas(T)
    ac = torch.cumprod(1 - b, 0)
    t = torch.arange(1, T + 1, dtype=F64) / T
    closed = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2 / math.cos(s / (1 + s) * math.pi / 2) ** 2
    # Before the clip bites, the cumulative product telescopes to the closed form.
    unclipped = b < 0.999
    assert unclipped[:990].all() and not unclipped[-1]
    torch.testing.assert_close(ac[:990], closed[:990], rtol=1e-9, atol=1e-12)
    assert b.max() == pytest.approx(0.999)
    assert float(cosine_alpha_bar(0.0)) == pytest.approx(1.0)


def test_discrete_and_continuous_routes_agree():
    """The VP-SDE marginal at t_i equals the DDPM marginal at index i when β(t) is matched."""
    d = GaussianDiffusion(linear_betas(1000))
    sched = d.schedule
    i = torch.arange(1000)
    t = index_to_time(i, 1000)
    torch.testing.assert_close(sched.alpha(t), d.sqrt_alphas_cumprod, atol=1e-6, rtol=0)
    torch.testing.assert_close(sched.sigma(t), d.sqrt_one_minus_alphas_cumprod, atol=1e-6, rtol=0)
    # Second route: integrate the matched rate β(t) numerically, ᾱ(t_i) = exp(-∫_0^{t_i} β).
    fine = torch.linspace(0, 1, 200_001, dtype=F64)
    mid = (fine[1:] + fine[:-1]) / 2
    cum = torch.cat([torch.zeros(1, dtype=F64), torch.cumsum(sched.beta(mid) * (fine[1] - fine[0]), 0)])
    at_knots = torch.exp(-cum[(t * 200_000).round().long()])
    torch.testing.assert_close(at_knots, d.alphas_cumprod, atol=1e-6, rtol=0)
    assert torch.allclose(time_to_index(t, 1000), i.double())
    # The closed-form linear VP-SDE (β_min=0.1, β_max=20) is DDPM's linear schedule in the limit:
    # the two differ by O(β²) per step, under 1e-3 in ᾱ everywhere.
    vp = VPLinear()
    assert (vp.alpha_bar(t) - d.alphas_cumprod).abs().max() < 1e-3
    torch.testing.assert_close(vp.beta(torch.tensor([0.0, 0.5, 1.0])), torch.tensor([0.1, 10.05, 20.0], dtype=F64))


def test_schedule_beta_is_minus_dlog_alpha_bar():
    vp = VPLinear()
    t = torch.tensor([0.1, 0.5, 0.9], dtype=F64)
    h = 1e-6
    fd = -(vp.log_alpha_bar(t + h) - vp.log_alpha_bar(t - h)) / (2 * h)
    torch.testing.assert_close(vp.beta(t), fd, rtol=1e-7, atol=0)
    torch.testing.assert_close(vp.t_from_log_snr(vp.log_snr(t)), t, atol=1e-9, rtol=0)


# ----------------------------------------------------------------------------- discrete process
def test_posterior_matches_gaussian_conditioning():
    """q(x_{i-1} | x_i, x0) from the tables equals Bayes' rule on the two Gaussians."""
    d = GaussianDiffusion(linear_betas(100))
    i = torch.tensor([5, 50, 99])
    x0 = torch.tensor([[0.3], [-0.7], [1.0]], dtype=F64)
    xt = torch.tensor([[0.1], [0.4], [-0.2]], dtype=F64)
    mean, var, _ = d.q_posterior(x0, xt, i)
    ab_prev, b = d.alphas_cumprod_prev[i], d.betas[i]
    # prior x_{i-1} ~ N(√ᾱ_{i-1} x0, 1-ᾱ_{i-1}); likelihood x_i ~ N(√(1-β) x_{i-1}, β)
    prec = 1 / (1 - ab_prev) + (1 - b) / b
    m = (ab_prev.sqrt() * x0[:, 0] / (1 - ab_prev) + (1 - b).sqrt() * xt[:, 0] / b) / prec
    torch.testing.assert_close(var[:, 0], 1 / prec)
    torch.testing.assert_close(mean[:, 0], m)


def test_discretized_decoder_sums_to_one():
    levels = torch.linspace(-1, 1, 256, dtype=F64)
    for mean, log_scale in [(0.0, math.log(0.1)), (0.93, math.log(0.004)), (-1.2, math.log(0.5))]:
        lp = discretized_gaussian_log_likelihood(levels, torch.full_like(levels, mean), torch.full_like(levels, log_scale))
        assert float(lp.exp().sum()) == pytest.approx(1.0, abs=1e-6)


def test_variance_types():
    d = GaussianDiffusion(linear_betas(50))
    x = torch.zeros(2, 3, dtype=F64)
    i = torch.tensor([0, 30])
    small = d.model_log_variance(i, x, var_type="fixed_small")
    large = d.model_log_variance(i, x, var_type="fixed_large")
    torch.testing.assert_close(small[1], torch.log(d.posterior_variance[30]).expand(3))
    torch.testing.assert_close(large[1], torch.log(d.betas[30]).expand(3))
    torch.testing.assert_close(large[0], torch.log(d.posterior_variance[1]).expand(3))
    v = torch.tensor([[-1.0] * 3, [1.0] * 3], dtype=F64)
    lr = d.model_log_variance(i, x, v, "learned_range")
    torch.testing.assert_close(lr[0], small[0])  # v = -1 → β̃
    torch.testing.assert_close(lr[1], torch.log(d.betas[30]).expand(3))  # v = +1 → β
    with pytest.raises(ValueError, match="variance output"):
        d.model_log_variance(i, x, None, "learned")


def test_prediction_parameterisations_agree():
    """A network predicting x0 or v, fed the exact x0 / v, yields the same ε as an ε-network."""
    sched = VPLinear()
    x0 = torch.randn(4, 3, dtype=F64)
    eps = torch.randn(4, 3, dtype=F64)
    t = torch.tensor([0.1, 0.3, 0.6, 0.9], dtype=F64)
    a, s = sched.alpha(t)[:, None], sched.sigma(t)[:, None]
    xt = a * x0 + s * eps
    targets = {"eps": eps, "x0": x0, "v": a * eps - s * x0}

    class Oracle(torch.nn.Module):
        def __init__(self, target):
            super().__init__()
            self.target = target

        def forward(self, x, tt, y=None):
            return self.target

    for pred, target in targets.items():
        torch.testing.assert_close(DiffusionModel(Oracle(target), sched, prediction=pred)(xt, t).eps, eps)


def test_hybrid_loss_gradient_reaches_mean_only_through_simple():
    torch.manual_seed(0)
    d = GaussianDiffusion(linear_betas(20), var_type="learned_range")
    mean_head = torch.nn.Parameter(torch.randn(8, 2, dtype=F64) * 0.1)
    var_head = torch.nn.Parameter(torch.randn(8, 2, dtype=F64) * 0.1)

    class Heads(torch.nn.Module):
        schedule, var_type = d.schedule, "learned_range"

        def forward(self, x, t, y=None):
            return ModelOutput(eps=mean_head + 0 * x, t=t, var_out=torch.tanh(var_head))

    x0 = torch.rand(8, 2, dtype=F64) * 2 - 1
    i = torch.randint(0, 20, (8,))
    noise = torch.randn(8, 2, dtype=F64)
    m = Heads()
    hybrid = ddpm_losses(m, d, x0, i, loss="hybrid", noise=noise)
    g_mean_h, g_var_h = torch.autograd.grad(hybrid["loss"].sum(), [mean_head, var_head])
    simple = ddpm_losses(m, d, x0, i, loss="simple", noise=noise)
    (g_mean_s,) = torch.autograd.grad(simple["loss"].sum(), [mean_head])
    torch.testing.assert_close(g_mean_h, g_mean_s, rtol=0, atol=0)  # the bound adds nothing to the mean
    assert g_var_h.abs().sum() > 0  # ... and is what trains the variance
    vlb = ddpm_losses(m, d, x0, i, loss="vlb", noise=noise)
    (g_mean_v,) = torch.autograd.grad(vlb["loss"].sum(), [mean_head])
    assert g_mean_v.abs().sum() > 0  # without the stop-gradient the bound does reach the mean
    torch.testing.assert_close(hybrid["loss"], simple["loss"] + 0.001 * vlb["loss"])


def test_dsm_loss_is_zero_mean_error_for_exact_model_and_weights():
    mix = GaussianMixture(torch.zeros(1, 2), stds=1.0)  # N(0, I): ε* = x_t exactly
    sched = VPLinear()
    model = exact_mixture_model(mix, sched)
    g = torch.Generator().manual_seed(0)
    n = 20_000
    x0 = torch.randn(n, 2, dtype=F64, generator=g)
    t = torch.rand(n, dtype=F64, generator=g) * 0.99 + 0.01
    noise = torch.randn(n, 2, dtype=F64, generator=g)
    out = dsm_loss(model, sched, x0, t, noise=noise)
    # For standard normal data, x_t ~ N(0, I) and E[ε | x_t] = σ x_t, so the minimum DSM loss is
    # E‖ε - σ x_t‖²/D = 1 - σ² (= ᾱ): the Monte-Carlo mean over 20k draws agrees to ~0.01.
    expected = float((1 - sched.sigma(t) ** 2).mean())
    assert float(out["loss"].mean()) == pytest.approx(expected, abs=0.015)
    lw = dsm_loss(model, sched, x0, t, noise=noise, likelihood_weighting=True)
    torch.testing.assert_close(lw["loss"], out["mse"] * sched.beta(t) / sched.sigma(t) ** 2)


# ----------------------------------------------------------------------------- timestep sampling
def test_loss_aware_sampler_warmup_weights_and_state():
    T = 10
    s = LossAwareSampler(T, history=3, uniform_prob=0.001)
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(s.probs(), UniformSampler(T).probs())
    fake = torch.arange(1, T + 1, dtype=F64)  # per-step loss grows with t
    for _ in range(3):
        s.update(torch.arange(T), fake)
    assert s.warmed_up()
    p = s.probs()
    expected = fake / fake.sum() * 0.999 + 0.001 / T
    torch.testing.assert_close(p, expected)
    i, w = s.sample(200_000, g)
    # Importance weights make the weighted mean of the per-step loss unbiased for the uniform mean.
    assert float((w.double() * fake[i]).mean()) == pytest.approx(float(fake.mean()), rel=0.01)
    saved = s.state_dict()
    s2 = LossAwareSampler(T, history=3)
    s2.load_state_dict(saved)
    torch.testing.assert_close(s2.probs(), p)
    s.update(torch.tensor([0]), torch.tensor([100.0]))  # rolling history: oldest drops out
    assert s.losses[0].tolist() == [1.0, 1.0, 100.0]


# ----------------------------------------------------------------------------- toy world
def test_mixture_score_density_and_posterior():
    mix = GaussianMixture(torch.tensor([[1.0, 0.0], [-1.0, 0.5]]),
                          covs=torch.tensor([[[0.3, 0.1], [0.1, 0.2]], [[0.1, 0.0], [0.0, 0.4]]]),
                          weights=torch.tensor([0.3, 0.7]))
    x = torch.randn(5, 2, dtype=F64, requires_grad=True)
    a, s = 0.8, 0.6
    lp = mix.log_prob(x, a, s)
    (g,) = torch.autograd.grad(lp.sum(), x)
    torch.testing.assert_close(mix.score(x.detach(), a, s), g)  # score = ∇ log density
    # log density against the explicit diffused mixture (full covariances, second route)
    explicit = torch.logsumexp(torch.stack([
        torch.distributions.MultivariateNormal(a * m, a * a * c + s * s * torch.eye(2, dtype=F64)).log_prob(x.detach())
        + math.log(w) for m, c, w in zip(mix.means, mix.covs, mix.weights.tolist())]), 0)
    torch.testing.assert_close(lp.detach(), explicit)
    # Tweedie: E[x0 | x_t] = (x_t + σ² ∇log p_t) / α
    xt = x.detach()
    torch.testing.assert_close(mix.posterior_mean_x0(xt, a, s), (xt + s * s * mix.score(xt, a, s)) / a)
    # Posterior samples have the posterior mean (Monte Carlo)
    one = xt[:1].expand(40_000, 2)
    draws = mix.sample_posterior_x0(one, a, s, torch.Generator().manual_seed(1))
    torch.testing.assert_close(draws.mean(0), mix.posterior_mean_x0(xt[:1], a, s)[0], atol=0.01, rtol=0)
    torch.testing.assert_close(draws.var(0), mix.posterior_var_x0(xt[:1], a, s)[0], atol=0.01, rtol=0)


def test_mixture_sampling_moments():
    mix = ring_mixture(8, radius=2.0, std=0.2)
    x = mix.sample(100_000, torch.Generator().manual_seed(0))
    torch.testing.assert_close(x.mean(0), mix.mean(), atol=0.02, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), mix.covariance(), atol=0.03, rtol=0)
    # the mixture's density integrates to one (grid quadrature)
    g = torch.linspace(-4, 4, 401, dtype=F64)
    xx = torch.cartesian_prod(g, g)
    assert float(mix.log_prob(xx).exp().sum() * (g[1] - g[0]) ** 2) == pytest.approx(1.0, abs=1e-3)


def test_discrete_schedule_is_exact_at_knots():
    ac = torch.cumprod(1 - cosine_betas(100), 0)
    ds = DiscreteSchedule(ac)
    t = (torch.arange(100, dtype=F64) + 1) / 100
    torch.testing.assert_close(ds.alpha_bar(t), ac, rtol=1e-12, atol=0)
    assert float(ds.alpha_bar(0.0)) == 1.0
