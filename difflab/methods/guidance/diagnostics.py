"""Diagnostics of a discriminator or noisy classifier: accuracy and loss per band of t, as numbers.

The paper's discriminator saturates within epochs, so its quality is read per epoch and per t
from held-out samples (:func:`train_discriminator` writes one table per epoch with this).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from difflab.methods.guidance.objective import diffuse

from difflab.process.schedules import F64


@torch.no_grad()
def evaluate_by_t(module: nn.Module, schedule, x: torch.Tensor, target: torch.Tensor, *, kind: str = "discriminator",
                  classes: torch.Tensor | None = None, bins: int = 10, t_min: float = 1e-3, seed: int = 0,
                  batch_size: int = 2048) -> dict:
    """Accuracy and loss of a discriminator or noisy classifier per band of t, on held-out samples.

    x (N, ...) clean samples; target (N,) is_real in {0, 1} (discriminator) or the class (classifier);
    classes (N,) the class input of a class-conditional discriminator. Band b covers
    [t_b, t_{b+1}] of ``bins`` equal bands of [t_min, 1]; every sample is diffused once per band at
    a time uniform in it, with noise fixed by ``seed``. For a discriminator, accuracy and BCE are
    balanced (the mean of the real and the generated halves). Returns dict(bins=[{t_lo, t_hi,
    acc, loss}], acc, loss) with plain floats.
    """
    was = module.training
    module.eval()
    dev = next(module.parameters(), x).device
    g = torch.Generator().manual_seed(seed)
    edges = torch.linspace(t_min, 1.0, bins + 1, dtype=F64)
    rows = []
    for b in range(bins):
        t = edges[b] + (edges[b + 1] - edges[b]) * torch.rand(len(x), generator=g, dtype=F64)
        noise = torch.randn(x.shape, generator=g, dtype=x.dtype)
        outs = []
        for lo in range(0, len(x), batch_size):
            sl = slice(lo, lo + batch_size)
            xt = diffuse(schedule, x[sl], t[sl], noise[sl]).to(dev)
            if kind == "discriminator":
                outs.append(module(xt, t[sl].to(dev), None if classes is None else classes[sl].to(dev)).float().cpu())
            else:
                outs.append(module(xt, t[sl].to(dev)).float().cpu())
        out = torch.cat(outs)
        if kind == "discriminator":
            real = target.bool()
            bce = F.binary_cross_entropy_with_logits(out, target.float(), reduction="none")
            correct = ((out > 0) == real).float()
            acc = 0.5 * float(correct[real].mean() + correct[~real].mean())
            loss = 0.5 * float(bce[real].mean() + bce[~real].mean())
        else:
            acc = float((out.argmax(1) == target).float().mean())
            loss = float(F.cross_entropy(out, target.long()))
        rows.append({"t_lo": float(edges[b]), "t_hi": float(edges[b + 1]), "acc": acc, "loss": loss})
    module.train(was)
    return {"bins": rows, "acc": sum(r["acc"] for r in rows) / bins, "loss": sum(r["loss"] for r in rows) / bins}


def pick_epoch(table: list[dict], t_max: float = 0.2) -> dict:
    """The epoch to guide with, read from a run's per-epoch tables (``t_bins.json``): the one with the
    lowest held-out BCE over the bands below ``t_max``, where the correction acts on the samples' detail
    (the paper picks its discriminator's epoch from held-out figures as it saturates). Returns
    dict(step, epoch, acc, loss) of that epoch, acc and loss averaged over those bands."""
    if not table:
        raise ValueError("pick_epoch: the table is empty (no epoch was scored; was there a held-out part?)")
    best = None
    for rec in table:
        low = [b for b in rec["bins"] if b["t_hi"] <= t_max + 1e-9] or rec["bins"][:1]
        cand = {"step": rec["step"], "epoch": rec.get("epoch"), "acc": sum(b["acc"] for b in low) / len(low),
                "loss": sum(b["loss"] for b in low) / len(low)}
        if best is None or cand["loss"] < best["loss"]:
            best = cand
    return best


__all__ = ["evaluate_by_t", "pick_epoch"]
