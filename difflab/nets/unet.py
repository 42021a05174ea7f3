"""The DDPM/ADM U-Net, and presets sized for 8x8, 28x28 and 32x32 images.

Layout (L = len(channel_mult) resolution levels, level i works at image_size / 2**i with
base_channels * channel_mult[i] channels):

    input conv
    down path   level 0 .. L-1: num_res_blocks x [ResBlock (+ attention)], then a downsample
                (none after the last level); every block output is kept as a skip
    middle      ResBlock - attention - ResBlock at the lowest resolution
    up path     level L-1 .. 0: (num_res_blocks + 1) x [concat skip, ResBlock (+ attention)],
                then an upsample (none after level 0)
    output      GroupNorm - SiLU - zero-initialised conv

Levels are kept as ``nn.ModuleList``s indexed by level (``down.levels[i]``, ``up_levels[i]``)
with the resamplers in separate lists, so a per-level block (e.g. DSNO's temporal convolution)
can be inserted at the points marked ``# per-level hook`` in :meth:`DownPath.forward` and
:meth:`UNet.forward`, where ``h`` is (B, C_i, H_i, W_i) at level i's resolution.
"""
from __future__ import annotations

import inspect

import torch
from torch import nn

from .layers import (AttentionBlock, ConditionEmbedding, Downsample, EmbedSequential, ResBlock,
                     Upsample, normalization, zero_module)

__all__ = ["UNet", "DownPath", "UNET_PRESETS", "unet_from_preset", "level_resolutions"]


def level_resolutions(image_size: int, channel_mult, attention_resolutions) -> tuple[list[int], set[int]]:
    """Feature-map resolution of every level, and the set of levels that get attention.

    Raises ValueError when halving does not stay integral (e.g. 28 with four levels: 28, 14,
    7, 3.5) or when an attention resolution is not one of the levels' resolutions, which would
    otherwise silently build a network without attention.
    """
    num_levels = len(channel_mult)
    if num_levels < 1:
        raise ValueError("channel_mult must have at least one entry")
    if image_size % 2 ** (num_levels - 1):
        raise ValueError(f"image_size {image_size} cannot be halved {num_levels - 1} times "
                         f"(channel_mult {tuple(channel_mult)}); use fewer levels")
    resolutions = [image_size // 2 ** i for i in range(num_levels)]
    unknown = set(attention_resolutions) - set(resolutions)
    if unknown:
        raise ValueError(f"attention_resolutions {sorted(unknown)} are not feature-map resolutions of "
                         f"this network; available: {resolutions}")
    attn_levels = {i for i, r in enumerate(resolutions) if r in set(attention_resolutions)}
    return resolutions, attn_levels


class DownPath(nn.Module):
    """Input conv and the U-Net's down path (shared by :class:`UNet` and the encoders).

    forward(x, emb): x (B, in_channels, H, W), emb (B, E) or None ->
    (h, skips) with h (B, out_channels, H / 2**(L-1), W / 2**(L-1)) and skips the list of every
    intermediate activation, highest resolution first (``skip_channels`` gives their widths).
    """

    def __init__(self, in_channels: int, base_channels: int, channel_mult, num_res_blocks: int,
                 attn_levels: set[int], emb_dim: int | None, dropout: float, num_heads: int,
                 use_scale_shift_norm: bool, resblock_updown: bool):
        super().__init__()
        self.input_conv = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        self.levels = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        ch = base_channels
        self.skip_channels = [ch]
        for level, mult in enumerate(channel_mult):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks):
                layers = [ResBlock(ch, emb_dim, base_channels * mult, dropout, use_scale_shift_norm)]
                ch = base_channels * mult
                if level in attn_levels:
                    layers.append(AttentionBlock(ch, num_heads))
                blocks.append(EmbedSequential(*layers))
                self.skip_channels.append(ch)
            self.levels.append(blocks)
            if level < len(channel_mult) - 1:
                down = (ResBlock(ch, emb_dim, ch, dropout, use_scale_shift_norm, down=True)
                        if resblock_updown else Downsample(ch))
                self.downsamples.append(EmbedSequential(down))
                self.skip_channels.append(ch)
        self.out_channels = ch

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = self.input_conv(x)
        skips = [h]
        for level, blocks in enumerate(self.levels):
            for block in blocks:
                h = block(h, emb)
                skips.append(h)
            # per-level hook (down path): h is level `level`'s output at its own resolution
            if level < len(self.downsamples):
                h = self.downsamples[level](h, emb)
                skips.append(h)
        return h, skips


