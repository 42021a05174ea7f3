"""Training and loading a time predictor: TP defaults and "tp.*" overrides, the Trainer run, checkpoints."""
from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from dataclasses import dataclass
from typing import Any, Iterable

import torch

from difflab.train.build import build_process, schedule_of
from difflab.config import Config, TrainConfig, apply_overrides
from difflab.data import ArrayDataset, load_dataset
from difflab.errors import CheckpointError, ConfigError
from difflab.process.schedules import Schedule
from difflab.train.api import load_model
from difflab.loading import open_checkpoint, reference_of
from difflab.train.checkpoint import latest_checkpoint, load_weights
from difflab.train.loop import Trainer

from .network import KIND, TimePredictor, TimePredictorConfig, build_time_predictor
from .objective import TimePredictorObjective
from .shift import data_pixel_variance
from .visited import StateTimeObjective, label_states, sampler_states

# Stable by default (the original diverged often: Adam at a constant LR, no clipping): warm-up, cosine
# decay, clipping, EMA, and a rollback at a lower LR on divergence. The sigmoid bounds the output,
# so the loss is at most 1 and a bad batch cannot blow it up.
TP_TRAIN_DEFAULTS = dict(steps=3000, batch_size=256, lr=1e-3, warmup_steps=200, lr_schedule="cosine", grad_clip=1.0,
                         ema_rate=0.999, ckpt_every=1000, log_every=50, on_divergence="rollback")


def _parse_tp_value(key: str, text: str, tp: Any) -> Any:
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    if tp is str:
        return value if isinstance(value, str) else text
    if typing.get_origin(tp) is list:
        ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, tp) and not isinstance(value, bool)
    if not ok:
        raise ConfigError(f"tp.{key} = {text!r}; expected {getattr(tp, '__name__', 'a list of int')}")
    return float(value) if tp is float else value


def tp_configs(overrides: Iterable[str] = (), steps: int | None = None):
    """(TimePredictorConfig, TrainConfig) from TP defaults and "tp.key=value" / "train.key=value" overrides."""
    train_over, tp_over = [], {}
    hints = typing.get_type_hints(TimePredictorConfig)
    for item in overrides:
        key, sep, text = str(item).partition("=")
        key, text = key.strip(), text.strip()
        if not sep:
            raise ConfigError(f"override {item!r} has no '='; expected train.key=value or tp.key=value")
        section, _, leaf = key.partition(".")
        if section == "train":
            train_over.append(f"{key}={text}")
        elif section == "tp" and leaf in hints:
            tp_over[leaf] = _parse_tp_value(leaf, text, hints[leaf])
        else:
            known = ", ".join(f"tp.{k}" for k in hints)
            raise ConfigError(f"unknown time-predictor setting {key!r}; expected train.* or one of {known}")
    tcfg = apply_overrides(Config(train=TrainConfig(**TP_TRAIN_DEFAULTS)), train_over).train
    if steps is not None:
        if steps < 1:
            raise ConfigError(f"--steps {steps}; expected at least 1")
        tcfg = dataclasses.replace(tcfg, steps=int(steps))
    return TimePredictorConfig(**tp_over).validate(), tcfg


def fit_time_predictor(predictor: TimePredictor, x0: torch.Tensor, tcfg, run_dir: str | os.PathLike, *,
                       diffusion_config=None, diffusion_checkpoint: str = "", extra: dict | None = None,
                       progress: bool = False, resume: bool = False, labels: torch.Tensor | None = None) -> dict:
    """Train ``predictor`` (from :func:`build_time_predictor`) on clean data ``x0`` (N, ...) with
    difflab's Trainer (AdamW, warm-up, cosine decay, clipping, EMA, checkpoints, divergence
    handling). With ``labels`` (N,), ``x0`` are noisy states already and g learns state -> label
    (:class:`~difflab.methods.time_predictor.visited.StateTimeObjective`: the sampler-state variant).
    Checkpoints record the predictor's config, ``tcfg`` and, when given, the diffusion
    run's config (whose schedule :func:`load_time_predictor` rebuilds). Returns Trainer.fit()'s dict."""
    if not resume and latest_checkpoint(run_dir) is not None:
        raise ConfigError(f"run dir {run_dir} already holds checkpoints; pass resume=True (--resume) or use a new dir")
    tp_cfg = getattr(predictor, "tp_config", None)
    if tp_cfg is None:
        raise ConfigError("fit_time_predictor needs a predictor made by build_time_predictor (it records its config)")
    if labels is None:
        objective, data = TimePredictorObjective(predictor.schedule, predictor.scale), ArrayDataset(x0, None, name="tp-data")
    else:
        if labels.shape != (x0.shape[0],):
            raise ConfigError(f"state labels of shape {tuple(labels.shape)}; expected ({x0.shape[0]},), one per state")
        objective = StateTimeObjective(predictor.scale, labels)
        data = ArrayDataset(x0, torch.arange(x0.shape[0]), name="tp-states")
    cfg = {"time_predictor": dataclasses.asdict(tp_cfg), "train": dataclasses.asdict(tcfg)}
    if diffusion_config is not None:
        cfg["diffusion_run"] = diffusion_config.to_dict()
    if diffusion_checkpoint:
        cfg["diffusion_checkpoint"] = str(diffusion_checkpoint)
    trainer = Trainer(predictor, objective, data, tcfg, run_dir, cfg, kind=KIND,
                      progress=progress, resume=resume,
                      extra={"data_shape": list(x0.shape[1:]), **(extra or {})})
    return trainer.fit()


