"""`difflab eval` / `difflab bench`: metric routing, determinism, and the diffusers peers against difflab."""
import json

import numpy as np
import pytest
import torch

from difflab.cli import main
from difflab.interop.peers import diffusers_sample
from difflab.metrics.bench import default_grid, evaluate_samples, run_bench
from difflab.models import exact_mixture_model
from difflab.process import GaussianDiffusion, linear_betas, ring_mixture
from difflab.samplers import ddim

F64 = torch.float64


def test_diffusers_ddim_equals_difflab_ddim_on_the_same_grid():
    """Two routes to DDIM: diffusers' scheduler ('leading' spacing: 0, 20, ..., 980) and difflab's
    ddim on the grid of those trained times. Same x_T, same result to float32 precision."""
    pytest.importorskip("diffusers")
    d = GaussianDiffusion(linear_betas(1000))
    model = exact_mixture_model(ring_mixture(std=0.3), d.schedule)
    g = torch.Generator().manual_seed(0)
    ref = diffusers_sample(model, (256, 2), "ddim", 50, generator=g)
    xT = torch.randn((256, 2), generator=torch.Generator().manual_seed(0))
    ts = torch.cat([(torch.arange(980, -1, -20, dtype=F64) + 1) / 1000, torch.zeros(1, dtype=F64)])
    ours = ddim(model, xT, ts).x
    torch.testing.assert_close(ours, ref, atol=2e-4, rtol=1e-4)


def test_bench_peer_rows_start_from_the_per_sample_noise_of_every_other_row():
    """A diffusers row's sample i starts from generate()'s x_T of sample i (so peer and difflab rows pair
    sample by sample), whatever the batch."""
    pytest.importorskip("diffusers")
    from difflab.metrics.bench import _draw
    from difflab.samplers import generate

    d = GaussianDiffusion(linear_betas(1000))
    model = exact_mixture_model(ring_mixture(std=0.3), d.schedule)
    models = {"difflab": (model, [])}
    a = _draw("diffusers", "ddim", 5, {}, models, {}, (2,), 10, 3, 4, "cpu")["x"]
    b = _draw("diffusers", "ddim", 5, {}, models, {}, (2,), 10, 3, 10, "cpu")["x"]
    x_T = generate(model, (2,), sampler="ddim", steps=1, n=10, seed=3, batch=10, trajectory=True)["trajectory"][0]
    want = diffusers_sample(model, (10, 2), "ddim", 5, x=x_T)
    torch.testing.assert_close(a, want, atol=1e-6, rtol=0)
    torch.testing.assert_close(b, want, atol=1e-6, rtol=0)


def test_toy_metric_routing_and_scale():
    mix = ring_mixture()
    from difflab.data import toy_mixture

    true = toy_mixture("toy:ring8").sample(1000, torch.Generator().manual_seed(0))
    good = evaluate_samples(true.float(), "toy:ring8")
    bad = evaluate_samples(true.float() + 0.5, "toy:ring8")
    assert good["feature_space"] == "exact (true mixture)" and good["quality"] < 0.05 < bad["quality"]
    assert good["coverage"] == 1.0
    del mix


def test_digits_pixel_frechet_distance_orders_corruptions():
    from difflab.data import load_dataset

    test = load_dataset("digits", split="test").x
    clean = evaluate_samples(test, "digits")["quality"]
    noisy = [evaluate_samples((test + s * torch.randn_like(test)).clamp(-1, 1), "digits")["quality"] for s in (0.2, 0.5)]
    assert clean < noisy[0] < noisy[1]
    assert evaluate_samples(test, "digits")["feature_space"] == "pixels (digits 8x8)"


def test_bench_is_deterministic_and_writes_its_files(tmp_path):
    d = GaussianDiffusion(linear_betas(1000))
    model = exact_mixture_model(ring_mixture(std=0.3), d.schedule)
    grid = [("ddim", 5), ("pf_heun", 3)]
    a = run_bench(model, "toy:ring8", (2,), tmp_path / "a", grid=grid, n=300, peers=False, progress=False)
    b = run_bench(model, "toy:ring8", (2,), tmp_path / "b", grid=grid, n=300, peers=False, progress=False)
    assert [r["quality"] for r in a["rows"]] == [r["quality"] for r in b["rows"]]
    for f in ("results.json", "table.md", "table.csv", "quality_vs_nfe.png"):
        assert (tmp_path / "a" / f).exists()
    assert json.loads((tmp_path / "a" / "results.json").read_text())["rows"][1]["nfe"] == 5
    assert default_grid((1000, 10))[0] == ("ancestral", 1000)


def test_eval_cli_on_npz(tmp_path, capsys):
    from difflab.data import toy_mixture

    x = toy_mixture("toy:ring8").sample(500, torch.Generator().manual_seed(0)).float().numpy()
    np.savez(tmp_path / "s.npz", samples=x)
    assert main(["eval", str(tmp_path / "s.npz"), "--data", "toy:ring8", "--out", str(tmp_path / "m.json")]) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["n"] == 500 and m["coverage"] == 1.0
    assert main(["eval", str(tmp_path / "s.npz")]) == 2
    assert "--data" in capsys.readouterr().err


