"""Shipped checkpoints load by name, carry their config and recipe metrics, and sample."""
import json

import pytest
import torch

from difflab import zoo
from difflab.cli import main
from difflab.errors import CheckpointError
from difflab.train.api import load_model
from difflab.train.checkpoint import load_checkpoint


def test_unknown_name_lists_the_zoo(capsys):
    with pytest.raises(CheckpointError, match="not a zoo model"):
        load_checkpoint("no-such-model")
    assert main(["sample", "no-such-model", "--out", "x.png"]) == 2
    assert "not a zoo model" in capsys.readouterr().err


def test_export_round_trip(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "toy-ddpm", "--out", str(run), "--no-progress", "--set", "train.steps=5",
                 "--set", "model.hidden=16", "--set", "data.num_samples=500", "--set", "train.batch_size=32"]) == 0
    f = zoo.export(run, "mini", metrics={"sliced_w2": 0.5}, dest=tmp_path)
    model, cfg, ck = load_model(f)
    full, _, _ = load_model(run)  # EMA weights of the run
    x, t = torch.randn(7, 2), torch.rand(7)
    torch.testing.assert_close(model(x, t).eps, full(x, t).eps, rtol=0, atol=0)
    assert json.loads(ck.meta["metrics"]) == {"sliced_w2": 0.5} and ck.state["extra"]["data_shape"] == [2]


@pytest.mark.parametrize("name", zoo.zoo_names())
def test_shipped_models_load_and_sample(name, tmp_path):
    model, cfg, ck = load_model(name)
    assert ck.kind == "diffusion" and json.loads(ck.meta["metrics"])
    shape = tuple(ck.state["extra"]["data_shape"])
    out = tmp_path / "s.npz"
    assert main(["sample", name, "--sampler", "ddim", "--steps", "10", "--n", "16", "--out", str(out), "--no-progress"]) == 0
    import numpy as np

    x = np.load(out)["samples"]
    assert x.shape == (16, *shape) and np.isfinite(x).all()
