"""The teacher-trajectory bank DSNO trains on: (x_T, x(t_1..t_M)) pairs from a deterministic ODE solver,
written as a shared :mod:`difflab.io.bank` (resumable, verified ``.npz`` shards), and its in-memory view.

Files under ``out_dir``: ``bank.json`` (the settings below and n), ``shard-KKKKK.npz`` holding ``x_T``
(k, *shape), ``trajectory`` (k, M, *shape) and ``seeds`` (k,) int64, and ``teacher.json`` (the caller's
description of the teacher, for the record: it is not a setting, a resumed bank may name its teacher anew).
"""
from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Sequence

import torch

from difflab.errors import ConfigError, DataError
from difflab.io import read_json, write_json
from difflab.io.bank import MANIFEST, load_bank, sample_seeds, write_bank
from difflab.samplers.noise import PerSampleNoise
from difflab.samplers import SAMPLERS, refine_grid

from .model import teacher_data_shape
from .times import trajectory_times

from difflab.process.schedules import F64
BANK_KIND = "difflab-dsno-trajectories"
TEACHER = "teacher.json"
# deterministic: DSNO learns the map x_T -> trajectory; the multistep solvers are the few-step teachers (#16)
ODE_SAMPLERS = ("pf_heun", "ddim", "pf_euler", "dpmpp_2m", "dpmpp_3m", "unipc")
DTYPES = {"float16": torch.float16, "float32": torch.float32, "float64": torch.float64}  # what .npz can hold
_HINT = "rerun the same dsno-data command to finish the bank"

__all__ = ["ODE_SAMPLERS", "TrajectoryDataset", "bank_meta", "generate_trajectories", "noise_from_seeds",
           "noise_seeds"]

# (n,) int64 seeds of samples start .. start+n-1: each sample's noise has its own 63-bit seed, derived from
# (seed, index) with NumPy's SeedSequence, so any one x_T can be regenerated alone (the shared bank's rule).
noise_seeds = sample_seeds


def noise_from_seeds(seeds: torch.Tensor, shape: Sequence[int], dtype=torch.float32) -> torch.Tensor:
    """x_T (n, *shape): standard normal noise, sample i drawn from a generator seeded with seeds[i]."""
    return PerSampleNoise(seeds).randn((len(seeds), *shape), dtype)


def generate_trajectories(model, out_dir: str | os.PathLike, n: int, M: int, spacing: str = "quadratic",
                          sampler: str = "pf_heun", steps: int = 64, shard_size: int = 1000, seed: int = 0, *,
                          shape: Sequence[int] | None = None, batch_size: int | None = None,
                          dtype=torch.float32, device="cpu", clip_denoised: bool = False, refine: str = "t",
                          teacher: dict | None = None, progress: bool = True) -> Path:
    """Record teacher ODE trajectories at M times, in resumable shards; returns ``out_dir``.

    Sample i starts from x_T = randn(shape) drawn from its own seed (:func:`noise_seeds`), and is solved
    by ``sampler`` (one of :data:`ODE_SAMPLERS`: 'pf_heun', 'ddim' (η = 0), 'pf_euler', or the multistep
    'dpmpp_2m', 'dpmpp_3m', 'unipc') on a grid of about ``steps`` intervals that refines the M recorded
    times (:func:`refine_grid`, equal steps in t or, ``refine="logsnr"``, in log-SNR), so the times are hit
    exactly; the recorded trajectory always includes t = 1 (x_T itself) and t = 0 (the sample).
    ``clip_denoised`` clips x̂0 to [-1, 1] at every step, as image samplers do (not PF-Euler/Heun, which
    step on ε); the map x_T -> trajectory stays deterministic.

    A rerun with the same settings skips every shard that verifies (resume after a kill; a larger ``n`` adds
    shards); different settings are refused with one line. ``teacher`` is any JSON-able description, stored
    in ``teacher.json``. ``dtype`` is float16, float32 or float64 (what an ``.npz`` shard holds).
    """
    if sampler not in ODE_SAMPLERS:
        raise ConfigError(f"sampler = {sampler!r}; DSNO learns a deterministic ODE map, expected one of "
                          f"{', '.join(ODE_SAMPLERS)}")
    if clip_denoised and sampler in ("pf_heun", "pf_euler"):
        raise ConfigError(f"clip_denoised clips x̂0; sampler = {sampler!r} steps on ε and has no such option")
    if n < 1 or shard_size < 1 or steps < 1:
        raise ConfigError(f"n = {n}, shard_size = {shard_size}, steps = {steps}; expected positive integers")
    dtype_name = str(dtype).replace("torch.", "")
    if dtype_name not in DTYPES:
        raise ConfigError(f"dtype = {dtype_name}; a trajectory bank holds one of {', '.join(DTYPES)}")
    shape = tuple(int(s) for s in (shape or teacher_data_shape(model) or ()))
    if not shape:
        raise ConfigError("cannot tell the data shape of this model; pass shape=(D,) or (C, H, W)")
    times = trajectory_times(M, spacing)
    grid, idx = refine_grid(times, steps, refine, model.schedule)
    settings = {"bank": BANK_KIND, "M": int(M), "spacing": spacing, "times": times.tolist(), "sampler": sampler,
                "steps": len(grid) - 1, "seed": int(seed), "shape": list(shape), "dtype": dtype_name,
                "clip_denoised": bool(clip_denoised)}
    if refine != "t":  # a bank written before `refine` existed resumes under the same settings
        settings["refine"] = refine
    batch = batch_size or shard_size
    solve = SAMPLERS[sampler]
    opts = {"clip_denoised": True} if clip_denoised else {}

    def draw(k: int, start: int, count: int) -> dict[str, torch.Tensor]:
        seeds = noise_seeds(seed, start, count)
        x_T = noise_from_seeds(seeds, shape, dtype)
        trajs = []
        for lo in range(0, count, batch):
            r = solve(model, x_T[lo:lo + batch].to(device), grid, return_trajectory=True, **opts)
            trajs.append(r.trajectory[idx].transpose(0, 1).to("cpu", dtype))  # (b, M, *shape)
        return {"x_T": x_T, "trajectory": torch.cat(trajs), "seeds": seeds}

    out_dir = Path(out_dir)
    write_bank(out_dir, n, draw, settings=settings, shard_size=shard_size, progress=progress, desc="dsno-data")
    write_json(out_dir / TEACHER, teacher or {})
    return out_dir


