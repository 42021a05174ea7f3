"""DSNO: one-step sampling by learning the solution operator of the probability-flow ODE
(Zheng et al. 2022, "Fast Sampling of Diffusion Models via Operator Learning").

A teacher ODE solver maps the initial noise x_T to a whole trajectory; DSNO learns that map with a
neural operator (:mod:`difflab.nets.temporal`) and decodes all M recorded time points in parallel,
in one network evaluation. The pieces, in the order they are used::

    times = trajectory_times(8, "quadratic")                    # (M,) from t = 1 down to t = 0
    generate_trajectories(teacher, "bank/", n=20000, M=8)        # sharded, resumable (x_T, x(t_m)) pairs
    data = TrajectoryDataset("bank/")                            # .x (N, ...) = x_T, .y (N, M, ...) = trajectory
    dsno = dsno_from_teacher(teacher, data.times, modes=3)       # backbone = the teacher's network
    fit_dsno(dsno, data, "runs/dsno", tcfg, schedule=teacher.schedule)
    r = dsno_sample(dsno, x_T, return_trajectory=True)           # r.x (B, ...), r.trajectory (M, B, ...), r.nfe == 1

Readout. The operator's raw output o_m at time m is read as a trajectory point in one of two ways:
``"x0"`` (default): o_m is a data prediction and x(t_m) = (σ_m/σ_1) x_T + (α_m - σ_m α_1/σ_1) o_m, the
DDIM jump from (x_T, t=1) to t_m with x̂0 = o_m — the start point is exact and the end point is o_M;
``"x"``: x(t_m) = o_m directly (the network predicts trajectory points, as in the paper's description).

Training (:class:`DSNOObjective`): weighted L1 (or L2) over the M outputs with λ(t) = α_t/σ_t clamped at
``max_weight``; the dataset is the trajectory bank, with x = x_T and y = the target trajectory.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from difflab.io import atomic_write, read_json, write_json
from difflab.errors import CheckpointError, ConfigError, DataError
from difflab.nets.mlp import MLP
from difflab.nets.temporal import MLPOperator, UNetOperator, temporal_blocks
from difflab.nets.unet import UNet
from difflab.samplers import SAMPLERS, SampleResult
from difflab.train.objectives import Objective
from difflab.train.distributed import auto_device

F64 = torch.float64
KIND = "dsno"
TRAJ_FORMAT = "difflab-dsno-trajectories"
TRAJ_VERSION = 1
META = "meta.json"
ODE_SAMPLERS = ("pf_heun", "ddim", "pf_euler")  # deterministic: DSNO learns the map x_T -> trajectory
SPACINGS = ("uniform", "quadratic")
READOUTS = ("x0", "x")
LOSSES = ("l1", "l2")
# λ(t) = α/σ is infinite at t = 0; 100 is its value at a DDPM's first trained step (t = 1e-3), so the sample
# weighs most, as the one-step sampler needs (10 gave better mid-trajectory but worse final errors in a toy trial).
DEFAULT_MAX_WEIGHT = 100.0

__all__ = [
    "DSNO", "DSNOObjective", "TrajectoryDataset", "build_dsno", "dsno_from_teacher", "dsno_sample", "fit_dsno",
    "generate_trajectories", "load_dsno", "loss_weights", "mode_energy_fraction", "noise_from_seeds",
    "noise_seeds", "parameter_overhead", "refine_grid", "trajectory_error", "trajectory_spectrum",
    "trajectory_times", "train_dsno", "register", "demo_section",
]


# ============================================================================ time grids and noise
def trajectory_times(M: int, spacing: str = "quadratic", t_max: float = 1.0, t_min: float = 0.0) -> torch.Tensor:
    """(M,) float64 decreasing times from t_max (the noise x_T) to t_min (the sample), both included.

    'uniform' in t, or 'quadratic' t_m = t_min + (t_max - t_min)(1 - m/(M-1))², denser near the data
    where trajectories bend most.
    """
    if M < 2:
        raise ConfigError(f"M = {M}: a trajectory needs at least 2 times (the start t=1 and the sample t=0)")
    if spacing not in SPACINGS:
        raise ConfigError(f"spacing = {spacing!r}; expected one of {', '.join(SPACINGS)}")
    u = torch.linspace(0, 1, M, dtype=F64)
    if spacing == "uniform":
        return t_max + (t_min - t_max) * u
    return t_min + (t_max - t_min) * (1 - u) ** 2


def refine_grid(times: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A sampler grid that passes exactly through every recorded time.

    Each of the M-1 intervals [t_m, t_{m+1}] is cut into k = ceil(steps / (M-1)) equal steps.
    Returns (grid (N+1,) float64 decreasing, idx (M,) int64) with grid[idx] == times.
    """
    times = torch.as_tensor(times, dtype=F64)
    k = max(1, math.ceil(steps / (len(times) - 1)))
    parts = [times[:1]]
    for a, b in zip(times[:-1], times[1:]):
        parts.append(a + (b - a) * torch.arange(1, k + 1, dtype=F64) / k)
    grid = torch.cat(parts)
    grid[k::k] = times[1:]  # the recorded times bit for bit, not a+(b-a)·k/k
    return grid, torch.arange(len(times)) * k


