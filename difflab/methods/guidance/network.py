"""The networks of discriminator and classifier guidance: d(x_t, t[, y]) and p(y | x_t, t).

Both are small time-conditional encoders (:func:`make_encoder`): an :class:`MLPEncoder` for
vectors, an :class:`Encoder` for images. A discriminator may instead be a small head on the
frozen features of a trained noisy classifier (the paper's pixel-space setup, with ADM's
classifier as the extractor). :meth:`spec` / :meth:`from_spec` describe a network in a checkpoint.
"""
from __future__ import annotations


import torch
from torch import nn

from difflab.config import toml_safe
from difflab.errors import CheckpointError, DataError, DifflabError
from difflab.nets import Encoder, MLPEncoder


HEAD_INPUTS = ("pooled", "map")


def make_encoder(data_shape, out_dim: int, *, num_classes: int | None = None, **options) -> nn.Module:
    """A time-conditional encoder with ``out_dim`` outputs for samples of per-sample shape
    ``data_shape``: :class:`MLPEncoder` for vectors (D,), :class:`Encoder` for images (C, H, H).
    ``options`` override the defaults (small nets: a discriminator saturates in a few epochs)."""
    shape = tuple(int(s) for s in data_shape)
    if len(shape) == 1:
        kw = dict(dim=shape[0], hidden=128, depth=3, out_dim=out_dim, time_conditional=True, num_classes=num_classes)
        return MLPEncoder(**{**kw, **options})
    if len(shape) == 3 and shape[1] == shape[2]:
        c, h, _ = shape
        kw = dict(in_channels=c, image_size=h, base_channels=32, channel_mult=(1, 2, 2) if h >= 16 else (1, 2),
                  num_res_blocks=1, attention_resolutions=(), out_dim=out_dim, time_conditional=True,
                  num_classes=num_classes)
        return Encoder(**{**kw, **options})
    raise DataError(f"no encoder for samples of shape {shape}; expected vectors (D,) or square images (C, H, H)")


def net_spec(net: nn.Module) -> dict:
    """{'kind': 'mlp' | 'encoder', 'net': constructor arguments} of an MLPEncoder or Encoder."""
    if isinstance(net, MLPEncoder):
        return {"kind": "mlp", "net": toml_safe(net.config)}
    if isinstance(net, Encoder):
        return {"kind": "encoder", "net": toml_safe(net.config)}
    raise DifflabError(f"cannot describe a {type(net).__name__} for a checkpoint; expected an MLPEncoder or Encoder")


def net_from_spec(spec: dict) -> nn.Module:
    kinds = {"mlp": MLPEncoder, "encoder": Encoder}
    if spec.get("kind") not in kinds:
        raise CheckpointError(f"unknown network kind {spec.get('kind')!r} in checkpoint; expected 'mlp' or 'encoder'")
    return kinds[spec["kind"]](**spec["net"])


