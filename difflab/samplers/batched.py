"""Many samples in batches, reproducible from one seed whatever the batch size (what the CLI, the
benchmark and evaluation use): sample i's noise comes from its own generator (:mod:`.noise`)."""
from __future__ import annotations

import time

import torch

from difflab.samplers.api import sample
from difflab.samplers.noise import PerSampleNoise, sample_seeds
from difflab.samplers.registry import SPECS, get_spec


def generate(model, data_shape, *, sampler: str = "ddim", steps: int = 50, n: int = 64, seed: int = 0,
             eta: float = 0.0, clip: bool = False, label=None, batch: int = 500, device="cpu", progress: bool = False,
             trajectory: bool = False, sample_fn=None, **options) -> dict:
    """(n, *data_shape) samples from ``model``.

    ``sample_fn`` replaces :func:`difflab.samplers.sample` (same signature; e.g. a method's own front door).
    Returns dict(x (n, ...) on CPU, trajectory (S, ≤16, ...) of the first batch or None, nfe per sample,
    seconds, seconds_per_sample). Sample i depends on (seed, i) only, not on ``batch``.
    """
    spec = get_spec(sampler)
    for name, v in (("n", n), ("batch", batch), ("steps", steps)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} = {v!r}; expected a positive integer")
    if eta < 0:
        raise ValueError(f"eta = {eta!r}; expected eta >= 0 (0: deterministic DDIM, 1: DDPM's variance)")
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
        noise = PerSampleNoise(sample_seeds(seed, done, b), device)
        r = (sample_fn or sample)(model, (b, *data_shape), sampler=sampler, steps=steps, x=noise.randn((b, *data_shape)),
                   noise_sampler=noise, device=device, y=y, return_trajectory=trajectory and done == 0,
                   progress=progress, **opts)
        xs.append(r.x.cpu())
        if r.trajectory is not None:
            traj = r.trajectory[:, :16].cpu()
        nfe = max(nfe, r.nfe)
        done += b
    secs = time.perf_counter() - t0
    return {"x": torch.cat(xs), "trajectory": traj, "nfe": nfe, "seconds": secs, "seconds_per_sample": secs / n}