def noise_seeds(seed: int, start: int, n: int) -> torch.Tensor:
    """(n,) int64 seeds of samples start .. start+n-1: each sample's noise has its own 63-bit seed,
    derived from (seed, index) with NumPy's SeedSequence, so any one x_T can be regenerated alone."""
    out = [int(np.random.SeedSequence([int(seed), int(i)]).generate_state(1, np.uint64)[0]) & (2**63 - 1)
           for i in range(start, start + n)]
    return torch.tensor(out, dtype=torch.int64)


def noise_from_seeds(seeds: torch.Tensor, shape: Sequence[int], dtype=torch.float32) -> torch.Tensor:
    """x_T (n, *shape): standard normal noise, sample i drawn from a generator seeded with seeds[i]."""
    g = torch.Generator()
    return torch.stack([torch.randn(tuple(shape), generator=g.manual_seed(int(s)), dtype=dtype) for s in seeds])


# ============================================================================ trajectory bank
def _data_shape_of(model) -> tuple[int, ...] | None:
    net = getattr(model, "net", None)
    if isinstance(net, UNet):
        return (net.in_channels, net.image_size, net.image_size)
    if isinstance(net, MLP):
        return (net.dim,)
    return None


def _shard_name(k: int, fmt: str) -> str:
    return f"shard-{k:05d}.{fmt}"


def _save_shard(path: Path, arrays: dict[str, torch.Tensor]) -> None:
    """Write atomically: a killed run leaves whole shards or none."""
    if path.suffix == ".npz":
        atomic_write(path, lambda f: np.savez(f, **{k: v.numpy() for k, v in arrays.items()}))
    else:
        atomic_write(path, lambda f: torch.save(arrays, f))


