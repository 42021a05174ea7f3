"""Training a DSNO on a trajectory bank with difflab's Trainer, the `dsno-train` pipeline from a teacher
checkpoint, and loading a trained DSNO back from its checkpoint."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from difflab.config import Config, TrainConfig, apply_overrides, toml_safe
from difflab.errors import CheckpointError, ConfigError, DataError
from difflab.io import write_json
from difflab.train.api import load_model
from difflab.loading import open_checkpoint
from difflab.train.checkpoint import load_weights
from difflab.train.loop import Trainer

from .bank import TrajectoryDataset
from .model import DSNO, build_dsno_from_config, dsno_from_teacher, parameter_overhead, teacher_data_shape
from .objective import DEFAULT_MAX_WEIGHT, KIND, DSNOObjective

from difflab.process.schedules import F64

__all__ = ["fit_dsno", "load_dsno", "train_dsno"]


def fit_dsno(dsno: DSNO, data: TrajectoryDataset, run_dir: str | os.PathLike, tcfg, *, schedule, loss: str = "l1",
             max_weight: float = DEFAULT_MAX_WEIGHT, config: dict | None = None, extra: dict | None = None,
             resume: bool = False, progress: bool = True, tensorboard: bool = True) -> tuple[DSNO, dict]:
    """Train ``dsno`` on the bank with difflab's Trainer (AdamW, warm-up, EMA, checkpoints of kind "dsno").

    Returns (the EMA module in eval mode, the trainer's result dict plus ``param_overhead``).
    """
    if not torch.allclose(dsno.times.to(F64), data.times, atol=1e-6):
        raise DataError(f"the bank's times {data.times.tolist()} differ from the DSNO's {dsno.times.tolist()}")
    objective = DSNOObjective(schedule, data.times, loss, max_weight)
    overhead = parameter_overhead(dsno)
    cfg = {"dsno": dsno.config, "objective": {"loss": loss, "max_weight": float(max_weight)},
           "train": dataclasses.asdict(tcfg), **(config or {})}
    trainer = Trainer(dsno, objective, data, tcfg, run_dir, toml_safe(cfg), kind=KIND, progress=progress,
                      resume=resume, tensorboard=tensorboard,
                      extra={"data_shape": list(data.shape), "param_overhead": overhead, **(extra or {})})
    res = trainer.fit()
    return trainer.ema.ema_model(), {**res, "param_overhead": overhead}


def train_dsno(teacher_ckpt: str | os.PathLike, data_dir: str | os.PathLike, run_dir: str | os.PathLike, *,
               steps: int = 2000, batch_size: int = 128, lr: float = 2e-4, modes: int = 3, readout: str = "x0",
               loss: str = "l1", max_weight: float = DEFAULT_MAX_WEIGHT, overrides: Sequence[str] = (),
               resume: bool = False, progress: bool = True) -> dict:
    """`difflab dsno-train`: a DSNO initialised from the teacher checkpoint, trained on the bank in
    ``data_dir``; ``overrides`` are ``train.key=value`` settings of the [train] section. Writes
    ``run_dir/checkpoints/`` and ``run_dir/dsno.json`` (parameter overhead, final loss)."""
    from difflab.loading import reference_of

    teacher, tcfg_full, ckpt = load_model(teacher_ckpt)
    data = TrajectoryDataset(data_dir)
    shape = tuple((ckpt.state.get("extra") or {}).get("data_shape") or teacher_data_shape(teacher) or ())
    if shape and tuple(data.shape) != shape:
        raise DataError(f"the bank in {data_dir} holds samples of shape {data.shape}; the teacher's data are {shape}")
    bad = [o for o in overrides if not o.startswith("train.")]
    if bad:
        raise ConfigError(f"--set {bad[0]}: dsno-train takes only train.* settings (the teacher fixes the rest)")
    base = Config(train=TrainConfig(steps=steps, batch_size=batch_size, lr=lr, ckpt_every=max(steps // 4, 1)))
    tcfg = apply_overrides(base, overrides).train
    dsno = dsno_from_teacher(teacher, data.times, modes=modes, readout=readout)
    run_dir = Path(run_dir)
    _, res = fit_dsno(dsno, data, run_dir, tcfg, schedule=teacher.schedule, loss=loss, max_weight=max_weight,
                      config={"teacher": tcfg_full.to_dict(), "teacher_checkpoint": reference_of(teacher_ckpt, ckpt.path),
                              "bank": str(data_dir)}, resume=resume, progress=progress)
    write_json(run_dir / "dsno.json", {**res, "bank": str(data_dir), "teacher_checkpoint": reference_of(teacher_ckpt, ckpt.path)})
    return res


def load_dsno(path: str | os.PathLike, use_ema: bool = True,
              map_location="cpu") -> tuple[DSNO, dict, Any]:
    """Rebuild a trained DSNO from a checkpoint (run dir, checkpoint dir or .safetensors) of kind "dsno"."""
    ckpt = open_checkpoint(path, expect_kind=KIND)
    if "dsno" not in ckpt.config:
        raise CheckpointError(f"checkpoint {ckpt.path} has no [dsno] config; expected one written by dsno-train")
    dsno = build_dsno_from_config(ckpt.config["dsno"])
    return load_weights(dsno, ckpt, use_ema=use_ema, map_location=map_location), ckpt.config, ckpt