class Discriminator(nn.Module):
    """d(x_t, t[, y]) as its logit: ``forward(x, t, y=None) -> (B,)`` = log d/(1 - d).

    Args:
        net: a time-conditional network with one output (``MLPEncoder`` / ``Encoder``, out_dim 1);
            with ``num_classes`` set it is the class-conditional d(x_t, t, y).
        extractor: optional frozen feature network with ``.features(x, t) -> (B, F)`` (e.g. the
            Encoder of a noisy classifier trained by difflab). Then ``net`` is a small head on
            (features, t), the only part that trains (the paper's pixel-space setup, with ADM's
            classifier as the extractor). Gradients still flow through it to x.
        head_input: what of the extractor the head reads: 'pooled' (``features``, (B, F), an MLP
            head) or 'map' (``feature_map``, (B, F, h, w) before pooling, a small convolutional
            head: the paper's head, which keeps where in the image a feature fired).

    Build one with :meth:`build`; :meth:`spec` / :meth:`from_spec` describe it in a checkpoint.
    """

    def __init__(self, net: nn.Module, extractor: nn.Module | None = None, head_input: str = "pooled"):
        super().__init__()
        if isinstance(extractor, NoisyClassifier):
            extractor = extractor.net  # its encoder: the head needs only the features
        if head_input not in HEAD_INPUTS:
            raise DifflabError(f"head input {head_input!r}; expected one of {', '.join(HEAD_INPUTS)}")
        self.net = net
        self.extractor = extractor
        self.head_input = head_input
        if extractor is not None:
            extractor.requires_grad_(False).eval()

    @classmethod
    def build(cls, data_shape, *, num_classes: int | None = None, extractor: nn.Module | None = None,
              head_input: str = "pooled", **options) -> "Discriminator":
        """The default discriminator for ``data_shape``; with an extractor, a small head on its features:
        an MLP (128 x 2) on the pooled ones, or on the feature map a convolutional head (one level of
        two residual blocks, 64 channels, at the map's resolution)."""
        if extractor is None:
            return cls(make_encoder(data_shape, 1, num_classes=num_classes, **options))
        enc = extractor.net if isinstance(extractor, NoisyClassifier) else extractor
        if head_input == "map":
            with torch.no_grad():
                p = next(enc.parameters())
                fmap = enc.feature_map(torch.zeros(1, *data_shape, dtype=p.dtype, device=p.device),
                                       torch.full((1,), 0.5, dtype=p.dtype, device=p.device)).shape[1:]
            head = {**dict(base_channels=64, channel_mult=(1,), num_res_blocks=2), **options}
            return cls(make_encoder(tuple(fmap), 1, num_classes=num_classes, **head), enc, "map")
        head = {**dict(hidden=128, depth=2), **options}
        return cls(make_encoder((enc.feature_dim,), 1, num_classes=num_classes, **head), enc, head_input)

    @property
    def num_classes(self) -> int | None:
        return self.net.num_classes

    def train(self, mode: bool = True):
        super().train(mode)
        if self.extractor is not None:  # frozen: its dropout stays off while the head trains
            self.extractor.eval()
        return self

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, ...), t (B,) float, y (B,) int64 or None -> logits (B,)."""
        if self.extractor is None:
            h = x
        elif self.head_input == "map":
            h = self.extractor.feature_map(x, t)
        else:
            h = self.extractor.features(x, t)
        return self.net(h, t, y).squeeze(-1)

    def spec(self) -> dict:
        s = net_spec(self.net)
        if self.extractor is not None:
            s["extractor"] = net_spec(self.extractor)
            s["head_input"] = self.head_input
        return s

    @classmethod
    def from_spec(cls, spec: dict) -> "Discriminator":
        ext = net_from_spec(spec["extractor"]) if "extractor" in spec else None
        return cls(net_from_spec(spec), ext, spec.get("head_input", "pooled"))


class NoisyClassifier(nn.Module):
    """p(y | x_t, t): ``forward(x, t) -> (B, K)`` logits of a time-conditional encoder with K
    outputs. ``features(x, t)`` exposes the encoder's pooled features, so a trained noisy
    classifier can serve as a discriminator's frozen extractor."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    @classmethod
    def build(cls, data_shape, num_classes: int, **options) -> "NoisyClassifier":
        return cls(make_encoder(data_shape, num_classes, **options))

    @property
    def num_classes(self) -> int:
        return self.net.out_dim

    @property
    def feature_dim(self) -> int:
        return self.net.feature_dim

    def features(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net.features(x, t)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, ...), t (B,) -> (B, K) logits (y is ignored: the classifier predicts it)."""
        return self.net(x, t)

    def spec(self) -> dict:
        return net_spec(self.net)

    @classmethod
    def from_spec(cls, spec: dict) -> "NoisyClassifier":
        return cls(net_from_spec(spec))


__all__ = ["HEAD_INPUTS", "Discriminator", "NoisyClassifier", "make_encoder", "net_from_spec", "net_spec"]