def middle_block(ch: int, emb_dim: int | None, dropout: float, num_heads: int,
                 use_scale_shift_norm: bool) -> EmbedSequential:
    """ResBlock - attention - ResBlock at the lowest resolution, (B, ch, h, w) -> same."""
    return EmbedSequential(
        ResBlock(ch, emb_dim, ch, dropout, use_scale_shift_norm),
        AttentionBlock(ch, num_heads),
        ResBlock(ch, emb_dim, ch, dropout, use_scale_shift_norm),
    )


class UNet(nn.Module):
    """DDPM/ADM U-Net: forward(x, t, y=None) -> (B, out_channels, H, W).

    Args:
        in_channels: image channels C.
        out_channels: output channels (default C; 2C for a learned variance, which the caller splits).
        base_channels: width of level 0; level i has ``base_channels * channel_mult[i]``.
        channel_mult: one entry per resolution level; image_size must halve cleanly L-1 times.
        num_res_blocks: ResBlocks per level on the way down (one more on the way up).
        attention_resolutions: feature-map *resolutions* (e.g. 16 means the 16x16 level) that get
            self-attention; each must be a level resolution of this image_size.
        dropout: dropout inside ResBlocks.
        num_heads: attention heads.
        num_classes: enables class conditioning; label ``num_classes`` is the null class.
        image_size: H = W of the inputs, used to resolve ``attention_resolutions``.
        use_scale_shift_norm: ADM's adaptive GroupNorm injection of the embedding (else additive).
        time_scale: the sinusoid sees ``t * time_scale``.
        resblock_updown: resample with ResBlocks (BigGAN-style) instead of conv / nearest+conv.

    forward:
        x: (B, in_channels, H, W); t: (B,) float continuous time (a number broadcasts);
        y: (B,) int64 labels or None (with ``num_classes`` set, None means unconditional).

    At init the output is exactly zero (zero-initialised output conv) and every residual
    branch is zero, so the network starts as a cheap identity-like map.
    """

    def __init__(self, in_channels: int = 1, out_channels: int | None = None, base_channels: int = 64,
                 channel_mult=(1, 2, 2), num_res_blocks: int = 2, attention_resolutions=(16,),
                 dropout: float = 0.0, num_heads: int = 4, num_classes: int | None = None,
                 image_size: int = 32, use_scale_shift_norm: bool = True, time_scale: float = 1000.0,
                 resblock_updown: bool = False):
        super().__init__()
        out_channels = out_channels or in_channels
        channel_mult = tuple(channel_mult)
        attention_resolutions = tuple(attention_resolutions)
        # everything needed to rebuild this network; checkpoints store it
        self.config = dict(in_channels=in_channels, out_channels=out_channels, base_channels=base_channels,
                           channel_mult=channel_mult, num_res_blocks=num_res_blocks,
                           attention_resolutions=attention_resolutions, dropout=dropout,
                           num_heads=num_heads, num_classes=num_classes, image_size=image_size,
                           use_scale_shift_norm=use_scale_shift_norm, time_scale=time_scale,
                           resblock_updown=resblock_updown)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.image_size = image_size
        self.num_classes = num_classes
        self.resolutions, attn_levels = level_resolutions(image_size, channel_mult, attention_resolutions)

        emb_dim = 4 * base_channels
        self.cond = ConditionEmbedding(emb_dim, freq_dim=base_channels, num_classes=num_classes,
                                       time_scale=time_scale)
        block_kw = dict(dropout=dropout, use_scale_shift_norm=use_scale_shift_norm)

        self.down = DownPath(in_channels, base_channels, channel_mult, num_res_blocks, attn_levels,
                             emb_dim, dropout, num_heads, use_scale_shift_norm, resblock_updown)
        ch = self.down.out_channels
        self.middle = middle_block(ch, emb_dim, dropout, num_heads, use_scale_shift_norm)

        skip_channels = list(self.down.skip_channels)
        up_levels: list[nn.ModuleList] = [None] * len(channel_mult)
        upsamples: list[nn.Module] = [None] * (len(channel_mult) - 1)
        for level in reversed(range(len(channel_mult))):
            blocks = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                out_ch = base_channels * channel_mult[level]
                layers = [ResBlock(ch + skip_channels.pop(), emb_dim, out_ch, **block_kw)]
                ch = out_ch
                if level in attn_levels:
                    layers.append(AttentionBlock(ch, num_heads))
                blocks.append(EmbedSequential(*layers))
            up_levels[level] = blocks
            if level > 0:
                up = ResBlock(ch, emb_dim, ch, up=True, **block_kw) if resblock_updown else Upsample(ch)
                # upsamples[i] takes level i+1 up to level i's resolution
                upsamples[level - 1] = EmbedSequential(up)
        assert not skip_channels, "every skip must be consumed exactly once"
        self.up_levels = nn.ModuleList(up_levels)
        self.upsamples = nn.ModuleList(upsamples)

        self.out = nn.Sequential(normalization(ch), nn.SiLU(),
                                 zero_module(nn.Conv2d(ch, out_channels, 3, padding=1)))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, H, W), t (B,), y (B,) or None -> (B, out_channels, H, W)."""
        emb = self.cond(t, y, x.shape[0], x.device)
        h, skips = self.down(x, emb)
        h = self.middle(h, emb)
        for level in reversed(range(len(self.up_levels))):
            for block in self.up_levels[level]:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
            # per-level hook (up path): h is level `level`'s output at its own resolution
            if level > 0:
                h = self.upsamples[level - 1](h, emb)
        return self.out(h)


# ----------------------------------------------------------------------------- presets
UNET_PRESETS: dict[str, dict] = {
    # sklearn-digits-sized images (8 -> 4); 0.76M parameters, trains on a 2-core CPU
    "8x8": dict(in_channels=1, image_size=8, base_channels=32, channel_mult=(1, 2),
                num_res_blocks=1, attention_resolutions=(4,), dropout=0.0, num_heads=4),
    # MNIST family (28 -> 14 -> 7); 3.9M parameters
    "28x28": dict(in_channels=1, image_size=28, base_channels=48, channel_mult=(1, 2, 2),
                  num_res_blocks=2, attention_resolutions=(7,), dropout=0.1, num_heads=4),
    # DDPM's CIFAR-10 network (Ho et al. 2020), additive time injection as in DDPM:
    # 35,746,307 parameters, DDPM's 35.7M. use_scale_shift_norm=True (ADM) makes it 38.3M.
    "32x32": dict(in_channels=3, image_size=32, base_channels=128, channel_mult=(1, 2, 2, 2),
                  num_res_blocks=2, attention_resolutions=(16,), dropout=0.1, num_heads=4,
                  use_scale_shift_norm=False),
}


def unet_from_preset(name: str, **overrides) -> UNet:
    """Build a :class:`UNet` from ``UNET_PRESETS[name]``, with any constructor argument overridden."""
    if name not in UNET_PRESETS:
        raise ValueError(f"unknown U-Net preset {name!r}; available: {sorted(UNET_PRESETS)}")
    accepted = set(inspect.signature(UNet.__init__).parameters) - {"self"}
    unknown = set(overrides) - accepted
    if unknown:
        raise ValueError(f"unknown UNet arguments {sorted(unknown)}; accepted: {sorted(accepted)}")
    return UNet(**{**UNET_PRESETS[name], **overrides})
