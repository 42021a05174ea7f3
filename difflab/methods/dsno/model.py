"""The DSNO module: a temporal operator (:mod:`difflab.nets.temporal`) around a difflab UNet or MLP, and
the readout that turns its raw outputs into trajectory points; builders from a network, a teacher or a
checkpoint config.

Readout. The operator's raw output o_m at time m is read as a trajectory point in one of two ways:
``"x0"`` (default): o_m is a data prediction and x(t_m) = (σ_m/σ_1) x_T + (α_m - σ_m α_1/σ_1) o_m, the
DDIM jump from (x_T, t=1) to t_m with x̂0 = o_m — the start point is exact and the end point is o_M;
``"x"``: x(t_m) = o_m directly (the network predicts trajectory points, as in the paper's description).
"""
from __future__ import annotations

import copy
import json
from typing import Sequence

import torch
from torch import nn

from difflab.errors import ConfigError
from difflab.nets.mlp import MLP
from difflab.nets.temporal import MLPOperator, UNetOperator, temporal_blocks
from difflab.nets.unet import UNet
from difflab.process.schedules import F64, VPLinear

READOUTS = ("x0", "x")

__all__ = ["DSNO", "READOUTS", "build_dsno", "build_dsno_from_config", "dsno_from_teacher", "parameter_overhead",
           "teacher_data_shape"]


class DSNO(nn.Module):
    """Operator + readout: forward(x_T (B, ...), y=None) -> trajectory (B, M, ...) at ``times``.

    Args:
        operator: a :class:`~difflab.nets.temporal.UNetOperator` or :class:`~difflab.nets.temporal.MLPOperator`.
        schedule: the teacher's schedule (gives α, σ at the output times for the "x0" readout).
        readout: "x0" (DDIM jump from x_T with x̂0 = the raw output) or "x" (raw output = trajectory).
        data_channels: channels (or D) of the data; a teacher with a learned variance has twice as many
            outputs and only the first half is read.
        config: the JSON-able description from which :func:`build_dsno_from_config` rebuilds this module.
    """

    def __init__(self, operator: nn.Module, schedule, readout: str = "x0", data_channels: int | None = None,
                 config: dict | None = None):
        super().__init__()
        if readout not in READOUTS:
            raise ConfigError(f"readout = {readout!r}; expected one of {', '.join(READOUTS)}")
        self.operator, self.readout = operator, readout
        self.data_channels = data_channels
        t = operator.times.to(F64)
        a, s = schedule.alpha(t), schedule.sigma(t)
        a1, s1 = schedule.alpha(torch.tensor(1.0, dtype=F64)), schedule.sigma(torch.tensor(1.0, dtype=F64))
        # x(t_m) = coef_x x_T + coef_out o_m; at t_m = 1 this is x_T exactly, at t_m = 0 it is o_m
        self.register_buffer("coef_x", (s / s1).float())
        self.register_buffer("coef_out", (a - s * a1 / s1).float())
        self.config = dict(config or {})

    @property
    def times(self) -> torch.Tensor:
        return self.operator.times

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        raw = self.operator(x, y)
        if self.data_channels is not None and raw.shape[2] != self.data_channels:
            raw = raw[:, :, :self.data_channels]
        if self.readout == "x":
            return raw
        shape = (1, -1) + (1,) * (raw.dim() - 2)
        return self.coef_x.reshape(shape).to(raw.dtype) * x.unsqueeze(1) + self.coef_out.reshape(shape).to(raw.dtype) * raw


def teacher_data_shape(model) -> tuple[int, ...] | None:
    """The per-sample data shape of a model whose ``net`` is a difflab UNet (C, H, W) or MLP (D,); None otherwise.

    (:func:`difflab.train.build.data_shape_of` answers the same from a config's data name; here only the model is known.)
    """
    net = getattr(model, "net", None)
    if isinstance(net, UNet):
        return (net.in_channels, net.image_size, net.image_size)
    if isinstance(net, MLP):
        return (net.dim,)
    return None


def build_dsno(net: nn.Module, schedule, times, *, modes: int = 3, readout: str = "x0",
               temporal_layers: Sequence[int] | None = None, middle: bool = False, negative_slope: float = 0.01,
               data_channels: int | None = None) -> DSNO:
    """DSNO around ``net`` (a difflab UNet or MLP, used as is: pass a copy of a teacher's network).

    ``temporal_layers`` picks the MLP's hidden layers that get a temporal block (default all);
    ``middle`` adds one after the U-Net's middle block.
    """
    times = torch.as_tensor(times, dtype=F64)
    if isinstance(net, UNet):
        op = UNetOperator(net, times, modes, negative_slope=negative_slope, middle=middle)
        backbone, channels = "unet", data_channels or net.in_channels
    elif isinstance(net, MLP):
        op = MLPOperator(net, times, modes, temporal_layers, negative_slope=negative_slope)
        backbone, channels = "mlp", data_channels or net.dim
    else:
        raise ConfigError(f"DSNO needs a difflab UNet or MLP backbone, got {type(net).__name__}")
    net_cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in net.config.items()}
    config = {"backbone": backbone, "backbone_json": json.dumps(net_cfg), "times": times.tolist(), "modes": int(modes),
              "readout": readout, "temporal_layers": list(getattr(op, "temporal_layers", [])), "middle": bool(middle),
              "negative_slope": float(negative_slope), "data_channels": int(channels)}
    return DSNO(op, schedule, readout, channels, config)


def dsno_from_teacher(teacher, times, **kw) -> DSNO:
    """DSNO whose backbone is a copy of the teacher's network (``teacher`` a DiffusionModel): before
    training, its raw output at time m is the teacher network's output at (x_T, t_m)."""
    net = getattr(teacher, "net", None)
    if not isinstance(net, (UNet, MLP)):
        raise ConfigError(f"the teacher's network is {type(net).__name__}; DSNO initialises from a difflab UNet or MLP")
    if getattr(net, "num_classes", None) is not None:
        raise ConfigError("DSNO here distils unconditional teachers; this teacher is class-conditional")
    return build_dsno(copy.deepcopy(net), teacher.schedule, times, **kw)


def build_dsno_from_config(config: dict, schedule=None) -> DSNO:
    """Rebuild the (untrained) module a checkpoint's ``config["dsno"]`` describes; its buffers
    (times, readout coefficients) come back with the state dict."""
    c = config
    net_cfg = json.loads(c["backbone_json"])
    net = UNet(**net_cfg) if c["backbone"] == "unet" else MLP(**net_cfg)
    return build_dsno(net, schedule or VPLinear(), c["times"], modes=c["modes"], readout=c["readout"],
                      temporal_layers=c["temporal_layers"] or None, middle=c["middle"],
                      negative_slope=c["negative_slope"], data_channels=c["data_channels"])


def parameter_overhead(dsno: DSNO) -> dict:
    """Parameters of the backbone and of the temporal blocks (each complex weight counts as 2 reals)."""
    backbone = sum(p.numel() for p in dsno.operator.backbone.parameters())
    temporal = sum(p.numel() for b in temporal_blocks(dsno) for p in b.parameters())
    return {"backbone_params": backbone, "temporal_params": temporal, "overhead_pct": 100.0 * temporal / backbone}
