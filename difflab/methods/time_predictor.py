"""Time-predictor (TP) sampling: a network g(x_t) -> t, and samplers that show the model g(x).

With few sampling steps the state x at grid time t drifts away from the marginal p_t that t
assumes. TP sampling (the COSE474-2022F project "Dynamic Timestep Sampling for Diffusion Models";
difflab issue 5) trains g to read the noise level from x alone and, at every step, evaluates the
model at g(x) instead of the nominal time; the step grid stays the same. This module holds all of it::

    predictor = build_time_predictor(data_shape, schedule, TimePredictorConfig())  # g: (B, ...) -> (B,) t
    objective = TimePredictorObjective(schedule, predictor.scale)                  # for train.Trainer
    tp_model = TimePredictorSampling(model, predictor)                             # a model: every sampler
    oracle = OracleTimePredictor(mixture, schedule)                                # E[t | x] in the toy world
    accuracy_by_t(...), drift_diagnostics(...), tp_report(...)                     # how good g is, and why

Shapes: x (B, ...) any data shape; times (B,) float64 in [0, 1] (t = 0 data, t = 1 noise).
The CLI commands ``tp-train``, ``tp-report`` and ``tp-sample`` (see :func:`register`) are thin
layers over :func:`train_time_predictor`, :func:`tp_report` and :func:`tp_sample`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from difflab.errors import CheckpointError, ConfigError, DataError
from difflab.models import ModelOutput, ModelWrapper, bcast
from difflab.process.schedules import F64, DiscreteSchedule, Schedule
from difflab.train.objectives import Objective, randn_like_from

KIND = "time_predictor"
PARAMETERIZATIONS = ("t", "log_snr")
NETS = ("auto", "mlp", "encoder", "efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l")
TORCHVISION_NETS = NETS[3:]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
REFERENCE_FID = {"original_T10": 343.35, "tp_T10": 144.88}  # CIFAR-10, VP-SDE DDPM++ cont., Euler–Maruyama
REFERENCE_RATIO = REFERENCE_FID["tp_T10"] / REFERENCE_FID["original_T10"]  # 0.42


# ============================================================================ the time predictor
class TimeScale:
    """The bounded unit u in [0, 1] the predictor outputs, and its map to and from time t in [t_min, 1].

    * 't': u = (t - t_min) / (1 - t_min), i.e. t itself up to the tiny affine stretch that keeps
      every prediction inside [t_min, 1], where the model is defined.
    * 'log_snr': u = (λ(t_min) - λ(t)) / (λ(t_min) - λ(1)), the normalised log-SNR λ = log(ᾱ / (1-ᾱ));
      t = schedule.t_from_log_snr(λ). Uniform in u spends the accuracy where the signal changes.
    Both are increasing in t, with u(t_min) = 0 and u(1) = 1.
    """

    def __init__(self, schedule: Schedule, parameterization: str = "t", t_min: float = 1e-3):
        if parameterization not in PARAMETERIZATIONS:
            raise ConfigError(f"time-predictor parameterization {parameterization!r}; expected one of {PARAMETERIZATIONS}")
        if not 0.0 <= t_min < 1.0:
            raise ConfigError(f"time-predictor t_min = {t_min}; expected a value in [0, 1)")
        self.schedule, self.parameterization, self.t_min = schedule, parameterization, float(t_min)
        if parameterization == "log_snr":
            self.lam_hi = float(schedule.log_snr(max(self.t_min, 1e-6)))
            self.lam_lo = float(schedule.log_snr(1.0))

    def to_unit(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) times -> (B,) float64 units (on t's device)."""
        tc = torch.as_tensor(t).detach().to("cpu", F64)
        if self.parameterization == "t":
            u = (tc - self.t_min) / (1.0 - self.t_min)
        else:
            u = (self.lam_hi - self.schedule.log_snr(tc.clamp_min(max(self.t_min, 1e-6)))) / (self.lam_hi - self.lam_lo)
        return u.to(torch.as_tensor(t).device)

    def to_time(self, u: torch.Tensor) -> torch.Tensor:
        """(B,) units in [0, 1] -> (B,) float64 times (on u's device). Differentiable for 't' only
        (the log-SNR inverse is a bisection)."""
        if self.parameterization == "t":
            return self.t_min + (1.0 - self.t_min) * u.to(F64)
        lam = self.lam_hi - u.detach().to("cpu", F64) * (self.lam_hi - self.lam_lo)
        return self.schedule.t_from_log_snr(lam).clamp(self.t_min, 1.0).to(u.device)


class TimePredictor(nn.Module):
    """g(x_t) -> t: a network that never sees t, with a sigmoid-bounded output.

    Args:
        net: ``net(x) -> (B, 1)`` (e.g. ``MLPEncoder(time_conditional=False, out_dim=1)`` or
            ``Encoder(time_conditional=False, out_dim=1)``).
        schedule: the diffusion's schedule (for the log-SNR parameterisation).
        parameterization: 't' or 'log_snr' (see :class:`TimeScale`).
        t_min: the smallest time trained on and predicted.

    forward(x, y=None, raw=False): x (B, ...) -> (B,) float64 times in [t_min, 1]; with
    ``raw=True`` the (B,) unit u in (0, 1) the loss is computed on (differentiable, net's dtype).
    """

    def __init__(self, net: nn.Module, schedule: Schedule, parameterization: str = "t", t_min: float = 1e-3):
        super().__init__()
        self.net = net
        self.scale = TimeScale(schedule, parameterization, t_min)

    @property
    def schedule(self) -> Schedule:
        return self.scale.schedule

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, raw: bool = False) -> torch.Tensor:
        w = next(self.net.parameters())
        u = torch.sigmoid(self.net(x.to(w.dtype)).reshape(x.shape[0]))
        return u if raw else self.scale.to_time(u)


class TorchvisionBackbone(nn.Module):
    """A torchvision EfficientNetV2 (the original TP backbone) with a one-output head.

    Images (B, C, H, W) in [-1, 1] are mapped to ImageNet's normalisation (grey images repeated to
    3 channels). ImageNet weights come from a local file only (``weights_path``: a state dict as
    .pth/.pt or .safetensors); difflab never downloads. forward(x, t=None, y=None) -> (B, 1).
    """

    def __init__(self, name: str, in_channels: int, weights_path: str | os.PathLike | None = None):
        super().__init__()
        import torchvision

        if name not in TORCHVISION_NETS:
            raise ConfigError(f"torchvision backbone {name!r}; expected one of {TORCHVISION_NETS}")
        if in_channels not in (1, 3):
            raise ConfigError(f"tp.net = {name!r} needs 1- or 3-channel images, got {in_channels} channels")
        net = getattr(torchvision.models, name)(weights=None)
        if weights_path:
            net.load_state_dict(_read_state_dict(Path(weights_path), name))
        net.classifier[-1] = nn.Linear(net.classifier[-1].in_features, 1)
        self.net, self.in_channels = net, in_channels
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor, t=None, y=None) -> torch.Tensor:
        x = (x + 1) / 2
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.net((x - self.mean) / self.std)


