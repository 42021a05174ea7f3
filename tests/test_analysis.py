"""Start from a given state, SDEdit, p(x0 | x_t) from one shared x_t, rate–distortion, interpolation grids."""
import json

import pytest
import torch

from difflab.cli import main
from difflab.methods.analysis import noise_to, rate_distortion, sample_from, sdedit, shared_xt_samples
from difflab.metrics.toy import mmd_permutation_test
from difflab.models import ExactReverseModel, exact_mixture_model
from difflab.process import GaussianDiffusion, GaussianMixture, linear_betas, ring_mixture
from difflab.samplers import sample

F64 = torch.float64
MIX = ring_mixture(8, radius=2.0, std=0.3)


def test_start_at_T_is_ordinary_sampling_and_t0_zero_returns_input():
    d = GaussianDiffusion(linear_betas(1000))
    model = exact_mixture_model(MIX, d.schedule)
    xT = torch.randn(64, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    for name in ("ancestral", "ddim", "euler_maruyama", "pf_heun"):
        a = sample_from(model, xT, 1.0, sampler=name, steps=50, generator=torch.Generator().manual_seed(1)).x
        b = sample(model, xT.shape, sampler=name, steps=50, x=xT, generator=torch.Generator().manual_seed(1)).x
        assert torch.equal(a, b), name
    x0 = MIX.sample(16, torch.Generator().manual_seed(2))
    assert torch.equal(sdedit(model, x0, 0.0), x0)


def test_shared_xt_posterior_matches_exact_posterior():
    """Samples of p(x0 | x_t) from one shared x_t (exact model, ancestral from t0 = 0.3) against
    exact posterior draws of the mixture: MMD two-sample test at level 0.01, and matching means."""
    d = GaussianDiffusion(linear_betas(1000))
    model = exact_mixture_model(MIX, d.schedule)
    g = torch.Generator().manual_seed(0)
    x0 = MIX.means[:1] + 0.1
    t0 = 0.3
    xt, s = shared_xt_samples(model, x0, t0, 1000, steps=300, generator=g)
    s = s[0]
    a, sg = float(d.schedule.alpha(t0)), float(d.schedule.sigma(t0))
    exact = MIX.sample_posterior_x0(xt.expand(1000, 2), a, sg, generator=torch.Generator().manual_seed(3))
    _, p = mmd_permutation_test(s, exact, num_permutations=100)
    assert p > 0.01
    torch.testing.assert_close(s.mean(0), exact.mean(0), atol=0.1, rtol=0)
    assert noise_to(model, x0, 1.0).shape == x0.shape


def test_rate_distortion_curve_is_monotone_and_adds_up():
    mix = GaussianMixture(torch.tensor([[-0.4, 0.1], [0.3, -0.2]]), stds=torch.tensor([0.25, 0.2]))
    d = GaussianDiffusion(linear_betas(200))
    k = ((mix.sample(300, torch.Generator().manual_seed(0)) + 1) / 2 * 255).round().clamp(0, 255)
    rd = rate_distortion(ExactReverseModel(mix, d), d, k / 127.5 - 1, generator=torch.Generator().manual_seed(1))
    rate, dist = torch.tensor(rd["rate_bpd"]), torch.tensor(rd["rmse_255"])
    assert rd["step"][0] == 199 and rd["step"][-1] == 1
    assert (rate[1:] >= rate[:-1] - 1e-9).all()  # bits only accumulate along the reverse process
    # and the reconstruction error falls steadily, from the data's spread (~46 levels) to ~5 levels
    assert (dist[::20][1:] < dist[::20][:-1] + 1.0).all() and dist[-1] < 0.15 * dist[0]  # (+1: Monte-Carlo noise)
    assert float(rate[-1]) + rd["decoder_bpd"] == pytest.approx(rd["total_bpd"], rel=1e-6)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("d") / "digits"
    torch.set_num_threads(1)
    assert main(["train", "digits-ddpm", "--out", str(out), "--no-progress", "--set", "train.steps=10",
                 "--set", "train.batch_size=16", "--set", "diffusion.timesteps=50", "--set", "model.base_channels=16",
                 "--set", "train.ckpt_every=10"]) == 0
    return out


@pytest.mark.parametrize("what", ["sdedit", "posterior", "rate-distortion", "interp"])
def test_analyze_cli_writes_figure_and_json(digits_run, tmp_path, what):
    out = tmp_path / what
    assert main(["analyze", what, str(digits_run), "--out", str(out), "--n", "4", "--k", "3", "--steps", "10",
                 "--t0", "0.3,0.6"]) == 0
    data = json.loads((out / f"{what}.json").read_text())
    assert data["what"] == what
    assert list(out.glob("*.png"))


def test_sample_init_sdedit_cli(digits_run, tmp_path):
    import numpy as np

    from difflab.data import load_dataset

    x = load_dataset("digits", split="test", num_samples=6).x.numpy()
    np.savez(tmp_path / "in.npz", samples=x)
    assert main(["sample", str(digits_run), "--init", str(tmp_path / "in.npz"), "--t0", "0", "--n", "6",
                 "--out", str(tmp_path / "o.npz"), "--no-progress"]) == 0
    assert np.array_equal(np.load(tmp_path / "o.npz")["samples"], x)  # t0 = 0 returns the input
