"""One loader for every model reference a command accepts.

    load_any("runs/mnist")                  a run directory (its newest checkpoint)
    load_any("runs/mnist/checkpoints/step-00005000")
    load_any("model.safetensors")           a standalone weights file written by difflab
    load_any("mnist-ddpm")                  a shipped zoo model, by name
    load_any("diffusers:FOLDER")            a diffusers ``save_pretrained`` pipeline or UNet folder
    load_any("improved-diffusion:MODEL.pt", flags="--image_size 32 ...")

Each gives a :class:`LoadedModel`: the model callable (eval mode, on ``device``), its data shape,
and for difflab checkpoints the config and checkpoint it came from.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from difflab.errors import CheckpointError

EXTERNAL_PREFIXES = ("diffusers:", "improved-diffusion:")


@dataclass
class LoadedModel:
    model: Any
    data_shape: tuple[int, ...]
    cfg: Any = None          # difflab Config (None for an imported model)
    checkpoint: Any = None   # difflab Checkpoint (None for an imported model)
    source: str = ""

    @property
    def image_size(self) -> int | None:
        return self.data_shape[-1] if len(self.data_shape) == 3 else None

    @property
    def num_classes(self) -> int | None:
        """Classes of a class-conditional difflab model (None: unconditional, or imported)."""
        if self.cfg is None or not self.cfg.data.class_cond:
            return None
        return (self.checkpoint.state.get("extra") or {}).get("num_classes")

    def describe(self) -> str:
        """Where the model came from, for records: 'PATH step N', or the imported reference."""
        return f"{self.checkpoint.path} step {self.checkpoint.step}" if self.checkpoint is not None else self.source

    def data_name(self, given: str | None = None, flag: str = "--data") -> str:
        """The data the model was trained on: ``given`` if set, else its config's; an imported model
        records none, so then the caller must say (CheckpointError naming ``flag``)."""
        if given:
            return given
        if self.cfg is None:
            raise CheckpointError(f"{self.source} is an imported model and records no training data; "
                                  f"pass {flag} NAME (e.g. {flag} mnist)")
        return self.cfg.data.name

    @property
    def train_image_size(self) -> int | None:
        """The image_size to load the training data with (None: native), as the model was trained."""
        if self.cfg is not None:
            return self.cfg.data.image_size or None
        return self.image_size

    @property
    def data_dir(self) -> str | None:
        return (self.cfg.data.data_dir or None) if self.cfg is not None else None

    def process(self):
        """The model's process: an imported model's own T-step diffusion, else built from the config."""
        if getattr(self.model, "diffusion", None) is not None:
            return self.model.diffusion
        from difflab.train.build import build_process

        return build_process(self.cfg.diffusion)


def is_external(ref) -> bool:
    return str(ref).startswith(EXTERNAL_PREFIXES)


def load_any(ref, *, flags: str | None = None, use_ema: bool = True, device="cpu",
             overrides: Iterable[str] = ()) -> LoadedModel:
    """The diffusion model ``ref`` names (see the module docstring). ``overrides`` ("key=value") assert
    training settings of a difflab checkpoint: one that contradicts it is refused (CheckpointError)."""
    ref = str(ref)
    if is_external(ref):
        from difflab import interop

        kind, path = ref.split(":", 1)
        if overrides:
            raise CheckpointError(f"--set {list(overrides)[0]!r}: an imported model carries no difflab config to check")
        if kind == "diffusers":
            model = interop.load_diffusers(path, device=device)
        else:
            if not flags:
                raise CheckpointError("improved-diffusion checkpoints need --flags (their model and diffusion flags, "
                                      "e.g. \"--image_size 32 --num_channels 128 --learn_sigma True\")")
            model = interop.load_improved_diffusion(path, flags)
        return LoadedModel(model.to(device).eval(), tuple(model.data_shape), source=ref)
    from difflab.train.build import data_shape_of
    from difflab.train.api import load_model

    model, cfg, ckpt = load_model(ref, use_ema=use_ema, map_location=device)
    check_sampling_flags(cfg, overrides)
    shape = tuple((ckpt.state.get("extra") or {}).get("data_shape") or data_shape_of(cfg))
    return LoadedModel(model, shape, cfg=cfg, checkpoint=ckpt, source=ref)


def open_checkpoint(ref, *, expect_kind: str | None = None, map_location="cpu"):
    """A verified difflab checkpoint from any reference (run dir, checkpoint dir, .safetensors, zoo
    name): the zoo is resolved here, so checkpoint reading itself knows nothing of it."""
    from difflab import zoo
    from difflab.train.checkpoint import load_checkpoint

    return load_checkpoint(zoo.resolve_reference(ref), map_location=map_location, expect_kind=expect_kind)


def reference_of(given, path) -> str:
    """How a trained method records its base model: the zoo name when it was given one (so the record
    holds on any machine, and a shipped method model names its base by name), else the resolved path."""
    from difflab import zoo

    return str(given) if zoo.is_zoo_name(given) else str(Path(path).resolve())


def check_sampling_flags(cfg, overrides) -> None:
    """Refuse sampling flags that contradict how the checkpoint was trained (a mismatched process
    silently gives noise in other toolkits)."""
    from difflab.config import apply_overrides

    overrides = list(overrides)
    if not overrides:
        return
    changed = apply_overrides(cfg, overrides).to_dict()
    saved = cfg.to_dict()
    for section in ("data", "model", "diffusion"):
        for key, value in changed[section].items():
            if value != saved[section][key]:
                raise CheckpointError(
                    f"checkpoint was trained with {section}.{key}={saved[section][key]!r}; refusing to sample with "
                    f"{value!r} (the process must match training; drop the flag)")


__all__ = ["EXTERNAL_PREFIXES", "LoadedModel", "check_sampling_flags", "is_external", "load_any", "open_checkpoint"]
