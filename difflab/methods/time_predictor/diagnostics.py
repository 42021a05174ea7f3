"""How good a time predictor is, and why TP sampling could help: numbers and Markdown tables (no plots;
those are :func:`difflab.viz.save_tp_accuracy` and :func:`difflab.viz.save_tp_drift`)."""
from __future__ import annotations

from typing import Sequence

import torch

from difflab.process.schedules import F64, Schedule
from difflab.samplers import time_grid

from .oracle import OracleTimePredictor
from .sampling import sampler_for


@torch.no_grad()
def predict_in_batches(predictor, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """(N,) float64 g(x) on CPU, computed ``batch`` rows at a time."""
    return torch.cat([torch.as_tensor(predictor(xb)).reshape(-1).to("cpu", F64) for xb in x.split(batch)])


def accuracy_by_t(predictors: dict, x0: torch.Tensor, schedule: Schedule, *, n: int = 4000, bins: int = 10,
                  t_min: float = 1e-3, seed: int = 0) -> dict:
    """RMSE and bias of each predictor against the true t, in ``bins`` equal bins over [t_min, 1].

    ``n`` fresh pairs (t, x_t): t stratified (n / bins uniform draws per bin), x0 drawn from the
    rows of ``x0`` (N, ...), x_t = α x0 + σ ε with Gaussian ε. Returns {"edges", "n_per_bin",
    name: {"rmse": [bins], "bias": [bins], "pred_mean", "pred_std", "overall_rmse", "overall_bias"},
    "samples": {"t": (n,), name: (n,)}} (the samples for scatter plots, as lists).
    """
    g = torch.Generator().manual_seed(seed)
    per = max(1, n // bins)
    edges = torch.linspace(t_min, 1.0, bins + 1, dtype=F64)
    t = (edges[:-1, None] + (edges[1:] - edges[:-1])[:, None] * torch.rand(bins, per, generator=g, dtype=F64)).reshape(-1)
    idx = torch.randint(0, x0.shape[0], (t.numel(),), generator=g)
    x = x0[idx].to(F64)
    eps = torch.randn(x.shape, generator=g, dtype=F64)
    xt = schedule.perturb(x, t, eps)
    res: dict = {"edges": edges.tolist(), "n_per_bin": per, "samples": {"t": t.tolist()}}
    for name, pred in predictors.items():
        p = predict_in_batches(pred, xt)
        err = (p - t).reshape(bins, per)
        res[name] = {"rmse": err.pow(2).mean(1).sqrt().tolist(), "bias": err.mean(1).tolist(),
                     "pred_std": p.reshape(bins, per).std(1).tolist(),
                     "overall_rmse": float(err.pow(2).mean().sqrt()), "overall_bias": float(err.mean()),
                     "overall_mse": float(err.pow(2).mean())}
        res["samples"][name] = p.tolist()
    return res


def accuracy_table(acc: dict, names: Sequence[str] | None = None) -> list[str]:
    """Markdown table of :func:`accuracy_by_t`'s result: one row per t bin, RMSE and bias per predictor."""
    names = list(names or [k for k in acc if k not in ("edges", "n_per_bin", "samples")])
    head = "| t bin | " + " | ".join(f"RMSE {n} | bias {n}" for n in names) + " |"
    lines = [head, "|---|" + "---:|" * (2 * len(names))]
    e = acc["edges"]
    for b in range(len(e) - 1):
        cells = " | ".join(f"{acc[n]['rmse'][b]:.4f} | {acc[n]['bias'][b]:+.4f}" for n in names)
        lines.append(f"| [{e[b]:.2f}, {e[b + 1]:.2f}) | {cells} |")
    cells = " | ".join(f"**{acc[n]['overall_rmse']:.4f}** | {acc[n]['overall_bias']:+.4f}" for n in names)
    lines.append(f"| all | {cells} |")
    return lines


@torch.no_grad()
def drift_diagnostics(model, predictors: dict, shape: Sequence[int], *, sampler: str = "euler_maruyama",
                      steps: Sequence[int] = (5, 10, 20, 50, 1000), n: int = 256, seed: int = 0, max_points: int = 60,
                      dtype=torch.float32, **sampler_opts) -> dict:
    """Where the original sampler's states are, as the predictors see them.

    For each T in ``steps``: n trajectories of ``sampler`` on the default grid of T steps; at (up
    to ``max_points`` of) the grid times, each predictor's g(x) over the n states: mean and std
    (for an :class:`OracleTimePredictor` also the mean posterior std, i.e. how sharp t | x is).
    Returns {T: {"t": [...], name: {"mean", "std", "post_std"?}, "gap": {name: mean |E g - t|}}}.
    """
    out: dict = {}
    for T in steps:
        ts = time_grid(model.schedule, T)
        xT = torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed), dtype=dtype)
        r = sampler_for(model, sampler)(model, xT, ts, generator=torch.Generator().manual_seed(seed + 1), return_trajectory=True,
                              **sampler_opts)
        keep = torch.unique(torch.linspace(0, len(ts) - 1, min(max_points, len(ts))).round().long())
        rec: dict = {"t": ts[keep].tolist(), "gap": {}}
        for name, g in predictors.items():
            means, stds, post = [], [], []
            for k in keep.tolist():
                x = r.trajectory[k]
                if isinstance(g, OracleTimePredictor):
                    m, s = g.posterior(x)
                    post.append(float(s.mean()))
                else:
                    m = predict_in_batches(g, x)
                means.append(float(m.mean()))
                stds.append(float(m.std()))
            rec[name] = {"mean": means, "std": stds, **({"post_std": post} if post else {})}
            rec["gap"][name] = float(sum(abs(a - b) for a, b in zip(means, rec["t"])) / len(means))
        out[int(T)] = rec
    return out


