"""The Python API of training: ``train(cfg, run_dir)`` and ``load_model(checkpoint)``.

The CLI's ``train`` command is a thin layer over :func:`train`; sampling and evaluation load
their model with :func:`load_model`, which rebuilds it from the config stored in the checkpoint
(so no flag has to be repeated, and a mismatch is refused with one line).
"""
from __future__ import annotations

import contextlib
import os
import tomllib
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from difflab import zoo
from difflab.train import build
from difflab.config import Config, apply_overrides, dotted_keys, load_config, save_config
from difflab.errors import CheckpointError, ConfigError
from difflab.models import DiffusionModel
from difflab.train.checkpoint import Checkpoint, check_state_dict_compatible, latest_checkpoint, load_checkpoint
from difflab.train.distributed import check_device
from difflab.train.lock import RunLock
from difflab.train.loop import Trainer

CONFIG_FILE = "config.toml"
# Keys a resumed run may change: extending a run is the reason to resume with a new config.
RESUMABLE_CHANGES = ("train.steps",)


def _value(cfg: Config, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def saved_config(run_dir: str | os.PathLike) -> Config | None:
    """The config a run was started with: ``run_dir/config.toml``, else its newest checkpoint's."""
    run_dir = Path(run_dir)
    if (run_dir / CONFIG_FILE).is_file():
        return load_config(run_dir / CONFIG_FILE)
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        return None
    with open(ckpt / CONFIG_FILE, "rb") as f:
        return Config.from_dict(tomllib.load(f))


def check_resume_config(cfg: Config, run_dir: str | os.PathLike) -> None:
    """ConfigError unless ``cfg`` equals the run's saved config outside RESUMABLE_CHANGES."""
    saved = saved_config(run_dir)
    if saved is None:
        return
    diffs = [k for k in dotted_keys(Config) if k not in RESUMABLE_CHANGES and _value(saved, k) != _value(cfg, k)]
    if not diffs:
        return
    k, more = diffs[0], ""
    if len(diffs) > 1:
        more = f" (and {len(diffs) - 1} more: {', '.join(diffs[1:4])}{'...' if len(diffs) > 4 else ''})"
    raise ConfigError(
        f"cannot resume {run_dir}: {k} = {_value(cfg, k)!r} but the run was trained with {_value(saved, k)!r}{more}; "
        f"only {', '.join(RESUMABLE_CHANGES)} may change on resume, use a new run dir otherwise"
    )


def train(cfg: Config, run_dir: str | os.PathLike, *, resume: bool = False, data_dir: str | os.PathLike | None = None,
          progress: bool = True, sample_fn: Callable[[nn.Module, int, Path], Any] | None = None) -> dict:
    """Train the diffusion model ``cfg`` describes; returns dict(final_step, last_loss, checkpoint).

    Writes ``run_dir/config.toml``, ``run_dir/checkpoints/``, ``run_dir/log.jsonl`` and
    ``run_dir/tb/``. ``resume=True`` continues from the newest checkpoint (refusing a config that
    differs in anything but train.steps); ``sample_fn(ema_model, step, run_dir)`` runs every
    ``train.sample_every`` steps and at the end.
    """
    cfg = cfg.validate()
    run_dir = Path(run_dir)
    check_device(cfg.train.device)
    if resume and not run_dir.is_dir():
        raise ConfigError(f"cannot resume {run_dir}: no such run directory; drop --resume to start a new run")
    main_rank = int(os.environ.get("RANK", "0")) == 0
    lock = RunLock(run_dir)
    with lock if main_rank else contextlib.nullcontext():  # one writer: checked before anything is read or written
        return _train_locked(cfg, run_dir, resume, data_dir, progress, sample_fn, lock)


def _train_locked(cfg, run_dir, resume, data_dir, progress, sample_fn, lock):
    from difflab.data import ArrayDataset, load_dataset  # data sits at the edge; imported when training

    if resume:
        check_resume_config(cfg, run_dir)
    elif latest_checkpoint(run_dir) is not None:
        raise ConfigError(
            f"run dir {run_dir} already holds checkpoints (newest {latest_checkpoint(run_dir).name}); "
            "pass resume=True (--resume) to continue that run, or use a new run dir"
        )
    ds = load_dataset(cfg.data.name, data_dir or cfg.data.data_dir or None, image_size=cfg.data.image_size or None,
                      num_samples=cfg.data.num_samples or None)
    if cfg.data.class_cond and ds.y is None:
        raise ConfigError(f"data.class_cond = true but data {cfg.data.name!r} has no labels; set data.class_cond = false")
    num_classes = ds.num_classes if cfg.data.class_cond else None
    if not cfg.data.class_cond and ds.y is not None:
        ds = ArrayDataset(ds.x, None, name=ds.name)  # an unconditional model never sees labels
    process = build.build_process(cfg.diffusion)
    with torch.random.fork_rng(devices=[]):  # the init depends on train.seed only, and leaves the caller's RNG alone
        torch.manual_seed(cfg.train.seed)
        model = build.build_model(cfg, ds.shape, num_classes, process=process)
    if cfg.train.init and not (resume and latest_checkpoint(run_dir) is not None):
        init_weights(model, cfg.train.init)
    objective = build.build_objective(cfg, process)
    trainer = Trainer(model, objective, ds, cfg.train, run_dir, cfg.to_dict(), kind="diffusion", sample_fn=sample_fn,
                      progress=progress, resume=resume,
                      extra={"data_shape": list(ds.shape), "num_classes": num_classes, "dataset": ds.name},
                      lock=lock)
    if trainer.ctx.is_main:
        newest = latest_checkpoint(run_dir) if resume else None
        step = int(newest.name.split("-")[-1]) if newest is not None and newest.name.split("-")[-1].isdigit() else 0
        if step > cfg.train.steps:
            raise ConfigError(f"train.steps = {cfg.train.steps} is below step {step} of {newest}, the run's newest "
                              f"checkpoint; expected train.steps >= {step} to resume")
        save_config(cfg, run_dir / CONFIG_FILE)
    return trainer.fit()





def init_weights(model: nn.Module, reference: str) -> None:
    """Load a diffusion checkpoint's weights (EMA when recorded) into a freshly built ``model``;
    a CheckpointError naming both when the architectures differ."""
    ckpt = load_checkpoint(zoo.resolve_reference(reference), map_location="cpu", expect_kind="diffusion")
    state = ckpt.ema_state if ckpt.ema_state is not None else ckpt.model_state
    check_state_dict_compatible(model, state, f"train.init = {reference!r} ({ckpt.path})")
    model.load_state_dict(state)


def _num_classes_from_weights(state: dict[str, torch.Tensor]) -> int | None:
    """Class count of a class-conditional network: its label table has num_classes + 1 rows."""
    w = state.get("net.cond.class_embed.weight")
    return int(w.shape[0]) - 1 if w is not None else None


def load_model(path: str | os.PathLike, *, use_ema: bool = True, map_location: str | torch.device = "cpu",
               overrides: Iterable[str] = ()) -> tuple[DiffusionModel, Config, Checkpoint]:
    """Rebuild a trained diffusion model from a checkpoint (dir, run dir, .safetensors file or zoo name).

    The model is built from the checkpoint's own config (with ``overrides``, "key=value", applied),
    checked against the stored weights (CheckpointError naming the mismatched keys), loaded with
    the EMA weights when ``use_ema`` and present, and returned in eval mode on ``map_location``.
    """
    ckpt = load_checkpoint(zoo.resolve_reference(path), map_location="cpu", expect_kind="diffusion")
    try:
        cfg = Config.from_dict(ckpt.config)
    except ConfigError as e:
        raise CheckpointError(f"checkpoint {ckpt.path}: its stored config is invalid ({e})") from None
    cfg = apply_overrides(cfg, overrides)
    extra = ckpt.state.get("extra") or {}
    state, which = ckpt.model_state, "model"
    if use_ema and ckpt.ema_state is not None:
        state, which = ckpt.ema_state, "EMA"
    elif use_ema and "optimizer" in ckpt.state:  # a full training checkpoint without EMA (zoo files hold EMA weights)
        warnings.warn(f"checkpoint {ckpt.path} has no EMA weights; using the raw model weights", stacklevel=2)
    shape = extra.get("data_shape")
    if not shape:
        try:
            shape = build.data_shape_of(cfg)
        except ConfigError as e:
            raise CheckpointError(f"checkpoint {ckpt.path} records no data shape: {e}") from None
    num_classes = extra.get("num_classes") or _num_classes_from_weights(state)
    model = build.build_model(cfg, shape, num_classes)
    check_state_dict_compatible(model, state, f"checkpoint {ckpt.path} ({which} weights)")
    model.load_state_dict(state)
    return model.to(map_location).eval(), cfg, ckpt


def final_loss(res: dict, name: str = "loss", digits: int = 4) -> str:
    """'loss 0.0412, the mean of the last 100 steps' from a Trainer.fit() result (log.jsonl's last line),
    or the last batch's loss where no window was logged."""
    if res.get("recent_loss") is not None:
        return f"{name} {res['recent_loss']:.{digits}f}, the mean of the last {res['recent_steps']} steps"
    return f"last batch's {name} {res['last_loss']:.{digits}f}"


__all__ = ["check_resume_config", "final_loss", "load_model", "saved_config", "train"]