def test_test_split_nll_ode_matches_true_density():
    from difflab.data import ArrayDataset
    from difflab.metrics.likelihood import test_split_nll
    from difflab.process import VPLinear

    mix = ring_mixture(std=0.3)
    x = mix.sample(48, torch.Generator().manual_seed(0))
    model = exact_mixture_model(mix, VPLinear())
    res = test_split_nll(model, VPLinear(), ArrayDataset(x, name="toy"), method="ode", batch=48, rtol=1e-6, atol=1e-6)
    assert res["trace"] == "exact"  # 2-D: the exact divergence
    assert res["nll_per_dim"] == pytest.approx(float(-mix.log_prob(x).mean()) / 2, rel=0.01)
    with pytest.raises(Exception, match="discrete process"):
        test_split_nll(model, VPLinear(), ArrayDataset(x, name="toy"), method="vlb")


def test_bench_method_rows_report_ratios_against_their_base(tmp_path):
    """Method rows (wrapped models, one-step samplers) sit beside the base model with a ratio:
    DG with w=0 is the base sampler (ratio exactly 1), the analytic discriminator on a wrong-weight
    mixture improves it, and a one-step sampler that IS the DDIM@20 map reproduces that row exactly."""
    from difflab.data import toy_mixture
    from difflab.methods.guidance import DiscriminatorGuidance
    from difflab.methods.guidance.oracle import MixtureLogRatio, wrong_mixture
    from difflab.samplers import sample

    d = GaussianDiffusion(linear_betas(1000))
    true = toy_mixture("toy:ring8")
    bad = wrong_mixture(true, "weights")
    wrong_model = exact_mixture_model(bad, d.schedule)
    extra = {"DG w=0": DiscriminatorGuidance(wrong_model, MixtureLogRatio(true, bad, d.schedule), weight=0.0),
             "DG": (DiscriminatorGuidance(wrong_model, MixtureLogRatio(true, bad, d.schedule), weight=1.0),
                    [("ancestral", 100)])}
    one = {"DDIM20": (lambda xT: sample(wrong_model, xT.shape, sampler="ddim", steps=20, x=xT).x, ("difflab", "ddim", 20))}
    res = run_bench(wrong_model, "toy:ring8", (2,), tmp_path, grid=[("ancestral", 100), ("ddim", 20)], n=1500,
                    peers=False, extra_models=extra, one_step=one, progress=False)
    rows = {(r["model"], r["sampler"], r["steps"]): r for r in res["rows"]}
    assert rows[("DG w=0", "ancestral", 100)]["ratio"] == 1.0 and rows[("DG w=0", "ddim", 20)]["ratio"] == 1.0
    assert ("DG", "ddim", 20) not in rows  # its own grid
    assert rows[("DG", "ancestral", 100)]["ratio"] < 0.75  # measured 0.57 (sliced W2 0.24 -> 0.14)
    assert rows[("DDIM20", "one-step", 1)]["ratio"] == 1.0 and rows[("DDIM20", "one-step", 1)]["nfe"] == 1
    table = (tmp_path / "table.md").read_text()
    assert "DG: 0.87" in table and "(vs difflab ddim@20)" in table