def train_time_predictor(diffusion_ckpt: str | os.PathLike, out: str | os.PathLike, *, steps: int | None = None,
                         overrides: Iterable[str] = (), data_dir=None, progress: bool = True,
                         resume: bool = False, states: dict | None = None) -> dict:
    """Train a time predictor for a diffusion checkpoint's data and schedule (the CLI's ``tp-train``).

    The checkpoint's own config gives the dataset and the forward process; its weights are not
    used (g is trained on the true marginals) unless ``states`` asks for the sampler-state variant:
    ``{"sampler": "ddim", "steps": 10, "n": 4096, "window": 0.1, "per": "sample", "seed": 0, "cutoff": 1.0}``
    (:mod:`~difflab.methods.time_predictor.visited`; missing keys take these values), where g learns
    the visited states of the model's own sampler, each labelled with the time its marginal pixel
    variance matches (the data's own pixel variance from the real training set). Writes ``out/checkpoints`` (kind "time_predictor",
    its config holding [time_predictor], [train] and the diffusion run's config), ``out/log.jsonl``.
    Returns Trainer.fit()'s dict plus the configs.
    """
    tp_cfg, tcfg = tp_configs(overrides, steps)
    model, dcfg, dckpt = load_model(diffusion_ckpt)
    ds = load_dataset(dcfg.data.name, data_dir or dcfg.data.data_dir or None, image_size=dcfg.data.image_size or None,
                      num_samples=dcfg.data.num_samples or None)
    schedule = schedule_of(build_process(dcfg.diffusion))
    with torch.random.fork_rng(devices=[]):  # the init depends on train.seed only
        torch.manual_seed(tcfg.seed)
        predictor = build_time_predictor(ds.shape, schedule, tp_cfg)
    x, labels, extra = ds.x, None, {"dataset": ds.name}
    if states is not None:
        x, labels, spec = visited_bank(model, ds.x, states)
        extra["sampler_states"] = spec
    res = fit_time_predictor(predictor, x, tcfg, out, diffusion_config=dcfg,
                             diffusion_checkpoint=reference_of(diffusion_ckpt, dckpt.path), progress=progress, resume=resume,
                             extra=extra, labels=labels)
    return {**res, "time_predictor": tp_cfg, "train": tcfg}


STATE_DEFAULTS = {"sampler": "ddim", "steps": 10, "n": 4096, "window": 0.1, "per": "sample", "seed": 0, "cutoff": 1.0}


def visited_bank(model, x0: torch.Tensor, states: dict):
    """(states, labels, the settings used) for :func:`train_time_predictor`'s sampler-state variant:
    ``model``'s own sampler visits the states, ``x0`` (the real data) gives the pixel variance m."""
    from difflab.samplers import SAMPLERS

    unknown = set(states) - set(STATE_DEFAULTS)
    if unknown:
        raise ConfigError(f"sampler-state setting(s) {', '.join(sorted(unknown))}; expected {', '.join(STATE_DEFAULTS)}")
    spec = {**STATE_DEFAULTS, **states}
    if spec["sampler"] not in SAMPLERS:
        raise ConfigError(f"sampler-state sampler {spec['sampler']!r}; expected one of {', '.join(sorted(SAMPLERS))}")
    xs, nominal = sampler_states(model, tuple(x0.shape[1:]), sampler=spec["sampler"], steps=int(spec["steps"]),
                                 n=int(spec["n"]), seed=int(spec["seed"]))
    labels = label_states(model, xs, nominal, data_pixel_variance(x0), window=float(spec["window"]), per=spec["per"],
                          cutoff=float(spec["cutoff"]))
    return xs, labels, spec


@dataclass
class LoadedTimePredictor:
    predictor: TimePredictor
    tp_config: TimePredictorConfig
    diffusion_config: Any  # difflab.config.Config of the diffusion run, or None
    diffusion_checkpoint: str  # "" when not recorded
    data_shape: tuple[int, ...]
    checkpoint: Any


def load_time_predictor(path: str | os.PathLike, *, use_ema: bool = True, map_location: str | torch.device = "cpu",
                        schedule: Schedule | None = None) -> LoadedTimePredictor:
    """Rebuild a trained time predictor (EMA weights by default) from a run dir or checkpoint dir.

    The schedule comes from the recorded diffusion run's config, else from ``schedule``."""
    ckpt = open_checkpoint(path, expect_kind=KIND)
    try:
        tp_cfg = TimePredictorConfig(**ckpt.config["time_predictor"]).validate()
        dcfg = Config.from_dict(ckpt.config["diffusion_run"]) if "diffusion_run" in ckpt.config else None
    except (KeyError, TypeError, ConfigError) as e:
        raise CheckpointError(f"checkpoint {ckpt.path}: invalid [time_predictor] or [diffusion_run] config ({e})") from None
    if schedule is None and dcfg is None:
        raise CheckpointError(f"checkpoint {ckpt.path} records no diffusion run; pass its schedule (schedule=...)")
    shape = tuple((ckpt.state.get("extra") or {}).get("data_shape") or ())
    if not shape:
        raise CheckpointError(f"checkpoint {ckpt.path} records no data shape; expected one written by tp-train")
    schedule = schedule if schedule is not None else schedule_of(build_process(dcfg.diffusion))
    predictor = build_time_predictor(shape, schedule, tp_cfg, pretrained=False)
    predictor = load_weights(predictor, ckpt, use_ema=use_ema, map_location=map_location)
    return LoadedTimePredictor(predictor, tp_cfg, dcfg,
                               str(ckpt.config.get("diffusion_checkpoint", "")), shape, ckpt)
