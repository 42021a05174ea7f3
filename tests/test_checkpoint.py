"""Checkpoints: round trip of weights, optimizer, RNG; tied weights; pruning; corruption; kinds."""

import hashlib
import json
import random
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import safetensors
import torch
from torch import nn

from difflab.config import Config
from difflab.errors import CheckpointError
from difflab.train.checkpoint import (
    capture_rng_state,
    check_state_dict_compatible,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)

CONFIG = Config().to_dict()


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(CheckpointError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg and msg, f"not one line: {msg!r}"
    return msg


def small_net(seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.SiLU(), nn.Linear(8, 4))


class TiedNet(nn.Module):
    """An embedding and an output layer sharing one weight (safetensors refuses shared storage)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight


def train_step(net, opt, sched, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 4, generator=g)
    loss = (net(x) - x).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()


def make_training(seed=0):
    net = small_net(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10))
    return net, opt, sched


def save_small(run, step, **kw):
    net = small_net(step)
    kw.setdefault("config", CONFIG)
    return save_checkpoint(run, step, model_state=net.state_dict(), ema_state=net.state_dict(), **kw)


# --- round trip -------------------------------------------------------------------------------


def test_round_trip_weights_optimizer_scheduler_and_rng(tmp_path):
    net, opt, sched = make_training()
    ema = {k: v.clone() * 0.5 for k, v in net.state_dict().items()}
    train_step(net, opt, sched, seed=1)
    path = save_checkpoint(
        tmp_path,
        1,
        model_state=net.state_dict(),
        ema_state=ema,
        config=Config(),
        optimizer_state=opt.state_dict(),
        scheduler_state=sched.state_dict(),
        sampler_state={"history": torch.arange(6.0).reshape(3, 2), "count": 3},
        extra={"best_loss": 0.25, "tag": "x"},
    )
    # the RNG draws that follow the save are what a resumed run must reproduce
    after = (random.random(), np.random.rand(3), torch.rand(3))

    assert path == tmp_path / "checkpoints" / "step-00000001"
    assert sorted(p.name for p in path.iterdir()) == [
        "config.toml", "ema.safetensors", "meta.json", "model.safetensors", "state.pt"]
    ck = load_checkpoint(path)
    assert ck.step == 1 and ck.kind == "diffusion" and ck.path == path
    assert Config.from_dict(ck.config) == Config()
    assert ck.state["extra"] == {"best_loss": 0.25, "tag": "x"}
    assert ck.state["sampler"]["count"] == 3 and torch.equal(ck.state["sampler"]["history"], torch.arange(6.0).reshape(3, 2))
    for k, v in ema.items():
        assert torch.equal(ck.ema_state[k], v)

    net2, opt2, sched2 = make_training(seed=99)
    check_state_dict_compatible(net2, ck.model_state, "model")
    net2.load_state_dict(ck.model_state)
    opt2.load_state_dict(ck.state["optimizer"])
    sched2.load_state_dict(ck.state["scheduler"])
    for a, b in zip(net.parameters(), net2.parameters()):
        assert torch.equal(a, b)
    # the resumed optimizer (Adam moments, step count, lr schedule) continues exactly
    train_step(net, opt, sched, seed=2)
    train_step(net2, opt2, sched2, seed=2)
    for a, b in zip(net.parameters(), net2.parameters()):
        assert torch.equal(a, b)
    assert sched.get_last_lr() == sched2.get_last_lr()

    restore_rng_state(ck.state["rng"])
    again = (random.random(), np.random.rand(3), torch.rand(3))
    assert again[0] == after[0] and np.array_equal(again[1], after[1]) and torch.equal(again[2], after[2])


def test_capture_and_restore_rng_without_files():
    state = capture_rng_state()
    first = (random.random(), np.random.randn(2), torch.randn(2))  # randn exercises the cached gaussian
    restore_rng_state(state)
    second = (random.random(), np.random.randn(2), torch.randn(2))
    assert first[0] == second[0] and np.array_equal(first[1], second[1]) and torch.equal(first[2], second[2])


def test_meta_json_and_safetensors_metadata(tmp_path):
    path = save_small(tmp_path, 7, kind="time_predictor")
    meta = json.loads((path / "meta.json").read_text())
    assert meta["step"] == 7 and meta["kind"] == "time_predictor" and meta["difflab_format"] == "1"
    assert set(meta["files"]) == {"model.safetensors", "ema.safetensors", "config.toml", "state.pt"}
    for name, info in meta["files"].items():
        data = (path / name).read_bytes()
        assert info == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    with safetensors.safe_open(path / "model.safetensors", "pt") as f:
        md = f.metadata()
    assert md["difflab_format"] == "1" and md["kind"] == "time_predictor"
    assert md["config_sha"] == meta["config_sha"] and len(md["config_sha"]) == 64


def test_lone_safetensors_file_loads_weights_and_config(tmp_path):
    path = save_small(tmp_path, 3)
    ck = load_checkpoint(path / "ema.safetensors", expect_kind="diffusion")
    assert ck.step == 3 and ck.config == CONFIG and ck.state == {} and ck.ema_state is None
    assert torch.equal(ck.model_state["0.weight"], small_net(3)[0].weight)


def test_tied_and_non_contiguous_tensors_are_saved(tmp_path):
    net = TiedNet()
    state = net.state_dict()
    assert state["embed.weight"].data_ptr() == state["head.weight"].data_ptr()
    state["extra.transposed"] = torch.arange(12.0).reshape(3, 4).t()
    path = save_checkpoint(tmp_path, 0, model_state=state, config=CONFIG)
    ck = load_checkpoint(path)
    assert torch.equal(ck.model_state["extra.transposed"], state["extra.transposed"])
    del ck.model_state["extra.transposed"]
    net2 = TiedNet()
    net2.load_state_dict(ck.model_state)
    assert torch.equal(net2.embed.weight, net.embed.weight)
    assert net2.head.weight is net2.embed.weight  # still tied after loading


def test_untrusted_object_in_extra_needs_trust(tmp_path):
    path = save_checkpoint(tmp_path, 0, model_state={"w": torch.ones(1)}, config=CONFIG, extra={"obj": Opaque(3)})
    msg = error_of(load_checkpoint, path)
    assert "state.pt" in msg and "trust_pickle=True" in msg
    assert load_checkpoint(path, trust_pickle=True).state["extra"]["obj"] == Opaque(3)


@dataclass
class Opaque:
    x: int


# --- run directory: latest, pruning, leftovers -----------------------------------------------


def test_keep_prunes_and_latest_points_to_newest(tmp_path):
    for step in (100, 200, 300, 400):
        save_small(tmp_path, step, keep=2)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-00000300", "step-00000400"]
    assert (root / "latest").read_text().strip() == "step-00000400"
    assert latest_checkpoint(tmp_path) == root / "step-00000400"
    assert load_checkpoint(tmp_path).step == 400
    assert load_checkpoint(root).step == 400  # the checkpoints/ dir itself works too


def test_keep_zero_keeps_all_and_resave_never_prunes_the_new_one(tmp_path):
    for step in (1, 2, 3):
        save_small(tmp_path, step, keep=0)
    assert len(list((tmp_path / "checkpoints").glob("step-*"))) == 3
    # a rollback saves an earlier step again: it is kept, with the newest other one
    save_small(tmp_path, 2, keep=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*")) == ["step-00000002", "step-00000003"]
    assert load_checkpoint(tmp_path).step == 2  # latest follows the save, not the largest number


def test_resave_same_step_replaces_it(tmp_path):
    save_small(tmp_path, 5)
    other = {"w": torch.full((2,), 7.0)}
    save_checkpoint(tmp_path, 5, model_state=other, config=CONFIG)
    ck = load_checkpoint(tmp_path)
    assert torch.equal(ck.model_state["w"], other["w"]) and ck.ema_state is None
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if ".tmp" in p.name]


def test_missing_latest_falls_back_to_highest_step(tmp_path):
    save_small(tmp_path, 1)
    save_small(tmp_path, 2)
    (tmp_path / "checkpoints" / "latest").unlink()
    assert latest_checkpoint(tmp_path).name == "step-00000002"
    assert load_checkpoint(tmp_path).step == 2


def test_corrupt_latest_falls_back_with_a_warning(tmp_path):
    save_small(tmp_path, 1)
    newest = save_small(tmp_path, 2)
    flip_byte(newest / "model.safetensors")
    with pytest.warns(UserWarning, match="step-00000001"):
        assert load_checkpoint(tmp_path).step == 1


def test_leftover_temporary_dir_is_ignored_then_cleaned(tmp_path):
    save_small(tmp_path, 1)
    root = tmp_path / "checkpoints"
    crashed = root / "step-00000002.tmp-999-deadbeef"  # a save killed before its rename
    crashed.mkdir()
    (crashed / "model.safetensors").write_bytes(b"half a file")
    (root / "latest.tmp-999-deadbeef").write_text("step-00000002")
    assert latest_checkpoint(tmp_path).name == "step-00000001"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to skip: the tmp dir is not a candidate at all
        assert load_checkpoint(tmp_path).step == 1
    save_small(tmp_path, 3)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-00000001", "step-00000003"]


def test_empty_run_dir(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    assert "no checkpoint" in error_of(load_checkpoint, tmp_path)
    assert "not found" in error_of(load_checkpoint, tmp_path / "nope")


# --- corruption and mismatches ----------------------------------------------------------------


def flip_byte(path: Path, offset: int = -20):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_weights_name_the_file(tmp_path):
    path = save_small(tmp_path, 1)
    flip_byte(path / "model.safetensors")
    msg = error_of(load_checkpoint, path)
    assert str(path / "model.safetensors") in msg and "sha256 mismatch" in msg and "expected" in msg
    msg = error_of(load_checkpoint, path / "model.safetensors")  # the lone file is checked too
    assert "sha256 mismatch" in msg


def test_truncated_state_names_the_file(tmp_path):
    path = save_small(tmp_path, 1)
    data = (path / "state.pt").read_bytes()
    (path / "state.pt").write_bytes(data[: len(data) // 2])
    msg = error_of(load_checkpoint, path)
    assert str(path / "state.pt") in msg and "truncated" in msg and f"expected {len(data)} bytes" in msg


def test_missing_file_and_missing_meta(tmp_path):
    path = save_small(tmp_path, 1)
    (path / "ema.safetensors").unlink()
    assert "ema.safetensors: missing" in error_of(load_checkpoint, path)
    (path / "meta.json").unlink()
    assert "meta.json: missing" in error_of(load_checkpoint, path)


def test_expect_kind_mismatch(tmp_path):
    path = save_small(tmp_path, 1, kind="time_predictor")
    msg = error_of(load_checkpoint, path, expect_kind="diffusion")
    assert msg == f"checkpoint {path} holds a 'time_predictor', expected a 'diffusion' model"
    assert load_checkpoint(path, expect_kind="time_predictor").kind == "time_predictor"


def test_state_dict_from_another_model_is_refused():
    net = small_net()
    check_state_dict_compatible(net, small_net(1).state_dict(), "checkpoint x")  # same shapes: fine
    msg = error_of(check_state_dict_compatible, net, TiedNet().state_dict(), "checkpoint x (model)")
    assert msg.startswith("checkpoint x (model) does not fit Sequential: missing 0.weight, 0.bias, 2.weight (+1 more)")
    assert "unexpected embed.weight, head.weight" in msg
    wider = nn.Sequential(nn.Linear(4, 16), nn.SiLU(), nn.Linear(16, 4))
    msg = error_of(check_state_dict_compatible, net, wider.state_dict(), "ckpt")
    assert "0.weight (16, 4) vs (8, 4)" in msg and "missing" not in msg
    wrapped = {f"module.{k}": v for k, v in net.state_dict().items()}
    assert "'module.' prefix" in error_of(check_state_dict_compatible, net, wrapped, "ckpt")


def test_bad_inputs_to_save(tmp_path):
    assert "expected a torch.Tensor" in error_of(save_checkpoint, tmp_path, 0, model_state={"w": [1.0]}, config=CONFIG)
    assert "expected an int >= 0" in error_of(save_checkpoint, tmp_path, -1, model_state={}, config=CONFIG)
    assert "TOML" in error_of(save_checkpoint, tmp_path, 0, model_state={}, config={"x": None})
    assert not (tmp_path / "checkpoints").exists() or not list((tmp_path / "checkpoints").iterdir())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_map_location_cuda_and_cuda_rng(tmp_path):
    path = save_small(tmp_path, 1)
    after = torch.rand(2, device="cuda")
    ck = load_checkpoint(path, map_location="cuda")
    assert ck.model_state["0.weight"].is_cuda and ck.state["rng"]["torch"].is_cuda
    restore_rng_state(ck.state["rng"])  # RNG tensors mapped to the GPU still restore
    assert torch.equal(torch.rand(2, device="cuda"), after)