def _load_shard(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".npz":
            with np.load(path) as z:
                return {k: torch.from_numpy(z[k]) for k in z.files}
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch, numpy and zipfile raise their own types on truncated files
        raise DataError(f"{path}: unreadable trajectory shard ({type(e).__name__}); delete it and rerun dsno-data") from None


def _shard_ok(path: Path, count: int) -> bool:
    if not path.is_file():
        return False
    try:
        s = _load_shard(path)
    except DataError:
        return False
    return all(k in s for k in ("x_T", "trajectory", "seeds")) and s["x_T"].shape[0] == count


def _read_meta(out_dir: Path) -> dict | None:
    return read_json(out_dir / META, "expected a DSNO trajectory bank's meta.json")




# settings a resumed bank must share with the one on disk (n may grow: more shards are added)
_BANK_KEYS = ("times", "sampler", "steps", "shard_size", "seed", "shape", "file_format", "dtype", "clip_denoised")


def generate_trajectories(model, out_dir: str | os.PathLike, n: int, M: int, spacing: str = "quadratic",
                          sampler: str = "pf_heun", steps: int = 64, shard_size: int = 1000, seed: int = 0, *,
                          shape: Sequence[int] | None = None, batch_size: int | None = None, fmt: str = "pt",
                          dtype=torch.float32, device="cpu", clip_denoised: bool = False, teacher: dict | None = None,
                          progress: bool = True) -> Path:
    """Record teacher ODE trajectories at M times, in resumable shards; returns ``out_dir``.

    Sample i starts from x_T = randn(shape) drawn from its own seed (:func:`noise_seeds`), and is solved
    by ``sampler`` ('pf_heun', 'ddim' (η = 0) or 'pf_euler') on a grid of about ``steps`` intervals that
    refines the M recorded times (:func:`refine_grid`), so the times are hit exactly; the recorded
    trajectory always includes t = 1 (x_T itself) and t = 0 (the sample). ``clip_denoised`` (DDIM only)
    clips x̂0 to [-1, 1] at every step, as image samplers do; the map x_T -> trajectory stays deterministic.

    Files: ``meta.json`` (the settings, written first) and ``shard-KKKKK.pt`` (or ``.npz``) holding
    ``x_T`` (k, *shape), ``trajectory`` (k, M, *shape), ``seeds`` (k,) int64 and ``start``. A rerun with the
    same settings skips every complete shard (resume after a kill; a larger ``n`` adds shards); different
    settings are refused with one line. ``teacher`` is any JSON-able description stored in meta.json.
    """
    if sampler not in ODE_SAMPLERS:
        raise ConfigError(f"sampler = {sampler!r}; DSNO learns a deterministic ODE map, expected one of "
                          f"{', '.join(ODE_SAMPLERS)}")
    if clip_denoised and sampler != "ddim":
        raise ConfigError(f"clip_denoised is a DDIM option; sampler = {sampler!r} has none")
    if fmt not in ("pt", "npz"):
        raise ConfigError(f"fmt = {fmt!r}; expected 'pt' or 'npz'")
    if n < 1 or shard_size < 1 or steps < 1:
        raise ConfigError(f"n = {n}, shard_size = {shard_size}, steps = {steps}; expected positive integers")
    shape = tuple(int(s) for s in (shape or _data_shape_of(model) or ()))
    if not shape:
        raise ConfigError("cannot tell the data shape of this model; pass shape=(D,) or (C, H, W)")
    times = trajectory_times(M, spacing)
    grid, idx = refine_grid(times, steps)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"format": TRAJ_FORMAT, "version": TRAJ_VERSION, "n": int(n), "M": int(M), "spacing": spacing,
            "times": times.tolist(), "sampler": sampler, "steps": len(grid) - 1, "shard_size": int(shard_size),
            "seed": int(seed), "shape": list(shape), "file_format": fmt, "dtype": str(dtype).replace("torch.", ""),
            "clip_denoised": bool(clip_denoised), "num_shards": math.ceil(n / shard_size), "teacher": teacher or {}}
    old = _read_meta(out_dir)
    if old is not None:
        diff = [k for k in _BANK_KEYS if old.get(k, False if k == "clip_denoised" else None) != meta[k]]
        if diff:
            raise DataError(f"{out_dir} holds trajectories with {diff[0]} = {old.get(diff[0])!r}, not "
                            f"{meta[diff[0]]!r}; use a new --out dir or the same settings to resume")
    write_json(out_dir / META, meta)

    batch = batch_size or shard_size
    solve = SAMPLERS[sampler]
    opts = {"clip_denoised": True} if clip_denoised else {}
    shards = range(meta["num_shards"])
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=n, desc="dsno-data", unit="traj", dynamic_ncols=True)
    t0 = time.perf_counter()
    for k in shards:
        start, count = k * shard_size, min(shard_size, n - k * shard_size)
        path = out_dir / _shard_name(k, fmt)
        if _shard_ok(path, count):
            if bar is not None:
                bar.update(count)
            continue
        seeds = noise_seeds(seed, start, count)
        x_T = noise_from_seeds(seeds, shape, dtype)
        trajs = []
        for lo in range(0, count, batch):
            xb = x_T[lo:lo + batch].to(device)
            r = solve(model, xb, grid, return_trajectory=True, **opts)
            trajs.append(r.trajectory[idx].transpose(0, 1).to("cpu", dtype))  # (b, M, *shape)
        _save_shard(path, {"x_T": x_T, "trajectory": torch.cat(trajs), "seeds": seeds,
                           "start": torch.tensor(start, dtype=torch.int64)})
        if bar is not None:
            bar.update(count)
            bar.set_postfix(shard=f"{k + 1}/{meta['num_shards']}", nfe=r.nfe, s=f"{time.perf_counter() - t0:.0f}")
    if bar is not None:
        bar.close()
    return out_dir


class TrajectoryDataset:
    """A trajectory bank in memory: ``ds[i] = (x_T (...), trajectory (M, ...))``.

    Attributes:
        x: (N, *shape) float32 initial noise x_T (the operator's input).
        y: (N, M, *shape) float32 teacher trajectories at ``times`` (the target: difflab's Trainer passes
            ``y`` through to the objective untouched, so a supervised target sits where labels would).
        times: (M,) float64, decreasing from 1 to 0.
        seeds: (N,) int64 per-sample noise seeds (:func:`noise_from_seeds` regenerates x_T).
        meta: the bank's meta.json.

    ``limit`` keeps the first ``limit`` samples; ``indices`` (a slice or index tensor) selects a subset.
    """

    def __init__(self, out_dir: str | os.PathLike, limit: int | None = None):
        out_dir = Path(out_dir)
        meta = _read_meta(out_dir)
        if meta is None or meta.get("format") != TRAJ_FORMAT:
            raise DataError(f"{out_dir}: no DSNO trajectory bank ({META} missing or of another format); "
                            "create one with `difflab dsno-data`")
        n = meta["n"] if limit is None else min(meta["n"], int(limit))
        parts = []
        for k in range(math.ceil(n / meta["shard_size"])):
            path = out_dir / _shard_name(k, meta["file_format"])
            if not path.is_file():
                raise DataError(f"{path}: missing ({k} of {meta['num_shards']} shards present); "
                                "rerun the same dsno-data command to finish the bank")
            parts.append(_load_shard(path))
        self.x = torch.cat([p["x_T"] for p in parts])[:n].float()
        self.y = torch.cat([p["trajectory"] for p in parts])[:n].float()
        self.seeds = torch.cat([p["seeds"] for p in parts])[:n]
        self.times = torch.tensor(meta["times"], dtype=F64)
        self.meta, self.name = meta, f"dsno:{out_dir}"
        if self.y.shape[1] != len(self.times) or tuple(self.x.shape[1:]) != tuple(meta["shape"]):
            raise DataError(f"{out_dir}: shards hold trajectories of shape {tuple(self.y.shape[1:])}; "
                            f"meta.json says M = {len(self.times)} and shape {meta['shape']}")

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i):
        return self.x[i], self.y[i]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def subset(self, indices) -> "TrajectoryDataset":
        """A shallow copy holding only ``indices`` (e.g. a held-out split)."""
        out = copy.copy(self)
        out.x, out.y, out.seeds = self.x[indices], self.y[indices], self.seeds[indices]
        return out


