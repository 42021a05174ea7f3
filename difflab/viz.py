"""Pictures people would rather look at: sample grids, 2-D scatter plots, trajectory strips, curves.

Images are (N, C, H, W) in [-1, 1]; 2-D samples are (N, 2). Every function writes a PNG and returns its path.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch


def _mpl():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path) -> Path:
    """Lay out, write as PNG (creating the folder) and close a matplotlib figure."""
    plt = _mpl()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> uint8 (N, C, H, W)."""
    return ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def save_grid(images: torch.Tensor, path, nrow: int | None = None, scale: int = 1, padding: int = 2) -> Path:
    """A grid PNG of images (N, C, H, W) in [-1, 1]; small images are enlarged ``scale`` times."""
    from PIL import Image
    from torchvision.utils import make_grid

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = to_uint8(images)
    if scale > 1:
        x = x.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
    nrow = nrow or max(1, int(math.ceil(math.sqrt(x.shape[0]))))
    grid = make_grid(x, nrow=nrow, padding=padding, pad_value=255)
    arr = grid.permute(1, 2, 0).numpy()
    Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).save(path)
    return path


def auto_scale(image_size: int) -> int:
    """Enlarge tiny images so a grid is readable (8x8 digits -> 4x)."""
    return max(1, 32 // image_size)


def save_scatter(panels: dict, path, reference: torch.Tensor | None = None, lim: float | None = None) -> Path:
    """Side-by-side 2-D scatter plots, one per ``{title: (N, 2) samples}``, optional reference points in grey."""
    plt = _mpl()
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.3), squeeze=False)
    if lim is None:
        allpts = torch.cat([torch.as_tensor(v).reshape(-1, 2).float() for v in panels.values()])
        lim = float(allpts.abs().quantile(0.995)) * 1.15
    for ax, (title, pts) in zip(axes[0], panels.items()):
        if reference is not None:
            r = torch.as_tensor(reference).float().cpu()
            ax.scatter(r[:, 0], r[:, 1], s=1, c="0.8", rasterized=True)
        p = torch.as_tensor(pts).float().cpu()
        ax.scatter(p[:, 0], p[:, 1], s=1, c="C0", rasterized=True)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    return save_figure(fig, path)


def save_curves(series: dict, path, xlabel: str, ylabel: str, title: str = "", logx: bool = False,
                logy: bool = False, hlines: dict | None = None) -> Path:
    """Line plot of ``{label: (xs, ys)}`` (e.g. FID vs NFE per sampler)."""
    plt = _mpl()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), marker="o", ms=3, label=label)
    for label, y in (hlines or {}).items():
        ax.axhline(y, ls="--", c="0.5", lw=1)
        ax.text(ax.get_xlim()[0], y, f" {label}", va="bottom", fontsize=8, color="0.4")
    if logx:  # label the x values themselves (NFE 3, 4, ... rather than 3×10⁰)
        ax.set_xscale("log")
        ticks = sorted({float(x) for xs, _ in series.values() for x in xs})
        if 0 < len(ticks) <= 16:
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.xaxis.set_minor_formatter(plt.NullFormatter())
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def save_ratio_panels(panels: dict, path, xlabel: str, ylabel: str = "ratio to the base sampler",
                      styles: dict | None = None) -> Path:
    """One panel per ``{title: {label: [(x, ratio, lo, hi), ...]}}`` (e.g. per feature space): each label's
    ratios against x with their intervals as error bars, a dashed line at 1 (no difference), log-scaled x
    labelled with the x values themselves. Labels at the same x are nudged apart; ``styles`` gives a label
    its matplotlib line style (color, marker, ls)."""
    plt = _mpl()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False, sharey=True)
    xs_all = sorted({float(pt[0]) for series in panels.values() for pts in series.values() for pt in pts})
    for ax, (title, series) in zip(axes[0], panels.items()):
        k = len(series)
        for j, (label, pts) in enumerate(series.items()):
            pts = sorted(pts)
            nudge = 1.0 + 0.03 * (j - (k - 1) / 2)
            x = [float(p[0]) * nudge for p in pts]
            r = [float(p[1]) for p in pts]
            err = [[max(0.0, p[1] - p[2]) for p in pts], [max(0.0, p[3] - p[1]) for p in pts]]
            style = {"marker": "o", **((styles or {}).get(label) or {})}
            ax.errorbar(x, r, yerr=err, ms=4, capsize=3, lw=1, label=label, **style)
        ax.axhline(1.0, ls="--", c="0.4", lw=1)
        ax.set_xscale("log")
        if xs_all:
            ax.set_xticks(xs_all, [f"{v:g}" for v in xs_all])
            ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set_xlabel(xlabel)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    return save_figure(fig, path)


