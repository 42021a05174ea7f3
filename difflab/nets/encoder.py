"""Encoders: networks that map an image (or vector) to a small output vector.

Used for a discriminator d(x_t, t) (``time_conditional=True``) and for a time predictor
g(x) -> t (``time_conditional=False``: the network never sees t, so it must read the noise
level from x alone).
"""
from __future__ import annotations

import torch
from torch import nn

from .layers import ConditionEmbedding, normalization
from .mlp import MLP
from .unet import DownPath, level_resolutions, middle_block

__all__ = ["Encoder", "MLPEncoder"]


class Encoder(nn.Module):
    """The U-Net's down path and middle block, global average pooling and a linear head.

    x (B, C, H, W) -> down path -> middle -> GroupNorm - SiLU -> mean over H, W
    -> features (B, F) -> Linear -> (B, out_dim), with F = base_channels * channel_mult[-1].

    Normalisation and activation come before pooling (as in ADM's classifier) so the pooled
    features are post-activation statistics of the whole feature map.

    Args: as :class:`~difflab.nets.unet.UNet`, plus
        out_dim: output width (1 for a discriminator logit or a predicted time).
        time_conditional: whether the network takes t. False builds no time embedding at all and
            ignores any t passed, so the output is a function of x (and y) only.

    forward(x, t=None, y=None): x (B, C, H, W); t (B,) float, required iff ``time_conditional``;
    y (B,) int64 or None when ``num_classes`` is set. Returns (B, out_dim).
    """

    def __init__(self, in_channels: int, base_channels: int = 32, channel_mult=(1, 2, 2),
                 num_res_blocks: int = 1, attention_resolutions=(), image_size: int = 28,
                 dropout: float = 0.0, out_dim: int = 1, time_conditional: bool = True,
                 num_classes: int | None = None, time_scale: float = 1000.0, num_heads: int = 4,
                 use_scale_shift_norm: bool = True, resblock_updown: bool = False):
        super().__init__()
        channel_mult = tuple(channel_mult)
        attention_resolutions = tuple(attention_resolutions)
        self.config = dict(in_channels=in_channels, base_channels=base_channels, channel_mult=channel_mult,
                           num_res_blocks=num_res_blocks, attention_resolutions=attention_resolutions,
                           image_size=image_size, dropout=dropout, out_dim=out_dim,
                           time_conditional=time_conditional, num_classes=num_classes,
                           time_scale=time_scale, num_heads=num_heads,
                           use_scale_shift_norm=use_scale_shift_norm, resblock_updown=resblock_updown)
        self.time_conditional = time_conditional
        self.num_classes = num_classes
        self.out_dim = out_dim
        _, attn_levels = level_resolutions(image_size, channel_mult, attention_resolutions)

        emb_dim = None
        self.cond = None
        if time_conditional or num_classes is not None:
            emb_dim = 4 * base_channels
            self.cond = ConditionEmbedding(emb_dim, base_channels if time_conditional else None,
                                           num_classes, time_scale)
        self.down = DownPath(in_channels, base_channels, channel_mult, num_res_blocks, attn_levels,
                             emb_dim, dropout, num_heads, use_scale_shift_norm, resblock_updown)
        ch = self.down.out_channels
        self.middle = middle_block(ch, emb_dim, dropout, num_heads, use_scale_shift_norm)
        self.out_norm = normalization(ch)
        self.feature_dim = ch
        self.head = nn.Linear(ch, out_dim)

    def feature_map(self, x: torch.Tensor, t: torch.Tensor | None = None,
                    y: torch.Tensor | None = None) -> torch.Tensor:
        """The middle block's normalised, activated output before pooling, (B, feature_dim, h, w)
        with h = H / 2**(levels - 1)."""
        emb = None
        if self.cond is not None:
            emb = self.cond(t if self.time_conditional else None, y, x.shape[0], x.device)
        h, _ = self.down(x, emb)
        h = self.middle(h, emb)
        return torch.nn.functional.silu(self.out_norm(h))

    def features(self, x: torch.Tensor, t: torch.Tensor | None = None,
                 y: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled features before the linear head, (B, feature_dim): :meth:`feature_map` averaged over space."""
        return self.feature_map(x, t, y).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None,
                y: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, H, W), t (B,) or None, y (B,) or None -> (B, out_dim)."""
        return self.head(self.features(x, t, y))


class MLPEncoder(MLP):
    """:class:`~difflab.nets.mlp.MLP` as an encoder for vector data: (B, D) -> (B, out_dim).

    ``time_conditional=False`` gives a time predictor g(x) (t is ignored); True a discriminator
    d(x_t, t). ``features`` returns the last hidden layer, (B, hidden).
    """

    def __init__(self, dim: int = 2, hidden: int = 256, depth: int = 3, out_dim: int = 1,
                 time_conditional: bool = True, num_classes: int | None = None, time_scale: float = 1000.0,
                 time_embed_dim: int = 128, activation: str | type[nn.Module] = "silu"):
        super().__init__(dim=dim, hidden=hidden, depth=depth, out_dim=out_dim, num_classes=num_classes,
                         time_scale=time_scale, time_embed_dim=time_embed_dim, activation=activation,
                         time_conditional=time_conditional)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None,
                y: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, D), t (B,) or None, y (B,) or None -> (B, out_dim)."""
        return self.out(self.features(x, t, y))
