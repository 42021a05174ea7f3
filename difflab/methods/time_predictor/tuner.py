"""A timestep tuner (after Xia et al., CVPR 2024): per step of a deterministic T-step sampler, the time the
model is shown, fitted so that the sampler's samples land where the model's converged ODE does (issue #21).

The paper trains a small plug-in that replaces the time a network is conditioned on at each step of a
fast sampler, pulling the sampling distribution towards the real one. Here the plug-in is the smallest one
that does that: a table of T times (:class:`~difflab.methods.time_predictor.shift.StepTimeMap`), fitted
on a pilot batch of prior noises against the teacher ODE's states from the same x_T::

    mapping, report = tune_step_times(model, shape, sampler="ddim", steps=10, window=0.1)
    tuned = StepTimeMap(model, mapping)            # any sampler call on the same grid

Steps are fitted one at a time, first to last (``sweeps`` passes), the others held at their current
times, by a line search over [t_k - window, t_k + window]: ``candidates`` equally spaced times, t_k and
the current time, then the vertex of the parabola through the best and its neighbours when that is
better still. The error is the mean squared distance per coordinate to the teacher (``teacher`` on the
sampler's grid cut into about ``teacher_steps`` steps uniform in log-SNR) of the final sample
(``target="final"``, the default) or of the step's own landing at t_{k+1} (``"next"``: the paper's
per-interval view; greedy, it over-corrects on the toy world, see tests/test_timestep_tuner.py). The
tuner removes discretisation error only: its target is the same model's ODE, not the data. A window of
0 is the identity map, the plain sampler bit for bit.

Shapes: the pilot (n, *shape); times float64 in [0, 1] (t = 0 data, t = 1 noise).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from difflab.errors import ConfigError, DataError
from difflab.process.schedules import F64

from .shift import StepTimeMap

TARGETS = ("final", "next")  # what each step's time is fitted to: the sample at the end, or the step's own landing
SMALLEST_TAU = 1e-4  # a candidate time is kept above this (the model is not shown t = 0)


class _Reached(Exception):
    """Raised from the sampler's callback once the state of interest is in hand."""


def _state_at(sampler_fn, model, x_T, grid, k: int, options: dict) -> torch.Tensor:
    """The sampler's state at grid[k] (k >= 1), stopping the run there."""
    got = {}

    def callback(i, t, x, x0):
        if i + 1 == k:
            got["x"] = x
            raise _Reached

    try:
        sampler_fn(model, x_T, grid, callback=callback, **options)
    except _Reached:
        pass
    return got["x"]


@torch.no_grad()
def teacher_states(model, x_T: torch.Tensor, grid: torch.Tensor, *, teacher: str = "dpmpp_2m",
                   teacher_steps: int = 200, **options) -> torch.Tensor:
    """(len(grid), n, ...): the ``teacher`` ODE solver's states at every time of ``grid`` from x_T (a grid
    refining ``grid`` into about ``teacher_steps`` steps, uniform in log-SNR within each interval)."""
    from difflab.samplers import SAMPLERS, get_spec, refine_grid

    if get_spec(teacher).stochastic:
        raise ConfigError(f"teacher = {teacher!r} draws noise; the tuner's target is a deterministic ODE solver, "
                          f"e.g. dpmpp_2m")
    fine, idx = refine_grid(grid, int(teacher_steps), "logsnr", model.schedule)
    r = SAMPLERS[teacher](model, x_T, fine, return_trajectory=True, **options)
    return r.trajectory[idx]


