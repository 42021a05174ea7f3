"""The command line end to end on a tiny toy run, and every bad input ending in one clear line."""
import json

import numpy as np
import pytest
import torch

from difflab.cli import main

TINY = ["--set", "train.steps=30", "--set", "train.batch_size=64", "--set", "train.ckpt_every=30",
        "--set", "train.warmup_steps=5", "--set", "model.hidden=32", "--set", "model.depth=2",
        "--set", "data.num_samples=2000", "--no-progress"]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "toy"
    assert main(["train", "toy-ddpm", "--out", str(out), *TINY]) == 0
    return out


def _one_error_line(capsys, *fragments):
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("difflab: error: "), err
    for f in fragments:
        assert f in err, err
    return err


def test_train_sample_info(toy_run, tmp_path, capsys):
    assert (toy_run / "config.toml").exists() and (toy_run / "log.jsonl").exists()
    out = tmp_path / "s.png"
    assert main(["sample", str(toy_run), "--sampler", "ddim", "--steps", "5", "--n", "50", "--out", str(out),
                 "--npz", "--no-progress"]) == 0
    assert out.exists()
    arr = np.load(out.with_suffix(".npz"))["samples"]
    assert arr.shape == (50, 2) and np.isfinite(arr).all()
    from difflab.io.samples import load_sample_meta

    meta = load_sample_meta(out.with_suffix(".npz"))  # what made them, so that --vs can tell paired sets
    assert meta["sampler"] == "ddim" and meta["steps"] == 5 and meta["seed"] == 0 and meta["n"] == 50
    assert meta["clip"] is False  # 2-D data: the [sample] table's clip default is for images only
    capsys.readouterr()
    assert main(["info", str(toy_run)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["step"] == 30 and info["kind"] == "diffusion" and info["config"]["data"]["name"] == "toy:ring8"


def test_same_seed_same_samples(toy_run, tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    for f in (a, b):
        assert main(["sample", str(toy_run), "--sampler", "ancestral", "--steps", "10", "--n", "20", "--seed", "7",
                     "--out", str(f), "--no-progress"]) == 0
    assert np.array_equal(np.load(a)["samples"], np.load(b)["samples"])


def test_mismatched_sampling_flags_refused(toy_run, tmp_path, capsys):
    code = main(["sample", str(toy_run), "--set", "diffusion.schedule=cosine", "--out", str(tmp_path / "x.png")])
    assert code == 2
    _one_error_line(capsys, "diffusion.schedule='linear'", "refusing")


def test_unknown_config_key(tmp_path, capsys):
    assert main(["train", "toy-ddpm", "--set", "train.learning_rate=1e-3", "--out", str(tmp_path / "r")]) == 2
    _one_error_line(capsys, "train.learning_rate", "did you mean 'train.lr'")


def test_missing_data_file(tmp_path, capsys):
    empty = tmp_path / "data"
    empty.mkdir()
    assert main(["train", "mnist-ddpm", "--data-dir", str(empty), "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    _one_error_line(capsys, "train-images-idx3-ubyte.gz")


def test_corrupt_checkpoint(toy_run, tmp_path, capsys):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(toy_run, bad)
    f = next((bad / "checkpoints").glob("step-*")) / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-10] ^= 0xFF
    f.write_bytes(bytes(data))
    assert main(["sample", str(f.parent), "--out", str(tmp_path / "x.png"), "--no-progress"]) == 2
    _one_error_line(capsys, "model.safetensors")


def test_diverging_run_stops_with_one_line(tmp_path, capsys):
    # A gradient-norm ceiling below any real gradient is the same path as an exploding run.
    code = main(["train", "toy-ddpm", "--out", str(tmp_path / "r"), *TINY, "--set", "train.max_grad_norm=1e-9"])
    assert code == 2
    _one_error_line(capsys, "step")


@pytest.mark.parametrize("cmd", ["train", "sample", "info", "demo"])
def test_help_has_examples(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    assert "examples:" in capsys.readouterr().out


def test_sample_a_diffusers_pipeline(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(16, 32),
                                 layers_per_block=1, norm_num_groups=8,
                                 down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler(num_train_timesteps=100)).save_pretrained(tmp_path / "p")
    out = tmp_path / "s.npz"
    assert main(["sample", f"diffusers:{tmp_path / 'p'}", "--sampler", "ddim", "--steps", "5", "--n", "4",
                 "--out", str(out), "--no-progress"]) == 0
    assert np.load(out)["samples"].shape == (4, 1, 8, 8)
    assert main(["sample", "improved-diffusion:x.pt", "--out", str(out)]) == 2  # no --flags: one clear line


def test_quick_demo_writes_a_report_whose_pictures_exist(tmp_path):
    """`make demo`'s quickstart, small: it trains, then every picture the report names is written."""
    import re

    from difflab.demo.quick import run_quick

    report = run_quick(tmp_path, toy_steps=20, n=4, n_toy=200, progress=False)
    text = report.read_text()
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert text.startswith("# difflab quickstart") and len(pictures) >= 8
    assert all((tmp_path / p).is_file() for p in pictures), pictures
    assert "Trained a toy DDPM for 20 steps" in text and "| dpmpp_2m |" in text
