"""Import a Hugging Face diffusers pixel-space DDPM model (a ``UNet2DModel`` and its scheduler).

The diffusers U-Net is kept as it is, inside :class:`DiffusersUNetAdapter`, which shows it
difflab's continuous time; the process (ᾱ table, what the network predicts, the reverse
variance) is rebuilt from the scheduler config. The result is a
:class:`difflab.models.DiffusionModel`, so every difflab sampler and wrapper applies to it.

Correspondences (diffusers -> difflab):

* integer timestep ``k`` (``alphas_cumprod[k]``)  ->  time ``t = (k + 1) / T``;
* ``prediction_type`` epsilon / sample / v_prediction  ->  ``prediction`` 'eps' / 'x0' / 'v';
* ``variance_type`` fixed_small(_log) / fixed_large(_log) / learned / learned_range  ->  ``var_type``
  'fixed_small' / 'fixed_large' / 'learned' / 'learned_range' (for 'learned' the variance half of
  the output is diffusers' raw variance; the adapter hands difflab its log);
* ``clip_sample`` (with range 1)  ->  the sampler option ``clip_denoised``, recorded in
  ``model.import_info["sample_options"]``;
* ``scheduler.timesteps``  ->  a difflab time grid with :func:`difflab.interop.common.timesteps_to_grid`.

diffusers is an optional dependency, imported only when a U-Net is loaded.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from difflab.errors import CheckpointError, ConfigError, DifflabError
from difflab.interop.common import TimestepAdapter
from difflab.models import DiffusionModel
from difflab.process.gaussian import GaussianDiffusion
from difflab.process.schedules import F64, cosine_betas

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
PREDICTIONS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
VARIANCES = {"fixed_small": "fixed_small", "fixed_small_log": "fixed_small", "fixed_large": "fixed_large",
             "fixed_large_log": "fixed_large", "learned": "learned", "learned_range": "learned_range"}
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                "diffusion_pytorch_model.safetensors.index.json", "diffusion_pytorch_model.bin.index.json")
# diffusers' own defaults (DDPMScheduler), used for keys a saved config leaves out
SCHEDULER_DEFAULTS = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                          trained_betas=None, prediction_type="epsilon", variance_type="fixed_small",
                          clip_sample=True, clip_sample_range=1.0, thresholding=False, rescale_betas_zero_snr=False)


def require_diffusers():
    """The diffusers module, or a one-line DifflabError saying how to install it."""
    try:
        import diffusers
    except ImportError:
        raise DifflabError("importing a diffusers model needs the diffusers package: pip install diffusers") from None
    return diffusers


# ----------------------------------------------------------------------------- the process
def diffusers_alphas_cumprod(config: dict) -> torch.Tensor:
    """(T,) float64 ᾱ of a diffusers scheduler config.

    Computed the way diffusers computes it (float32 betas, float32 cumulative product), since those
    are the tables the network was trained with, then widened to float64. Supports ``trained_betas``
    and the beta schedules 'linear', 'scaled_linear', 'squaredcos_cap_v2' and 'sigmoid'.
    """
    cfg = {**SCHEDULER_DEFAULTS, **config}
    if cfg.get("rescale_betas_zero_snr"):
        raise ConfigError("scheduler rescale_betas_zero_snr = true gives ᾱ_T = 0 (zero terminal SNR), "
                          "which difflab's ε-parameterised process cannot represent")
    T, start, end = int(cfg["num_train_timesteps"]), float(cfg["beta_start"]), float(cfg["beta_end"])
    name = cfg["beta_schedule"]
    if cfg["trained_betas"] is not None:
        betas = torch.tensor(cfg["trained_betas"], dtype=torch.float32).reshape(-1)
    elif name == "linear":
        betas = torch.linspace(start, end, T, dtype=torch.float32)
    elif name == "scaled_linear":  # linear in sqrt(β) (latent diffusion)
        betas = torch.linspace(start**0.5, end**0.5, T, dtype=torch.float32) ** 2
    elif name == "squaredcos_cap_v2":  # Improved DDPM's cosine ᾱ, β capped at 0.999, in float64 then float32
        betas = cosine_betas(T, s=0.008, max_beta=0.999).to(torch.float32)
    elif name == "sigmoid":  # GeoDiff: β = sigmoid(linspace(-6, 6)) rescaled to [beta_start, beta_end]
        betas = torch.sigmoid(torch.linspace(-6, 6, T)) * (end - start) + start
    else:
        raise ConfigError(f"scheduler beta_schedule = {name!r} is not supported; expected one of "
                          f"{', '.join(BETA_SCHEDULES)} or trained_betas")
    if betas.numel() < 1 or not bool(((betas > 0) & (betas < 1)).all()):
        raise ConfigError(f"scheduler config gives betas outside (0, 1) (beta_schedule {name!r}, "
                          f"beta_start {start}, beta_end {end})")
    return torch.cumprod(1.0 - betas, dim=0).to(F64)


def diffusers_process(config: dict, variance_type: str | None = None) -> tuple[GaussianDiffusion, str, str]:
    """(process, prediction, var_type) of a diffusers scheduler config.

    ``variance_type`` overrides the config's (schedulers other than DDPM's do not record one)."""
    cfg = {**SCHEDULER_DEFAULTS, **config}
    if not any(k in config for k in ("beta_schedule", "trained_betas", "beta_start")):
        name = config.get("_class_name", "this scheduler")
        raise ConfigError(f"{name} has no beta schedule (beta_schedule / trained_betas): only DDPM-family "
                          "schedulers (DDPMScheduler, DDIMScheduler, PNDMScheduler, ...) can be imported")
    pred = cfg["prediction_type"]
    if pred not in PREDICTIONS:
        raise ConfigError(f"scheduler prediction_type = {pred!r}; expected one of {', '.join(PREDICTIONS)}")
    vt = variance_type or cfg["variance_type"] or "fixed_small"
    if vt not in VARIANCES:
        raise ConfigError(f"scheduler variance_type = {vt!r}; expected one of {', '.join(VARIANCES)}")
    diffusion = GaussianDiffusion.from_alphas_cumprod(diffusers_alphas_cumprod(config), var_type=VARIANCES[vt])
    return diffusion, PREDICTIONS[pred], VARIANCES[vt]


# ----------------------------------------------------------------------------- the network
class DiffusersUNetAdapter(TimestepAdapter):
    """A diffusers ``UNet2DModel`` called with difflab's (x, t, y).

    forward(x (B, C, H, W), t (B,), y (B,) or None) -> ``unet(x, k, class_labels=y).sample`` with
    k = t·T - 1 (B,) (integers at the trained times, fractional in between). With
    ``log_variance`` (diffusers' 'learned' variance type) the second half of the channels, a
    variance, is returned as its log, which is what difflab's 'learned' reads.
    """

    def __init__(self, unet, num_timesteps: int, log_variance: bool = False):
        super().__init__(unet, num_timesteps)
        self.log_variance = log_variance
        self.class_conditional = getattr(unet, "class_embedding", None) is not None

    def call(self, x, timesteps, y):
        if y is None and self.class_conditional:
            raise ValueError("this diffusers UNet is class-conditional: pass y, a (B,) tensor of labels")
        if y is not None and not self.class_conditional:
            raise ValueError("got class labels y but this diffusers UNet has no class embedding")
        # diffusers' sinusoid casts timesteps to float32 itself; integer k is exact there
        out = self.net(x, timesteps.to(torch.float32), class_labels=y).sample
        if self.log_variance:
            mean, var = out.chunk(2, dim=1)
            out = torch.cat([mean, torch.log(var.clamp_min(1e-20))], dim=1)
        return out


def from_diffusers(unet, scheduler_config: dict, *, variance_type: str | None = None,
                   source: str = "diffusers") -> DiffusionModel:
    """A difflab model from an in-memory diffusers ``UNet2DModel`` and its scheduler's config
    (``scheduler.config`` or the dict of ``scheduler_config.json``).

    Returns a :class:`DiffusionModel` (eval mode) with ``model.diffusion`` (the T-step
    :class:`GaussianDiffusion`), ``model.data_shape`` (C, H, W) and ``model.import_info``
    (``sample_options`` to pass to a sampler, e.g. ``{"clip_denoised": True}``, and notes on what
    is not reproduced).
    """
    config = dict(scheduler_config)
    diffusion, prediction, var_type = diffusers_process(config, variance_type)
    c_in, c_out = int(unet.config.in_channels), int(unet.config.out_channels)
    learned = var_type in ("learned", "learned_range")
    if c_out != (2 * c_in if learned else c_in):
        want = "2 x in_channels (mean and variance)" if learned else "in_channels"
        raise ConfigError(f"{source}: the UNet has {c_in} input and {c_out} output channels but variance_type "
                          f"{var_type!r} needs out_channels = {want}; pass variance_type= to override")
    cfg = {**SCHEDULER_DEFAULTS, **config}
    notes, sample_options = [], {}
    if cfg["thresholding"]:
        notes.append("the scheduler's dynamic thresholding is not reproduced by difflab's samplers")
    elif cfg["clip_sample"]:
        if float(cfg["clip_sample_range"]) == 1.0:
            sample_options["clip_denoised"] = True
        else:
            notes.append(f"clip_sample_range {cfg['clip_sample_range']} is not reproduced (difflab clips to [-1, 1])")
    if config.get("variance_type") == "fixed_large_log":
        notes.append("variance_type fixed_large_log read as fixed_large "
                     "(diffusers' step takes the square root of log β)")
    adapter = DiffusersUNetAdapter(unet, diffusion.num_timesteps, log_variance=var_type == "learned")
    model = DiffusionModel(adapter, diffusion.schedule, prediction=prediction, var_type=var_type)
    size = unet.config.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    model.diffusion = diffusion
    model.data_shape = (c_in, int(h), int(w))
    model.import_info = {"format": "diffusers", "source": source, "scheduler": config,
                         "sample_options": sample_options, "notes": notes}
    return model.eval()


# ----------------------------------------------------------------------------- files
def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path.parent} is not {what}: missing {path.name}")
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read it as JSON ({e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def _scheduler_config(scheduler) -> tuple[dict, str]:
    """(config dict, where it came from) from a dict, a scheduler object, a JSON file or a folder."""
    if isinstance(scheduler, dict):
        return dict(scheduler), "the given scheduler config"
    if hasattr(scheduler, "config") and not isinstance(scheduler, (str, os.PathLike)):
        return dict(scheduler.config), type(scheduler).__name__
    p = Path(scheduler)
    if p.is_dir():
        p = p / "scheduler_config.json"
    return _read_json(p, "a diffusers scheduler folder"), str(p)


def _resolve_folder(path: Path, scheduler) -> tuple[Path, dict, str]:
    """(UNet folder, scheduler config, where it came from) of a pipeline or a bare UNet folder."""
    if path.is_file() and path.name in ("model_index.json", "config.json"):
        path = path.parent
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such folder (expected a diffusers pipeline saved with save_pretrained)")
    if (path / "model_index.json").is_file():
        index = _read_json(path / "model_index.json", "a diffusers pipeline")
        if "unet" not in index:
            parts = ", ".join(k for k in index if not k.startswith("_"))
            raise CheckpointError(f"{path / 'model_index.json'} lists no 'unet' component (it has: {parts}); "
                                  "only pixel-space UNet2DModel pipelines (DDPMPipeline, DDIMPipeline) can be imported")
        unet_dir = path / "unet"
        if scheduler is None:
            if "scheduler" not in index:
                raise CheckpointError(f"{path / 'model_index.json'} lists no 'scheduler' component: pass scheduler=")
            scheduler = path / "scheduler"
    elif (path / "config.json").is_file():
        unet_dir = path
        if scheduler is None:
            if not (path / "scheduler_config.json").is_file():
                raise CheckpointError(f"{path} is a bare UNet folder without scheduler_config.json: "
                                      "pass scheduler= (a scheduler_config.json, its folder, or a dict)")
            scheduler = path / "scheduler_config.json"
    else:
        raise CheckpointError(f"{path} is not a diffusers pipeline or UNet folder: missing model_index.json "
                              "(a pipeline) and config.json (a bare UNet2DModel)")
    config, where = _scheduler_config(scheduler)
    return unet_dir, config, where


def load_diffusers(path, *, scheduler=None, variance_type: str | None = None, device="cpu") -> DiffusionModel:
    """Load a diffusers pixel-space DDPM model as a difflab model.

    Args:
        path: a pipeline folder saved with ``save_pretrained`` (``model_index.json``, ``unet/``,
            ``scheduler/scheduler_config.json``, as ``google/ddpm-cifar10-32``), or a bare
            ``UNet2DModel`` folder (``config.json`` + weights) with a ``scheduler_config.json``
            beside it or given as ``scheduler``.
        scheduler: the scheduler config instead of the folder's: a dict, a scheduler object, a
            ``scheduler_config.json`` or its folder.
        variance_type: override the scheduler's variance type (e.g. for a DDIM config, which
            records none).
        device: where the network runs. It stays float32: for reduced precision use
            ``torch.autocast``, since a half-precision time cannot name the integer step.

    Returns: a :class:`DiffusionModel` in eval mode (see :func:`from_diffusers` for its extra
    attributes). Raises CheckpointError naming the missing file for a folder that is not such a
    model, ConfigError for a scheduler difflab cannot represent.
    """
    unet_dir, config, where = _resolve_folder(Path(path), scheduler)
    unet_cfg = _read_json(unet_dir / "config.json", "a diffusers UNet folder")
    kind = unet_cfg.get("_class_name", "?")
    if kind != "UNet2DModel":
        raise CheckpointError(f"{unet_dir / 'config.json'} describes a {kind}, not a UNet2DModel: only pixel-space "
                              "(unconditional or class-conditional) diffusers U-Nets can be imported")
    variant = None
    if not any((unet_dir / name).is_file() for name in WEIGHT_FILES):
        variants = sorted(p.name.split(".")[1] for p in unet_dir.glob("diffusion_pytorch_model.*.safetensors"))
        if not variants:
            raise CheckpointError(f"{unet_dir} has no weights: missing {WEIGHT_FILES[0]} (or {WEIGHT_FILES[1]})")
        variant = variants[0]
    diffusers = require_diffusers()
    try:
        unet = diffusers.UNet2DModel.from_pretrained(str(unet_dir), variant=variant)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{unet_dir}: diffusers could not load the UNet ({first})") from None
    model = from_diffusers(unet, config, variance_type=variance_type, source=str(path))
    model.import_info["scheduler_source"] = where
    return model.to(device)


__all__ = ["BETA_SCHEDULES", "DiffusersUNetAdapter", "diffusers_alphas_cumprod", "diffusers_process",
           "from_diffusers", "load_diffusers", "require_diffusers"]
