"""The papers' analyses as tools: start from a given x_t (SDEdit), samples of p(x0 | x_t) from one
shared x_t, rate–distortion from the variational bound, coarse-to-fine interpolation.

Images are (N, C, H, W) in [-1, 1]; every CLI command writes its figure and a JSON of its numbers.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from ..models import bcast
from ..process.gaussian import GaussianDiffusion
from ..process.likelihood import vlb_bpd
from ..samplers import SAMPLERS, interpolate, time_grid


def noise_to(model, x0: torch.Tensor, t0: float, generator=None) -> torch.Tensor:
    """x_t0 = α(t0) x0 + σ(t0) ε: the forward process run to t0 in one jump."""
    s = model.schedule
    t = torch.full((x0.shape[0],), float(t0), dtype=torch.float64)
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    return bcast(s.alpha(t), x0) * x0 + bcast(s.sigma(t), x0) * eps


def sample_from(model, x_t: torch.Tensor, t0: float, *, sampler: str = "ancestral", steps: int = 100, generator=None,
                y=None, **options):
    """Run ``sampler`` from a given state x_t at time t0 down to the data (a :class:`SampleResult`).
    t0 = 1 from prior noise is ordinary sampling; t0 = 0 returns x_t unchanged."""
    if t0 <= 0:
        from ..samplers.core import SampleResult

        return SampleResult(x=x_t, nfe=0, times=torch.zeros(1, dtype=torch.float64))
    ts = time_grid(model.schedule, steps, t_max=float(t0))
    return SAMPLERS[sampler](model, x_t, ts, y=y, generator=generator, **options)


def sdedit(model, x0: torch.Tensor, t0: float, *, sampler: str = "ancestral", steps: int = 100, generator=None,
           **options) -> torch.Tensor:
    """SDEdit (Meng et al. 2022): noise the input to t0 with the forward process, then denoise it with
    the model, which pulls it towards the model's data while t0 controls how much of the input survives."""
    if t0 <= 0:
        return x0
    return sample_from(model, noise_to(model, x0, t0, generator), t0, sampler=sampler, steps=steps,
                       generator=generator, **options).x


def shared_xt_samples(model, x0: torch.Tensor, t0: float, k: int, *, steps: int = 100, generator=None,
                      sampler: str = "ancestral", **options) -> tuple[torch.Tensor, torch.Tensor]:
    """DDPM's experiment: one x_t0 per input (N, ...), then ``k`` reverse samples of p(x0 | x_t0) each.
    Returns (x_t0 (N, ...), samples (N, k, ...))."""
    xt = noise_to(model, x0, t0, generator)
    rep = xt.repeat_interleave(k, 0)
    out = sample_from(model, rep, t0, sampler=sampler, steps=steps, generator=generator, **options).x
    return xt, out.reshape(x0.shape[0], k, *x0.shape[1:])


@torch.no_grad()
def rate_distortion(model, diffusion: GaussianDiffusion, x0: torch.Tensor, *, generator=None) -> dict:
    """DDPM's progressive lossy compression curve (their Fig. 5 / Table): over the reverse steps
    i = T-1 .. 0, the rate is the bits sent so far, prior + Σ_{j≥i} KL_j (bits/dim), and the
    distortion is the RMSE of x̂0 at step i on the [0, 255] scale."""
    r = vlb_bpd(model, diffusion, x0, generator=generator)
    kl = r["terms"][:, 1:].mean(0)  # (T-1,) KL at indices 1..T-1
    prior = float(r["prior"].mean())
    rate = prior + torch.flip(torch.cumsum(torch.flip(kl, [0]), 0), [0])  # rate[i-1]: bits after sending step i
    rmse = (r["x0_mse"].mean(0).sqrt() * 127.5)[1:]  # x̂0 error at indices 1..T-1, [0,255] scale
    idx = torch.arange(1, diffusion.num_timesteps)
    order = torch.argsort(idx, descending=True)  # reverse process order: T-1 first
    return {"step": idx[order].tolist(), "rate_bpd": rate[order].tolist(), "rmse_255": rmse[order].tolist(),
            "total_bpd": float(r["total"].mean()), "decoder_bpd": float(r["decoder"].mean()), "prior_bpd": prior,
            "n": x0.shape[0]}


def coarse_to_fine(model, x_a, x_b, t0s=(0.1, 0.25, 0.5, 0.75, 1.0), num: int = 8, *, steps: int = 100,
                   generator_seed: int = 0, sampler: str = "ancestral") -> torch.Tensor:
    """Rows of interpolations between two images (1, ...) after diffusing to each t0 (DDPM's
    coarse-to-fine figure: small t0 keeps the sources' details, large t0 only their coarse traits).
    Returns (len(t0s) * num, ...)."""
    lam = torch.linspace(0, 1, num).tolist()
    rows = [interpolate(model, x_a, x_b, lam, t0=min(t0, 1.0 - 1e-3), steps=steps, sampler=sampler,
                        generator=torch.Generator().manual_seed(generator_seed)) for t0 in t0s]
    return torch.cat(rows)


