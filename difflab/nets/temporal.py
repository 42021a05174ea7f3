"""DSNO's networks (Zheng et al. 2022): a Fourier temporal convolution, and operators that decode a
whole trajectory of M time points from one input in one network evaluation.

Shapes: ``B`` batch, ``M`` time points of the decoded trajectory, ``J`` kept Fourier modes,
``C`` channels (hidden width for the MLP), ``H, W`` spatial size.

* :class:`TemporalConv` — (T u)(t) = u(t) + LeakyReLU((K u)(t)) with K a convolution over the time axis,
  parameterised in Fourier space by complex weights R (J, C, C): K u = irfft(R · rfft(u)) with all modes
  above J cut. Written here with ``torch.fft`` (the ``neuraloperator`` package is not used). Zero weights
  make the block the identity, which is how an operator starts as a copy of its backbone.
* :class:`UNetOperator` — a difflab :class:`~difflab.nets.unet.UNet` run with time as batch (B*M) and a
  TemporalConv after every resolution level, down and up (the U-Net's ``# per-level hook`` points). The
  input conv sees x once; its feature map is repeated M times and the M copies get the embeddings of the
  M output times.
* :class:`MLPOperator` — the same for difflab's residual :class:`~difflab.nets.mlp.MLP` (2-D data): the
  hidden layers run with time as batch, with a TemporalConv after each (or after the chosen) hidden layer.

Operators know nothing of diffusion: they map x (B, ...) to raw outputs (B, M, ...), and with zero
temporal weights the raw output at time m is exactly ``backbone(x, times[m])``. Reading the raw outputs
as a trajectory is the method's business (:mod:`difflab.methods.dsno`).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .mlp import MLP
from .unet import UNet

__all__ = ["TemporalConv", "UNetOperator", "MLPOperator", "circular_kernel", "temporal_blocks"]


class TemporalConv(nn.Module):
    """Fourier temporal convolution block with an identity shortcut.

    (T u)(t_m) = u(t_m) + LeakyReLU((K u)(t_m)),   K u = irfft_M( R · rfft_M(u)[:J] )

    where rfft_M runs over the time axis (length M), R[j] is a complex C×C matrix acting on the channels
    of mode j (``(R·û)[j, k] = Σ_l R[j, k, l] û[j, l]``) and the modes j >= J are cut. By the convolution
    theorem K u is the circular convolution of u with the real kernel ``circular_kernel(R, M)`` (M, C, C).
    With J = M // 2 + 1 every circular convolution over M points is representable.

    The FFTs and the mode product run in float32 whatever the autocast state (bfloat16 would round the
    spectrum); the result is cast back to the input dtype.

    Args:
        channels: C.
        modes: J, the number of lowest Fourier modes kept (1 <= J; at most M // 2 + 1 are used).
        negative_slope: of the LeakyReLU.
        init_scale: std of the initial real and imaginary weights, divided by C; 0 (the default) makes
            the block exactly the identity at init.

    forward: u (B, M, C, *rest) -> (B, M, C, *rest); ``rest`` (pixels) is treated as batch.

    Weights are stored as a real (J, C, C, 2) tensor (real, imaginary) so that checkpoints stay plain
    float safetensors.
    """

    def __init__(self, channels: int, modes: int, negative_slope: float = 0.01, init_scale: float = 0.0):
        super().__init__()
        if modes < 1:
            raise ValueError(f"modes must be >= 1, got {modes}")
        self.channels, self.modes, self.negative_slope = int(channels), int(modes), float(negative_slope)
        w = torch.zeros(modes, channels, channels, 2)
        if init_scale > 0:
            w.normal_(0.0, init_scale / channels)
        self.weight = nn.Parameter(w)

    @property
    def complex_weight(self) -> torch.Tensor:
        """R as a complex (J, C, C) tensor (float32 parts)."""
        return torch.view_as_complex(self.weight.float().contiguous())

    def spectral(self, u: torch.Tensor) -> torch.Tensor:
        """K u without the activation and shortcut, float32: (B, M, C, *rest) -> same shape."""
        if u.dim() < 3 or u.shape[2] != self.channels:
            raise ValueError(f"u must be (B, M, {self.channels}, ...), got {tuple(u.shape)}")
        B, M, C = u.shape[:3]
        rest = u.shape[3:]
        with torch.autocast(u.device.type, enabled=False):
            v = u.float().reshape(B, M, C, -1)                      # (B, M, C, S)
            v_hat = torch.fft.rfft(v, dim=1)                        # (B, M//2+1, C, S)
            J = min(self.modes, v_hat.shape[1])
            out_hat = torch.zeros_like(v_hat)
            out_hat[:, :J] = torch.einsum("bjls,jkl->bjks", v_hat[:, :J], self.complex_weight[:J])
            out = torch.fft.irfft(out_hat, n=M, dim=1)              # (B, M, C, S)
        return out.reshape(B, M, C, *rest)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        k = F.leaky_relu(self.spectral(u), self.negative_slope)
        return u + k.to(u.dtype)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, modes={self.modes}, negative_slope={self.negative_slope}"


def circular_kernel(weight: torch.Tensor, M: int) -> torch.Tensor:
    """The real time-domain kernel k (M, C, C) of a TemporalConv's complex weights R (J, C, C):
    k = irfft_M(R padded with zeros to M // 2 + 1 modes), so that (K u)(t) = Σ_τ k(τ) u(t - τ mod M).
    (irfft keeps only the real part of the DC mode, and of the Nyquist mode for even M, exactly as
    the block's own inverse transform does.)"""
    J = min(weight.shape[0], M // 2 + 1)
    spec = torch.zeros(M // 2 + 1, *weight.shape[1:], dtype=weight.dtype, device=weight.device)
    spec[:J] = weight[:J]
    return torch.fft.irfft(spec, n=M, dim=0)


def _time_batch(h: torch.Tensor, B: int) -> torch.Tensor:
    """(B*M, C, ...) with b-major rows -> (B, M, C, ...)."""
    return h.reshape(B, h.shape[0] // B, *h.shape[1:])


def _times_buffer(times) -> torch.Tensor:
    t = torch.as_tensor(times, dtype=torch.float64).reshape(-1)
    if t.numel() < 2:
        raise ValueError(f"an operator needs at least 2 output times, got {t.tolist()}")
    # float32 like the t a DiffusionModel hands its network, so the embeddings match the teacher's exactly
    return t.to(torch.float32)


def temporal_blocks(module: nn.Module) -> list[TemporalConv]:
    """Every TemporalConv inside ``module``."""
    return [m for m in module.modules() if isinstance(m, TemporalConv)]


class UNetOperator(nn.Module):
    """A U-Net turned into a trajectory decoder: forward(x, y=None) -> (B, M, out_channels, H, W).

    The backbone's blocks run on B*M feature maps (time as batch; row b*M + m is sample b at time m),
    each with the embedding of its output time ``times[m]``; after each resolution level (the last block
    of a down level — whose activation is also that level's last skip — and the last block of an up level)
    a :class:`TemporalConv` mixes the M copies of every pixel over time. The input conv runs once on x
    and its output is repeated M times (DSNO's "first feature map repeated").

    Args:
        unet: the backbone, used as is (load a teacher's weights into it first, or after:
            ``op.backbone.load_state_dict(teacher.state_dict())``).
        times: (M,) output times in [0, 1].
        modes: J of every temporal block.
        negative_slope, init_scale: see :class:`TemporalConv`.
        middle: also put a block after the middle block.

    With zero temporal weights (the default init) the raw output at time m equals
    ``unet(x, times[m], y)`` exactly: the operator starts as the backbone evaluated at every t_m.
    """

    def __init__(self, unet: UNet, times, modes: int = 4, negative_slope: float = 0.01, init_scale: float = 0.0,
                 middle: bool = False):
        super().__init__()
        if not isinstance(unet, UNet):
            raise TypeError(f"UNetOperator needs a difflab UNet, got {type(unet).__name__}")
        self.backbone = unet
        self.register_buffer("times", _times_buffer(times))
        mult = unet.config["channel_mult"]
        base = unet.config["base_channels"]
        kw = dict(modes=modes, negative_slope=negative_slope, init_scale=init_scale)
        self.down_temporal = nn.ModuleList(TemporalConv(base * m, **kw) for m in mult)
        self.up_temporal = nn.ModuleList(TemporalConv(base * m, **kw) for m in mult)
        self.middle_temporal = TemporalConv(unet.down.out_channels, **kw) if middle else None
        self.config = dict(modes=modes, negative_slope=negative_slope, middle=middle)

    @property
    def num_times(self) -> int:
        return self.times.numel()

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, C, H, W), y (B,) or None -> raw outputs (B, M, out_channels, H, W)."""
        net, B, M = self.backbone, x.shape[0], self.num_times
        t = self.times.repeat(B)                                   # (B*M,): t[b*M + m] = times[m]
        y_rep = y.repeat_interleave(M) if y is not None else None
        emb = net.cond(t, y_rep, B * M, x.device)

        def mix(block, h):
            return block(_time_batch(h, B)).reshape(h.shape)

        h = net.down.input_conv(x).repeat_interleave(M, dim=0)      # (B*M, C0, H, W)
        skips = [h]
        for level, blocks in enumerate(net.down.levels):
            for block in blocks:
                h = block(h, emb)
                skips.append(h)
            h = mix(self.down_temporal[level], h)
            if len(blocks):
                skips[-1] = h  # the level's last skip carries the time-mixed features too
            if level < len(net.down.downsamples):
                h = net.down.downsamples[level](h, emb)
                skips.append(h)
        h = net.middle(h, emb)
        if self.middle_temporal is not None:
            h = mix(self.middle_temporal, h)
        for level in reversed(range(len(net.up_levels))):
            for block in net.up_levels[level]:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
            h = mix(self.up_temporal[level], h)
            if level > 0:
                h = net.upsamples[level - 1](h, emb)
        out = net.out(h)
        return out.reshape(B, M, *out.shape[1:])


class MLPOperator(nn.Module):
    """A residual MLP turned into a trajectory decoder: forward(x, y=None) -> (B, M, out_dim).

    Follows :class:`~difflab.nets.mlp.MLP`'s layers with time as batch (B*M rows, each with the embedding
    of its time ``times[m]``): the input projection sees x once and is repeated M times, and a
    :class:`TemporalConv` over the hidden width follows each hidden layer listed in ``temporal_layers``
    (0 = the first layer, ``depth - 1`` the last; default all).

    With zero temporal weights the raw output at time m equals ``mlp(x, times[m], y)`` exactly.
    """

    def __init__(self, mlp: MLP, times, modes: int = 4, temporal_layers: Sequence[int] | None = None,
                 negative_slope: float = 0.01, init_scale: float = 0.0):
        super().__init__()
        if not isinstance(mlp, MLP):
            raise TypeError(f"MLPOperator needs a difflab MLP, got {type(mlp).__name__}")
        if not mlp.time_conditional:
            raise ValueError("MLPOperator needs a time-conditional MLP (the output times are its embeddings)")
        depth = len(mlp.hidden_layers) + 1
        layers = list(range(depth)) if temporal_layers is None else sorted({int(k) for k in temporal_layers})
        if any(k < 0 or k >= depth for k in layers):
            raise ValueError(f"temporal_layers {layers} out of range for an MLP with {depth} hidden layers")
        self.backbone = mlp
        self.register_buffer("times", _times_buffer(times))
        self.temporal_layers = layers
        self.temporal = nn.ModuleDict({str(k): TemporalConv(mlp.hidden, modes, negative_slope, init_scale)
                                       for k in layers})
        self.config = dict(modes=modes, temporal_layers=layers, negative_slope=negative_slope)

    @property
    def num_times(self) -> int:
        return self.times.numel()

    def _mix(self, k: int, h: torch.Tensor, B: int) -> torch.Tensor:
        block = self.temporal[str(k)] if str(k) in self.temporal else None
        return h if block is None else block(_time_batch(h, B)).reshape(h.shape)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, D), y (B,) or None -> raw outputs (B, M, out_dim)."""
        mlp, B, M = self.backbone, x.shape[0], self.num_times
        if x.ndim != 2 or x.shape[1] != mlp.dim:
            raise ValueError(f"x must be (B, {mlp.dim}), got {tuple(x.shape)}")
        t = self.times.repeat(B)
        y_rep = y.repeat_interleave(M) if y is not None else None
        e = mlp.act(mlp.cond(t, y_rep, B * M, x.device))            # (B*M, E)
        h = mlp.in_proj(x).repeat_interleave(M, dim=0) + mlp.emb_projs[0](e)
        h = self._mix(0, mlp.act(h), B)
        for k, layer in enumerate(mlp.hidden_layers, start=1):
            h = h + mlp.act(layer(h) + mlp.emb_projs[k](e))
            h = self._mix(k, h, B)
        return mlp.out(h).reshape(B, M, -1)