def drift_table(drift: dict) -> list[str]:
    """Markdown: per T, the mean |E[g(x)] - t| along the trajectory and E[g] at a few nominal times."""
    Ts = sorted(drift)
    names = [k for k in drift[Ts[0]] if k not in ("t", "gap")]
    lines = ["| T | " + " | ".join(f"mean gap {n}" for n in names) + " | E g at t≈0.5 | E g at the last state (t = 0) |",
             "|---:|" + "---:|" * len(names) + "---|---|"]
    for T in Ts:
        d = drift[T]
        t = torch.tensor(d["t"])
        mid = int((t - 0.5).abs().argmin())
        at_mid = ", ".join(f"{n} {d[n]['mean'][mid]:.3f}" for n in names)
        at_end = ", ".join(f"{n} {d[n]['mean'][-1]:.3f}" for n in names)
        gaps = " | ".join(f"{d['gap'][n]:.4f}" for n in names)
        lines.append(f"| {T} | {gaps} | (t={float(t[mid]):.2f}) {at_mid} | {at_end} |")
    return lines


def _quantiles(v: torch.Tensor) -> dict:
    q = torch.quantile(v.to(F64), torch.tensor([0.1, 0.5, 0.9], dtype=F64))
    return {"q10": float(q[0]), "median": float(q[1]), "q90": float(q[2])}


@torch.no_grad()
def time_shift_readings(model, data_var: float, x0_real: torch.Tensor, *, sampler: str = "ddim", steps: int = 10,
                        window: float = 0.05, cutoff: float = 0.0, n: int = 256, seed: int = 0) -> dict:
    """What the Time-Shift criterion chooses, per step of a ``steps``-step ``sampler`` run of ``model``:

    * ``chosen``: the time it evaluates at (window ±``window``, cutoff ``cutoff``), along the run;
    * ``read``: what the criterion reads from the same states with no window (where it thinks they are);
    * ``real``: what it reads, with no window, from real images (rows of ``x0_real``) diffused to each
      nominal time: the noise level a perfect sampler's states would show (its spread and bias at t
      are the criterion's own error, from image-to-image differences in pixel variance).

    Each entry: per step {"t": nominal, "q10", "median", "q90"} over the n samples. The run is the
    Time-Shift sampler's own (its states follow the shifted evaluations)."""
    from difflab.samplers import SAMPLERS

    from .shift import TimeShiftSampling

    ts = TimeShiftSampling(model, data_var, window=window, cutoff=cutoff, record=True)
    reader = TimeShiftSampling(model, data_var, window=1.0, cutoff=0.0)
    grid = time_grid(model.schedule, steps)
    x_T = torch.randn((n, *x0_real.shape[1:]), generator=torch.Generator().manual_seed(seed))
    states = [(float(grid[0]), x_T)]
    SAMPLERS[sampler](ts, x_T, grid, generator=torch.Generator().manual_seed(seed + 1),
                      callback=lambda i, t, x, x0: states.append((float(grid[i + 1]), x)))
    out = {"window": window, "cutoff": cutoff, "sampler": sampler, "steps": steps, "n": n, "data_var": data_var,
           "chosen": [], "read": [], "real": []}
    for nominal, chosen in ts.history:
        if not out["chosen"] or out["chosen"][-1]["t"] != float(nominal[0]):
            out["chosen"].append({"t": float(nominal[0]), **_quantiles(chosen)})
    g = torch.Generator().manual_seed(seed + 2)
    real = x0_real[torch.randperm(len(x0_real), generator=g)[:n]].to(F64)
    for t, x in states:
        if t <= 0:
            continue
        nominal = torch.full((n,), t, dtype=F64)
        out["read"].append({"t": t, **_quantiles(reader.choose_time(x, nominal))})
        tt = torch.tensor(t, dtype=F64)
        xt = model.schedule.alpha(tt) * real + model.schedule.sigma(tt) * torch.randn(real.shape, generator=g, dtype=F64)
        out["real"].append({"t": t, **_quantiles(reader.choose_time(xt, nominal[:len(real)]))})
    return out