def _read_state_dict(path: Path, name: str) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{name} weights {path} not found; pass a local ImageNet state dict "
                              "(tp.weights_path=...): difflab never downloads weights")
    try:
        if path.suffix == ".safetensors":
            import safetensors.torch

            return safetensors.torch.load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one line
        raise CheckpointError(f"{path}: unreadable as a {name} state dict ({' '.join(str(e).split())[:120]})") from None
    return state.get("state_dict", state) if isinstance(state, dict) else state


@dataclass
class TimePredictorConfig:
    """What a time predictor is (saved in its checkpoints as ``[time_predictor]``)."""

    net: str = "auto"  # auto: 'mlp' for vectors, 'encoder' for images; or efficientnet_v2_{s,m,l}
    parameterization: str = "t"  # 't' or 'log_snr'
    t_min: float = 1e-3  # t ~ U(t_min, 1) in training; predictions lie in [t_min, 1]
    hidden: int = 128  # MLP width
    depth: int = 3  # MLP hidden layers
    base_channels: int = 32  # encoder
    channel_mult: list[int] = field(default_factory=list)  # empty: by image size (8: [1, 2], 28: [1, 2, 2], 32: [1, 2, 2, 2])
    num_res_blocks: int = 1
    dropout: float = 0.0
    weights_path: str = ""  # local ImageNet weights for a torchvision backbone

    def validate(self) -> "TimePredictorConfig":
        if self.net not in NETS:
            raise ConfigError(f"tp.net = {self.net!r}; expected one of {', '.join(NETS)}")
        if self.parameterization not in PARAMETERIZATIONS:
            raise ConfigError(f"tp.parameterization = {self.parameterization!r}; expected one of {PARAMETERIZATIONS}")
        if not 0.0 <= self.t_min < 1.0:
            raise ConfigError(f"tp.t_min = {self.t_min}; expected a value in [0, 1)")
        for key in ("hidden", "depth", "base_channels", "num_res_blocks"):
            if getattr(self, key) < 1:
                raise ConfigError(f"tp.{key} = {getattr(self, key)}; expected a value >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"tp.dropout = {self.dropout}; expected a value in [0, 1)")
        return self


def _default_channel_mult(image_size: int) -> tuple[int, ...]:
    levels = 1
    while levels < 4 and image_size % 2**levels == 0 and image_size // 2**levels >= 4:
        levels += 1
    return (1, 2, 2, 2)[:levels] if levels > 2 else (1, 2)[:levels]


def build_time_predictor(data_shape: Sequence[int], schedule: Schedule, cfg: TimePredictorConfig | None = None, *,
                         pretrained: bool = True) -> TimePredictor:
    """The predictor ``cfg`` describes for samples of shape ``data_shape`` ((D,) or (C, H, W)).

    ``pretrained=False`` skips a torchvision backbone's ImageNet weights (when the weights come
    from a time-predictor checkpoint anyway)."""
    from difflab.nets import Encoder, MLPEncoder

    cfg = (cfg or TimePredictorConfig()).validate()
    shape = tuple(int(s) for s in data_shape)
    kind = cfg.net if cfg.net != "auto" else ("mlp" if len(shape) == 1 else "encoder")
    if kind == "mlp":
        if len(shape) != 1:
            raise ConfigError(f"tp.net = 'mlp' needs vector data (D,), got samples of shape {shape}; use 'encoder'")
        net = MLPEncoder(dim=shape[0], hidden=cfg.hidden, depth=cfg.depth, out_dim=1, time_conditional=False)
    elif len(shape) != 3:
        raise ConfigError(f"tp.net = {kind!r} needs images (C, H, W), got samples of shape {shape}; use 'mlp'")
    elif kind == "encoder":
        mult = tuple(cfg.channel_mult) or _default_channel_mult(shape[1])
        try:
            net = Encoder(in_channels=shape[0], base_channels=cfg.base_channels, channel_mult=mult,
                          num_res_blocks=cfg.num_res_blocks, attention_resolutions=(), image_size=shape[1],
                          dropout=cfg.dropout, out_dim=1, time_conditional=False)
        except ValueError as e:
            raise ConfigError(f"tp.channel_mult = {list(mult)} on {shape[1]}x{shape[1]} images: {e}") from None
    else:
        if pretrained and not cfg.weights_path:
            raise ConfigError(f"tp.net = {kind!r} needs local ImageNet weights: set tp.weights_path=FILE "
                              "(difflab never downloads weights), or use tp.net=encoder")
        net = TorchvisionBackbone(kind, shape[0], cfg.weights_path if pretrained else None)
    predictor = TimePredictor(net, schedule, cfg.parameterization, cfg.t_min)
    predictor.tp_config = cfg  # what its checkpoints record, so they rebuild it
    return predictor


# ============================================================================ training
class TimePredictorObjective(Objective):
    """MSE between g's unit and the true time's: t ~ U(t_min, 1), x_t = α(t) x0 + σ(t) ε, ε ~ N(0, I).

    draws: ``t`` (B,) float64, ``noise`` like x (Gaussian; the original code drew uniform noise,
    which gives x_t another marginal than the one the sampler visits). loss: (B,) (u(g(x_t)) - u(t))²,
    which is the MSE on t itself for the 't' parameterisation (up to 1 / (1 - t_min)²) and on the
    normalised log-SNR for 'log_snr'.
    """

    kind = KIND

    def __init__(self, schedule: Schedule, scale: TimeScale):
        self.schedule, self.scale = schedule, scale

    def draw(self, x, y, gen):
        u = torch.rand(x.shape[0], generator=gen, device=gen.device, dtype=F64)
        t_min = self.scale.t_min
        return {"t": (t_min + (1.0 - t_min) * u).to(x.device), "noise": randn_like_from(x, gen)}

    def noisy(self, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = α(t) x0 + σ(t) ε, (B, ...)."""
        tc = t.detach().to("cpu", F64)
        return bcast(self.schedule.alpha(tc), x) * x + bcast(self.schedule.sigma(tc), x) * noise

    def loss(self, module, x, y, draws):
        pred = module(self.noisy(x, draws["t"], draws["noise"]), raw=True)
        target = self.scale.to_unit(draws["t"]).to(device=pred.device, dtype=pred.dtype)
        err = pred - target
        return err**2, {"mse": (err.detach() ** 2).mean(), "bias": err.detach().mean()}


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
    from difflab.config import Config, TrainConfig, apply_overrides

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
                       progress: bool = False, resume: bool = False) -> dict:
    """Train ``predictor`` (from :func:`build_time_predictor`) on clean data ``x0`` (N, ...) with
    difflab's Trainer (AdamW, warm-up, cosine decay, clipping, EMA, checkpoints, divergence
    handling). Checkpoints record the predictor's config, ``tcfg`` and, when given, the diffusion
    run's config (whose schedule :func:`load_time_predictor` rebuilds). Returns Trainer.fit()'s dict."""
    from difflab.data import ArrayDataset
    from difflab.train.checkpoint import latest_checkpoint
    from difflab.train.loop import Trainer

    if not resume and latest_checkpoint(run_dir) is not None:
        raise ConfigError(f"run dir {run_dir} already holds checkpoints; pass resume=True (--resume) or use a new dir")
    tp_cfg = getattr(predictor, "tp_config", None)
    if tp_cfg is None:
        raise ConfigError("fit_time_predictor needs a predictor made by build_time_predictor (it records its config)")
    objective = TimePredictorObjective(predictor.schedule, predictor.scale)
    cfg = {"time_predictor": dataclasses.asdict(tp_cfg), "train": dataclasses.asdict(tcfg)}
    if diffusion_config is not None:
        cfg["diffusion_run"] = diffusion_config.to_dict()
    if diffusion_checkpoint:
        cfg["diffusion_checkpoint"] = str(diffusion_checkpoint)
    trainer = Trainer(predictor, objective, ArrayDataset(x0, None, name="tp-data"), tcfg, run_dir, cfg, kind=KIND,
                      progress=progress, resume=resume,
                      extra={"data_shape": list(x0.shape[1:]), **(extra or {})})
    return trainer.fit()


def train_time_predictor(diffusion_ckpt: str | os.PathLike, out: str | os.PathLike, *, steps: int | None = None,
                         overrides: Iterable[str] = (), data_dir=None, progress: bool = True,
                         resume: bool = False) -> dict:
    """Train a time predictor for a diffusion checkpoint's data and schedule (the CLI's ``tp-train``).

    The checkpoint's own config gives the dataset and the forward process; its weights are not
    used (g is trained on the true marginals). Writes ``out/checkpoints`` (kind "time_predictor",
    its config holding [time_predictor], [train] and the diffusion run's config), ``out/log.jsonl``.
    Returns Trainer.fit()'s dict plus the configs.
    """
    from difflab.build import schedule_of, build_process
    from difflab.data import load_dataset
    from difflab.train.api import load_model

    tp_cfg, tcfg = tp_configs(overrides, steps)
    _, dcfg, dckpt = load_model(diffusion_ckpt)
    ds = load_dataset(dcfg.data.name, data_dir or dcfg.data.data_dir or None, image_size=dcfg.data.image_size or None,
                      num_samples=dcfg.data.num_samples or None)
    schedule = schedule_of(build_process(dcfg.diffusion))
    with torch.random.fork_rng(devices=[]):  # the init depends on train.seed only
        torch.manual_seed(tcfg.seed)
        predictor = build_time_predictor(ds.shape, schedule, tp_cfg)
    res = fit_time_predictor(predictor, ds.x, tcfg, out, diffusion_config=dcfg,
                             diffusion_checkpoint=str(Path(dckpt.path).resolve()), progress=progress, resume=resume,
                             extra={"dataset": ds.name})
    return {**res, "time_predictor": tp_cfg, "train": tcfg}


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
    from difflab.build import build_process, schedule_of
    from difflab.config import Config
    from difflab.train.checkpoint import check_state_dict_compatible, load_checkpoint

    ckpt = load_checkpoint(path, map_location="cpu", expect_kind=KIND)
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
    state = ckpt.ema_state if use_ema and ckpt.ema_state is not None else ckpt.model_state
    check_state_dict_compatible(predictor, state, f"checkpoint {ckpt.path}")
    predictor.load_state_dict(state)
    return LoadedTimePredictor(predictor.to(map_location).eval(), tp_cfg, dcfg,
                               str(ckpt.config.get("diffusion_checkpoint", "")), shape, ckpt)


# ============================================================================ TP sampling
@dataclass
class PredictedTimeOutput(ModelOutput):
    """A model output evaluated at a predicted time: ``t`` = g(x) (B,), ``nominal_t`` the grid's (B,).
    ``time_in_coefficients`` asks the samplers to take α, σ, β at ``t`` as well (per sample)."""

    nominal_t: torch.Tensor | None = None
    time_in_coefficients: bool = False


class TimePredictorSampling(ModelWrapper):
    """TP sampling as a model wrapper: each call evaluates the inner model at g(x) per sample.

    Args:
        model: any model (the difflab contract); wrappers stack.
        predictor: ``g(x) -> (B,)`` times: a :class:`TimePredictor`, an :class:`OracleTimePredictor`
            or any callable.
        clamp: (t_lo, t_hi) bounds on g(x). Default: (1/T, 1) for a discrete process (its first
            trained time), (predictor's t_min or 1e-3, 1) otherwise.
        use_in_coefficients: also evaluate the sampler's α, σ, β at g(x) (the original Algorithm 3:
            β(g(x)) and s(x, g(x)) in the Euler–Maruyama step); default False: only the model
            sees g(x), the sampler's arithmetic stays the grid's.

    forward(x, t, y=None) -> :class:`PredictedTimeOutput` with t = clamp(g(x)); the nominal t is
    ignored except for being reported. When g returns the nominal time, every sampler's output is
    bit-for-bit the original's.
    """

    def __init__(self, model, predictor: Callable[[torch.Tensor], torch.Tensor], *,
                 clamp: tuple[float, float] | None = None, use_in_coefficients: bool = False):
        super().__init__(model)
        self.predictor = predictor
        if clamp is None:
            sched = model.schedule
            lo = 1.0 / sched.num_timesteps if isinstance(sched, DiscreteSchedule) else 1e-3
            lo = max(lo, float(getattr(getattr(predictor, "scale", predictor), "t_min", 0.0)))
            clamp = (lo, 1.0)
        self.clamp = (float(clamp[0]), float(clamp[1]))
        if not 0.0 <= self.clamp[0] < self.clamp[1] <= 1.0:
            raise ConfigError(f"TP clamp {clamp}; expected 0 <= t_lo < t_hi <= 1")
        self.use_in_coefficients = use_in_coefficients

    def predict_time(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) float64 clamp(g(x)) on x's device."""
        t = torch.as_tensor(self.predictor(x)).reshape(x.shape[0]).to(device=x.device, dtype=F64)
        return t.clamp(*self.clamp)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> PredictedTimeOutput:
        t_hat = self.predict_time(x)
        out = self.inner(x, t_hat, y)
        nominal = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
        return PredictedTimeOutput(eps=out.eps, t=t_hat, var_out=out.var_out, nominal_t=nominal,
                                   time_in_coefficients=self.use_in_coefficients)


# ============================================================================ the toy world's oracle
class OracleTimePredictor:
    """The Bayes-optimal g under MSE for data from a :class:`~difflab.process.toy.GaussianMixture`:
    the posterior mean E[t | x] with t ~ U(t_min, t_max) and x ~ p_t = Σ_k w_k N(α μ_k, α² Σ_k + σ² I).

    p(t | x) ∝ p_t(x) is integrated by the midpoint rule in u, t = t_min + (t_max - t_min) u²
    (``num_points`` nodes, dense near t = 0 where the posterior of nearly clean data is sharpest;
    128 nodes give E[t | x] to about 3e-5 on the ring, 256 to 1e-5).

    p_t(x) at all nodes at once: in component k's eigenbasis, z = U_kᵀ x and m = U_kᵀ μ_k, and
    the diffused variances α² λ_kd + σ² depend on t only, so Σ_d (z_d - α m_d)² / v_d(t) is three
    contractions over d — the same numbers as ``mixture.log_prob(x, α(t), σ(t))`` node by node
    (``log_marginals_by_log_prob``, the slow second route), without repeating x per node.

    __call__(x) -> (B,) float64 E[t | x]; posterior(x) -> (mean, std), each (B,) float64 on CPU.
    """

    def __init__(self, mixture, schedule: Schedule, t_min: float = 1e-3, t_max: float = 1.0, num_points: int = 128,
                 chunk_rows: int = 4096):
        self.mixture, self.schedule = mixture, schedule
        self.t_min, self.t_max, self.chunk_rows = float(t_min), float(t_max), int(chunk_rows)
        u = (torch.arange(num_points, dtype=F64) + 0.5) / num_points
        self.t = self.t_min + (self.t_max - self.t_min) * u**2
        self.log_jac = torch.log(2 * u)  # dt/du up to a constant, which the normalisation drops
        self.alpha, self.sigma = schedule.alpha(self.t), schedule.sigma(self.t)
        a, s = self.alpha[None, None, :], self.sigma[None, None, :]
        U, lam = mixture.eigvecs, mixture.eigvals  # (K, D, D), (K, D)
        self._m = torch.einsum("kdj,kd->kj", U, mixture.means)  # (K, D)
        inv = 1.0 / (a**2 * lam[:, :, None] + s**2)  # (K, D, M)
        self._inv, self._m_inv_a = inv, self._m[:, :, None] * inv * a
        self._const = (torch.log(mixture.weights)[:, None] - 0.5 * (self._m[:, :, None] ** 2 * inv * a**2).sum(1)
                       - 0.5 * torch.log(2 * math.pi / inv).sum(1))  # (K, M)

    def log_marginals(self, x: torch.Tensor) -> torch.Tensor:
        """(B, M) log p_t(x) at the quadrature nodes ``self.t`` (x: (B, D))."""
        x = x.detach().to("cpu", F64).reshape(x.shape[0], -1)
        out = []
        for xc in x.split(self.chunk_rows):
            z = torch.einsum("kdj,nd->knj", self.mixture.eigvecs, xc)  # (K, B, D)
            quad = torch.bmm(z**2, self._inv) - 2 * torch.bmm(z, self._m_inv_a)  # (K, B, M)
            out.append(torch.logsumexp(self._const[:, None, :] - 0.5 * quad, dim=0))
        return torch.cat(out)

    def log_marginals_by_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`log_marginals` node by node through ``GaussianMixture.log_prob`` (slow; for checks)."""
        x = x.detach().to("cpu", F64).reshape(x.shape[0], -1)
        return torch.stack([self.mixture.log_prob(x, a, s) for a, s in zip(self.alpha, self.sigma)], 1)

    def log_posterior(self, x: torch.Tensor) -> torch.Tensor:
        """(B, M) log weights of the quadrature nodes ``self.t`` (normalised over M)."""
        lw = self.log_marginals(x) + self.log_jac
        return lw - torch.logsumexp(lw, 1, keepdim=True)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.log_posterior(x).exp()
        mean = w @ self.t
        var = (w @ self.t**2 - mean**2).clamp_min(0.0)
        return mean, var.sqrt()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior(x)[0].to(x.device)


def mixture_of(data_name: str):
    """The exact GaussianMixture of a toy dataset name, or None (no closed form)."""
    if data_name in ("toy:ring8", "toy:grid25", "toy:gaussian"):
        from difflab.data import toy_mixture

        return toy_mixture(data_name)
    return None


# ============================================================================ diagnostics
@torch.no_grad()
def predict_in_batches(predictor, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """(N,) float64 g(x) on CPU, computed ``batch`` rows at a time."""
    return torch.cat([torch.as_tensor(predictor(xb)).reshape(-1).to("cpu", F64) for xb in x.split(batch)])


def accuracy_by_t(predictors: dict, x0: torch.Tensor, schedule: Schedule, *, n: int = 4000, bins: int = 10,
                  t_min: float = 1e-3, seed: int = 0) -> dict:
    """RMSE and bias of each predictor against the true t, in ``bins`` equal bins over [t_min, 1].

    ``n`` fresh pairs (t, x_t): t stratified (n / bins uniform draws per bin), x0 drawn from the
    rows of ``x0`` (N, ...), x_t = α x0 + σ ε with Gaussian ε. Returns {"edges", "n_per_bin",
    name: {"rmse": [bins], "bias": [bins], "pred_mean", "pred_std", "overall_rmse", "overall_bias"},
    "samples": {"t": (n,), name: (n,)}} (the samples for scatter plots, as lists).
    """
    g = torch.Generator().manual_seed(seed)
    per = max(1, n // bins)
    edges = torch.linspace(t_min, 1.0, bins + 1, dtype=F64)
    t = (edges[:-1, None] + (edges[1:] - edges[:-1])[:, None] * torch.rand(bins, per, generator=g, dtype=F64)).reshape(-1)
    idx = torch.randint(0, x0.shape[0], (t.numel(),), generator=g)
    x = x0[idx].to(F64)
    eps = torch.randn(x.shape, generator=g, dtype=F64)
    xt = bcast(schedule.alpha(t), x) * x + bcast(schedule.sigma(t), x) * eps
    res: dict = {"edges": edges.tolist(), "n_per_bin": per, "samples": {"t": t.tolist()}}
    for name, pred in predictors.items():
        p = predict_in_batches(pred, xt)
        err = (p - t).reshape(bins, per)
        res[name] = {"rmse": err.pow(2).mean(1).sqrt().tolist(), "bias": err.mean(1).tolist(),
                     "pred_std": p.reshape(bins, per).std(1).tolist(),
                     "overall_rmse": float(err.pow(2).mean().sqrt()), "overall_bias": float(err.mean()),
                     "overall_mse": float(err.pow(2).mean())}
        res["samples"][name] = p.tolist()
    return res


def accuracy_table(acc: dict, names: Sequence[str] | None = None) -> list[str]:
    """Markdown table of :func:`accuracy_by_t`'s result: one row per t bin, RMSE and bias per predictor."""
    names = list(names or [k for k in acc if k not in ("edges", "n_per_bin", "samples")])
    head = "| t bin | " + " | ".join(f"RMSE {n} | bias {n}" for n in names) + " |"
    lines = [head, "|---|" + "---:|" * (2 * len(names))]
    e = acc["edges"]
    for b in range(len(e) - 1):
        cells = " | ".join(f"{acc[n]['rmse'][b]:.4f} | {acc[n]['bias'][b]:+.4f}" for n in names)
        lines.append(f"| [{e[b]:.2f}, {e[b + 1]:.2f}) | {cells} |")
    cells = " | ".join(f"**{acc[n]['overall_rmse']:.4f}** | {acc[n]['overall_bias']:+.4f}" for n in names)
    lines.append(f"| all | {cells} |")
    return lines


def plot_accuracy(acc: dict, path: str | os.PathLike, title: str = "") -> Path:
    """PNG: RMSE and bias per t bin (left), predicted against true t (right)."""
    from difflab.viz import _mpl

    plt = _mpl()
    names = [k for k in acc if k not in ("edges", "n_per_bin", "samples")]
    e = torch.tensor(acc["edges"])
    mid = ((e[1:] + e[:-1]) / 2).tolist()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for i, n in enumerate(names):
        axes[0].plot(mid, acc[n]["rmse"], "o-", c=f"C{i}", label=f"RMSE {n}")
        axes[0].plot(mid, acc[n]["bias"], "s--", c=f"C{i}", ms=3, label=f"bias {n}")
    axes[0].axhline(0, c="0.6", lw=0.8)
    axes[0].set_xlabel("true t")
    axes[0].set_ylabel("g(x_t) - t")
    axes[0].legend(fontsize=8)
    axes[0].grid(alpha=0.3)
    t = torch.tensor(acc["samples"]["t"])
    keep = torch.randperm(t.numel(), generator=torch.Generator().manual_seed(0))[:2000]
    for i, n in enumerate(names):
        axes[1].scatter(t[keep], torch.tensor(acc["samples"][n])[keep], s=2, c=f"C{i}", alpha=0.5, label=n,
                        rasterized=True)
    axes[1].plot([0, 1], [0, 1], c="k", lw=0.8)
    axes[1].set_xlabel("true t")
    axes[1].set_ylabel("predicted t")
    axes[1].set_aspect("equal")
    axes[1].legend(fontsize=8, markerscale=4)
    if title:
        fig.suptitle(title, fontsize=10)
    from difflab.viz import save_figure

    return save_figure(fig, path)


@torch.no_grad()
def drift_diagnostics(model, predictors: dict, shape: Sequence[int], *, sampler: str = "euler_maruyama",
                      steps: Sequence[int] = (5, 10, 20, 50, 1000), n: int = 256, seed: int = 0, max_points: int = 60,
                      dtype=torch.float32, **sampler_opts) -> dict:
    """Where the original sampler's states are, as the predictors see them.

    For each T in ``steps``: n trajectories of ``sampler`` on the default grid of T steps; at (up
    to ``max_points`` of) the grid times, each predictor's g(x) over the n states: mean and std
    (for an :class:`OracleTimePredictor` also the mean posterior std, i.e. how sharp t | x is).
    Returns {T: {"t": [...], name: {"mean", "std", "post_std"?}, "gap": {name: mean |E g - t|}}}.
    """
    from difflab.samplers import SAMPLERS, time_grid

    out: dict = {}
    for T in steps:
        ts = time_grid(model.schedule, T)
        xT = torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed), dtype=dtype)
        r = SAMPLERS[sampler](model, xT, ts, generator=torch.Generator().manual_seed(seed + 1), return_trajectory=True,
                              **sampler_opts)
        keep = torch.unique(torch.linspace(0, len(ts) - 1, min(max_points, len(ts))).round().long())
        rec: dict = {"t": ts[keep].tolist(), "gap": {}}
        for name, g in predictors.items():
            means, stds, post = [], [], []
            for k in keep.tolist():
                x = r.trajectory[k]
                if isinstance(g, OracleTimePredictor):
                    m, s = g.posterior(x)
                    post.append(float(s.mean()))
                else:
                    m = predict_in_batches(g, x)
                means.append(float(m.mean()))
                stds.append(float(m.std()))
            rec[name] = {"mean": means, "std": stds, **({"post_std": post} if post else {})}
            rec["gap"][name] = float(sum(abs(a - b) for a, b in zip(means, rec["t"])) / len(means))
        out[int(T)] = rec
    return out