# ============================================================================ spectrum
def trajectory_spectrum(traj: torch.Tensor) -> torch.Tensor:
    """Power spectrum over the M time points of trajectories (N, M, ...): (M//2 + 1,) fractions of the
    total energy per Fourier mode, averaged over samples and coordinates.

    Energies follow Parseval for a real signal: the DC mode (and the Nyquist mode for even M) count
    once, every other one-sided mode twice (it stands for ±j). The fractions sum to 1.
    """
    X = torch.fft.rfft(traj.to(F64), dim=1)
    power = (X.abs() ** 2).transpose(0, 1).reshape(X.shape[1], -1).mean(1)
    M = traj.shape[1]
    mult = torch.full_like(power, 2.0)
    mult[0] = 1.0
    if M % 2 == 0:
        mult[-1] = 1.0
    e = power * mult
    return e / e.sum()


def mode_energy_fraction(traj: torch.Tensor, modes: int) -> float:
    """Fraction of the trajectories' energy in the first ``modes`` Fourier modes (what J modes keep)."""
    return float(trajectory_spectrum(traj)[:modes].sum())


# ============================================================================ the model
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
    from difflab.process.schedules import VPLinear

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


# ============================================================================ objective
def loss_weights(schedule, times, max_weight: float = DEFAULT_MAX_WEIGHT) -> torch.Tensor:
    """λ(t_m) = α_m / σ_m clamped to ``max_weight`` (σ = 0 at t = 0), (M,) float64, normalised to sum 1."""
    t = torch.as_tensor(times, dtype=F64)
    lam = (schedule.alpha(t) / schedule.sigma(t).clamp_min(1e-12)).clamp(max=max_weight)
    return lam / lam.sum()


class DSNOObjective(Objective):
    """Weighted trajectory loss of a DSNO module on a trajectory bank (trainer protocol, kind "dsno").

    x: (B, ...) x_T; y: (B, M, ...) the teacher trajectory. loss (B,) = Σ_m w_m e_m with e_m the mean
    absolute ("l1") or squared ("l2") error over the coordinates of time m and w = :func:`loss_weights`.
    No randomness: ``draw`` returns nothing. Logs the per-time-averaged error and the final sample's.
    """

    kind = KIND

    def __init__(self, schedule, times, loss: str = "l1", max_weight: float = DEFAULT_MAX_WEIGHT):
        if loss not in LOSSES:
            raise ConfigError(f"loss = {loss!r}; expected one of {', '.join(LOSSES)}")
        self.loss_type = loss
        self.weights = loss_weights(schedule, times, max_weight)

    def loss(self, module, x, y, draws):
        pred = module(x)
        if pred.shape != y.shape:
            raise DataError(f"DSNO outputs {tuple(pred.shape)} but the trajectories are {tuple(y.shape)}")
        d = (pred.float() - y.float()).flatten(2)
        err = d.abs().mean(2) if self.loss_type == "l1" else d.pow(2).mean(2)  # (B, M)
        loss = (err * self.weights.to(err)).sum(1)
        return loss, {"err_mean": err.detach().mean(), "err_final": err.detach()[:, -1].mean()}


# ============================================================================ sampling and errors
@torch.no_grad()
def dsno_sample(dsno: DSNO, x_T: torch.Tensor, return_trajectory: bool = False, y=None) -> SampleResult:
    """One network evaluation from x_T (B, ...): ``r.x`` the sample (the decoded point at t = 0), and with
    ``return_trajectory`` the whole decoded trajectory ``r.trajectory`` (M, B, ...) at ``r.times``."""
    traj = dsno(x_T, y)
    return SampleResult(x=traj[:, -1], nfe=1, times=dsno.times.to(F64).cpu(),
                        trajectory=traj.transpose(0, 1) if return_trajectory else None)


