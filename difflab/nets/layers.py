"""Building blocks shared by every difflab network: time/class embeddings, normalisation,
residual blocks, self-attention and resampling.

Shape conventions: ``B`` batch, ``C`` channels, ``H, W`` spatial size, ``E`` the width of the
conditioning embedding (time + class) that residual blocks receive.

Blocks that consume the embedding subclass :class:`EmbedBlock` and are called as
``block(x, emb)``; :class:`EmbedSequential` routes ``emb`` to those and calls the rest as
``block(x)``, so a network can be written as plain lists of blocks.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "timestep_embedding",
    "zero_module",
    "GroupNorm32",
    "normalization",
    "ConditionEmbedding",
    "EmbedBlock",
    "EmbedSequential",
    "ResBlock",
    "AttentionBlock",
    "Downsample",
    "Upsample",
    "count_parameters",
    "broadcast_time",
]

MAX_GROUPS = 32


# ----------------------------------------------------------------------------- helpers
def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (already scaled) times, (B,) -> (B, dim) float32.

    ``emb[:, k] = cos(t * f_k)`` and ``emb[:, half + k] = sin(t * f_k)`` with
    ``f_k = max_period ** (-k / half)``, ``half = dim // 2``: the cos half comes first
    (improved-diffusion's order). An odd ``dim`` gets a trailing zero column.
    Computed in float32 whatever the autocast state, since t * f_k reaches ~1000 where
    bfloat16 would round away the phase.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def zero_module(module: nn.Module) -> nn.Module:
    """Zero every parameter of ``module`` in place and return it.

    Used on the last layer of each residual branch and of the U-Net output, so that at init
    every block is the identity and the network outputs exactly 0 (ADM's trick: training starts
    from a well-conditioned, shallow-looking network).
    """
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters in ``module`` (only those with requires_grad if ``trainable_only``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def broadcast_time(t: torch.Tensor | float, batch_size: int, device: torch.device) -> torch.Tensor:
    """Normalise a time argument to a (B,) float tensor.

    Accepts (B,) tensors, and for convenience a Python number or a 0-d / (1,) tensor, which is
    broadcast to every sample. Any other shape is an error rather than a silent broadcast.
    """
    t = torch.as_tensor(t, device=device)
    if not t.is_floating_point():
        t = t.float()
    if t.ndim == 0 or t.shape == (1,):
        return t.reshape(1).expand(batch_size)
    if t.shape != (batch_size,):
        raise ValueError(f"t must have shape ({batch_size},) (one time per sample), got {tuple(t.shape)}")
    return t


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 and cast back to the input dtype.

    Under bfloat16/float16 autocast the activations arrive in low precision; the mean/variance
    over a group of C/G * H * W values loses too many bits there, so normalise in float32.
    The result keeps the input dtype so the next conv stays in the autocast dtype. The affine
    parameters are upcast too, so a network cast wholesale to bfloat16 also works.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)


def normalization(channels: int) -> GroupNorm32:
    """GroupNorm32 with 32 groups, or gcd(32, channels) groups when ``channels`` is not a multiple
    of 32 (tiny test/toy widths such as 16 or 48)."""
    return GroupNorm32(math.gcd(MAX_GROUPS, channels), channels)


# ----------------------------------------------------------------------------- conditioning
class ConditionEmbedding(nn.Module):
    """Time and/or class conditioning, summed into one (B, emb_dim) vector.

    time: sinusoid of ``t * time_scale`` with ``freq_dim`` features, then Linear-SiLU-Linear to
    ``emb_dim``. ``time_scale = 1000`` makes ``t = (i + 1) / 1000`` look like DDPM's integer
    step, so frequencies match the usual discrete-time networks.
    class: a learned table of ``num_classes + 1`` rows; row ``num_classes`` is the "null" label
    used for unconditional / classifier-free-guidance passes. It is always present so checkpoints
    trained with and without class dropout have the same shape.

    Args:
        emb_dim: output width E.
        freq_dim: sinusoid width; ``None`` turns time conditioning off (e.g. a time predictor).
        num_classes: number of real classes, or ``None`` for no class conditioning.
    """

    def __init__(self, emb_dim: int, freq_dim: int | None = None, num_classes: int | None = None,
                 time_scale: float = 1000.0):
        super().__init__()
        if freq_dim is None and num_classes is None:
            raise ValueError("ConditionEmbedding needs time (freq_dim) or classes (num_classes)")
        self.emb_dim = emb_dim
        self.freq_dim = freq_dim
        self.num_classes = num_classes
        self.time_scale = float(time_scale)
        self.time_mlp = None
        if freq_dim is not None:
            self.time_mlp = nn.Sequential(nn.Linear(freq_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_embed = nn.Embedding(num_classes + 1, emb_dim) if num_classes is not None else None

    def forward(self, t: torch.Tensor | None, y: torch.Tensor | None, batch_size: int,
                device: torch.device) -> torch.Tensor:
        """t: (B,) float (required when time is on, ignored otherwise); y: (B,) int64 or None.

        With classes on, ``y=None`` means every sample is unconditional (the null row).
        Returns (B, E).
        """
        emb = None
        if self.time_mlp is not None:
            if t is None:
                raise ValueError("this network is time-conditional: pass t, a (B,) float tensor")
            t = broadcast_time(t, batch_size, device)
            freqs = timestep_embedding(t * self.time_scale, self.freq_dim)
            # the sinusoid is float32; match the MLP's dtype if the network was cast (e.g. .bfloat16())
            emb = self.time_mlp(freqs.to(self.time_mlp[0].weight.dtype))
        if self.class_embed is not None:
            if y is None:
                y = torch.full((batch_size,), self.num_classes, dtype=torch.long, device=device)
            elif y.dtype not in (torch.int64, torch.int32) or y.shape != (batch_size,):
                raise ValueError(f"y must be a ({batch_size},) integer tensor of labels, got "
                                 f"{tuple(y.shape)} {y.dtype}")
            c = self.class_embed(y)
            emb = c if emb is None else emb + c
        elif y is not None:
            raise ValueError("got class labels y but the network was built with num_classes=None")
        return emb


class EmbedBlock(nn.Module):
    """A block whose forward is ``forward(x, emb)``: it consumes the (B, E) conditioning."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class EmbedSequential(nn.Sequential, EmbedBlock):
    """nn.Sequential that passes ``emb`` to the :class:`EmbedBlock` members only."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, EmbedBlock) else layer(x)
        return x


# ----------------------------------------------------------------------------- resampling
class Downsample(nn.Module):
    """Halve H and W: 3x3 stride-2 conv (``use_conv``) or 2x2 average pooling.

    (B, C, H, W) -> (B, out_channels, H/2, W/2). Pooling cannot change the channel count.
    """

    def __init__(self, channels: int, use_conv: bool = True, out_channels: int | None = None):
        super().__init__()
        out_channels = out_channels or channels
        if not use_conv and out_channels != channels:
            raise ValueError("Downsample without conv cannot change the channel count")
        self.op = nn.Conv2d(channels, out_channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour, then a 3x3 conv if ``use_conv``.

    (B, C, H, W) -> (B, out_channels, 2H, 2W). Nearest + conv rather than a transposed conv,
    which avoids checkerboard artefacts.
    """

    def __init__(self, channels: int, use_conv: bool = True, out_channels: int | None = None):
        super().__init__()
        out_channels = out_channels or channels
        if not use_conv and out_channels != channels:
            raise ValueError("Upsample without conv cannot change the channel count")
        self.conv = nn.Conv2d(channels, out_channels, 3, padding=1) if use_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.conv is not None else x