def plot_drift(drift: dict, path: str | os.PathLike, title: str = "") -> Path:
    """PNG: predicted t (mean ± std over samples) against the nominal t along the original
    sampler's trajectories, one panel per predictor, one line per T."""
    from difflab.viz import _mpl

    plt = _mpl()
    Ts = sorted(drift)
    names = [k for k in drift[Ts[0]] if k not in ("t", "gap")]
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        for i, T in enumerate(Ts):
            t = torch.tensor(drift[T]["t"])
            m, s = torch.tensor(drift[T][name]["mean"]), torch.tensor(drift[T][name]["std"])
            ax.plot(t, m, "-", c=f"C{i}", lw=1.3, marker="o" if T <= 20 else None, ms=3, label=f"T = {T}")
            ax.fill_between(t, m - s, m + s, color=f"C{i}", alpha=0.12)
        ax.plot([0, 1], [0, 1], c="k", lw=0.8, ls="--")
        ax.set_xlabel("nominal t (grid)")
        ax.set_ylabel(f"predicted t ({name})")
        ax.set_xlim(1.02, -0.02)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    from difflab.viz import save_figure

    return save_figure(fig, path)


def drift_table(drift: dict) -> list[str]:
    """Markdown: per T, the mean |E[g(x)] - t| along the trajectory and E[g] at a few nominal times."""
    Ts = sorted(drift)
    names = [k for k in drift[Ts[0]] if k not in ("t", "gap")]
    lines = ["| T | " + " | ".join(f"mean gap {n}" for n in names) + " | E g at t≈0.5 | E g at the last state (t = 0) |",
             "|---:|" + "---:|" * len(names) + "---|---|"]
    for T in Ts:
        d = drift[T]
        t = torch.tensor(d["t"])
        mid = int((t - 0.5).abs().argmin())
        at_mid = ", ".join(f"{n} {d[n]['mean'][mid]:.3f}" for n in names)
        at_end = ", ".join(f"{n} {d[n]['mean'][-1]:.3f}" for n in names)
        gaps = " | ".join(f"{d['gap'][n]:.4f}" for n in names)
        lines.append(f"| {T} | {gaps} | (t={float(t[mid]):.2f}) {at_mid} | {at_end} |")
    return lines


