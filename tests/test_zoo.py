"""Shipped checkpoints load by name, carry their config and recipe metrics, and sample."""
import json
from pathlib import Path

import pytest
import torch

from difflab import zoo
from difflab.train.export import export_zoo_entry
from difflab.cli import main
from difflab.errors import CheckpointError
from difflab.train.api import load_model
from difflab.train.checkpoint import load_checkpoint


def test_unknown_name_lists_the_zoo(capsys):
    with pytest.raises(CheckpointError, match="not a zoo model"):
        load_model("no-such-model")
    with pytest.raises(CheckpointError, match="not found"):  # checkpoint reading itself knows nothing of the zoo
        load_checkpoint("no-such-model")
    assert main(["sample", "no-such-model", "--out", "x.png"]) == 2
    assert "not a zoo model" in capsys.readouterr().err


def test_export_round_trip(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "toy-ddpm", "--out", str(run), "--no-progress", "--set", "train.steps=5",
                 "--set", "model.hidden=16", "--set", "data.num_samples=500", "--set", "train.batch_size=32"]) == 0
    f = export_zoo_entry(run, "mini", metrics={"sliced_w2": 0.5}, dest=tmp_path)
    model, cfg, ck = load_model(f)
    full, _, _ = load_model(run)  # EMA weights of the run
    x, t = torch.randn(7, 2), torch.rand(7)
    torch.testing.assert_close(model(x, t).eps, full(x, t).eps, rtol=0, atol=0)
    assert json.loads(ck.meta["metrics"]) == {"sliced_w2": 0.5} and ck.state["extra"]["data_shape"] == [2]


def _kind(name):
    from safetensors import safe_open

    with safe_open(str(zoo.resolve(name)), "pt") as f:
        return f.metadata()["kind"]


DIFFUSION = [n for n in zoo.zoo_names() if _kind(n) == "diffusion"]


@pytest.mark.parametrize("name", DIFFUSION)
def test_shipped_models_load_and_sample(name, tmp_path):
    model, cfg, ck = load_model(name)
    assert ck.kind == "diffusion" and json.loads(ck.meta["metrics"])
    shape = tuple(ck.state["extra"]["data_shape"])
    out = tmp_path / "s.npz"
    assert main(["sample", name, "--sampler", "ddim", "--steps", "10", "--n", "16", "--out", str(out), "--no-progress"]) == 0
    import numpy as np

    x = np.load(out)["samples"]
    assert x.shape == (16, *shape) and np.isfinite(x).all()


@pytest.mark.skipif("mnist-tp" not in zoo.zoo_names(), reason="mnist-tp not shipped")
def test_shipped_mnist_time_predictor_reads_t_from_noised_digits():
    """The shipped TP on MNIST-shaped inputs: its recorded per-t accuracy is real (recomputed here on
    noised test digits when the MNIST files are at hand; else on noised digits from the shipped DDPM)."""
    from difflab.methods.time_predictor import accuracy_by_t, load_time_predictor

    model, _, _ = load_model("mnist-ddpm")
    tp = load_time_predictor("mnist-tp", schedule=model.schedule)
    assert tp.data_shape == (1, 28, 28) and tp.checkpoint.kind == "time_predictor"
    from conftest import real_data_dir

    if real_data_dir() and (Path(real_data_dir()) / "mnist").is_dir():
        from difflab.data import load_dataset

        x0 = load_dataset("mnist", split="test", num_samples=500).x
    else:
        from difflab.samplers import sample

        x0 = sample(model, (64, 1, 28, 28), sampler="ddim", steps=10, generator=torch.Generator().manual_seed(0)).x
    acc = accuracy_by_t({"g": tp.predictor}, x0, model.schedule, n=1000)
    assert acc["g"]["overall_rmse"] < 0.08  # a constant guess of 0.5 scores 0.29
    assert max(acc["g"]["rmse"]) < 0.15


@pytest.mark.skipif("mnist-dg" not in zoo.zoo_names(), reason="mnist-dg not shipped")
def test_shipped_mnist_discriminator_prefers_real_digits_at_small_t():
    """The shipped discriminator's logit is higher on real test digits than on the shipped DDPM's own
    DDIM samples (what it was trained to tell apart), at a small diffusion time."""
    from conftest import real_data_dir

    from difflab.methods.guidance import load_discriminator

    disc = load_discriminator("mnist-dg")
    x = torch.randn(4, 1, 28, 28)
    assert torch.isfinite(disc(x, torch.full((4,), 0.5))).all()
    if not (real_data_dir() and (Path(real_data_dir()) / "mnist").is_dir()):
        pytest.skip("needs DIFFLAB_DATA with mnist/ for real digits")
    from difflab.data import load_dataset
    from difflab.samplers import sample

    model, _, _ = load_model("mnist-ddpm")
    real = load_dataset("mnist", split="test", num_samples=256).x
    fake = sample(model, (256, 1, 28, 28), sampler="ddim", steps=10, generator=torch.Generator().manual_seed(1)).x
    t = torch.full((256,), 0.05)  # a weak discriminator (held-out accuracy 0.53 at small t): fixed seeds, 256 each
    with torch.no_grad():
        assert float(disc(real, t).mean()) > float(disc(fake, t).mean())


