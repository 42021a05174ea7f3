"""Many samples in batches, reproducible from one seed (what the CLI, the benchmark and evaluation use)."""
from __future__ import annotations

import time

import torch

from difflab.samplers.api import sample
from difflab.samplers.registry import SPECS, get_spec


def generate(model, data_shape, *, sampler: str = "ddim", steps: int = 50, n: int = 64, seed: int = 0,
             eta: float = 0.0, clip: bool = False, label=None, batch: int = 500, device="cpu", progress: bool = False,
             trajectory: bool = False, **options) -> dict:
    """(n, *data_shape) samples from ``model``.

    Returns dict(x (n, ...) on CPU, trajectory (S, ≤16, ...) of the first batch or None, nfe per sample,
    seconds, seconds_per_sample).
    """
    spec = get_spec(sampler)
    g = torch.Generator(device).manual_seed(seed)
    opts = dict(options)
    if "eta" in spec.options:
        opts["eta"] = eta
    if clip:
        if not spec.clip:
            raise ValueError(f"sampler {sampler!r} cannot clip x̂0; drop the clip option or use one of "
                             f"{', '.join(n for n, s in sorted(SPECS.items()) if s.clip)}")
        opts["clip_denoised"] = True
    xs, traj, nfe, done = [], None, 0, 0
    t0 = time.perf_counter()
    while done < n:
        b = min(batch, n - done)
        y = None if label is None else torch.full((b,), int(label), dtype=torch.long, device=device)
        r = sample(model, (b, *data_shape), sampler=sampler, steps=steps, generator=g, device=device, y=y,
                   return_trajectory=trajectory and done == 0, progress=progress, **opts)
        xs.append(r.x.cpu())
        if r.trajectory is not None:
            traj = r.trajectory[:, :16].cpu()
        nfe = max(nfe, r.nfe)
        done += b
    secs = time.perf_counter() - t0
    return {"x": torch.cat(xs), "trajectory": traj, "nfe": nfe, "seconds": secs, "seconds_per_sample": secs / n}
