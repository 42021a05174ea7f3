"""Training a DSNO on a trajectory bank with difflab's Trainer, the `dsno-train` pipeline from a teacher
checkpoint, and loading a trained DSNO back from its checkpoint."""
from __future__ import annotations

import dataclasses
import json
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
from .objective import DEFAULT_MAX_WEIGHT, KIND, DSNOObjective, trajectory_error, x_T_baseline

from difflab.process.schedules import F64

__all__ = ["HELDOUT_LOG", "fit_dsno", "heldout_error", "load_dsno", "read_heldout", "train_dsno"]

HELDOUT_LOG = "heldout.jsonl"  # one line per evaluation: step, the RMS error per time, and the x_T baseline's


@torch.no_grad()
def heldout_error(dsno: DSNO, data: TrajectoryDataset, batch: int | None = None) -> torch.Tensor:
    """RMS trajectory error per recorded time, (M,) float64, of ``dsno`` on the bank ``data`` (held out);
    ``batch`` trajectories per call (default 128 // M: the backbone sees about 128 inputs at once)."""
    batch = batch or max(1, 128 // len(data.times))
    was = dsno.training
    dsno.eval()
    try:
        device = next(dsno.parameters()).device
        pred = torch.cat([dsno(data.x[i:i + batch].to(device)).cpu() for i in range(0, len(data), batch)])
    finally:
        dsno.train(was)
    return trajectory_error(pred, data.y)


def read_heldout(run_dir: str | os.PathLike) -> list[dict]:
    """The held-out evaluations a :func:`fit_dsno` run logged, in step order (the last one per step after a resume)."""
    path = Path(run_dir) / HELDOUT_LOG
    if not path.is_file():
        return []
    rows = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            rows[int(r["step"])] = r
    return [rows[k] for k in sorted(rows)]


def fit_dsno(dsno: DSNO, data: TrajectoryDataset, run_dir: str | os.PathLike, tcfg, *, schedule, loss: str = "l1",
             max_weight: float = DEFAULT_MAX_WEIGHT, weighting: str = "snr", min_weight: float = 0.0,
             heldout: TrajectoryDataset | None = None, config: dict | None = None, extra: dict | None = None,
             resume: bool = False, progress: bool = True, tensorboard: bool = True, adversary=None,
             adv_weight: float = 0.0) -> tuple[DSNO, dict]:
    """Train ``dsno`` on the bank with difflab's Trainer (AdamW, warm-up, EMA, checkpoints of kind "dsno").

    With ``heldout`` (a second bank from other seeds) the EMA module's RMS error per time on it is appended to
    ``run_dir/heldout.jsonl`` every ``tcfg.sample_every`` steps and at the end, beside the error of the trivial
    predictor x(t) = x_T (:func:`read_heldout`; the curve from which steps, schedule and EMA are chosen).
    With ``adversary`` (a frozen discriminator, logit d(x_t, t)) and ``adv_weight`` > 0 the loss adds
    ``adv_weight`` · -log d at the decoded times (:class:`DSNOObjective`): the distributional fine-tune.
    Returns (the EMA module in eval mode, the trainer's result dict plus ``param_overhead`` and, with
    ``heldout``, ``heldout_error`` (M,) at the end).
    """
    if not torch.allclose(dsno.times.to(F64), data.times, atol=1e-6):
        raise DataError(f"the bank's times {data.times.tolist()} differ from the DSNO's {dsno.times.tolist()}")
    if heldout is not None and not torch.allclose(heldout.times, data.times, atol=1e-6):
        raise DataError(f"the held-out bank's times {heldout.times.tolist()} differ from the training bank's "
                        f"{data.times.tolist()}")
    if heldout is not None and bool(torch.isin(heldout.seeds, data.seeds).any()):
        raise DataError("the held-out bank shares noise seeds with the training bank; draw it with another --seed")
    baseline = x_T_baseline(data.x, data.y) if weighting == "relative" else None
    objective = DSNOObjective(schedule, data.times, loss, max_weight, weighting, min_weight, baseline,
                              adversary=adversary, adv_weight=adv_weight)
    overhead = parameter_overhead(dsno)
    cfg = {"dsno": dsno.config, "objective": {"loss": loss, "max_weight": float(max_weight), "weighting": weighting,
                                              "min_weight": float(min_weight), "weights": objective.weights.tolist(),
                                              "adv_weight": float(adv_weight)},
           "train": dataclasses.asdict(tcfg), **(config or {})}
    sample_fn = None
    if heldout is not None:
        base = x_T_baseline(heldout.x, heldout.y).tolist()

        def sample_fn(ema_module, step, run_dir):
            err = heldout_error(ema_module, heldout).tolist()
            with open(Path(run_dir) / HELDOUT_LOG, "a") as f:
                f.write(json.dumps({"step": int(step), "times": heldout.times.tolist(), "rms": err,
                                    "x_T_rms": base, "n": len(heldout)}) + "\n")
    trainer = Trainer(dsno, objective, data, tcfg, run_dir, toml_safe(cfg), kind=KIND, progress=progress,
                      resume=resume, tensorboard=tensorboard, sample_fn=sample_fn,
                      extra={"data_shape": list(data.shape), "param_overhead": overhead, **(extra or {})})
    res = trainer.fit()
    out = {**res, "param_overhead": overhead}
    rows = read_heldout(run_dir) if heldout is not None else []
    if rows:
        out["heldout_error"] = rows[-1]["rms"]
    return trainer.ema.ema_model(), out


def train_dsno(teacher_ckpt: str | os.PathLike, data_dir: str | os.PathLike, run_dir: str | os.PathLike, *,
               steps: int = 2000, batch_size: int = 128, lr: float = 2e-4, modes: int = 3, readout: str = "x0",
               loss: str = "l1", max_weight: float = DEFAULT_MAX_WEIGHT, weighting: str = "snr",
               min_weight: float = 0.0, heldout_dir: str | os.PathLike | None = None, eval_every: int = 0,
               overrides: Sequence[str] = (), resume: bool = False, progress: bool = True,
               init_dsno: str | os.PathLike | None = None, disc: str | os.PathLike | None = None,
               adv_weight: float = 0.0) -> dict:
    """`difflab dsno-train`: a DSNO initialised from the teacher checkpoint (or, with ``init_dsno``, from a
    trained DSNO of the same times: a fine-tune), trained on the bank in ``data_dir``; ``overrides`` are
    ``train.key=value`` settings of the [train] section. With ``disc`` (a discriminator run, ``dg-train``) and
    ``adv_weight`` > 0 the loss adds -log d at the decoded times (the discriminator frozen). With ``heldout_dir``
    (a bank of other seeds) the held-out error per time is logged every ``eval_every`` steps (and at the end).
    Writes ``run_dir/checkpoints/``, ``run_dir/heldout.jsonl`` and ``run_dir/dsno.json`` (parameter overhead,
    final loss, final held-out error)."""
    from difflab.loading import reference_of

    teacher, tcfg_full, ckpt = load_model(teacher_ckpt)
    data = TrajectoryDataset(data_dir)
    shape = tuple((ckpt.state.get("extra") or {}).get("data_shape") or teacher_data_shape(teacher) or ())
    if shape and tuple(data.shape) != shape:
        raise DataError(f"the bank in {data_dir} holds samples of shape {data.shape}; the teacher's data are {shape}")
    bad = [o for o in overrides if not o.startswith("train.")]
    if bad:
        raise ConfigError(f"--set {bad[0]}: dsno-train takes only train.* settings (the teacher fixes the rest)")
    base = Config(train=TrainConfig(steps=steps, batch_size=batch_size, lr=lr, ckpt_every=max(steps // 4, 1),
                                    sample_every=eval_every if heldout_dir is not None else 0))
    tcfg = apply_overrides(base, overrides).train
    heldout = TrajectoryDataset(heldout_dir) if heldout_dir is not None else None
    if init_dsno is not None:
        dsno, _, _ = load_dsno(init_dsno)
        if not torch.allclose(dsno.times.to(F64), data.times, atol=1e-6):
            raise DataError(f"--init-dsno {init_dsno} decodes the times {dsno.times.tolist()}; the bank holds "
                            f"{data.times.tolist()}")
    else:
        dsno = dsno_from_teacher(teacher, data.times, modes=modes, readout=readout)
    adversary = None
    if disc is not None:
        from difflab.methods.guidance import load_discriminator

        adversary = load_discriminator(disc)
    run_dir = Path(run_dir)
    _, res = fit_dsno(dsno, data, run_dir, tcfg, schedule=teacher.schedule, loss=loss, max_weight=max_weight,
                      weighting=weighting, min_weight=min_weight, heldout=heldout,
                      config={"teacher": tcfg_full.to_dict(), "teacher_checkpoint": reference_of(teacher_ckpt, ckpt.path),
                              "bank": str(data_dir), "init_dsno": str(init_dsno or ""), "adversary": str(disc or "")},
                      resume=resume, progress=progress, adversary=adversary, adv_weight=adv_weight)
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