# ---------------------------------------------------------------------------- CLI
EXAMPLES = """examples:
  difflab analyze sdedit runs/digits --t0 0.3,0.5,0.7 --out analysis/       (inputs: test images of the model's data)
  difflab analyze posterior runs/digits --t0 0.5 --k 8 --out analysis/
  difflab analyze rate-distortion runs/digits --n 128 --out analysis/
  difflab analyze interp runs/digits --out analysis/"""


def register(sub) -> dict:
    p = sub.add_parser("analyze", help="the papers' analyses: sdedit, posterior, rate-distortion, interp",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["sdedit", "posterior", "rate-distortion", "interp"])
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--t0", default="0.5", help="noise level(s), comma-separated")
    p.add_argument("--k", type=int, default=8, help="samples per shared x_t (posterior)")
    p.add_argument("--n", type=int, default=8, help="inputs (test images)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--init", default=None, help="an .npz with 'samples' or 'images_uint8' to start from (default: test split)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    return {"analyze": cmd_analyze}


def _inputs(args, cfg, n):
    import numpy as np

    from ..data import load_dataset
    from ..errors import DataError

    if args.init:
        arr = np.load(args.init)
        if "images_uint8" in arr:
            return torch.from_numpy(arr["images_uint8"][:n]).float() / 127.5 - 1
        if "samples" in arr:
            return torch.from_numpy(arr["samples"][:n]).float()
        raise DataError(f"{args.init}: expected 'samples' or 'images_uint8', found {list(arr)}")
    return load_dataset(cfg.data.name, args.data_dir or cfg.data.data_dir or None, split="test",
                        image_size=cfg.data.image_size or None, num_samples=n, seed=args.seed).x


def cmd_analyze(args) -> int:
    from .. import viz
    from ..build import build_process
    from ..errors import ConfigError
    from ..train.api import load_model

    model, cfg, _ = load_model(args.checkpoint)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(args.seed)
    t0s = [float(v) for v in args.t0.split(",")]
    x = _inputs(args, cfg, args.n if args.what != "rate-distortion" else args.n)
    image = x.dim() == 4
    scale = viz.auto_scale(x.shape[-1]) if image else 1
    result = {"what": args.what, "checkpoint": str(args.checkpoint), "t0": t0s}
    if args.what == "sdedit":
        rows = [x] + [sdedit(model, x, t0, steps=args.steps, generator=g) for t0 in t0s]
        dist = [float(((r - x) ** 2).reshape(len(x), -1).mean(1).sqrt().mean()) for r in rows[1:]]
        result["l2_to_input"] = dict(zip(map(str, t0s), dist))
        fig = viz.save_grid(torch.cat(rows), out / "sdedit.png", nrow=len(x), scale=scale) if image else \
            viz.save_scatter({f"t0={t}": r for t, r in zip(["input"] + t0s, rows)}, out / "sdedit.png")
    elif args.what == "posterior":
        xt, s = shared_xt_samples(model, x, t0s[0], args.k, steps=args.steps, generator=g)
        result["spread"] = float(s.std(1).mean())
        grid = torch.cat([x[:, None], xt[:, None].clamp(-1, 1), s], 1).reshape(-1, *x.shape[1:])
        fig = viz.save_grid(grid, out / "posterior.png", nrow=args.k + 2, scale=scale) if image else \
            viz.save_scatter({"samples of p(x0|x_t)": s.reshape(-1, x.shape[-1])}, out / "posterior.png")
    elif args.what == "rate-distortion":
        proc = build_process(cfg.diffusion)
        if not isinstance(proc, GaussianDiffusion) or not image:
            raise ConfigError("rate-distortion needs a discrete-process image model (its variational bound)")
        rd = rate_distortion(model, proc, x, generator=g)
        result.update(rd)
        fig = viz.save_curves({"rate (bits/dim)": (rd["step"], rd["rate_bpd"])}, out / "rate_distortion_rate.png",
                              "reverse step i", "cumulative rate (bits/dim)")
        fig = viz.save_curves({"distortion vs rate": (rd["rate_bpd"], rd["rmse_255"])}, out / "rate_distortion.png",
                              "rate (bits/dim)", "distortion (RMSE, [0,255])", title="DDPM rate–distortion")
    else:
        grid = coarse_to_fine(model, x[:1], x[1:2], t0s if len(t0s) > 1 else (0.1, 0.25, 0.5, 0.75, 1.0),
                              steps=args.steps, generator_seed=args.seed)
        fig = viz.save_grid(grid, out / "interp.png", nrow=8, scale=scale)
    (out / f"{args.what}.json").write_text(json.dumps(result, indent=2))
    print(f"{args.what}: {fig} and {out / (args.what + '.json')}")
    return 0
