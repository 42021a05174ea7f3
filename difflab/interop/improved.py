"""Import an openai/improved-diffusion checkpoint (a plain ``UNetModel`` state dict) and its flags.

Their U-Net is architecturally difflab's :class:`difflab.nets.UNet` (the same DDPM/ADM layout:
cos-then-sin time sinusoid, Linear-SiLU-Linear time MLP, GroupNorm(32) in float32, pre-activation
ResBlocks with additive or scale-shift injection and a 1x1 skip, multi-head self-attention, stride-2
conv down / nearest+conv up, skip concatenation in the same order), so the weights are renamed onto
difflab's module instead of running foreign code. Two layouts differ and are converted:

* attention: their ``qkv`` (a Conv1d, 3C outputs) is ordered (head, q/k/v, channel) — the "legacy"
  order, heads split before q, k, v — where difflab's is (q/k/v, head, channel); the rows are
  permuted, and the 1-D convs become 1x1 2-D convs;
* class labels: their ``label_emb`` has ``num_classes`` rows, difflab's one more (a null label); the
  extra row is zero, so ``y=None`` adds no label embedding (their model always had a label).

The step index their network sees (``k``, or ``k * 1000 / T`` with ``rescale_timesteps``) is made
from difflab's time ``t = (k + 1) / T`` by :class:`ImprovedDiffusionAdapter`; the network is built
with ``time_scale = 1`` so it embeds exactly that number.

Flags are their ``model_and_diffusion_defaults()`` options, as a dict or as their command line
(``"--image_size 32 --num_channels 128 ..."``). ``channel_mult`` ("1,2,2,2"; guided-diffusion's
flag) may be given for image sizes their script does not know.
"""
from __future__ import annotations

import difflib
import os
import shlex
from collections.abc import Mapping
from pathlib import Path

import torch

from difflab.errors import CheckpointError, ConfigError
from difflab.interop.common import TimestepAdapter, respacing_grid
from difflab.models import DiffusionModel
from difflab.nets.layers import AttentionBlock
from difflab.nets.unet import UNet
from difflab.process.gaussian import GaussianDiffusion
from difflab.process.schedules import make_betas

# their model_and_diffusion_defaults()
FLAG_DEFAULTS = dict(
    image_size=64, num_channels=128, num_res_blocks=2, num_heads=4, num_heads_upsample=-1,
    attention_resolutions="16,8", dropout=0.0, learn_sigma=False, sigma_small=False, class_cond=False,
    diffusion_steps=1000, noise_schedule="linear", timestep_respacing="", use_kl=False, predict_xstart=False,
    rescale_timesteps=True, rescale_learned_sigmas=True, use_checkpoint=False, use_scale_shift_norm=True,
)
# accepted beyond their defaults: guided-diffusion's channel_mult, and their sampling script's options
EXTRA_FLAGS = dict(channel_mult="", use_ddim=False, clip_denoised=True)
# options of their training / sampling scripts that say nothing about the model: accepted, ignored
IGNORED_FLAGS = ("lr", "weight_decay", "lr_anneal_steps", "batch_size", "microbatch", "ema_rate", "log_interval",
                 "save_interval", "resume_checkpoint", "use_fp16", "fp16_scale_growth", "schedule_sampler",
                 "data_dir", "num_samples", "model_path")
NUM_CLASSES = 1000  # their class-conditional models are ImageNet's
DEFAULT_CHANNEL_MULT = {256: (1, 1, 2, 2, 4, 4), 64: (1, 2, 3, 4), 32: (1, 2, 2, 2)}


# ----------------------------------------------------------------------------- flags
def _to_bool(key, v) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("yes", "true", "t", "y", "1"):
        return True
    if s in ("no", "false", "f", "n", "0"):
        return False
    raise ConfigError(f"flag --{key} = {v!r}: expected a boolean (True/False)")


