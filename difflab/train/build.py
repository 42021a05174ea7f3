"""From a config to objects: the process, the network, the model callable and the training objective.

One place turns the ``[model]`` and ``[diffusion]`` sections into torch objects, so the CLI, the
trainer, checkpoint loading and the methods all build the same thing from the same config::

    process = build_process(cfg.diffusion)             # GaussianDiffusion (discrete) or Schedule (vpsde)
    model = build_model(cfg, (1, 8, 8), process=process)
    objective = build_objective(cfg, process)

Every bad combination is a one-line :class:`~difflab.errors.ConfigError` naming the keys involved.
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from difflab.config import Config, DiffusionConfig, ModelConfig
from difflab.errors import ConfigError
from difflab.models import DiffusionModel
from difflab.nets import MLP, UNET_PRESETS, unet_from_preset
from difflab.train.objectives import DDPMObjective, DSMObjective
from difflab.process import GaussianDiffusion, Schedule, make_betas, make_schedule, make_timestep_sampler

LEARNED_VARIANCES = ("learned", "learned_range")

# Native per-sample shapes of the named datasets: a checkpoint without a recorded data shape
# (a lone .safetensors file) is rebuilt from these and data.image_size.
NATIVE_SHAPES: dict[str, tuple[int, ...]] = {
    "toy": (2,),
    "digits": (1, 8, 8),
    "mnist": (1, 28, 28),
    "fashion-mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
}


def build_process(dcfg: DiffusionConfig) -> GaussianDiffusion | Schedule:
    """The forward process: a :class:`GaussianDiffusion` for ``process = "discrete"``, the
    continuous :class:`Schedule` for ``process = "vpsde"``."""
    if dcfg.process == "discrete":
        kw = {"s": dcfg.cosine_s} if dcfg.schedule == "cosine" else {}
        try:
            return GaussianDiffusion(make_betas(dcfg.schedule, dcfg.timesteps, **kw), var_type=dcfg.var_type)
        except ValueError as e:  # e.g. linear betas past 1 at very few steps
            raise ConfigError(
                f"diffusion.schedule = {dcfg.schedule!r} with diffusion.timesteps = {dcfg.timesteps}: {e}; "
                "use more timesteps or the 'cosine' schedule"
            ) from None
    if dcfg.process == "vpsde":
        if dcfg.schedule == "vp-linear":
            return make_schedule("vp-linear", beta_min=dcfg.beta_min, beta_max=dcfg.beta_max)
        if dcfg.schedule == "vp-cosine":
            return make_schedule("vp-cosine", s=dcfg.cosine_s)
        raise ConfigError(
            f"diffusion.schedule = {dcfg.schedule!r} with diffusion.process = 'vpsde'; expected 'vp-linear' or 'vp-cosine'"
        )
    raise ConfigError(f"diffusion.process = {dcfg.process!r}; expected 'discrete' or 'vpsde'")


def schedule_of(process: GaussianDiffusion | Schedule) -> Schedule:
    """The continuous view of a process: ``diffusion.schedule``, or the schedule itself."""
    return process.schedule if isinstance(process, GaussianDiffusion) else process


def data_shape_of(cfg: Config) -> tuple[int, ...]:
    """The per-sample shape ``cfg.data`` loads to, for the named datasets (not folders)."""
    name = cfg.data.name.strip().lower()
    key = "toy" if name.startswith("toy:") else name
    if key not in NATIVE_SHAPES:
        raise ConfigError(
            f"data.name = {cfg.data.name!r}: its sample shape is only known after loading it; "
            f"pass data_shape explicitly (known: {', '.join(sorted(NATIVE_SHAPES))})"
        )
    shape = NATIVE_SHAPES[key]
    if len(shape) == 3 and cfg.data.image_size:
        shape = (shape[0], cfg.data.image_size, cfg.data.image_size)
    return shape


def _unet_overrides(mcfg: ModelConfig) -> dict:
    """The U-Net arguments the config sets; a zero / empty / negative value keeps the preset's."""
    out: dict = {"time_scale": mcfg.time_scale}
    if mcfg.base_channels > 0:
        out["base_channels"] = mcfg.base_channels
    if mcfg.channel_mult:
        out["channel_mult"] = tuple(mcfg.channel_mult)
    if mcfg.num_res_blocks > 0:
        out["num_res_blocks"] = mcfg.num_res_blocks
    if mcfg.attention_resolutions:
        out["attention_resolutions"] = tuple(mcfg.attention_resolutions)
    if mcfg.dropout >= 0:
        out["dropout"] = mcfg.dropout
    if mcfg.num_heads > 0:
        out["num_heads"] = mcfg.num_heads
    return out


