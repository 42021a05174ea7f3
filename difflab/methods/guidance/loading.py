"""Loading trained discriminators and noisy classifiers, and stacking them on a model.

All go through :func:`difflab.loading.open_checkpoint` (any checkpoint reference, zoo names too) and
:func:`difflab.train.checkpoint.load_weights`, the step every method loader shares.
"""
from __future__ import annotations

import os

from difflab.errors import CheckpointError
from difflab.methods.guidance.network import Discriminator, NoisyClassifier
from difflab.methods.guidance.wrapper import ClassifierGuidance, DiscriminatorGuidance
from difflab.loading import open_checkpoint
from difflab.train.checkpoint import checkpoints_by_step, load_weights  # noqa: F401 (re-exported)


def _load(path, kind: str, key: str, cls, use_ema: bool, map_location):
    ckpt = open_checkpoint(path, expect_kind=kind)
    spec = (ckpt.config or {}).get(key)
    if not spec:
        raise CheckpointError(f"checkpoint {ckpt.path} records no [{key}] network description; "
                              f"expected one written by difflab's {kind} training")
    return load_weights(cls.from_spec(spec), ckpt, use_ema=use_ema, map_location=map_location)


def load_discriminator(path: str | os.PathLike, *, use_ema: bool = True, map_location="cpu") -> Discriminator:
    """A trained discriminator (run dir, checkpoint dir) in eval mode; EMA weights by default."""
    return _load(path, "discriminator", "discriminator", Discriminator, use_ema, map_location)


def load_classifier(path: str | os.PathLike, *, use_ema: bool = True, map_location="cpu") -> NoisyClassifier:
    """A trained noisy classifier (run dir, checkpoint dir) in eval mode; EMA weights by default."""
    return _load(path, "classifier", "classifier", NoisyClassifier, use_ema, map_location)


def guided_model(model, *, disc=None, weight=1.0, t_window=(0.0, 1.0), max_norm=None, cg=None, cg_weight=1.0,
                 label=None, device="cpu"):
    """The model with discriminator guidance and/or classifier guidance stacked on it (CG outermost,
    as in the paper's joint sampler), from run or checkpoint paths."""
    if disc is not None:
        model = DiscriminatorGuidance(model, load_discriminator(disc, map_location=device), weight=weight,
                                      t_window=tuple(t_window), max_norm=max_norm)
    if cg is not None:
        model = ClassifierGuidance(model, load_classifier(cg, map_location=device), weight=cg_weight,
                                   t_window=tuple(t_window), max_norm=max_norm, target=label)
    return model


__all__ = ["checkpoints_by_step", "guided_model", "load_classifier", "load_discriminator", "load_weights"]