def _convert(key, v, default):
    if isinstance(default, bool):
        return _to_bool(key, v)
    try:
        if isinstance(default, int):
            f = float(v)
            if f != int(f):
                raise ValueError
            return int(f)
        if isinstance(default, float):
            return float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"flag --{key} = {v!r}: expected a {type(default).__name__}") from None
    if isinstance(v, (list, tuple)):  # e.g. attention_resolutions=(16, 8)
        return ",".join(str(int(u)) for u in v)
    return "" if v is None else str(v)


def _split_command_line(text: str) -> dict:
    tokens, out, i = shlex.split(text), {}, 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--"):
            raise ConfigError(f"flags: expected --name value pairs, got {tok!r}")
        if "=" in tok:
            key, value = tok[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(tokens) or tokens[i + 1].startswith("--"):
                raise ConfigError(f"flags: --{tok[2:]} has no value")
            key, value = tok[2:], tokens[i + 1]
            i += 2
        out[key] = value
    return out


def parse_flags(flags: Mapping | str | None) -> dict:
    """Their options, defaults filled in and typed: a dict, or their command-line string.

    Unknown names raise a one-line ConfigError (with the nearest known name); training-script
    options (lr, batch_size, ...) are accepted and ignored."""
    raw = _split_command_line(flags) if isinstance(flags, str) else dict(flags or {})
    known = {**FLAG_DEFAULTS, **EXTRA_FLAGS}
    out = dict(known)
    for key, value in raw.items():
        key = key.replace("-", "_")
        if key in IGNORED_FLAGS:
            continue
        if key not in known:
            near = difflib.get_close_matches(key, list(known), n=1)
            hint = f"; did you mean --{near[0]}?" if near else ""
            raise ConfigError(f"unknown improved-diffusion flag --{key}{hint}")
        out[key] = _convert(key, value, known[key])
    return out


def _int_list(key, text) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in str(text).split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"flag --{key} = {text!r}: expected comma-separated integers like '16,8'") from None


