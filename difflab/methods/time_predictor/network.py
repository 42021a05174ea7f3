"""The time predictor g(x_t) -> t: its output scale, its networks and its config.

g never sees t; a sigmoid bounds its output to a unit u in (0, 1), mapped to a time in [t_min, 1]
(:class:`TimeScale`). Shapes: x (B, ...) any data shape; times (B,) float64 (t = 0 data, t = 1 noise).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from difflab.errors import CheckpointError, ConfigError
from difflab.nets import Encoder, MLPEncoder
from difflab.process.schedules import F64, Schedule

KIND = "time_predictor"  # the checkpoint kind of a trained g
PARAMETERIZATIONS = ("t", "log_snr")
NETS = ("auto", "mlp", "encoder", "efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l")
TORCHVISION_NETS = NETS[3:]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


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
