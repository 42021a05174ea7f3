"""Residual MLP for vector data (2-D toy distributions), conditioned on time and/or class."""
from __future__ import annotations

import torch
from torch import nn

from .layers import ConditionEmbedding

__all__ = ["MLP", "make_activation"]

ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "softplus": nn.Softplus}


def make_activation(activation: str | type[nn.Module]) -> nn.Module:
    """An activation module from a name in ``ACTIVATIONS`` or from an ``nn.Module`` class."""
    if isinstance(activation, str):
        if activation.lower() not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; available: {sorted(ACTIVATIONS)}")
        return ACTIVATIONS[activation.lower()]()
    return activation()


class MLP(nn.Module):
    """Residual MLP: forward(x, t, y=None) -> (B, out_dim).

    h_1 = act(W_in x + P_1 e)
    h_k = h_{k-1} + act(W_k h_{k-1} + P_k e)     k = 2 .. depth
    out = W_out h_depth

    where e = act(ConditionEmbedding(t, y)) is the (B, time_embed_dim) time (+ class) embedding
    and each hidden layer has its own projection P_k, so every layer can use time differently
    (a single input concatenation lets the time signal wash out in deeper nets).
    The output layer keeps PyTorch's default init: unlike the U-Net there are no residual
    branches to protect at init, and a zero last layer would make every earlier weight's
    gradient exactly zero on the first step, slowing the start of training for no gain.

    Args:
        dim: input width D.
        hidden: width of the hidden layers.
        depth: number of hidden layers (>= 1).
        out_dim: output width (default D).
        num_classes: enables class conditioning; label ``num_classes`` is the null class.
        time_scale: the sinusoid sees ``t * time_scale``.
        time_embed_dim: width of the sinusoid and of the embedding MLP.
        activation: a name ("silu", "relu", "gelu", "tanh", "softplus") or an nn.Module class.
        time_conditional: False drops time entirely (t is ignored); used by :class:`MLPEncoder`.

    forward: x (B, D), t (B,) float (a number broadcasts), y (B,) int64 or None -> (B, out_dim).
    """

    def __init__(self, dim: int = 2, hidden: int = 256, depth: int = 3, out_dim: int | None = None,
                 num_classes: int | None = None, time_scale: float = 1000.0, time_embed_dim: int = 128,
                 activation: str | type[nn.Module] = "silu", time_conditional: bool = True):
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1 hidden layer, got {depth}")
        out_dim = out_dim or dim
        self.config = dict(dim=dim, hidden=hidden, depth=depth, out_dim=out_dim, num_classes=num_classes,
                           time_scale=time_scale, time_embed_dim=time_embed_dim, activation=activation,
                           time_conditional=time_conditional)
        self.dim, self.out_dim, self.hidden = dim, out_dim, hidden
        self.feature_dim = hidden
        self.time_conditional = time_conditional
        self.num_classes = num_classes
        self.act = make_activation(activation)
        self.cond = None
        if time_conditional or num_classes is not None:
            self.cond = ConditionEmbedding(time_embed_dim, time_embed_dim if time_conditional else None,
                                           num_classes, time_scale)
        self.in_proj = nn.Linear(dim, hidden)
        self.hidden_layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth - 1))
        self.emb_projs = None
        if self.cond is not None:
            self.emb_projs = nn.ModuleList(nn.Linear(time_embed_dim, hidden) for _ in range(depth))
        self.out = nn.Linear(hidden, out_dim)

    def features(self, x: torch.Tensor, t: torch.Tensor | None = None,
                 y: torch.Tensor | None = None) -> torch.Tensor:
        """The last hidden layer, (B, hidden)."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must be (B, {self.dim}), got {tuple(x.shape)}")
        # a network without time never looks at t, so callers may pass anything (or nothing)
        e = None
        if self.cond is not None:
            e = self.act(self.cond(t if self.time_conditional else None, y, x.shape[0], x.device))
        h = self.in_proj(x)
        if e is not None:
            h = h + self.emb_projs[0](e)
        h = self.act(h)
        for k, layer in enumerate(self.hidden_layers, start=1):
            a = layer(h)
            if e is not None:
                a = a + self.emb_projs[k](e)
            h = h + self.act(a)
        return h

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, D), t (B,), y (B,) or None -> (B, out_dim)."""
        return self.out(self.features(x, t, y))
