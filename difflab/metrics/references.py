"""The published figures difflab's methods are measured against: one place for the papers' FIDs and
the method / base-sampler ratios derived from them (CIFAR-10, Inception FID)."""
from __future__ import annotations

# method: (method FID, base FID, what was compared)
PAPER_FIDS = {
    "TP": (144.88, 343.35, "TP-EM / EM at T=10, CIFAR-10 VP-SDE"),
    "DG": (1.77, 2.03, "EDM-G++ / EDM, CIFAR-10 unconditional"),
    "DSNO": (3.78, 2.51, "DSNO at 1 NFE / its ODE teacher, CIFAR-10"),
}
PAPER_RATIOS = {m: fid / base for m, (fid, base, _) in PAPER_FIDS.items()}


def reference_line(method: str) -> str:
    """E.g. 'TP: 0.42 (TP-EM / EM at T=10, CIFAR-10 VP-SDE, Inception FID)'."""
    fid, base, what = PAPER_FIDS[method]
    return f"{method}: {fid / base:.2f} ({what}, Inception FID {fid} / {base})"


__all__ = ["PAPER_FIDS", "PAPER_RATIOS", "reference_line"]
