"""`difflab eval` / `difflab bench`: metric routing, determinism, and the diffusers peers against difflab."""
import json

import numpy as np
import pytest
import torch

from difflab.cli import main
from difflab.metrics.bench import default_grid, diffusers_sample, evaluate_samples, run_bench
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