def test_bench_cli_puts_tp_dg_and_dsno_beside_the_plain_samplers(tmp_path):
    """`difflab bench --tp --disc --dsno` on tiny toy runs: TP, DG and TP+DG rows on the method grid with
    ratios, the DSNO row against its teacher exactly as the bank recorded it, and DDIM at 1, 2, 4 NFE."""
    from difflab.cli import main

    run, q = tmp_path / "toy", ["--no-progress"]
    assert main(["train", "toy-ddpm", "--out", str(run), "--set", "train.steps=20", "--set", "model.hidden=32",
                 "--set", "model.depth=2", "--set", "data.num_samples=1000", *q]) == 0
    assert main(["tp-train", str(run), "--out", str(tmp_path / "tp"), "--steps", "10", "--set", "tp.hidden=32", *q]) == 0
    assert main(["dg-bank", str(run), "--out", str(tmp_path / "bank"), "--n", "200", "--steps", "5", *q]) == 0
    assert main(["dg-train", str(run), "--bank", str(tmp_path / "bank"), "--out", str(tmp_path / "dg"), "--steps", "4",
                 "--batch-size", "100", "--max-real", "200", "--device", "cpu", *q]) == 0
    assert main(["dsno-data", str(run), "--out", str(tmp_path / "traj"), "--n", "64", "--M", "4", "--steps", "6",
                 "--shard-size", "32", *q]) == 0
    assert main(["dsno-train", str(run), "--data", str(tmp_path / "traj"), "--out", str(tmp_path / "dsno"),
                 "--steps", "2", "--batch-size", "16", "--set", "train.warmup_steps=1", *q]) == 0
    out = tmp_path / "bench"
    assert main(["bench", str(run), "--out", str(out), "--nfe", "10", "--method-nfe", "5", "--n", "200", "--no-peers",
                 "--tp", str(tmp_path / "tp"), "--disc", str(tmp_path / "dg"), "--dsno", str(tmp_path / "dsno"),
                 "--device", "cpu", *q]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    got = {(r["model"], r["sampler"], r["nfe"]) for r in rows}
    for model in ("TP", "DG w=1", "TP+DG"):
        assert {(model, s, 5) for s in ("euler_maruyama", "ancestral", "ddim")} <= got
    assert {("difflab", "ddim", k) for k in (1, 2, 4, 5, 10)} <= got
    assert any(r["sampler"] == "pf_adaptive" for r in rows)
    dsno = next(r for r in rows if r["model"] == "DSNO")
    teacher = next(r for r in rows if r["model"] == "teacher")
    assert dsno["nfe"] == 1 and dsno["baseline"] == f"teacher {teacher['sampler']}@{teacher['steps']}"
    assert dsno["ratio"] == dsno["quality"] / teacher["quality"]
    tp5 = next(r for r in rows if r["model"] == "TP" and r["sampler"] == "ddim")
    plain5 = next(r for r in rows if r["model"] == "difflab" and r["sampler"] == "ddim" and r["nfe"] == 5)
    assert tp5["ratio"] == tp5["quality"] / plain5["quality"]
    table = (out / "table.md").read_text()
    assert "TP: 0.42" in table and "DSNO: 1.51" in table
    assert main(["bench", str(run), "--out", str(out), "--method-nfe", "5,x"]) == 2
    assert main(["bench", str(run), "--out", str(tmp_path / "b2"), "--nfe", "5", "--n", "50", "--no-peers",
                 "--no-adaptive", *q]) == 0
    rows = json.loads((tmp_path / "b2" / "results.json").read_text())["rows"]
    assert {r["sampler"] for r in rows} == {"ancestral", "ddim", "euler_maruyama", "pf_euler", "pf_heun"}
    assert main(["bench", str(run), "--out", str(tmp_path / "b3"), "--nfe", "5", "--n", "50", "--no-peers",
                 "--samplers", "ddim,pf_heun", *q]) == 0
    rows = json.loads((tmp_path / "b3" / "results.json").read_text())["rows"]
    assert {r["sampler"] for r in rows} == {"ddim", "pf_heun"}
    # --clip reaches every sampler that forms x̂0 (all of them now); the row says so
    assert main(["bench", str(run), "--out", str(tmp_path / "b4"), "--nfe", "5", "--n", "50", "--no-peers",
                 "--samplers", "ddim,pf_heun", "--clip", *q]) == 0
    rows = json.loads((tmp_path / "b4" / "results.json").read_text())["rows"]
    assert {r["sampler"] for r in rows} == {"ddim clip=True", "pf_heun clip=True"}
    assert main(["bench", str(run), "--out", str(tmp_path / "b3"), "--samplers", "ddim,heun"]) == 2


def test_difflab_default_discrete_grid_is_diffusers_trailing_ddim():
    """The default grid of a discrete model is diffusers' 'trailing' spacing: both DDIMs agree."""
    pytest.importorskip("diffusers")
    from difflab.samplers import sample

    d = GaussianDiffusion(linear_betas(1000))
    model = exact_mixture_model(ring_mixture(std=0.3), d.schedule)
    ref = diffusers_sample(model, (256, 2), "ddim", 10, generator=torch.Generator().manual_seed(0),
                           timestep_spacing="trailing")
    ours = sample(model, (256, 2), sampler="ddim", steps=10, generator=torch.Generator().manual_seed(0)).x
    torch.testing.assert_close(ours, ref, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("peer", ["unipc", "deis", "dpmsolver++"])
def test_diffusers_peers_start_from_the_given_noise_and_match_difflab_at_parity(peer):
    """Each peer drives the model from a given x_T; at its own default spacing ('linspace', which on T = 1000 is
    within one trained step of difflab's trailing grid) DPM-Solver++ and UniPC land where difflab's own do."""
    pytest.importorskip("diffusers")
    from difflab.samplers import sample

    d = GaussianDiffusion(linear_betas(1000))
    model = exact_mixture_model(ring_mixture(std=0.3), d.schedule)
    xT = torch.randn((512, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
    ref = diffusers_sample(model, (512, 2), peer, 10, x=xT.float().double())
    assert ref.shape == (512, 2) and float(ref.norm(dim=1).mean()) == pytest.approx(2.0, abs=0.3)
    if peer != "deis":
        ours = sample(model, (512, 2), sampler={"unipc": "unipc", "dpmsolver++": "dpmpp_2m"}[peer], steps=10,
                      x=xT.float().double()).x
        assert float((ours - ref).abs().mean()) < 0.02  # 500 vs 499, 100 vs 99: the grids differ by a step or two