# ----------------------------------------------------------------------------- the network
def improved_diffusion_unet(flags: Mapping | str) -> UNet:
    """difflab's :class:`UNet` shaped like their ``create_model(**flags)`` (random weights),
    with ``time_scale = 1`` (it embeds the step index it is given)."""
    f = parse_flags(flags)
    size = f["image_size"]
    mult = _int_list("channel_mult", f["channel_mult"]) or DEFAULT_CHANNEL_MULT.get(size)
    if not mult:
        raise ConfigError(f"flag --image_size {size}: improved-diffusion knows 32, 64 and 256; "
                          "pass --channel_mult (e.g. '1,2,2') for other sizes")
    # theirs: attention at downsample rate ds = image_size // r for each listed resolution r
    rates = {size // r for r in _int_list("attention_resolutions", f["attention_resolutions"]) if r > 0}
    attention = tuple(size // 2**level for level in range(len(mult)) if 2**level in rates)
    heads_up = f["num_heads"] if f["num_heads_upsample"] == -1 else f["num_heads_upsample"]
    for name, value in (("num_channels", f["num_channels"]), ("num_res_blocks", f["num_res_blocks"]),
                        ("num_heads", f["num_heads"]), ("num_heads_upsample", heads_up)):
        if value < 1:
            raise ConfigError(f"flag --{name} = {value}: expected a positive integer")
    try:
        net = UNet(in_channels=3, out_channels=6 if f["learn_sigma"] else 3, base_channels=f["num_channels"],
                   channel_mult=mult, num_res_blocks=f["num_res_blocks"], attention_resolutions=attention,
                   dropout=f["dropout"], num_heads=f["num_heads"],
                   num_classes=NUM_CLASSES if f["class_cond"] else None, image_size=size,
                   use_scale_shift_norm=f["use_scale_shift_norm"], time_scale=1.0)
    except ValueError as e:
        raise ConfigError(f"improved-diffusion flags: {e}") from None
    for blocks in net.up_levels:  # their num_heads_upsample: the up path's attention may split differently
        for block in blocks:
            for layer in block:
                if isinstance(layer, AttentionBlock):
                    if layer.qkv.in_channels % heads_up:
                        raise ConfigError(f"flag --num_heads_upsample {heads_up} does not divide the "
                                          f"{layer.qkv.in_channels} attention channels")
                    layer.num_heads = heads_up
    return net


_RES = {"in_layers.0": "in_norm", "in_layers.2": "in_conv", "emb_layers.1": "emb_proj.1", "out_layers.0": "out_norm",
        "out_layers.3": "out_conv", "skip_connection": "skip"}
_ATTN = {"norm": "norm", "qkv": "qkv", "proj_out": "proj"}


def _module_map(net: UNet) -> list[tuple[str, str, dict | None]]:
    """(their module prefix, difflab module prefix, sub-module renames or None) in their
    state-dict order, following their ``UNetModel`` construction."""
    num_levels = len(net.down.levels)
    out = [("time_embed.0", "cond.time_mlp.0", None), ("time_embed.2", "cond.time_mlp.2", None)]
    if net.cond.class_embed is not None:
        out.append(("label_emb", "cond.class_embed", None))
    out.append(("input_blocks.0.0", "down.input_conv", None))
    n = 1
    for level, blocks in enumerate(net.down.levels):
        for j, block in enumerate(blocks):
            out.append((f"input_blocks.{n}.0", f"down.levels.{level}.{j}.0", _RES))
            if len(block) > 1:
                out.append((f"input_blocks.{n}.1", f"down.levels.{level}.{j}.1", _ATTN))
            n += 1
        if level < num_levels - 1:
            out.append((f"input_blocks.{n}.0.op", f"down.downsamples.{level}.0.op", None))
            n += 1
    out += [("middle_block.0", "middle.0", _RES), ("middle_block.1", "middle.1", _ATTN),
            ("middle_block.2", "middle.2", _RES)]
    n = 0
    for level in reversed(range(num_levels)):
        blocks = net.up_levels[level]
        for i, block in enumerate(blocks):
            out.append((f"output_blocks.{n}.0", f"up_levels.{level}.{i}.0", _RES))
            m = 1
            if len(block) > 1:
                out.append((f"output_blocks.{n}.1", f"up_levels.{level}.{i}.1", _ATTN))
                m = 2
            if level > 0 and i == len(blocks) - 1:  # their upsample rides in the level's last block
                out.append((f"output_blocks.{n}.{m}.conv", f"upsamples.{level - 1}.0.conv", None))
            n += 1
    out += [("out.0", "out.0", None), ("out.2", "out.2", None)]
    return out


def improved_diffusion_key_map(net: UNet) -> dict[str, str]:
    """Their state-dict key -> difflab state-dict key, in their order, for a network built by
    :func:`improved_diffusion_unet`."""
    ours = net.state_dict()
    keys = {}
    for theirs_prefix, ours_prefix, renames in _module_map(net):
        for k in ours:
            if not k.startswith(ours_prefix + "."):
                continue
            suffix = k[len(ours_prefix) + 1:]
            if renames is not None:
                sub, _, param = suffix.rpartition(".")
                back = {v: u for u, v in renames.items()}
                if sub not in back:
                    continue
                suffix = f"{back[sub]}.{param}"
            keys[f"{theirs_prefix}.{suffix}"] = k
    missing = set(ours) - set(keys.values())
    assert not missing, f"unmapped difflab parameters: {sorted(missing)[:3]}"
    return keys


def _theirs_shape(key: str, ours: torch.Tensor) -> tuple[int, ...]:
    """The shape their module has for a parameter difflab holds as ``ours``."""
    if key.endswith(("qkv.weight", "proj_out.weight")):
        return tuple(ours.shape[:2]) + (1,)  # Conv1d
    if key == "label_emb.weight":
        return (ours.shape[0] - 1, ours.shape[1])  # no null row
    return tuple(ours.shape)


def _convert_tensor(key: str, value: torch.Tensor, target: torch.Tensor, heads: int | None) -> torch.Tensor:
    """Their tensor -> difflab's layout (target gives the shape and dtype)."""
    if key == "label_emb.weight":
        value = torch.cat([value, torch.zeros_like(value[:1])])  # the null label embeds to zero
    elif ".qkv." in key:
        # rows (head, q/k/v, d) -> (q/k/v, head, d)
        rows = value.shape[0]
        d = rows // (3 * heads)
        value = value.reshape(heads, 3, d, *value.shape[1:]).transpose(0, 1).reshape(rows, *value.shape[1:])
    return value.reshape(target.shape).to(target.dtype)


def _file_hints(state: Mapping, f: dict) -> str:
    """What the state dict itself says about the commonest flags, where it disagrees with them."""
    hints = []
    w = state.get("input_blocks.0.0.weight")
    if w is not None and w.shape[0] != f["num_channels"]:
        hints.append(f"num_channels={w.shape[0]}")
    w = state.get("out.2.weight")
    if w is not None and (w.shape[0] == 6) != f["learn_sigma"]:
        hints.append(f"learn_sigma={w.shape[0] == 6}")
    if ("label_emb.weight" in state) != f["class_cond"]:
        hints.append(f"class_cond={'label_emb.weight' in state}")
    e, o = state.get("input_blocks.1.0.emb_layers.1.weight"), state.get("input_blocks.1.0.out_layers.3.weight")
    if e is not None and o is not None and (e.shape[0] == 2 * o.shape[0]) != f["use_scale_shift_norm"]:
        hints.append(f"use_scale_shift_norm={e.shape[0] == 2 * o.shape[0]}")
    return f"; the file suggests {', '.join(hints)}" if hints else ""


def convert_state_dict(state: Mapping, net: UNet, flags: dict, source: str = "checkpoint") -> dict:
    """Their state dict -> difflab's, for ``net`` built from ``flags``. The first key whose presence
    or shape disagrees (in their network order, then any extra key) is a one-line CheckpointError."""
    ours = net.state_dict()
    key_map = improved_diffusion_key_map(net)
    heads = {}
    for name, module in net.named_modules():
        if isinstance(module, AttentionBlock):
            heads[name + ".qkv.weight"] = heads[name + ".qkv.bias"] = module.num_heads

    def fail(detail):
        raise CheckpointError(f"{source} does not match the improved-diffusion flags: {detail}"
                              f"{_file_hints(state, flags)}")

    for theirs_key, ours_key in key_map.items():
        if theirs_key not in state:
            fail(f"{theirs_key} is missing from the file")
        want, got = _theirs_shape(theirs_key, ours[ours_key]), tuple(state[theirs_key].shape)
        if got != want:
            fail(f"{theirs_key} has shape {got} in the file but {want} from the flags")
    extra = [k for k in state if k not in key_map]
    if extra:
        fail(f"{extra[0]} is in the file but not in the network the flags describe")
    return {ours_key: _convert_tensor(theirs_key, state[theirs_key], ours[ours_key], heads.get(ours_key))
            for theirs_key, ours_key in key_map.items()}


class ImprovedDiffusionAdapter(TimestepAdapter):
    """Their network called with difflab's (x, t, y): it sees the step index k = t·T - 1, or
    ``k * (1000 / T)`` with ``rescale_timesteps`` (computed in float32, as their code does).

    forward(x (B, 3, H, W), t (B,), y (B,) or None) -> (B, 3 or 6, H, W)."""

    def __init__(self, net: UNet, num_timesteps: int, rescale_timesteps: bool):
        super().__init__(net, num_timesteps)
        self.rescale_timesteps = bool(rescale_timesteps)

    def call(self, x, timesteps, y):
        k = timesteps.to(torch.float32)
        if self.rescale_timesteps:
            k = k * (1000.0 / self.num_timesteps)
        return self.net(x, k, y)


# ----------------------------------------------------------------------------- the model
def _read_state(pt_path) -> tuple[Mapping, str]:
    if isinstance(pt_path, Mapping):
        state, source = pt_path, "the given state dict"
    else:
        p = Path(pt_path)
        if not p.is_file():
            raise CheckpointError(f"{p}: no such checkpoint file")
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for a corrupt or non-tensor pickle
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"{p}: cannot read it as a torch state dict ({msg})") from None
        source = f"checkpoint {p}"
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{source}: expected a plain state dict (torch.save(model.state_dict()))")
    if state and all(k.startswith("module.") for k in state):  # saved from a DistributedDataParallel wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    return state, source


def load_improved_diffusion(pt_path: str | os.PathLike | Mapping, flags: Mapping | str, *,
                            device="cpu") -> DiffusionModel:
    """Load an improved-diffusion checkpoint as a difflab model.

    Args:
        pt_path: their ``.pt`` file (``torch.save(model.state_dict())``, e.g. ``ema_0.9999_*.pt``)
            or the state dict itself.
        flags: the options the model was trained with: a dict, or their command line
            ``"--image_size 32 --num_channels 128 --learn_sigma True ..."`` (missing ones take
            their defaults, e.g. rescale_timesteps=True, sigma_small=False).
        device: where the network runs. It stays float32: for reduced precision use
            ``torch.autocast``, since a half-precision time cannot name the integer step.

    Returns: a :class:`DiffusionModel` (eval mode) on their T-step process: prediction 'x0' with
    predict_xstart, else 'eps'; var_type 'learned_range' with learn_sigma, else 'fixed_small' with
    sigma_small, else 'fixed_large'. Extra attributes: ``model.diffusion`` (the
    :class:`GaussianDiffusion`), ``model.data_shape`` (3, H, W), ``model.import_info`` with the
    parsed ``flags`` and ``sample_options``: the grid of their ``timestep_respacing`` (``ts``), the
    sampler ('ddim' if use_ddim) and ``clip_denoised``, ready for ``difflab.samplers.sample``.

    Flags that do not match the weights' shapes raise a one-line CheckpointError naming the first
    mismatched key (their code would load nothing wrong-shaped, but wrong schedule flags give
    noise: those cannot be checked from the weights).
    """
    f = parse_flags(flags)
    if f["noise_schedule"] not in ("linear", "cosine"):
        raise ConfigError(f"flag --noise_schedule {f['noise_schedule']!r}: expected 'linear' or 'cosine'")
    state, source = _read_state(pt_path)
    net = improved_diffusion_unet(f)
    net.load_state_dict(convert_state_dict(state, net, f, source))
    T = f["diffusion_steps"]
    var_type = "learned_range" if f["learn_sigma"] else ("fixed_small" if f["sigma_small"] else "fixed_large")
    try:
        diffusion = GaussianDiffusion(make_betas(f["noise_schedule"], T), var_type=var_type)
    except ValueError as e:
        raise ConfigError(f"flags --noise_schedule {f['noise_schedule']} --diffusion_steps {T}: {e}") from None
    adapter = ImprovedDiffusionAdapter(net, T, f["rescale_timesteps"])
    model = DiffusionModel(adapter, diffusion.schedule, prediction="x0" if f["predict_xstart"] else "eps",
                           var_type=var_type)
    options: dict = {"sampler": "ddim" if f["use_ddim"] else "ancestral", "clip_denoised": f["clip_denoised"]}
    if f["timestep_respacing"]:
        try:
            options["ts"] = respacing_grid(T, f["timestep_respacing"])
        except ValueError as e:
            raise ConfigError(f"flag --timestep_respacing {f['timestep_respacing']!r}: {e}") from None
    model.diffusion = diffusion
    model.data_shape = (3, f["image_size"], f["image_size"])
    model.import_info = {"format": "improved-diffusion", "source": source, "flags": f, "sample_options": options}
    return model.eval().to(device)


__all__ = ["FLAG_DEFAULTS", "ImprovedDiffusionAdapter", "convert_state_dict", "improved_diffusion_key_map",
           "improved_diffusion_unet", "load_improved_diffusion", "parse_flags"]