def _sample_x(model, shape, sampler, steps, n, seed, dtype=torch.float32, **opts):
    from difflab.samplers import sample

    with torch.no_grad():
        return sample(model, (n, *shape), sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(seed),
                      dtype=dtype, **opts).x


def toy_sampling_rows(models: dict, predictors: dict, mixture, *, samplers=("euler_maruyama", "ancestral", "ddim"),
                      steps=(5, 10, 20, 50), n: int = 2000, seed: int = 0, coefficients=(False,),
                      progress: Callable[[str], None] | None = None) -> list[dict]:
    """Exact toy metrics (mean log-density, sliced W2, MMD², modes) of every (model, sampler, T),
    original and TP with every predictor (and coefficient mode). Same initial noise and sampler
    noise for all variants of a (sampler, T). One dict per run; ``blown_up`` is the fraction of
    samples that blew up (non-finite or a coordinate beyond ±100; the metrics are over the others)."""
    from difflab.metrics.toy import toy_metrics

    rows = []
    for mname, model in models.items():
        for s in samplers:
            for T in steps:
                variants = [("original", None, False)] + [(p, g, c) for p in predictors for g in [predictors[p]]
                                                          for c in coefficients]
                for pname, g, coef in variants:
                    m = model if g is None else TimePredictorSampling(model, g, use_in_coefficients=coef)
                    t0 = time.perf_counter()
                    x = _sample_x(m, (mixture.dim,), s, T, n, seed)
                    # A feedback loop can blow samples up (g(x) -> 1 makes x̂0 = (x - σ ε̂) / α(1) ill-conditioned):
                    # measure the others (|coordinate| <= 100; the data lie within a few units) and report the loss.
                    finite = torch.isfinite(x).all(1) & (x.abs() <= 100).all(1)
                    met = toy_metrics(x[finite].double(), mixture, seed=seed + 1) if int(finite.sum()) >= 2 else \
                        {"mean_log_density": -math.inf, "sliced_w2": math.inf, "mmd2": math.inf, "coverage": 0.0}
                    rows.append({"model": mname, "sampler": s, "steps": int(T), "variant": pname, "coefficients": coef,
                                 "seconds": time.perf_counter() - t0, "blown_up": 1 - float(finite.double().mean()), **met})
                    if progress:
                        progress(f"{mname} {s} T={T} {pname}{' +coef' if coef else ''}: SW2 {met['sliced_w2']:.3f}")
    return rows