def save_trajectory_strip(trajectory: torch.Tensor, path, num_frames: int = 10, scale: int = 1) -> Path:
    """Rows = samples, columns = evenly chosen steps of a trajectory (S, B, C, H, W)."""
    S, B = trajectory.shape[:2]
    idx = torch.linspace(0, S - 1, min(num_frames, S)).round().long()
    frames = trajectory[idx].transpose(0, 1).reshape(-1, *trajectory.shape[2:])
    return save_grid(frames, path, nrow=len(idx), scale=scale)


# ---------------------------------------------------------------------------- time-predictor diagnostics
def save_tp_accuracy(acc: dict, path, title: str = "") -> Path:
    """A time predictor's accuracy (``time_predictor.accuracy_by_t``'s dict): RMSE and bias per t bin
    (left), predicted against true t (right)."""
    plt = _mpl()
    names = [k for k in acc if k not in ("edges", "n_per_bin", "samples")]
    e = torch.tensor(acc["edges"])
    mid = ((e[1:] + e[:-1]) / 2).tolist()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for i, n in enumerate(names):
        axes[0].plot(mid, acc[n]["rmse"], "o-", c=f"C{i}", label=f"RMSE {n}")
        axes[0].plot(mid, acc[n]["bias"], "s--", c=f"C{i}", ms=3, label=f"bias {n}")
    axes[0].axhline(0, c="0.6", lw=0.8)
    axes[0].set_xlabel("true t")
    axes[0].set_ylabel("g(x_t) - t")
    axes[0].legend(fontsize=8)
    axes[0].grid(alpha=0.3)
    t = torch.tensor(acc["samples"]["t"])
    keep = torch.randperm(t.numel(), generator=torch.Generator().manual_seed(0))[:2000]
    for i, n in enumerate(names):
        axes[1].scatter(t[keep], torch.tensor(acc["samples"][n])[keep], s=2, c=f"C{i}", alpha=0.5, label=n,
                        rasterized=True)
    axes[1].plot([0, 1], [0, 1], c="k", lw=0.8)
    axes[1].set_xlabel("true t")
    axes[1].set_ylabel("predicted t")
    axes[1].set_aspect("equal")
    axes[1].legend(fontsize=8, markerscale=4)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def save_tp_drift(drift: dict, path, title: str = "") -> Path:
    """The drift of a sampler's states (``time_predictor.drift_diagnostics``' dict): predicted t (mean
    ± std over samples) against the nominal t along the original sampler's trajectories, one panel
    per predictor, one line per T."""
    plt = _mpl()
    Ts = sorted(drift)
    names = [k for k in drift[Ts[0]] if k not in ("t", "gap")]
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        for i, T in enumerate(Ts):
            t = torch.tensor(drift[T]["t"])
            m, s = torch.tensor(drift[T][name]["mean"]), torch.tensor(drift[T][name]["std"])
            ax.plot(t, m, "-", c=f"C{i}", lw=1.3, marker="o" if T <= 20 else None, ms=3, label=f"T = {T}")
            ax.fill_between(t, m - s, m + s, color=f"C{i}", alpha=0.12)
        ax.plot([0, 1], [0, 1], c="k", lw=0.8, ls="--")
        ax.set_xlabel("nominal t (grid)")
        ax.set_ylabel(f"predicted t ({name})")
        ax.set_xlim(1.02, -0.02)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def save_time_shift(readings: dict, path, title: str = "") -> Path:
    """Chosen time against nominal time for :func:`~difflab.methods.time_predictor.time_shift_readings`:
    the median and 10-90% band of the Time-Shift choice, of the unwindowed reading of the same
    states, and of the reading of diffused real images; the diagonal is 'no shift'."""
    plt = _mpl()
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    names = {"chosen": f"chosen (window ±{readings['window']:g}, cutoff {readings['cutoff']:g})",
             "read": "read from the sampler's states (no window)", "real": "read from diffused real images"}
    for k, (key, label) in enumerate(names.items()):
        rows = readings.get(key) or []
        if not rows:
            continue
        t = [r["t"] for r in rows]
        ax.plot(t, [r["median"] for r in rows], marker="o", ms=3, c=f"C{k}", label=label)
        ax.fill_between(t, [r["q10"] for r in rows], [r["q90"] for r in rows], color=f"C{k}", alpha=0.15)
    ax.plot([0, 1], [0, 1], ls="--", c="0.5", lw=1)
    ax.set_xlabel("nominal time t of the step")
    ax.set_ylabel("time the criterion picks")
    ax.set_title(title or f"Time-Shift, {readings['sampler']} T={readings['steps']}, n={readings['n']}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, path)

