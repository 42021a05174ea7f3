"""`difflab analyze`: the papers' analyses as commands, each writing its figure and a JSON of its numbers."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from difflab.cli.options import input_path, output_dir
from difflab.cli.common import add_external_args
from difflab.analysis import (coarse_to_fine, density_ratio_paths, rate_distortion, sdedit, sdedit_curve,
                              shared_xt_samples, trajectory_spectra)
from difflab.process.gaussian import GaussianDiffusion
from difflab.samplers import SAMPLERS

EXAMPLES = """examples:
  difflab analyze sdedit runs/digits --t0 0.3,0.5,0.7 --out analysis/       (inputs: test images of the model's data)
  difflab analyze posterior runs/digits --t0 0.5 --k 8 --out analysis/
  difflab analyze rate-distortion runs/digits --n 128 --out analysis/
  difflab analyze interp runs/digits --out analysis/
  difflab analyze spectrum runs/digits --M 4,6,8,12 --out analysis/               (choose DSNO's M and J)
  difflab analyze density-ratio runs/mnist --disc runs/mnist-dg --n 500 --out analysis/
  difflab analyze sdedit-curve runs/mnist --source fashion-mnist --disc runs/mnist-dg --t0 0.3,0.5,0.7 --out analysis/
  difflab analyze time-shift mnist-ddpm-ext --sampler ddim --steps 10 --window 0.05 --n 256 --out analysis/"""

WHAT = ["sdedit", "sdedit-curve", "posterior", "rate-distortion", "interp", "spectrum", "density-ratio", "time-shift"]
DEFAULT_N = {"sdedit-curve": 500, "spectrum": 256, "density-ratio": 500, "time-shift": 256}


def register(sub) -> dict:
    p = sub.add_parser("analyze", help="the papers' analyses: " + ", ".join(WHAT),
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=WHAT)
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True, type=output_dir, help="output folder")
    p.add_argument("--t0", default="0.5", help="noise level(s), comma-separated")
    p.add_argument("--k", type=int, default=8, help="samples per shared x_t (posterior)")
    p.add_argument("--n", type=int, default=None,
                   help="inputs / samples (default 8; sdedit-curve and density-ratio 500, spectrum 256)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--init", default=None, type=input_path, help="an .npz with 'samples' or 'images_uint8' to start from (default: test split)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--sampler", default=None, help="default ancestral (spectrum: ddim)")
    p.add_argument("--source", default=None, help="sdedit-curve: the dataset to translate from (e.g. fashion-mnist)")
    p.add_argument("--disc", default=None, help="a discriminator run (dg-train): DG curves / density-ratio paths")
    p.add_argument("--dg-weight", type=float, default=1.0)
    p.add_argument("--M", default="4,6,8,12,16", help="spectrum: numbers of recorded times, comma-separated")
    p.add_argument("--threshold", type=float, default=0.99, help="spectrum: energy fraction J modes must keep")
    p.add_argument("--window", type=float, default=0.05, help="time-shift: the window's half-width in t")
    p.add_argument("--cutoff", type=float, default=0.0, help="time-shift: no shift at t <= this")
    add_external_args(p)
    return {"analyze": cmd_analyze}


def _inputs(args, lm, n):
    from difflab.data import load_dataset

    if args.init:
        from difflab.io.samples import load_sample_arrays

        key, a = load_sample_arrays(args.init)
        x = torch.from_numpy(a[:n]).float()
        return x / 127.5 - 1 if key == "images_uint8" else x
    return load_dataset(lm.data_name(args.data), args.data_dir or lm.data_dir, split="test",
                        image_size=lm.train_image_size, num_samples=n, seed=args.seed).x


def cmd_analyze(args) -> int:
    from difflab import viz
    from difflab.errors import ConfigError
    from difflab.loading import load_any

    lm = load_any(args.checkpoint, flags=args.flags)
    model = lm.model
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
        fig = _spectrum(model, lm, args, n, sampler, g, out, result)
    elif args.what == "time-shift":
        fig = _time_shift(model, lm, args, n, sampler, out, result)
    elif args.what in ("density-ratio", "sdedit-curve"):
        fig = _guided_analysis(model, lm, args, n, sampler, t0s, out, result)
    else:
        x = _inputs(args, lm, n)
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
            proc = lm.process()
            if not isinstance(proc, GaussianDiffusion) or not image:
                raise ConfigError("rate-distortion needs a discrete-process image model (its variational bound)")
            rd = rate_distortion(model, proc, x, clip_denoised=True, generator=g)  # x̂0 in the data's [-1, 1], as DDPM's figure
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


def _spectrum(model, lm, args, n, sampler, g, out, result):
    from difflab import viz
    from difflab.errors import ConfigError

    from difflab.cli.common import parse_ints

    Ms = parse_ints(args.M, "--M")
    if min(Ms) < 2:
        raise ConfigError(f"--M {args.M!r}; a trajectory needs at least 2 times, e.g. 4,6,8")
    shape = lm.data_shape
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


def _time_shift(model, lm, args, n, sampler, out, result):
    from difflab import viz
    from difflab.data import load_dataset
    from difflab.compose import training_pixel_variance
    from difflab.methods.time_predictor import time_shift_readings

    name, data_dir = lm.data_name(args.data), args.data_dir or lm.data_dir
    m = training_pixel_variance(lm, data_dir, data=args.data)
    test = load_dataset(name, data_dir, split="test", image_size=lm.train_image_size, num_samples=max(n, 1000)).x
    r = time_shift_readings(model, m, test, sampler=sampler, steps=args.steps, window=args.window,
                            cutoff=args.cutoff, n=n, seed=args.seed)
    result.update(r)
    for a, b, c in zip(r["chosen"], r["read"], r["real"]):
        print(f"t = {a['t']:.3f}: chosen {a['median']:.3f} [{a['q10']:.3f}, {a['q90']:.3f}], states read "
              f"{b['median']:.3f}, real images read {c['median']:.3f} [{c['q10']:.3f}, {c['q90']:.3f}]")
    return viz.save_time_shift(r, out / "time_shift.png")


def _guided_analysis(model, lm, args, n, sampler, t0s, out, result):
    from difflab import viz
    from difflab.data import load_dataset
    from difflab.errors import DataError
    from difflab.methods.guidance import DiscriminatorGuidance, load_discriminator

    disc = load_discriminator(args.disc) if args.disc else None
    guided = DiscriminatorGuidance(model, disc, weight=args.dg_weight) if disc is not None else None
    data_dir = args.data_dir or lm.data_dir
    if args.what == "density-ratio":
        real = _inputs(args, lm, n)
        dr = density_ratio_paths(model, disc, real, guided=guided, sampler=sampler, steps=args.steps, seed=args.seed)
        result.update(dr)
        return viz.save_curves({k: (dr["t"], v["mean"]) for k, v in dr["paths"].items()}, out / "density_ratio.png",
                               "t", "mean log d/(1-d)", title=f"density-ratio paths ({sampler}, {n} paths each)")
    from difflab.metrics.bench import evaluate_samples

    if not args.source:
        raise DataError("sdedit-curve needs --source DATASET, the data to translate from (e.g. fashion-mnist)")
    source = load_dataset(args.source, data_dir, split="test", num_samples=n, seed=args.seed).x
    target = lm.data_name(args.data)
    if tuple(source.shape[1:]) != tuple(_inputs(args, lm, 1).shape[1:]):
        raise DataError(f"--source {args.source}: samples of shape {tuple(source.shape[1:])}, the model's {target} "
                        f"data are {tuple(_inputs(args, lm, 1).shape[1:])}")
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