def trajectory_error(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Root-mean-square error per time, (M,) float64, of trajectories (N, M, ...) against (N, M, ...)."""
    if pred.shape != ref.shape:
        raise DataError(f"trajectory_error: shapes differ, {tuple(pred.shape)} vs {tuple(ref.shape)}")
    d = (pred.to(F64) - ref.to(F64)).transpose(0, 1).reshape(pred.shape[1], -1)
    return d.pow(2).mean(1).sqrt()


# ============================================================================ training
def _toml_safe(d: dict) -> dict:
    """Drop None values (TOML has no null) recursively."""
    return {k: (_toml_safe(v) if isinstance(v, dict) else v) for k, v in d.items() if v is not None}


def fit_dsno(dsno: DSNO, data: TrajectoryDataset, run_dir: str | os.PathLike, tcfg, *, schedule, loss: str = "l1",
             max_weight: float = DEFAULT_MAX_WEIGHT, config: dict | None = None, extra: dict | None = None,
             resume: bool = False, progress: bool = True, tensorboard: bool = True) -> tuple[DSNO, dict]:
    """Train ``dsno`` on the bank with difflab's Trainer (AdamW, warm-up, EMA, checkpoints of kind "dsno").

    Returns (the EMA module in eval mode, the trainer's result dict plus ``param_overhead``).
    """
    from difflab.train.loop import Trainer

    if not torch.allclose(dsno.times.to(F64), data.times, atol=1e-6):
        raise DataError(f"the bank's times {data.times.tolist()} differ from the DSNO's {dsno.times.tolist()}")
    objective = DSNOObjective(schedule, data.times, loss, max_weight)
    overhead = parameter_overhead(dsno)
    cfg = {"dsno": dsno.config, "objective": {"loss": loss, "max_weight": float(max_weight)},
           "train": dataclasses.asdict(tcfg), **(config or {})}
    trainer = Trainer(dsno, objective, data, tcfg, run_dir, _toml_safe(cfg), kind=KIND, progress=progress,
                      resume=resume, tensorboard=tensorboard,
                      extra={"data_shape": list(data.shape), "param_overhead": overhead, **(extra or {})})
    res = trainer.fit()
    return trainer.ema.ema_model(), {**res, "param_overhead": overhead}


def train_dsno(teacher_ckpt: str | os.PathLike, data_dir: str | os.PathLike, run_dir: str | os.PathLike, *,
               steps: int = 2000, batch_size: int = 128, lr: float = 2e-4, modes: int = 3, readout: str = "x0",
               loss: str = "l1", max_weight: float = DEFAULT_MAX_WEIGHT, overrides: Sequence[str] = (),
               resume: bool = False, progress: bool = True) -> dict:
    """`difflab dsno-train`: a DSNO initialised from the teacher checkpoint, trained on the bank in
    ``data_dir``; ``overrides`` are ``train.key=value`` settings of the [train] section. Writes
    ``run_dir/checkpoints/`` and ``run_dir/dsno.json`` (parameter overhead, final loss)."""
    from difflab.config import Config, TrainConfig, apply_overrides
    from difflab.train.api import load_model

    teacher, tcfg_full, ckpt = load_model(teacher_ckpt)
    data = TrajectoryDataset(data_dir)
    shape = tuple((ckpt.state.get("extra") or {}).get("data_shape") or _data_shape_of(teacher) or ())
    if shape and tuple(data.shape) != shape:
        raise DataError(f"the bank in {data_dir} holds samples of shape {data.shape}; the teacher's data are {shape}")
    bad = [o for o in overrides if not o.startswith("train.")]
    if bad:
        raise ConfigError(f"--set {bad[0]}: dsno-train takes only train.* settings (the teacher fixes the rest)")
    base = Config(train=TrainConfig(steps=steps, batch_size=batch_size, lr=lr, ckpt_every=max(steps // 4, 1)))
    tcfg = apply_overrides(base, overrides).train
    dsno = dsno_from_teacher(teacher, data.times, modes=modes, readout=readout)
    run_dir = Path(run_dir)
    _, res = fit_dsno(dsno, data, run_dir, tcfg, schedule=teacher.schedule, loss=loss, max_weight=max_weight,
                      config={"teacher": tcfg_full.to_dict(), "teacher_checkpoint": str(ckpt.path),
                              "bank": str(data_dir)}, resume=resume, progress=progress)
    write_json(run_dir / "dsno.json", {**res, "bank": str(data_dir), "teacher_checkpoint": str(ckpt.path)})
    return res


def load_dsno(path: str | os.PathLike, use_ema: bool = True,
              map_location="cpu") -> tuple[DSNO, dict, Any]:
    """Rebuild a trained DSNO from a checkpoint (run dir, checkpoint dir or .safetensors) of kind "dsno"."""
    from difflab.train.checkpoint import check_state_dict_compatible, load_checkpoint

    ckpt = load_checkpoint(path, expect_kind=KIND)
    if "dsno" not in ckpt.config:
        raise CheckpointError(f"checkpoint {ckpt.path} has no [dsno] config; expected one written by dsno-train")
    dsno = build_dsno_from_config(ckpt.config["dsno"])
    state = ckpt.ema_state if use_ema and ckpt.ema_state is not None else ckpt.model_state
    check_state_dict_compatible(dsno, state, f"checkpoint {ckpt.path}")
    dsno.load_state_dict(state)
    return dsno.to(map_location).eval(), ckpt.config, ckpt


# ============================================================================ CLI
EXAMPLES = {
    "dsno-data": """examples:
  difflab dsno-data runs/toy --out runs/toy-bank --n 20000 --M 8
  difflab dsno-data runs/digits --out runs/digits-bank --n 5000 --M 6 --sampler ddim --clip --steps 50
  (rerun the same command after an interruption: finished shards are kept)""",
    "dsno-train": """examples:
  difflab dsno-train runs/toy --data runs/toy-bank --out runs/toy-dsno --steps 3000
  difflab dsno-train runs/digits --data runs/digits-bank --out runs/digits-dsno --modes 3 --set train.lr=1e-4""",
    "dsno-sample": """examples:
  difflab dsno-sample runs/toy-dsno --n 2000 --out toy-dsno.png
  difflab dsno-sample runs/digits-dsno --n 64 --out digits.png --trajectory""",
}


def register(sub) -> dict:
    """Add dsno-data, dsno-train and dsno-sample to the difflab CLI."""
    import argparse

    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("dsno-data", help="record teacher ODE trajectories for DSNO (sharded, resumable)",
                       epilog=EXAMPLES["dsno-data"], formatter_class=fmt)
    p.add_argument("checkpoint", help="the diffusion (teacher) checkpoint: run dir, checkpoint dir or .safetensors")
    p.add_argument("--out", required=True, help="bank directory (meta.json + shard files)")
    p.add_argument("--n", type=int, required=True, help="number of trajectories")
    p.add_argument("--M", type=int, required=True, help="recorded times per trajectory, t = 1 and t = 0 included")
    p.add_argument("--spacing", default="quadratic", choices=SPACINGS)
    p.add_argument("--sampler", default="pf_heun", choices=ODE_SAMPLERS)
    p.add_argument("--steps", type=int, default=64, help="solver steps (the grid refines the M times)")
    p.add_argument("--clip", action="store_true", help="DDIM: clip x̂0 to [-1, 1] at every step (images)")
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--batch", type=int, default=None, help="trajectories per solver batch (default: a shard)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", default="pt", choices=("pt", "npz"))
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("dsno-train", help="train a DSNO operator on a trajectory bank", epilog=EXAMPLES["dsno-train"],
                       formatter_class=fmt)
    p.add_argument("checkpoint", help="the teacher checkpoint the bank was made with (initialises the backbone)")
    p.add_argument("--data", required=True, help="the bank directory from dsno-data")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--modes", type=int, default=3, help="Fourier modes J kept by every temporal block")
    p.add_argument("--readout", default="x0", choices=READOUTS)
    p.add_argument("--loss", default="l1", choices=LOSSES)
    p.add_argument("--max-weight", type=float, default=DEFAULT_MAX_WEIGHT, help="clamp of λ(t) = α_t/σ_t")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="train.KEY=VALUE")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("dsno-sample", help="one-step samples (and the decoded trajectory) from a DSNO",
                       epilog=EXAMPLES["dsno-sample"], formatter_class=fmt)
    p.add_argument("checkpoint", help="a dsno-train run dir or checkpoint")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="noise seed (sample i = the bank's sample i for that seed)")
    p.add_argument("--out", required=True, help="FILE.png (grid or scatter) or FILE.npz")
    p.add_argument("--trajectory", action="store_true", help="also write FILE-trajectory.png, the decoded trajectory")
    p.add_argument("--no-ema", action="store_true")
    return {"dsno-data": cmd_dsno_data, "dsno-train": cmd_dsno_train, "dsno-sample": cmd_dsno_sample}


def cmd_dsno_data(args) -> int:
    from difflab.train.api import load_model

    device = auto_device(args.device)
    model, cfg, ckpt = load_model(args.checkpoint, map_location=device)
    shape = (ckpt.state.get("extra") or {}).get("data_shape") or _data_shape_of(model)
    out = generate_trajectories(model, args.out, args.n, args.M, args.spacing, args.sampler, args.steps,
                                args.shard_size, args.seed, shape=shape, batch_size=args.batch, fmt=args.format,
                                device=device, clip_denoised=args.clip, teacher={"checkpoint": str(ckpt.path), "step": ckpt.step},
                                progress=not args.no_progress)
    meta = _read_meta(out)
    print(f"{meta['n']} trajectories x {meta['M']} times ({meta['sampler']}, {meta['steps']} steps) in "
          f"{meta['num_shards']} shards -> {out}")
    return 0


def cmd_dsno_train(args) -> int:
    res = train_dsno(args.checkpoint, args.data, args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                     modes=args.modes, readout=args.readout, loss=args.loss, max_weight=args.max_weight,
                     overrides=args.overrides, resume=args.resume, progress=not args.no_progress)
    o = res["param_overhead"]
    print(f"trained to step {res['final_step']} (loss {res['last_loss']:.4f}); temporal blocks add "
          f"{o['temporal_params']:,} parameters to {o['backbone_params']:,} ({o['overhead_pct']:.1f}%); "
          f"checkpoint {res['checkpoint']}")
    return 0


def cmd_dsno_sample(args) -> int:
    from difflab import viz
    from difflab.cli import save_samples

    dsno, config, ckpt = load_dsno(args.checkpoint, use_ema=not args.no_ema)
    shape = (ckpt.state.get("extra") or {}).get("data_shape")
    if not shape:
        raise CheckpointError(f"checkpoint {ckpt.path} records no data shape; expected one written by dsno-train")
    x_T = noise_from_seeds(noise_seeds(args.seed, 0, args.n), shape)
    r = dsno_sample(dsno, x_T, return_trajectory=args.trajectory)
    written = save_samples(r.x, Path(args.out))
    if r.trajectory is not None:
        strip = Path(args.out).with_suffix("").as_posix() + "-trajectory.png"
        if r.trajectory.dim() == 5:
            written.append(viz.save_trajectory_strip(r.trajectory[:, :16], strip, num_frames=r.trajectory.shape[0],
                                                     scale=viz.auto_scale(r.trajectory.shape[-1])))
        else:
            panels = {f"t = {float(t):.3f}": r.trajectory[m, :, :2] for m, t in enumerate(r.times)}
            written.append(viz.save_scatter(panels, strip))
    print(f"{args.n} samples, DSNO, 1 network evaluation -> {', '.join(map(str, written))}")
    return 0


# ============================================================================ quickstart section
# Budgets of the quickstart section (≲ 90 s on 2 CPU cores with the demo's default teachers).
DEMO_TOY = dict(n=2048, M=6, steps=30, modes=3, train_steps=600, batch=128, lr=2e-3)
DEMO_DIGITS = dict(n=512, M=4, steps=16, modes=3, train_steps=200, batch=16, lr=5e-4)


def demo_section(out: Path, toy_model, toy_cfg, digits_model, digits_cfg, progress: bool) -> list[str]:
    """The quickstart's DSNO section (Markdown lines; PNGs into ``out``): distil the toy and digits
    teachers into one-step operators with a small budget (``DEMO_TOY``, ``DEMO_DIGITS``) and compare them
    with the teachers on held-out noises."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return _demo_lines(out, toy_model, toy_cfg, digits_model, digits_cfg, progress)


def _demo_lines(out: Path, toy_model, toy_cfg, digits_model, digits_cfg, progress: bool) -> list[str]:
    import tempfile

    from difflab import viz
    from difflab.config import TrainConfig
    from difflab.data import toy_mixture
    from difflab.metrics.toy import toy_metrics
    from difflab.samplers import ddim, time_grid

    t_start = time.perf_counter()
    lines = ["## DSNO: one network evaluation for the whole ODE trajectory", ""]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # ---- toy: PF-Heun teacher, MLP operator with one temporal block (after the last hidden layer)
        c = DEMO_TOY
        kw = dict(M=c["M"], spacing="quadratic", steps=c["steps"], progress=False)
        generate_trajectories(toy_model, tmp / "toy-bank", n=c["n"], shard_size=c["n"], seed=0, **kw)
        generate_trajectories(toy_model, tmp / "toy-test", n=2000, shard_size=2000, seed=1, **kw)  # held out
        bank, ref = TrajectoryDataset(tmp / "toy-bank"), TrajectoryDataset(tmp / "toy-test")
        last = len(toy_model.net.hidden_layers)
        dsno = dsno_from_teacher(toy_model, bank.times, modes=c["modes"], temporal_layers=[last])
        tcfg = TrainConfig(steps=c["train_steps"], batch_size=c["batch"], lr=c["lr"], warmup_steps=50, ema_rate=0.99,
                           ckpt_every=0, log_every=100, lr_schedule="cosine", device="cpu")
        ema, res = fit_dsno(dsno, bank, tmp / "toy-run", tcfg, schedule=toy_model.schedule, progress=progress,
                            tensorboard=False)
        mix = toy_mixture(toy_cfg.data.name)
        r = dsno_sample(ema, ref.x, return_trajectory=True)
        err = trajectory_error(r.trajectory.transpose(0, 1), ref.y)
        base = trajectory_error(ref.x[:, None].expand_as(ref.y), ref.y)
        rows = [("teacher PF-Heun", 2 * ref.meta["steps"] - 1, ref.y[:, -1]), ("DSNO", 1, r.x)]
        for nfe in (1, 2, 4):
            ts = time_grid(toy_model.schedule, nfe, spacing="uniform")
            rows.append((f"DDIM {nfe} step{'s' * (nfe > 1)}", nfe, ddim(toy_model, ref.x, ts).x))
        M = c["M"]
        lines += [f"Toy ({toy_cfg.data.name}): {len(bank)} teacher trajectories (PF-Heun, {bank.meta['steps']} steps) "
                  f"at M = {M} quadratic times; MLP operator initialised from the teacher with one temporal block "
                  f"(J = {c['modes']}, +{res['param_overhead']['overhead_pct']:.0f}% parameters on this MLP), "
                  f"{res['final_step']} training steps.", "",
                  "RMS error against the teacher's trajectory from the same x_T (2000 held-out noises), per time:", "",
                  "| t | " + " | ".join(f"{float(t):.3f}" for t in bank.times) + " |",
                  "|---|" + "---:|" * M,
                  "| DSNO (1 NFE) | " + " | ".join(f"{float(e):.3f}" for e in err) + " |",
                  "| x_T (trivial) | " + " | ".join(f"{float(e):.3f}" for e in base) + " |", "",
                  "| sampler | NFE | mean log-density | sliced W2 | modes covered |", "|---|---:|---:|---:|---:|"]
        panels = {}
        for name, nfe, xs in rows:
            m = toy_metrics(xs.double(), mix, seed=1)
            lines.append(f"| {name} | {nfe} | {m['mean_log_density']:.3f} | {m['sliced_w2']:.3f} | {m['coverage']:.2f} |")
            if name != "DDIM 2 steps":
                panels[f"{name} (NFE {nfe})"] = xs
        viz.save_scatter(panels, out / "dsno_toy.png", reference=mix.sample(2000, torch.Generator().manual_seed(2)),
                         lim=2.2)  # fixed limits: one DDIM step scatters far off the ring
        lines += ["", "![DSNO toy](dsno_toy.png)", ""]

        # ---- digits: DDIM teacher (x̂0 clipped, as image samplers do), U-Net operator from the teacher
        c = DEMO_DIGITS
        kw = dict(M=c["M"], spacing="quadratic", sampler="ddim", steps=c["steps"], clip_denoised=True, progress=False)
        generate_trajectories(digits_model, tmp / "dig-bank", n=c["n"], shard_size=c["n"], seed=0, **kw)
        generate_trajectories(digits_model, tmp / "dig-test", n=8, shard_size=8, seed=1, **kw)
        bank, test = TrajectoryDataset(tmp / "dig-bank"), TrajectoryDataset(tmp / "dig-test")
        dsno = dsno_from_teacher(digits_model, bank.times, modes=c["modes"])
        tcfg = TrainConfig(steps=c["train_steps"], batch_size=c["batch"], lr=c["lr"], warmup_steps=20, ema_rate=0.95,
                           ckpt_every=0, log_every=50, device="cpu")
        ema, res = fit_dsno(dsno, bank, tmp / "dig-run", tcfg, schedule=digits_model.schedule, progress=progress,
                            tensorboard=False)
        r = dsno_sample(ema, test.x, return_trajectory=True)
        M = c["M"]
        viz.save_trajectory_strip(test.y.transpose(0, 1), out / "dsno_digits_teacher.png", num_frames=M, scale=4)
        viz.save_trajectory_strip(r.trajectory.clamp(-1, 1), out / "dsno_digits_dsno.png", num_frames=M, scale=4)
        err = trajectory_error(r.trajectory.transpose(0, 1), test.y)
        x0 = ddim(digits_model, test.x, time_grid(digits_model.schedule, 1, spacing="uniform"), clip_denoised=True).x
        lines += [f"Digits: {len(bank)} DDIM trajectories ({bank.meta['steps']} steps) at M = {M} times; U-Net operator "
                  f"initialised from the teacher (temporal blocks +{res['param_overhead']['overhead_pct']:.1f}% "
                  f"parameters), {res['final_step']} steps only: a smoke run, not a converged model. RMS error of the "
                  f"one-step sample against the teacher's on held-out noises: {float(err[-1]):.3f} "
                  f"(one clipped DDIM step: {float((x0 - test.y[:, -1]).pow(2).mean().sqrt()):.3f}).", "",
                  "Teacher trajectories (rows: samples, columns: t = 1 → 0):", "", "![teacher](dsno_digits_teacher.png)",
                  "", "DSNO, all columns decoded in one evaluation:", "", "![dsno](dsno_digits_dsno.png)", "",
                  f"(DSNO section: {time.perf_counter() - t_start:.0f} s.)", ""]
    return lines