def toy_sampling_table(rows: list[dict]) -> list[str]:
    """Markdown: each TP run beside its original, with TP/original ratios of sliced W2 and MMD²
    (the issue's reference ratio, FID 144.88 / 343.35 = 0.42, for scale)."""
    base = {(r["model"], r["sampler"], r["steps"]): r for r in rows if r["variant"] == "original"}
    lines = ["| model | sampler | T | variant | log-density | sliced W2 | MMD² | modes | SW2 ratio | MMD² ratio |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        b = base[(r["model"], r["sampler"], r["steps"])]
        name = r["variant"] + (" +coef" if r["coefficients"] else "")
        ratio_w = r["sliced_w2"] / b["sliced_w2"] if b["sliced_w2"] > 0 else float("nan")
        ratio_m = r["mmd2"] / b["mmd2"] if b["mmd2"] > 1e-6 else float("nan")
        ratio = "" if r is b else f"{ratio_w:.2f} | {ratio_m:.2f}"
        if r.get("blown_up", 0) > 0:
            name += f" ({100 * r['blown_up']:.2g}% blew up)"
        lines.append(f"| {r['model']} | {r['sampler']} | {r['steps']} | {name if r is not b else 'original'} | "
                     f"{r['mean_log_density']:.3f} | {r['sliced_w2']:.4f} | {r['mmd2']:.5f} | {r['coverage']:.2f} | "
                     f"{ratio or '— | —'} |")
    return lines


# ============================================================================ report and sampling
def _load_diffusion(ckpt_path: str, device="cpu"):
    from difflab.train.api import load_model

    return load_model(ckpt_path, map_location=device)


def tp_report(tp_ckpt: str | os.PathLike, out: str | os.PathLike, *, diffusion_ckpt: str | None = None, n: int = 4000,
              bins: int = 10, drift_steps: Sequence[int] = (5, 10, 20, 50, 1000), drift_sampler: str = "euler_maruyama",
              drift_n: int = 256, drift: bool = True, data_dir=None, seed: int = 0) -> Path:
    """Accuracy of a trained time predictor per t (Markdown + JSON + PNG) and, when the diffusion
    model loads, the drift of its sampler's states (the CLI's ``tp-report``). Returns report.md's path.

    On the toy mixtures the exact posterior E[t | x] (the Bayes-optimal g) is reported beside g.
    """
    from difflab.data import load_dataset

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lt = load_time_predictor(tp_ckpt)
    g, dcfg = lt.predictor, lt.diffusion_config
    if dcfg is None:
        raise CheckpointError(f"time predictor {lt.checkpoint.path} records no diffusion run (its data); "
                              "train it with tp-train, or use accuracy_by_t from Python")
    split = "test"
    try:
        ds = load_dataset(dcfg.data.name, data_dir or dcfg.data.data_dir or None, split="test",
                          image_size=dcfg.data.image_size or None, num_samples=min(n, 10000))
    except DataError:  # e.g. a folder dataset has no test split
        split = "train"
        ds = load_dataset(dcfg.data.name, data_dir or dcfg.data.data_dir or None,
                          image_size=dcfg.data.image_size or None, num_samples=min(n, 10000))
    predictors: dict = {"g": g}
    mix = mixture_of(dcfg.data.name)
    if mix is not None:
        predictors["exact"] = OracleTimePredictor(mix, g.schedule, t_min=g.scale.t_min)
    acc = accuracy_by_t(predictors, ds.x, g.schedule, n=n, bins=bins, t_min=g.scale.t_min, seed=seed)
    plot_accuracy(acc, out / "accuracy.png", title=f"time predictor on {dcfg.data.name}")
    (out / "accuracy.json").write_text(json.dumps({k: v for k, v in acc.items() if k != "samples"}, indent=2))
    lines = [f"# Time-predictor report: {lt.checkpoint.path}", "",
             f"Data {dcfg.data.name} ({split} split), schedule {g.schedule!r}, g = {type(g.net).__name__} predicting "
             f"{'t' if g.scale.parameterization == 't' else 'the normalised log-SNR'}, trained {lt.checkpoint.step} "
             f"steps. {n} fresh (t, x_t) pairs, t uniform per bin"
             + (" (`exact`: the Bayes-optimal E[t | x] of the true mixture)." if mix is not None else "."), "",
             *accuracy_table(acc), "", "![accuracy](accuracy.png)", ""]
    ckpt = diffusion_ckpt or lt.diffusion_checkpoint
    if drift:
        try:
            model, _, _ = _load_diffusion(ckpt)
        except Exception as e:  # noqa: BLE001
            if diffusion_ckpt:
                raise
            lines += [f"Drift diagnostics skipped: the diffusion checkpoint {ckpt!r} did not load ({e}); pass --ckpt.", ""]
        else:
            opts = {"clip_denoised": True} if len(lt.data_shape) == 3 and drift_sampler in ("ancestral", "ddim") else {}
            d = drift_diagnostics(model, predictors, lt.data_shape, sampler=drift_sampler, steps=drift_steps, n=drift_n,
                                  seed=seed, **opts)
            plot_drift(d, out / "drift.png", title=f"{drift_sampler} trajectories of {ckpt}")
            (out / "drift.json").write_text(json.dumps({str(k): v for k, v in d.items()}, indent=2))
            lines += [f"## Drift of the original sampler ({drift_sampler}, {drift_n} trajectories)", "",
                      "Predicted t of the states along the trajectories against the grid's nominal t "
                      "(mean over states; the band is ± one std). Above the diagonal: the states are noisier than "
                      "the grid assumes.", "", *drift_table(d), "", "![drift](drift.png)", ""]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def tp_sample(tp_ckpt: str | os.PathLike, out: str | os.PathLike, *, diffusion_ckpt: str | None = None,
              sampler: str = "euler_maruyama", steps: int = 10, n: int = 64, seed: int = 0,
              use_in_coefficients: bool = False, clamp: tuple[float, float] | None = None, compare: bool = True,
              device: str = "cpu", progress: bool = False) -> list[Path]:
    """Samples of a diffusion checkpoint with TP sampling (and, with ``compare``, the original
    sampler from the same noise): PNG grids / scatter plots, plus .npz with the arrays."""
    import numpy as np

    from difflab import viz

    lt = load_time_predictor(tp_ckpt, map_location=device)
    model, _, _ = _load_diffusion(diffusion_ckpt or lt.diffusion_checkpoint, device)
    tp = TimePredictorSampling(model, lt.predictor, clamp=clamp, use_in_coefficients=use_in_coefficients)
    opts = {"clip_denoised": True} if len(lt.data_shape) == 3 and sampler in ("ancestral", "ddim") else {}
    runs = {"tp": tp, **({"original": model} if compare else {})}
    xs = {k: _sample_x(m, lt.data_shape, sampler, steps, n, seed, progress=progress, device=device, **opts).cpu()
          for k, m in runs.items()}
    out = Path(out)
    written = []
    if len(lt.data_shape) == 3:
        for k, x in xs.items():
            written.append(viz.save_grid(x, out.with_name(f"{out.stem}-{k}.png"), scale=viz.auto_scale(x.shape[-1])))
    else:
        written.append(viz.save_scatter({f"{k}, {sampler} T={steps}": x for k, x in xs.items()}, out.with_suffix(".png")))
    npz = out.with_suffix(".npz")
    npz.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(npz, **{k: x.numpy() for k, x in xs.items()})
    return written + [npz]


# ============================================================================ the quickstart's section
def demo_section(out: Path, toy_model, toy_cfg, digits_model, digits_cfg, progress: bool = False) -> list[str]:
    """Time-predictor sampling on the quickstart's toy and digits models: Markdown lines, PNGs in ``out``.

    Trains a small g for each (toy: MLP, digits: encoder), measures it per t (toy: beside the exact
    posterior mean), shows the drift of few-step trajectories, and compares TP sampling with the
    original samplers (toy: exact metrics; digits: sample grids). About a minute on 2 CPU cores.
    """
    return _demo_section(Path(out), toy_model, toy_cfg, digits_model, digits_cfg, progress)


def _demo_section(out: Path, toy_model, toy_cfg, digits_model, digits_cfg, progress: bool) -> list[str]:
    from difflab import viz
    from difflab.build import data_shape_of
    from difflab.data import load_dataset

    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    lines = ["## Time-predictor (TP) sampling", "",
             "A network g(x_t) → t reads the noise level from x alone; TP sampling evaluates the model at g(x) "
             "instead of the grid time at every step (same grid, same NFE).", ""]
    # --- toy
    tp_cfg, tcfg = tp_configs(["train.steps=500", "train.warmup_steps=50", "train.ckpt_every=0", "train.log_every=100",
                               "tp.hidden=64"])
    toy = load_dataset(toy_cfg.data.name, num_samples=20000)
    sched = toy_model.schedule
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        g_toy = build_time_predictor(toy.shape, sched, tp_cfg)
    t0 = time.perf_counter()
    res = fit_time_predictor(g_toy, toy.x, tcfg, _fresh(out / "tp_toy"), diffusion_config=toy_cfg, progress=progress)
    g_toy = load_time_predictor(out / "tp_toy").predictor
    secs = time.perf_counter() - t0
    mix = mixture_of(toy_cfg.data.name)
    preds = {"g": g_toy}
    if mix is not None:
        preds["exact"] = OracleTimePredictor(mix, sched, t_min=tp_cfg.t_min)
    acc = accuracy_by_t(preds, toy.x, sched, n=2000, bins=5, t_min=tp_cfg.t_min)
    plot_accuracy(acc, out / "tp_toy_accuracy.png", title=f"g on {toy_cfg.data.name}")
    lines += [f"### Toy ({toy_cfg.data.name})",
              f"g: MLP, {res['final_step']} steps in {secs:.0f} s (final loss {res['last_loss']:.4f}). "
              "Per-t accuracy on fresh (t, x_t) pairs; `exact` is the Bayes-optimal E[t | x] of the true mixture:", "",
              *accuracy_table(acc), "", "![toy accuracy](tp_toy_accuracy.png)", ""]
    d = drift_diagnostics(toy_model, preds, toy.shape, sampler="euler_maruyama", steps=(5, 10, 20, 1000), n=256,
                          max_points=40)
    plot_drift(d, out / "tp_toy_drift.png", title="Euler–Maruyama trajectories of the toy model")
    lines += ["Drift: where the states of plain Euler–Maruyama are, as g and the exact posterior see them:", "",
              *drift_table(d), "", "![toy drift](tp_toy_drift.png)", ""]
    if "exact" in preds:
        post = d[max(d)]["exact"]["post_std"]
        lines += [f"One 2-D point says little about its noise level: along the {max(d)}-step trajectories the exact "
                  f"posterior std of t averages {sum(post) / len(post):.2f} (the prior's is 0.29), so E[t | x] — what "
                  "an MSE-trained g converges to — stays near the middle, and evaluating the model there moves every "
                  "step off its time. `benchmarks/tp_sampling.py` adds a 16-D world where t is readable.", ""]
    if mix is not None:
        rows = toy_sampling_rows({"trained": toy_model}, preds, mix, steps=(5, 10), n=1000, coefficients=(False, True))
        lines += ["TP sampling against the original (same noise; ratios < 1: TP is better; the issue's CIFAR-10 "
                  f"FID ratio was {REFERENCE_RATIO:.2f}; `+coef` also takes β, σ at g(x), as the original algorithm):", "",
                  *toy_sampling_table(rows), ""]
    # --- digits
    shape = tuple(data_shape_of(digits_cfg))
    digits = load_dataset(digits_cfg.data.name)
    tp_cfg_d, tcfg_d = tp_configs(["train.steps=300", "train.batch_size=64", "train.warmup_steps=50",
                                   "train.ckpt_every=0", "train.log_every=100", "train.lr=2e-3"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        g_dig = build_time_predictor(shape, digits_model.schedule, tp_cfg_d)
    t0 = time.perf_counter()
    res = fit_time_predictor(g_dig, digits.x, tcfg_d, _fresh(out / "tp_digits"), diffusion_config=digits_cfg,
                             progress=progress)
    g_dig = load_time_predictor(out / "tp_digits").predictor
    secs = time.perf_counter() - t0
    acc = accuracy_by_t({"g": g_dig}, digits.x, digits_model.schedule, n=1000, bins=5, t_min=tp_cfg_d.t_min)
    plot_accuracy(acc, out / "tp_digits_accuracy.png", title="g on digits")
    lines += ["### Digits (8×8)", f"g: U-Net encoder, {res['final_step']} steps in {secs:.0f} s "
              f"(final loss {res['last_loss']:.4f}).", "", *accuracy_table(acc), "",
              "![digits accuracy](tp_digits_accuracy.png)", "",
              "Samples from the same noise (`TP +coef`: the original Algorithm 3):", "",
              "| sampler | T | original | TP | TP +coef |", "|---|---:|---|---|---|"]
    for s, T in (("euler_maruyama", 10), ("ddim", 10)):
        opts = {"clip_denoised": True} if s == "ddim" else {}
        for name, m in (("original", digits_model), ("tp", TimePredictorSampling(digits_model, g_dig)),
                        ("tpcoef", TimePredictorSampling(digits_model, g_dig, use_in_coefficients=True))):
            viz.save_grid(_sample_x(m, shape, s, T, 32, 0, **opts), out / f"tp_digits_{s}_{T}_{name}.png", nrow=8,
                          scale=viz.auto_scale(shape[-1]))
        lines.append(f"| {s} | {T} | " + " | ".join(f"![{k}](tp_digits_{s}_{T}_{k}.png)"
                                                      for k in ("original", "tp", "tpcoef")) + " |")
    lines += ["", f"(TP section: {time.perf_counter() - t_start:.0f} s.)", ""]
    return lines


def _fresh(run_dir: Path) -> Path:
    import shutil

    if run_dir.exists():
        shutil.rmtree(run_dir)
    return run_dir


# ============================================================================ CLI
EXAMPLES = {
    "tp-train": """examples:
  difflab tp-train runs/toy --out runs/toy-tp
  difflab tp-train runs/digits --out runs/digits-tp --steps 3000 --set train.lr=5e-4
  difflab tp-train runs/mnist --out runs/mnist-tp --set tp.parameterization=log_snr
  difflab tp-train runs/cifar --out runs/cifar-tp --set tp.net=efficientnet_v2_s --set tp.weights_path=effv2s.pth""",
    "tp-report": """examples:
  difflab tp-report runs/toy-tp --out runs/toy-tp/report
  difflab tp-report runs/digits-tp --out reports/digits-tp --drift-steps 5,10,20 --drift-sampler ddim
  difflab tp-report runs/mnist-tp --ckpt runs/mnist --out reports/mnist-tp --no-drift""",
    "tp-sample": """examples:
  difflab tp-sample runs/toy-tp --sampler euler_maruyama --steps 10 --n 2000 --out tp-toy.png
  difflab tp-sample runs/digits-tp --sampler ddim --steps 10 --n 64 --coefficients --out tp-digits.png""",
}


def _ints(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 5,10,20") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers")
    return vals


def _clamp(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LO,HI, e.g. 0.001,1") from None
    return lo, hi


def register(sub) -> dict:
    """Add ``tp-train``, ``tp-report`` and ``tp-sample`` to the CLI's subparsers."""
    from difflab.samplers import SAMPLERS

    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("tp-train", help="train a time predictor g(x_t) -> t for a diffusion checkpoint",
                       epilog=EXAMPLES["tp-train"], formatter_class=fmt)
    p.add_argument("diffusion", help="the diffusion run or checkpoint (its data and schedule are used)")
    p.add_argument("--out", required=True, help="run directory for the time predictor")
    p.add_argument("--steps", type=int, default=None, help=f"training steps (default {TP_TRAIN_DEFAULTS['steps']})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="train.* (e.g. train.lr=1e-4) or tp.* (net, parameterization, t_min, hidden, depth, "
                        "base_channels, channel_mult, num_res_blocks, dropout, weights_path); repeatable")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("tp-report", help="per-t accuracy of a time predictor, and the drift of few-step samplers",
                       epilog=EXAMPLES["tp-report"], formatter_class=fmt)
    p.add_argument("checkpoint", help="the time-predictor run or checkpoint")
    p.add_argument("--out", required=True, help="directory for report.md, accuracy.{json,png}, drift.{json,png}")
    p.add_argument("--ckpt", default=None, help="the diffusion checkpoint (default: the one g was trained for)")
    p.add_argument("--n", type=int, default=4000, help="(t, x_t) pairs for the accuracy table")
    p.add_argument("--bins", type=int, default=10)
    p.add_argument("--drift-steps", type=_ints, default=[5, 10, 20, 50, 1000])
    p.add_argument("--drift-sampler", default="euler_maruyama", choices=sorted(SAMPLERS))
    p.add_argument("--drift-n", type=int, default=256, help="trajectories per T")
    p.add_argument("--no-drift", action="store_true")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("tp-sample", help="sample a diffusion checkpoint with time-predictor sampling",
                       epilog=EXAMPLES["tp-sample"], formatter_class=fmt)
    p.add_argument("checkpoint", help="the time-predictor run or checkpoint")
    p.add_argument("--ckpt", default=None, help="the diffusion checkpoint (default: the one g was trained for)")
    p.add_argument("--sampler", default="euler_maruyama", choices=sorted(SAMPLERS))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--coefficients", action="store_true", help="also take the sampler's α, σ, β at g(x) (Algorithm 3)")
    p.add_argument("--clamp", type=_clamp, default=None, metavar="LO,HI", help="bounds on g(x)")
    p.add_argument("--no-compare", action="store_true", help="skip the original sampler's samples")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True, help="FILE.png (FILE-tp.png and FILE-original.png for images) + FILE.npz")
    return {"tp-train": cmd_tp_train, "tp-report": cmd_tp_report, "tp-sample": cmd_tp_sample}


def cmd_tp_train(args) -> int:
    res = train_time_predictor(args.diffusion, args.out, steps=args.steps, overrides=args.overrides,
                               data_dir=args.data_dir, progress=not args.no_progress, resume=args.resume)
    print(f"trained g to step {res['final_step']} (loss {res['last_loss']:.5f}); checkpoint {res['checkpoint']}")
    return 0


def cmd_tp_report(args) -> int:
    report = tp_report(args.checkpoint, args.out, diffusion_ckpt=args.ckpt, n=args.n, bins=args.bins,
                       drift_steps=args.drift_steps, drift_sampler=args.drift_sampler, drift_n=args.drift_n,
                       drift=not args.no_drift, data_dir=args.data_dir, seed=args.seed)
    print(f"report: {report}")
    return 0


def cmd_tp_sample(args) -> int:
    written = tp_sample(args.checkpoint, args.out, diffusion_ckpt=args.ckpt, sampler=args.sampler, steps=args.steps,
                        n=args.n, seed=args.seed, use_in_coefficients=args.coefficients, clamp=args.clamp,
                        compare=not args.no_compare, device=args.device)
    print(f"{args.n} samples, TP {args.sampler} T={args.steps} -> {', '.join(map(str, written))}")
    return 0


__all__ = ["KIND", "LoadedTimePredictor", "OracleTimePredictor", "PredictedTimeOutput", "TimePredictor",
           "TimePredictorConfig", "TimePredictorObjective", "TimePredictorSampling", "TimeScale", "TorchvisionBackbone",
           "accuracy_by_t", "accuracy_table", "build_time_predictor", "demo_section", "drift_diagnostics", "drift_table",
           "fit_time_predictor", "load_time_predictor", "mixture_of", "plot_accuracy", "plot_drift", "register",
           "toy_sampling_rows", "toy_sampling_table", "tp_configs", "tp_report", "tp_sample", "train_time_predictor"]