def bank_meta(out_dir: str | os.PathLike) -> dict:
    """The settings of the trajectory bank in ``out_dir`` with ``n``, ``num_shards`` and ``teacher``, without
    loading its shards; a one-line DataError when the directory holds no DSNO trajectory bank."""
    out_dir = Path(out_dir)
    manifest = read_json(out_dir / MANIFEST, _HINT) if out_dir.is_dir() else None
    settings = (manifest or {}).get("settings") or {}
    if settings.get("bank") != BANK_KIND:
        raise DataError(f"{out_dir}: no DSNO trajectory bank ({MANIFEST} missing or of another kind); "
                        "create one with `difflab dsno-data`")
    n = int(manifest["n"])
    return {**settings, "n": n, "num_shards": math.ceil(n / settings["shard_size"]),
            "teacher": read_json(out_dir / TEACHER, _HINT) or {}}


def teacher_grid(meta: dict, schedule) -> torch.Tensor:
    """The teacher's solver grid exactly as the bank with settings ``meta`` (:func:`bank_meta`) ran it: its
    ``steps`` refining the recorded times, in t or (``refine`` recorded) in log-SNR of ``schedule``."""
    times = torch.tensor(meta["times"], dtype=torch.float64)
    return refine_grid(times, int(meta["steps"]), meta.get("refine", "t"), schedule)[0]


class TrajectoryDataset:
    """A trajectory bank in memory: ``ds[i] = (x_T (...), trajectory (M, ...))``.

    Attributes:
        x: (N, *shape) float32 initial noise x_T (the operator's input).
        y: (N, M, *shape) float32 teacher trajectories at ``times`` (the target: difflab's Trainer passes
            ``y`` through to the objective untouched, so a supervised target sits where labels would).
        times: (M,) float64, decreasing from 1 to 0.
        seeds: (N,) int64 per-sample noise seeds (:func:`noise_from_seeds` regenerates x_T).
        meta: the bank's settings with ``n``, ``num_shards`` and ``teacher`` (:func:`bank_meta`).

    ``limit`` keeps the first ``limit`` samples; :meth:`subset` selects others.
    """

    def __init__(self, out_dir: str | os.PathLike, limit: int | None = None):
        out_dir = Path(out_dir)
        meta = bank_meta(out_dir)
        bank = load_bank(out_dir, limit, what="DSNO trajectory bank", hint=_HINT)
        self.x = bank["x_T"].float()
        self.y = bank["trajectory"].float()
        self.seeds = bank["seeds"]
        self.times = torch.tensor(meta["times"], dtype=F64)
        self.meta, self.name = meta, f"dsno:{out_dir}"
        if self.y.shape[1] != len(self.times) or tuple(self.x.shape[1:]) != tuple(meta["shape"]):
            raise DataError(f"{out_dir}: shards hold trajectories of shape {tuple(self.y.shape[1:])}; "
                            f"{MANIFEST} says M = {len(self.times)} and shape {meta['shape']}")

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i):
        return self.x[i], self.y[i]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def subset(self, indices) -> "TrajectoryDataset":
        """A shallow copy holding only ``indices`` (a slice or index tensor, e.g. a held-out split)."""
        out = copy.copy(self)
        out.x, out.y, out.seeds = self.x[indices], self.y[indices], self.seeds[indices]
        return out