@torch.no_grad()
def tune_step_times(model, shape, *, sampler: str = "ddim", steps: int = 10, spacing: str = "auto",
                    window: float = 0.1, candidates: int = 5, cutoff: float = 0.0, n: int = 128,
                    seed: int = 4321, teacher: str = "dpmpp_2m", teacher_steps: int = 200, target: str = "final",
                    sweeps: int = 1, progress: bool = False, **options) -> tuple[dict, list[dict]]:
    """({nominal t_k: τ_k}, per-step report) for :class:`StepTimeMap` on ``sampler``'s ``steps``-step grid.

    ``n`` pilot noises of ``shape`` per sample are drawn from ``seed`` (keep it apart from the seeds that are
    judged); steps at nominal times at or below ``cutoff`` keep their time. Each report row (one per step
    and sweep) holds the step's nominal and chosen time and the error (mean squared, per coordinate) to
    the teacher at the target with the nominal and with the chosen time (the other steps as they stood). ``options`` go to the sampler
    and the teacher (e.g. ``clip_denoised``)."""
    from difflab.samplers import SAMPLERS, get_spec, grid_for

    spec = get_spec(sampler)
    if spec.stochastic or spec.evals_per_step is None:
        raise ConfigError(f"sampler = {sampler!r} {'draws noise' if spec.stochastic else 'picks its own steps'}; the "
                          f"tuner fits the steps of a deterministic fixed-grid sampler to the ODE (ddim, dpmpp_2m, "
                          f"dpmpp_3m, unipc, ipndm, pf_euler, ...)")
    if not 0 <= window < 1:
        raise ConfigError(f"tuner window {window}; expected a half-width in t in [0, 1), e.g. 0.1")
    if target not in TARGETS:
        raise ConfigError(f"tuner target {target!r}; expected one of {', '.join(TARGETS)}")
    if candidates < 2 or n < 1 or sweeps < 1:
        raise ConfigError(f"tuner candidates = {candidates}, n = {n}; expected at least 2 candidates, 1 sample and 1 sweep")
    grid = grid_for(sampler, model.schedule, steps, spacing=spacing)
    x_T = torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed))
    ref = teacher_states(model, x_T, grid, teacher=teacher, teacher_steps=teacher_steps, **options)
    fn = SAMPLERS[sampler]
    mapping: dict[float, float] = {}
    report = []
    rows = [k for _ in range(sweeps) for k in range(len(grid) - 1)]
    if progress:
        from tqdm.auto import tqdm

        rows = tqdm(rows, desc=f"tune {sampler}@{steps}")
    last = len(grid) - 1
    for k in rows:
        t = float(grid[k])
        if t <= 0:
            continue
        j_ref = k + 1 if target == "next" else last
        seen: dict[float, float] = {}

        def error(tau: float) -> float:
            if tau not in seen:
                x = _state_at(fn, StepTimeMap(model, {**mapping, t: tau}), x_T, grid, j_ref, options)
                seen[tau] = float(((x.to(F64) - ref[j_ref].to(F64)) ** 2).mean())
            return seen[tau]

        now = mapping.get(t, t)
        nominal = error(t)
        if window == 0 or t <= cutoff:
            report.append({"t": t, "tau": t, "err_nominal": nominal, "err_tuned": nominal})
            continue
        lo, hi = max(t - window, SMALLEST_TAU), min(t + window, 1.0)
        taus = sorted({*torch.linspace(lo, hi, candidates, dtype=F64).tolist(), t, now})
        errs = [error(tau) for tau in taus]
        i = min(range(len(taus)), key=lambda i: (errs[i], taus[i] != t))
        best = taus[i]
        if 0 < i < len(taus) - 1:  # the parabola's vertex through the best and its two neighbours
            (a, fa), (b, fb), (c, fc) = (taus[i - 1], errs[i - 1]), (taus[i], errs[i]), (taus[i + 1], errs[i + 1])
            den = (b - a) * (fb - fc) - (b - c) * (fb - fa)
            if den != 0:
                v = b - 0.5 * ((b - a) ** 2 * (fb - fc) - (b - c) ** 2 * (fb - fa)) / den
                if a < v < c and math.isfinite(v) and error(v) < error(best):
                    best = v
        if best == t:
            mapping.pop(t, None)
        else:
            mapping[t] = best
        report.append({"t": t, "tau": best, "err_nominal": nominal, "err_tuned": error(best)})
    return mapping, report


def tuner_table(report: list[dict]) -> str:
    """The per-step report as a Markdown table (nominal and tuned time, the error to the teacher with each)."""
    lines = ["| t_k | τ_k | error to the ODE, nominal | tuned |", "|---|---|---|---|"]
    for r in report:
        lines.append(f"| {r['t']:.3f} | {r['tau']:.4f} | {r['err_nominal']:.3g} | {r['err_tuned']:.3g} |")
    return "\n".join(lines)


STEP_TIMES_KIND = "difflab-step-times"


def save_step_times(path, mapping: dict, report: list[dict], **meta) -> Path:
    """Write a tuned table (and its report and settings: sampler, steps, spacing, ...) as JSON, atomically."""
    from difflab.io import write_json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"kind": STEP_TIMES_KIND, **meta, "times": [[float(t), float(tau)] for t, tau in
                                                                  sorted(mapping.items(), reverse=True)],
                      "report": report})
    return path


def load_step_times(path) -> tuple[dict, dict]:
    """({nominal t: τ}, settings) of a table written by :func:`save_step_times` (``difflab tp-tune``); a
    one-line DataError for a file that is not one."""
    from difflab.io import read_json

    if not Path(path).is_file():
        raise DataError(f"{path}: no such step-times table; write one with `difflab tp-tune MODEL --sampler S "
                        f"--steps T --out FILE.json`")
    obj = read_json(Path(path), "write one with `difflab tp-tune MODEL --sampler S --steps T --out FILE.json`")
    if obj is None or obj.get("kind") != STEP_TIMES_KIND:
        raise DataError(f"{path}: not a step-times table (expected the JSON `difflab tp-tune` writes)")
    mapping = {float(t): float(tau) for t, tau in obj["times"]}
    return mapping, {k: v for k, v in obj.items() if k not in ("times", "report", "kind")}


__all__ = ["STEP_TIMES_KIND", "load_step_times", "save_step_times", "teacher_states", "tune_step_times", "tuner_table"]
