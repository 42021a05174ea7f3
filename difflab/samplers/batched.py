"""Many samples in batches, reproducible from one seed whatever the batch size (what the CLI, the
benchmark and evaluation use): sample i's noise comes from its own generator (:mod:`.noise`)."""
from __future__ import annotations

import time

import torch

from difflab.samplers.api import sample
from difflab.samplers.noise import PerSampleNoise, sample_seeds
from difflab.samplers.registry import SPECS, get_spec


SMALL_MODEL_FLOP = 1e8  # forward FLOP per sample below which a CPU batch of 256 beats 64 (benchmarks/cost.py)


def auto_batch(model, data_shape, device="cpu") -> int:
    """The batch :func:`generate` uses when given none, from benchmarks/cost.py's CPU table (DDIM, 5 NFE, one
    thread): 256 for a network under 0.1 GFLOP per sample (toy MLP, digits U-Net: 256 was the fastest), else
    64 (MNIST U-Net: 64 within 3 % of the fastest, 256 25 % slower and 1.5x the memory); 500 on a GPU."""
    if str(device).split(":")[0] == "cuda":
        return 500
    base = model
    while hasattr(base, "inner"):  # wrappers: the network underneath does the work
        base = base.inner
    net = getattr(base, "net", None)
    if not isinstance(net, torch.nn.Module):
        return 64
    from torch.utils.flop_counter import FlopCounterMode

    p = next(net.parameters(), None)
    x = torch.zeros((1, *data_shape), device=p.device if p is not None else device)
    try:
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            net(x, torch.full((1,), 0.5, device=x.device))
    except Exception:  # noqa: BLE001 - a network with another signature: the safe default
        return 64
    return 256 if fc.get_total_flops() < SMALL_MODEL_FLOP else 64


def generate(model, data_shape, *, sampler: str = "ddim", steps: int = 50, n: int = 64, seed: int = 0,
             eta: float = 0.0, clip: bool = False, label=None, batch: int | None = None, device="cpu", progress: bool = False,
             trajectory: bool = False, sample_fn=None, **options) -> dict:
    """(n, *data_shape) samples from ``model``.

    ``batch`` None: :func:`auto_batch`. ``sample_fn`` replaces :func:`difflab.samplers.sample` (same signature; e.g. a method's own front door).
    Returns dict(x (n, ...) on CPU, trajectory (S, ≤16, ...) of the first batch or None, nfe per sample,
    seconds, seconds_per_sample). Sample i depends on (seed, i) only, not on ``batch``.
    """
    spec = get_spec(sampler)
    if batch is None:
        batch = auto_batch(model, data_shape, device)
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