def build_net(mcfg: ModelConfig, data_shape: Sequence[int], num_classes: int | None = None,
              out_channels: int | None = None) -> nn.Module:
    """The network for data of per-sample shape ``data_shape``: (D,) for "mlp", (C, H, H) for "unet".

    ``out_channels`` defaults to the data's channels (D for the MLP); ``num_classes`` turns on
    class conditioning.
    """
    shape = tuple(int(s) for s in data_shape)
    if mcfg.kind == "mlp":
        if len(shape) != 1:
            raise ConfigError(
                f"model.kind = 'mlp' needs vector data (D,), got samples of shape {shape}; use model.kind = 'unet'"
            )
        return MLP(dim=shape[0], hidden=mcfg.hidden, depth=mcfg.depth, out_dim=out_channels,
                   num_classes=num_classes, time_scale=mcfg.time_scale)
    if mcfg.kind == "unet":
        if len(shape) != 3 or shape[1] != shape[2]:
            raise ConfigError(
                f"model.kind = 'unet' needs square images (C, H, H), got samples of shape {shape}; "
                "use model.kind = 'mlp' for vector data"
            )
        c, h, _ = shape
        preset = mcfg.preset or f"{h}x{h}"
        if preset not in UNET_PRESETS:
            raise ConfigError(
                f"model.preset = {mcfg.preset!r} (images {h}x{h}); expected one of {', '.join(sorted(UNET_PRESETS))}"
            )
        try:
            return unet_from_preset(preset, **_unet_overrides(mcfg), in_channels=c, out_channels=out_channels or c,
                                    image_size=h, num_classes=num_classes)
        except ValueError as e:  # e.g. attention at a resolution this image size does not have
            raise ConfigError(f"[model] with preset {preset!r} on {h}x{h} images: {e}") from None
    raise ConfigError(f"model.kind = {mcfg.kind!r}; expected 'unet' or 'mlp'")


def build_model(cfg: Config, data_shape: Sequence[int], num_classes: int | None = None, *,
                process: GaussianDiffusion | Schedule | None = None) -> DiffusionModel:
    """Network + schedule as a :class:`DiffusionModel`; learned variances double the output channels.

    ``num_classes`` is used only when ``cfg.data.class_cond`` is on.
    """
    d = cfg.diffusion
    learn_sigma = d.var_type in LEARNED_VARIANCES
    if learn_sigma and d.process != "discrete":
        raise ConfigError(
            f"diffusion.var_type = {d.var_type!r} needs the discrete process's variational bound; "
            "use 'fixed_small' or 'fixed_large' with diffusion.process = 'vpsde'"
        )
    if cfg.data.class_cond and not num_classes:
        raise ConfigError(f"data.class_cond = true but data {cfg.data.name!r} has no labels; set data.class_cond = false")
    process = build_process(d) if process is None else process
    channels = int(data_shape[0])
    net = build_net(cfg.model, data_shape, num_classes if cfg.data.class_cond else None,
                    out_channels=2 * channels if learn_sigma else channels)
    return DiffusionModel(net, schedule_of(process), prediction=d.prediction, var_type=d.var_type)


def build_objective(cfg: Config, process: GaussianDiffusion | Schedule | None = None):
    """The training objective of ``cfg.diffusion``: DDPM losses (discrete) or DSM (vpsde)."""

    d = cfg.diffusion
    process = build_process(d) if process is None else process
    if isinstance(process, GaussianDiffusion):
        if d.loss not in ("simple", "hybrid", "vlb"):
            raise ConfigError(f"diffusion.loss = {d.loss!r} with the discrete process; expected 'simple', 'hybrid' or 'vlb'")
        if d.loss == "hybrid" and d.var_type not in LEARNED_VARIANCES:
            raise ConfigError(
                f"diffusion.loss = 'hybrid' trains the variance head, but diffusion.var_type = {d.var_type!r} "
                "has none; use var_type 'learned_range' or loss 'simple'"
            )
        sampler = make_timestep_sampler(d.timestep_sampler, process.num_timesteps)
        return DDPMObjective(process, loss=d.loss, hybrid_lambda=d.hybrid_lambda, timestep_sampler=sampler)
    if d.loss != "dsm":
        raise ConfigError(f"diffusion.loss = {d.loss!r} with diffusion.process = 'vpsde'; expected 'dsm'")
    if d.timestep_sampler != "uniform":
        raise ConfigError(
            f"diffusion.timestep_sampler = {d.timestep_sampler!r} is for discrete steps; "
            "continuous-time DSM draws t uniformly: set it to 'uniform'"
        )
    return DSMObjective(process, t_min=d.t_min, likelihood_weighting=d.likelihood_weighting)


__all__ = ["NATIVE_SHAPES", "build_model", "build_net", "build_objective", "build_process", "data_shape_of",
           "schedule_of"]
