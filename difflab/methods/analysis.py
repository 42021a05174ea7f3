"""The papers' analyses as tools: start from a given x_t (SDEdit, and its realism-vs-faithfulness curve
with and without discriminator guidance), samples of p(x0 | x_t) from one shared x_t, rate–distortion
from the variational bound, coarse-to-fine interpolation, the power spectrum over time of
probability-flow trajectories (DSNO's premise) and density-ratio paths of a discriminator.

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
def rate_distortion(model, diffusion: GaussianDiffusion, x0: torch.Tensor, *, clip_denoised: bool = False,
                    generator=None) -> dict:
    """DDPM's progressive lossy compression curve (their Fig. 5 / Table): over the reverse steps
    i = T-1 .. 0, the rate is the bits sent so far, prior + Σ_{j≥i} KL_j (bits/dim), and the
    distortion is the RMSE of x̂0 at step i on the [0, 255] scale. ``clip_denoised`` clips x̂0 to
    [-1, 1] (as improved-diffusion's NLL script does): early steps' x̂0 then stays in the data range."""
    r = vlb_bpd(model, diffusion, x0, clip_denoised=clip_denoised, generator=generator)
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


def sdedit_curve(models: dict, source: torch.Tensor, t0s, evaluate, *, sampler: str = "ancestral", steps: int = 100,
                 seed: int = 0) -> dict:
    """SDEdit's realism-vs-faithfulness trade-off over t0 for several models (e.g. plain and with DG).

    ``source`` (N, ...) are the images to translate; ``evaluate(x) -> float`` scores realism against the
    target data (lower is better, e.g. FID); faithfulness is the PSNR (dB, peak-to-peak 2 as for images
    in [-1, 1], which are clamped there) and RMSE
    of the output to its source. Every model sees the same noise (one seed per t0), so the curves differ
    only by the models. Returns {label: [{t0, realism, psnr, rmse}, ...]} plus ``source_realism``.
    """
    out = {"source_realism": float(evaluate(source))}
    for label, model in models.items():
        rows = []
        for i, t0 in enumerate(t0s):
            g = torch.Generator().manual_seed(seed + 1000 * i)
            x = sdedit(model, source, float(t0), sampler=sampler, steps=steps, generator=g)
            x = x.clamp(-1, 1) if x.dim() == 4 else x  # images live in [-1, 1]
            mse = ((x - source) ** 2).reshape(len(x), -1).mean(1)
            psnr = float((10 * torch.log10(4.0 / mse.clamp_min(1e-12))).mean())  # peak-to-peak range 2
            rows.append({"t0": float(t0), "realism": float(evaluate(x)), "psnr": psnr,
                         "rmse": float(mse.sqrt().mean())})
        out[label] = rows
    return out


@torch.no_grad()
def trajectory_spectra(model, shape, Ms=(4, 6, 8, 12, 16), *, n: int = 256, spacing: str = "quadratic",
                       sampler: str = "ddim", steps: int = 64, threshold: float = 0.99, generator=None) -> dict:
    """The power spectrum over time of probability-flow trajectories (DSNO's observation that it is
    compact): one deterministic solve per sample on a fine grid through every M's recorded times, then
    for each M the fraction of energy per Fourier mode and the smallest J keeping ``threshold`` of it."""
    from .dsno import refine_grid, trajectory_spectrum, trajectory_times

    if sampler not in ("ddim", "pf_euler", "pf_heun"):
        from ..errors import ConfigError

        raise ConfigError(f"sampler = {sampler!r}; trajectory spectra need a deterministic one: ddim, pf_euler, pf_heun")
    times = {int(M): trajectory_times(int(M), spacing) for M in Ms}
    key = lambda v: round(float(v), 9)  # noqa: E731  (the same time from two M's)
    union = sorted({key(v) for t in times.values() for v in t}, reverse=True)
    grid, idx = refine_grid(torch.tensor(union, dtype=torch.float64), steps)  # passes through every recorded time
    where = dict(zip(union, idx.tolist()))
    x = torch.randn((n, *shape), generator=generator)
    traj = SAMPLERS[sampler](model, x, grid, return_trajectory=True).trajectory  # (S, n, ...)
    result = {"n": n, "sampler": sampler, "grid_steps": len(grid) - 1, "spacing": spacing, "threshold": threshold,
              "M": {}}
    for M, t in times.items():
        spec = trajectory_spectrum(traj[[where[key(v)] for v in t]].transpose(0, 1))  # (N, M, ...) -> (M//2+1,)
        cum = torch.cumsum(spec, 0)
        J = int((cum < threshold).sum()) + 1
        result["M"][str(M)] = {"times": t.tolist(), "spectrum": spec.tolist(), "cumulative": cum.tolist(),
                               "modes_for_threshold": min(J, len(spec))}
    return result


def discriminator_logits(disc, x: torch.Tensor, t: float, batch: int = 1000) -> torch.Tensor:
    """log(d/(1-d)) of (N, ...) states at time t."""
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb = x[i:i + batch]
            out.append(disc(xb, torch.full((len(xb),), float(t), dtype=xb.dtype, device=xb.device)).float().cpu())
    return torch.cat(out)


def density_ratio_paths(model, disc, real: torch.Tensor, *, guided=None, sampler: str = "ancestral",
                        steps: int = 50, t_min: float = 1e-3, seed: int = 0) -> dict:
    """log(d/(1-d)) of a discriminator along three kinds of path, per time of the sampler's grid:
    real data diffused by the forward process, the plain sampler's trajectories and (``guided``) the
    guided sampler's. A discriminator that separates real from generated data keeps the real path above
    the generated one; DG should lift the generated path towards the real one. Returns mean/std per t."""
    grid = time_grid(model.schedule, steps)
    keep = [i for i, t in enumerate(grid.tolist()) if t >= t_min]
    n = len(real)
    g = torch.Generator().manual_seed(seed)
    paths = {}
    real_logits = [discriminator_logits(disc, noise_to(model, real, float(grid[i]), g), float(grid[i])) for i in keep]
    paths["real (forward-diffused)"] = real_logits
    for label, m in (("plain sampler", model), ("DG sampler", guided)):
        if m is None:
            continue
        gm = torch.Generator().manual_seed(seed + 1)
        x = torch.randn((n, *real.shape[1:]), generator=gm)
        traj = SAMPLERS[sampler](m, x, grid, generator=gm, return_trajectory=True).trajectory
        paths[label] = [discriminator_logits(disc, traj[i], float(grid[i])) for i in keep]
    t = [float(grid[i]) for i in keep]
    return {"t": t, "sampler": sampler, "steps": steps, "n": n,
            "paths": {k: {"mean": [float(v.mean()) for v in vs], "std": [float(v.std()) for v in vs]}
                      for k, vs in paths.items()}}


# ---------------------------------------------------------------------------- CLI
EXAMPLES = """examples:
  difflab analyze sdedit runs/digits --t0 0.3,0.5,0.7 --out analysis/       (inputs: test images of the model's data)
  difflab analyze posterior runs/digits --t0 0.5 --k 8 --out analysis/
  difflab analyze rate-distortion runs/digits --n 128 --out analysis/
  difflab analyze interp runs/digits --out analysis/
  difflab analyze spectrum runs/digits --M 4,6,8,12 --out analysis/               (choose DSNO's M and J)
  difflab analyze density-ratio runs/mnist --disc runs/mnist-dg --n 500 --out analysis/
  difflab analyze sdedit-curve runs/mnist --source fashion-mnist --disc runs/mnist-dg --t0 0.3,0.5,0.7 --out analysis/"""

WHAT = ["sdedit", "sdedit-curve", "posterior", "rate-distortion", "interp", "spectrum", "density-ratio"]
DEFAULT_N = {"sdedit-curve": 500, "spectrum": 256, "density-ratio": 500}


def register(sub) -> dict:
    p = sub.add_parser("analyze", help="the papers' analyses: " + ", ".join(WHAT),
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=WHAT)
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--t0", default="0.5", help="noise level(s), comma-separated")
    p.add_argument("--k", type=int, default=8, help="samples per shared x_t (posterior)")
    p.add_argument("--n", type=int, default=None,
                   help="inputs / samples (default 8; sdedit-curve and density-ratio 500, spectrum 256)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--init", default=None, help="an .npz with 'samples' or 'images_uint8' to start from (default: test split)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--sampler", default=None, help="default ancestral (spectrum: ddim)")
    p.add_argument("--source", default=None, help="sdedit-curve: the dataset to translate from (e.g. fashion-mnist)")
    p.add_argument("--disc", default=None, help="a discriminator run (dg-train): DG curves / density-ratio paths")
    p.add_argument("--dg-weight", type=float, default=1.0)
    p.add_argument("--M", default="4,6,8,12,16", help="spectrum: numbers of recorded times, comma-separated")
    p.add_argument("--threshold", type=float, default=0.99, help="spectrum: energy fraction J modes must keep")
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

    model, cfg, ckpt = load_model(args.checkpoint)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(args.seed)
    try:
        t0s = [float(v) for v in args.t0.split(",")]
    except ValueError:
        raise ConfigError(f"--t0 {args.t0!r}; expected comma-separated times in [0, 1], e.g. 0.3,0.5") from None
    if args.disc is None and args.what == "density-ratio":
        raise ConfigError("density-ratio needs --disc RUN (a discriminator trained by dg-train)")
    n = args.n or DEFAULT_N.get(args.what, 8)
    sampler = args.sampler or ("ddim" if args.what == "spectrum" else "ancestral")
    if sampler not in SAMPLERS:
        raise ConfigError(f"--sampler {sampler!r}; expected one of {', '.join(sorted(SAMPLERS))}")
    result = {"what": args.what, "checkpoint": str(args.checkpoint), "t0": t0s}
    if args.what == "spectrum":
        fig = _spectrum(model, cfg, ckpt, args, n, sampler, g, out, result)
    elif args.what in ("density-ratio", "sdedit-curve"):
        fig = _guided_analysis(model, cfg, args, n, sampler, t0s, out, result)
    else:
        x = _inputs(args, cfg, n)
        image = x.dim() == 4
        scale = viz.auto_scale(x.shape[-1]) if image else 1
        if args.what == "sdedit":
            rows = [x] + [sdedit(model, x, t0, sampler=sampler, steps=args.steps, generator=g) for t0 in t0s]
            dist = [float(((r - x) ** 2).reshape(len(x), -1).mean(1).sqrt().mean()) for r in rows[1:]]
            result["l2_to_input"] = dict(zip(map(str, t0s), dist))
            fig = viz.save_grid(torch.cat(rows), out / "sdedit.png", nrow=len(x), scale=scale) if image else \
                viz.save_scatter({f"t0={t}": r for t, r in zip(["input"] + t0s, rows)}, out / "sdedit.png")
        elif args.what == "posterior":
            xt, s = shared_xt_samples(model, x, t0s[0], args.k, steps=args.steps, generator=g, sampler=sampler)
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
            viz.save_curves({"rate (bits/dim)": (rd["step"], rd["rate_bpd"])}, out / "rate_distortion_rate.png",
                            "reverse step i", "cumulative rate (bits/dim)")
            fig = viz.save_curves({"distortion vs rate": (rd["rate_bpd"], rd["rmse_255"])}, out / "rate_distortion.png",
                                  "rate (bits/dim)", "distortion (RMSE, [0,255])", title="DDPM rate–distortion")
        else:
            grid = coarse_to_fine(model, x[:1], x[1:2], t0s if len(t0s) > 1 else (0.1, 0.25, 0.5, 0.75, 1.0),
                                  steps=args.steps, generator_seed=args.seed, sampler=sampler)
            fig = viz.save_grid(grid, out / "interp.png", nrow=8, scale=scale)
    (out / f"{args.what}.json").write_text(json.dumps(result, indent=2))
    print(f"{args.what}: {fig} and {out / (args.what + '.json')}")
    return 0


def _spectrum(model, cfg, ckpt, args, n, sampler, g, out, result):
    from .. import viz
    from ..build import data_shape_of
    from ..errors import ConfigError

    from ..metrics.cli import _ints

    Ms = _ints(args.M, "--M")
    if min(Ms) < 2:
        raise ConfigError(f"--M {args.M!r}; a trajectory needs at least 2 times, e.g. 4,6,8")
    shape = tuple((ckpt.state.get("extra") or {}).get("data_shape") or data_shape_of(cfg))
    sp = trajectory_spectra(model, shape, Ms, n=n, sampler=sampler, steps=max(args.steps, 2 * max(Ms)),
                            threshold=args.threshold, generator=g)
    result.update(sp)
    lines = [f"M={M}: J={r['modes_for_threshold']} keeps {r['cumulative'][r['modes_for_threshold'] - 1]:.4f}"
             f" (J=1: {r['cumulative'][0]:.4f})" for M, r in sp["M"].items()]
    result["summary"] = lines
    print("\n".join(lines))
    return viz.save_curves({f"M={M}": (list(range(len(r["spectrum"]))), r["spectrum"]) for M, r in sp["M"].items()},
                           out / "spectrum.png", "Fourier mode over the M recorded times", "fraction of energy",
                           title=f"PF-ODE trajectory spectrum ({sampler}, {n} trajectories)", logy=True)


def _guided_analysis(model, cfg, args, n, sampler, t0s, out, result):
    from .. import viz
    from ..data import load_dataset
    from ..errors import DataError
    from .guidance import DiscriminatorGuidance, load_discriminator

    disc = load_discriminator(args.disc) if args.disc else None
    guided = DiscriminatorGuidance(model, disc, weight=args.dg_weight) if disc is not None else None
    data_dir = args.data_dir or cfg.data.data_dir or None
    if args.what == "density-ratio":
        real = _inputs(args, cfg, n)
        dr = density_ratio_paths(model, disc, real, guided=guided, sampler=sampler, steps=args.steps, seed=args.seed)
        result.update(dr)
        return viz.save_curves({k: (dr["t"], v["mean"]) for k, v in dr["paths"].items()}, out / "density_ratio.png",
                               "t", "mean log d/(1-d)", title=f"density-ratio paths ({sampler}, {n} paths each)")
    from ..metrics.bench import evaluate_samples

    if not args.source:
        raise DataError("sdedit-curve needs --source DATASET, the data to translate from (e.g. fashion-mnist)")
    source = load_dataset(args.source, data_dir, split="test", num_samples=n, seed=args.seed).x
    target = cfg.data.name
    if tuple(source.shape[1:]) != tuple(_inputs(args, cfg, 1).shape[1:]):
        raise DataError(f"--source {args.source}: samples of shape {tuple(source.shape[1:])}, the model's {target} "
                        f"data are {tuple(_inputs(args, cfg, 1).shape[1:])}")
    qname = {}

    def evaluate(x):
        m = evaluate_samples(x, target, data_dir=data_dir, seed=args.seed)
        qname["name"] = m["quality_name"]
        return m["quality"]

    models = {"plain": model}
    if guided is not None:
        models[f"DG w={args.dg_weight:g}"] = guided
    t0s = t0s if len(t0s) > 1 else [0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    curve = sdedit_curve(models, source, t0s, evaluate, sampler=sampler, steps=args.steps, seed=args.seed)
    result.update({"t0": t0s, "source": args.source, "target": target, "realism_metric": qname.get("name"),
                   "curves": curve})
    return viz.save_curves({k: ([r["psnr"] for r in v], [r["realism"] for r in v]) for k, v in curve.items()
                            if k != "source_realism"}, out / "sdedit_curve.png", "faithfulness: PSNR to the source (dB)",
                           f"realism: {qname.get('name')} vs {target}",
                           title=f"SDEdit {args.source} -> {target}, t0 = {', '.join(map(str, t0s))}")


# ---------------------------------------------------------------------------- quickstart
def demo_section(out, toy_model, toy_cfg, digits_model, digits_cfg, progress: bool = False) -> list[str]:
    """The analyses on the quickstart digits model: SDEdit of corrupted test digits, DDPM's posterior
    grid, rate–distortion from the VLB, and the trajectory spectrum behind DSNO's choice of M and J."""
    from .. import viz
    from ..build import build_process
    from ..data import load_dataset

    out = Path(out) / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    model, scale = digits_model, viz.auto_scale(8)
    g = torch.Generator().manual_seed(0)
    test = load_dataset("digits", split="test").x
    x = test[:8].clone()
    for i in range(len(x)):  # corrupt: blank a 3x3 block in each digit
        r, c = torch.randint(0, 6, (2,), generator=g).tolist()
        x[i, :, r:r + 3, c:c + 3] = -1.0
    t0s = (0.25, 0.5, 0.75)
    rows = [x] + [sdedit(model, x, t0, steps=100, generator=g, clip_denoised=True) for t0 in t0s]
    viz.save_grid(torch.cat(rows), out / "sdedit.png", nrow=8, scale=scale)
    rmse = [float(((r - x) ** 2).reshape(len(x), -1).mean(1).sqrt().mean()) for r in rows[1:]]
    xt, post = shared_xt_samples(model, test[:4], 0.5, 6, steps=100, generator=g, clip_denoised=True)
    viz.save_grid(torch.cat([test[:4, None], xt[:, None].clamp(-1, 1), post], 1).reshape(-1, 1, 8, 8),
                  out / "posterior.png", nrow=8, scale=scale)
    rd = rate_distortion(model, build_process(digits_cfg.diffusion), test[:64], clip_denoised=True, generator=g)
    viz.save_curves({"distortion vs rate": (rd["rate_bpd"], rd["rmse_255"])}, out / "rate_distortion.png",
                    "rate (bits/dim)", "distortion (RMSE, [0,255])", title="DDPM rate–distortion, 64 test digits")
    sp = trajectory_spectra(model, (1, 8, 8), (4, 6, 8), n=128, steps=48, generator=g)
    viz.save_curves({f"M={M}": (list(range(len(r["spectrum"]))), r["spectrum"]) for M, r in sp["M"].items()},
                    out / "spectrum.png", "Fourier mode", "fraction of energy", title="DDIM trajectory spectrum", logy=True)
    (out / "analysis.json").write_text(json.dumps({"sdedit_rmse": dict(zip(map(str, t0s), rmse)),
                                                   "rate_distortion": rd, "spectrum": sp}, indent=2))
    half = min(range(len(rd["rate_bpd"])), key=lambda i: abs(rd["rate_bpd"][i] - rd["rate_bpd"][-1] / 2))
    spec = "; ".join(f"M={M}: J={r['modes_for_threshold']} keeps {r['cumulative'][r['modes_for_threshold'] - 1]:.3f}"
                     for M, r in sp["M"].items())
    return ["## Analyses (`difflab analyze`) on the digits model", "",
            "SDEdit of corrupted test digits (top row: input with a blanked 3×3 block; then t0 = "
            f"{', '.join(map(str, t0s))}; RMSE to the input {', '.join(f'{v:.3f}' for v in rmse)}):", "",
            "![sdedit](analysis/sdedit.png)", "",
            "Samples of p(x0 | x_t) from one shared x_t at t = 0.5 (per row: source, x_t, 6 samples):", "",
            "![posterior](analysis/posterior.png)", "",
            f"Rate–distortion from the VLB terms (64 test digits, x̂0 clipped to [-1, 1]): the bound is "
            f"{rd['total_bpd']:.2f} bits/dim; "
            f"half of the rate ({rd['rate_bpd'][half]:.2f} bits/dim, reverse step {rd['step'][half]}) already brings "
            f"the distortion to {rd['rmse_255'][half]:.1f} of 255 (from {rd['rmse_255'][0]:.1f}):", "",
            "![rate-distortion](analysis/rate_distortion.png)", "",
            f"Trajectory spectrum (DDIM, 128 trajectories, energy kept by J modes at 0.99): {spec}.", "",
            "![spectrum](analysis/spectrum.png)", ""]