# ----------------------------------------------------------------------------- blocks
class ResBlock(EmbedBlock):
    """Pre-activation residual block with conditioning, as in DDPM/ADM.

    h = Conv3x3(SiLU(GN(x)));  h = inject(h, emb);  h = Conv3x3_zero(Dropout(SiLU(h')))
    out = skip(x) + h

    Injection: with ``use_scale_shift_norm`` (ADM), emb gives (scale, shift) and
    h' = GN(h) * (1 + scale) + shift, i.e. an adaptive GroupNorm; otherwise emb is added to h
    before GN (DDPM). ``emb_dim=None`` builds an unconditioned block.
    ``up``/``down`` resample inside the block (BigGAN-style, ADM's ``resblock_updown``): both
    the branch (after the first norm-activation) and the skip are resized, by nearest/avg-pool.

    x: (B, C_in, H, W), emb: (B, E) -> (B, C_out, H', W') with H' = H, 2H or H/2.
    """

    def __init__(self, channels: int, emb_dim: int | None, out_channels: int | None = None,
                 dropout: float = 0.0, use_scale_shift_norm: bool = True, up: bool = False,
                 down: bool = False):
        super().__init__()
        if up and down:
            raise ValueError("ResBlock cannot both upsample and downsample")
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_norm = normalization(channels)
        self.in_conv = nn.Conv2d(channels, out_channels, 3, padding=1)
        if up:
            self.resample = Upsample(channels, use_conv=False)
        elif down:
            self.resample = Downsample(channels, use_conv=False)
        else:
            self.resample = None
        self.emb_proj = None
        if emb_dim is not None:
            # scale-shift needs two vectors per channel
            width = 2 * out_channels if use_scale_shift_norm else out_channels
            self.emb_proj = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, width))
        self.out_norm = normalization(out_channels)
        self.dropout = nn.Dropout(dropout)
        # zero-init: the block starts as the identity (or as its 1x1 skip)
        self.out_conv = zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = F.silu(self.in_norm(x))
        if self.resample is not None:
            h, x = self.resample(h), self.resample(x)
        h = self.in_conv(h)
        if self.emb_proj is not None:
            if emb is None:
                raise ValueError("this ResBlock is conditioned: pass emb")
            e = self.emb_proj(emb).to(h.dtype)[:, :, None, None]
            if self.use_scale_shift_norm:
                scale, shift = e.chunk(2, dim=1)
                h = self.out_norm(h) * (1 + scale) + shift
            else:
                h = self.out_norm(h + e)
        else:
            h = self.out_norm(h)
        h = self.out_conv(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the H*W positions, residual, zero-initialised output.

    x: (B, C, H, W) -> (B, C, H, W). Each head has C / num_heads channels; attention uses
    ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels where available).
    """

    def __init__(self, channels: int, num_heads: int = 4):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"attention channels ({channels}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.norm = normalization(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_module(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(self.norm(x))
        # (B, 3C, H, W) -> 3 x (B, heads, HW, C/heads)
        qkv = qkv.reshape(b, 3, self.num_heads, c // self.num_heads, h * w).permute(1, 0, 2, 4, 3)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        out = out.transpose(-1, -2).reshape(b, c, h, w)
        return x + self.proj(out)
