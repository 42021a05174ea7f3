"""Start from a given state, SDEdit, p(x0 | x_t) from one shared x_t, rate–distortion, interpolation grids."""
import json

import pytest
import torch

from difflab.cli import main
from difflab.analysis import noise_to, rate_distortion, sample_from, sdedit, shared_xt_samples
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


# ---------------------------------------------------------------------- spectra, density ratios, SDEdit curves
def test_trajectory_spectrum_of_gaussian_data_matches_the_closed_form_trajectory():
    """For N(0, s²) data the PF-ODE path is x_t = x_T·f(t), f(t) = sqrt(α_t² s² + σ_t²) / sqrt(α_1² s² + σ_1²),
    so the spectrum over the M times is |DFT of f(t_m)|² whatever x_T: the solved spectrum must match it."""
    from difflab.analysis import trajectory_spectra
    from difflab.methods.dsno import trajectory_times
    from difflab.process import VPLinear

    s_data = 0.5
    sched = VPLinear()
    model = exact_mixture_model(GaussianMixture([[0.0]], stds=s_data), sched)
    res = trajectory_spectra(model, (1,), (4, 8), n=64, sampler="pf_heun", steps=200, generator=torch.Generator().manual_seed(0))
    for M in (4, 8):
        t = trajectory_times(M, "quadratic")
        f = (sched.alpha(t) ** 2 * s_data**2 + sched.sigma(t) ** 2).sqrt()
        P = torch.fft.rfft(f).abs() ** 2
        P[1:(M + 1) // 2] *= 2  # one-sided modes stand for ±j (not DC, not Nyquist)
        expected = P / P.sum()
        got = torch.tensor(res["M"][str(M)]["spectrum"], dtype=F64)
        assert torch.allclose(got, expected, atol=2e-4), (M, got, expected)
        assert res["M"][str(M)]["cumulative"][-1] == pytest.approx(1.0, abs=1e-9)
    assert res["M"]["8"]["modes_for_threshold"] <= 5


def test_density_ratio_paths_separate_real_from_wrong_and_dg_closes_the_gap():
    """With the analytic log-ratio of the true vs a wrong-weight mixture: along the forward-diffused real
    paths its mean is E_p[log p/q] = KL(p_t||q_t) >= 0, along the wrong model's paths -KL(q_t||p_t) <= 0,
    and the DG sampler (exact correction) follows the real paths."""
    from difflab.analysis import density_ratio_paths
    from difflab.methods.guidance import DiscriminatorGuidance
    from difflab.methods.guidance.oracle import MixtureLogRatio, wrong_mixture

    d = GaussianDiffusion(linear_betas(1000))
    true = ring_mixture(8, radius=2.0, std=0.3)
    bad = wrong_mixture(true, "weights", weight_ratio=4.0)
    wrong_model = exact_mixture_model(bad, d.schedule)
    ratio = MixtureLogRatio(true, bad, d.schedule)
    real = true.sample(3000, torch.Generator().manual_seed(0)).float()
    res = density_ratio_paths(wrong_model, ratio, real, guided=DiscriminatorGuidance(wrong_model, ratio, weight=1.0),
                              steps=40, seed=1)
    paths = {k: torch.tensor(v["mean"]) for k, v in res["paths"].items()}
    r, p, g = paths["real (forward-diffused)"], paths["plain sampler"], paths["DG sampler"]
    t = torch.tensor(res["t"])
    assert (r[t < 0.35] > 0).all() and (p[t < 0.35] < 0).all()  # the signs of +KL and -KL (above: both < 1e-3)
    late = t < 0.2  # where the gap is large enough to measure how much DG closes (measured: 77-93%)
    assert ((g - r)[late].abs().mean() < 0.25 * (r - p)[late].mean())


def test_sdedit_curve_trades_faithfulness_for_realism():
    """SDEdit from another distribution: larger t0 lowers the PSNR to the source and brings the output
    towards the model's data (at t0 = 0.8 the exact model's output is within noise of the ring)."""
    from difflab.analysis import sdedit_curve
    from difflab.metrics.toy import sliced_wasserstein2

    d = GaussianDiffusion(linear_betas(1000))
    target = ring_mixture(8, radius=2.0, std=0.3)
    src_mix = GaussianMixture([[0.0, 0.0]], stds=0.5)
    source = src_mix.sample(600, torch.Generator().manual_seed(0)).float()
    ref = target.sample(600, torch.Generator().manual_seed(1))
    res = sdedit_curve({"to ring": exact_mixture_model(target, d.schedule)}, source, [0.1, 0.4, 0.8],
                       lambda x: sliced_wasserstein2(x.double(), ref), steps=40)
    rows = res["to ring"]
    psnr = [r["psnr"] for r in rows]
    real = [r["realism"] for r in rows]
    assert psnr[0] > psnr[1] > psnr[2]
    assert real[2] < 0.3 * res["source_realism"] and real[2] < real[0]


def test_analyze_spectrum_cli_and_bad_input(digits_run, tmp_path):
    out = tmp_path / "spec"
    assert main(["analyze", "spectrum", str(digits_run), "--out", str(out), "--n", "16", "--M", "4,6",
                 "--steps", "12"]) == 0
    data = json.loads((out / "spectrum.json").read_text())
    assert set(data["M"]) == {"4", "6"} and (out / "spectrum.png").exists()
    assert sum(data["M"]["6"]["spectrum"]) == pytest.approx(1.0, abs=1e-9)
    assert main(["analyze", "spectrum", str(digits_run), "--out", str(out), "--M", "4,x"]) == 2
    assert main(["analyze", "spectrum", str(digits_run), "--out", str(out), "--sampler", "ancestral"]) == 2
    assert main(["analyze", "density-ratio", str(digits_run), "--out", str(out)]) == 2  # needs --disc


def test_analyze_density_ratio_and_sdedit_curve_cli(digits_run, tmp_path):
    q = ["--no-progress"]
    assert main(["dg-bank", str(digits_run), "--out", str(tmp_path / "bank"), "--n", "64", "--steps", "5", *q]) == 0
    assert main(["dg-train", str(digits_run), "--bank", str(tmp_path / "bank"), "--out", str(tmp_path / "dg"),
                 "--steps", "3", "--batch-size", "32", "--max-real", "64", "--device", "cpu", *q]) == 0
    out = tmp_path / "a"
    assert main(["analyze", "density-ratio", str(digits_run), "--disc", str(tmp_path / "dg"), "--out", str(out),
                 "--n", "16", "--steps", "5"]) == 0
    dr = json.loads((out / "density-ratio.json").read_text())
    assert set(dr["paths"]) == {"real (forward-diffused)", "plain sampler", "DG sampler"} and len(dr["t"]) == 5
    assert main(["analyze", "sdedit-curve", str(digits_run), "--source", "digits", "--disc", str(tmp_path / "dg"),
                 "--out", str(out), "--n", "32", "--steps", "5", "--t0", "0.3,0.6"]) == 0
    sc = json.loads((out / "sdedit-curve.json").read_text())
    assert set(sc["curves"]) == {"source_realism", "plain", "DG w=1"} and sc["realism_metric"] == "FD, pixels (digits 8x8)"
    assert (out / "sdedit_curve.png").exists()
    assert main(["analyze", "sdedit-curve", str(digits_run), "--out", str(out)]) == 2  # needs --source
    assert main(["analyze", "sdedit-curve", str(digits_run), "--source", "toy:ring8", "--out", str(out)]) == 2