@pytest.mark.skipif(any(m not in zoo.zoo_names() for m in ("mnist-ddpm", "mnist-tp", "mnist-dg")),
                    reason="the MNIST zoo models are not shipped")
def test_quickstart_mnist_zoo_section_without_data(tmp_path, monkeypatch):
    """The quickstart's MNIST section runs from the shipped models alone: plain, TP, DG and TP+DG grids
    (no FID without the MNIST files)."""
    from difflab.demo import _mnist_zoo_section

    monkeypatch.delenv("DIFFLAB_DATA", raising=False)
    lines = _mnist_zoo_section(tmp_path, None, n=8)
    rows = [ln for ln in lines if ln.startswith("| ") and "png" in ln]
    extra = {"mnist-iddpm": 2, "mnist-vpsde": 2, "mnist-dsno": 1}
    expected = 7 + sum(k for m, k in extra.items() if m in zoo.zoo_names())
    assert len(rows) == expected and "set DIFFLAB_DATA for FID" in "\n".join(lines)
    assert len(list(tmp_path.glob("mnist_*.png"))) == expected
    if "mnist-dsno" in zoo.zoo_names():
        assert any("| DSNO | dsno | 1 |" in r for r in rows)


@pytest.mark.skipif("mnist-dsno" not in zoo.zoo_names(), reason="mnist-dsno not shipped")
def test_shipped_mnist_dsno_decodes_a_trajectory_in_one_evaluation():
    """The shipped DSNO: one evaluation gives M = 4 states from x_T to the sample, starting exactly at x_T
    (its readout places x̂0 on the DDIM path from x_T, exact at t = 1), with < 10% extra parameters."""
    from difflab.methods.dsno import dsno_sample, load_dsno, parameter_overhead

    dsno, cfg, _ = load_dsno("mnist-dsno")
    x_T = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    r = dsno_sample(dsno, x_T, return_trajectory=True)
    assert r.nfe == 1 and r.trajectory.shape == (4, 4, 1, 28, 28) and torch.isfinite(r.x).all()
    assert cfg["teacher_checkpoint"] == "mnist-ddpm-ext" and cfg["objective"]["weighting"] == "snr"
    torch.testing.assert_close(r.trajectory[0], x_T, atol=1e-5, rtol=0)
    assert parameter_overhead(dsno)["overhead_pct"] < 10


@pytest.mark.skipif(any(m not in zoo.zoo_names() for m in ("mnist-ext-dg", "mnist-cls", "mnist-ddpm-ext")),
                    reason="mnist-ext-dg / mnist-cls not shipped")
def test_shipped_frozen_feature_discriminator_stands_on_the_shipped_classifier_not_an_evaluator():
    """mnist-ext-dg's frozen extractor is exactly mnist-cls's encoder (a noisy classifier difflab trained,
    not an evaluator); its map head tells real test digits from mnist-ddpm-ext's DPM-Solver++ samples above
    chance at small t (held-out 0.63 when trained; 512 each here, fixed seeds)."""
    from conftest import real_data_dir

    from difflab.methods.guidance import load_classifier, load_discriminator
    from difflab.metrics.evaluator import shipped_evaluator

    disc, clf = load_discriminator("mnist-ext-dg"), load_classifier("mnist-cls")
    assert disc.head_input == "map"
    ext, enc = disc.extractor.state_dict(), clf.net.state_dict()
    assert ext.keys() == enc.keys() and all(torch.equal(ext[k], enc[k]) for k in ext)
    for kind in ("cnn", "res"):  # no tensor of an evaluator is in the discriminator
        ev = {tuple(v.shape): v for v in shipped_evaluator("mnist", kind).state_dict().values() if v.numel() > 64}
        assert not any(tuple(v.shape) in ev and torch.equal(v, ev[tuple(v.shape)]) for v in disc.state_dict().values())
    if not (real_data_dir() and (Path(real_data_dir()) / "mnist").is_dir()):
        pytest.skip("needs DIFFLAB_DATA with mnist/ for real digits")
    from difflab.data import load_dataset
    from difflab.samplers import generate

    model, _, _ = load_model("mnist-ddpm-ext")
    real = load_dataset("mnist", split="test", num_samples=512).x
    fake = generate(model, (1, 28, 28), sampler="dpmpp_2m", steps=10, n=512, seed=5, batch=128)["x"]
    g = torch.Generator().manual_seed(0)
    t = torch.full((512,), 0.05)
    with torch.no_grad():
        lr = disc(model.schedule.perturb(real, t.double(), torch.randn(real.shape, generator=g)).float(), t)
        lf = disc(model.schedule.perturb(fake, t.double(), torch.randn(fake.shape, generator=g)).float(), t)
    acc = 0.5 * (float((lr > 0).float().mean()) + float((lf < 0).float().mean()))
    assert acc > 0.56, acc
