"""Time-predictor (TP) sampling against the original samplers, on toy worlds with exact metrics.

    python benchmarks/tp_sampling.py [--worlds ring8,mix16] [--steps 5,10,20,50] [--n 2000] [--plot tp.png] [--json tp.json]
    python benchmarks/tp_sampling.py --ckpt runs/mnist --tp-ckpt runs/mnist-tp [--fid-n 5000]   # + image FID rows

Worlds (GaussianMixture, so every metric is exact: mean log-density, sliced W2, MMD², modes):
  ring8  toy:ring8, the quickstart's 2-D ring. One 2-D point says little about its noise level: the
         exact posterior of t has std > 0.25 at every t, so E[t | x] regresses to the middle.
  mix16  8 Gaussians (std 0.1) in 16-D: the noise level is readable (posterior std 0.01-0.03 for
         t <= 0.1), as in images; at large t (x nearly N(0, I)) it is not, in any dimension.
Per world: the exact-score model and a small trained model (the --preset's MLP, trained here and
cached under --runs); predictors: a trained g (MLP, cached too) and the oracle g* = E[t | x], the
Bayes-optimal predictor under the MSE that g is trained with. TP variants: model-only (only the
model sees g(x); difflab's default) and '+coef' (α, σ, β of the step at g(x) as well: the original
Algorithm 3). Every variant of a (sampler, T) starts from the same noise and draws the same
sampler noise. Ratios are TP / original for sliced W2 and MMD² (< 1: TP is better), beside the
issue's reference FID ratio 144.88 / 343.35 = 0.42 (CIFAR-10, VP-SDE, Euler–Maruyama, T = 10).

--family adds the TP family's relatives (issue #21) as variants of every (model, sampler, T): TP
with the oracle clamped to a window around the nominal time, the Time-Shift Sampler (the variance
criterion with the mixture's closed-form pixel variance; input and x̂0 readouts), a constant
shift t ± ξ and ε scaling, so that with the exact score (no network error: only discretisation)
and with the trained model (both) one sees which part each variant corrects.

Defaults take about 5 minutes on 2 shared CPU cores, training included (half that once cached).
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch

from difflab.config import load_config
from difflab.methods.time_predictor import (REFERENCE_RATIO, ConstantShift, EpsilonScaling, OracleTimePredictor,
                                            TimePredictorSampling, TimeShiftSampling, mixture_pixel_variance,
                                            accuracy_by_t, build_time_predictor, fit_time_predictor,
                                            load_time_predictor, toy_sampling_rows, toy_sampling_table, tp_configs,
                                            tp_sample)
from difflab.models import exact_mixture_model
from difflab.process import GaussianMixture

from difflab.process.schedules import F64
BETTER_SAMPLERS = ("ancestral", "ddim")


def world_mixture(name: str) -> GaussianMixture:
    if name == "ring8":
        from difflab.data import toy_mixture

        return toy_mixture("toy:ring8")
    if name.startswith("mix") and name[3:].isdigit():
        D = int(name[3:])
        means = torch.randn(8, D, generator=torch.Generator().manual_seed(0), dtype=F64)
        return GaussianMixture(means / means.pow(2).mean().sqrt() * math.sqrt(1 - 0.1**2), stds=0.1)
    raise SystemExit(f"unknown world {name!r}; expected ring8 or mixD (e.g. mix16)")


def trained_model(world: str, mix, args):
    """The preset's model trained on 50,000 exact samples of the world (cached)."""
    from difflab.data import ArrayDataset
    from difflab.train.api import load_model
    from difflab.train.checkpoint import latest_checkpoint
    from difflab.train.build import build_model, build_objective, build_process
    from difflab.train.loop import Trainer

    run = Path(args.runs) / f"{world}-{args.preset}-{args.train_steps}" / "diffusion"
    if latest_checkpoint(run) is None:
        cfg = load_config(args.preset, [f"train.steps={args.train_steps}", "train.ckpt_every=0", "train.log_every=100",
                                        f"data.name=toy:{world}"])
        x = mix.sample(50000, torch.Generator().manual_seed(1)).float()
        process = build_process(cfg.diffusion)
        torch.manual_seed(cfg.train.seed)
        model = build_model(cfg, (mix.dim,), process=process)
        t0 = time.perf_counter()
        Trainer(model, build_objective(cfg, process), ArrayDataset(x, None, name=f"toy:{world}"), cfg.train, run,
                cfg.to_dict(), kind="diffusion", progress=args.progress, extra={"data_shape": [mix.dim]}).fit()
        print(f"[{world}] trained the {args.preset} model, {args.train_steps} steps, in {time.perf_counter() - t0:.0f} s")
    model, cfg, _ = load_model(run)
    return model, cfg


def trained_g(world: str, mix, schedule, dcfg, args):
    run = Path(args.runs) / f"{world}-{args.preset}-{args.train_steps}" / f"tp-{args.tp_steps}-{args.tp_param}"
    from difflab.train.checkpoint import latest_checkpoint

    if latest_checkpoint(run) is None:
        tp_cfg, tcfg = tp_configs([f"tp.parameterization={args.tp_param}", "train.ckpt_every=0", "train.log_every=100"],
                                  steps=args.tp_steps)
        torch.manual_seed(0)
        g = build_time_predictor((mix.dim,), schedule, tp_cfg)
        t0 = time.perf_counter()
        fit_time_predictor(g, mix.sample(50000, torch.Generator().manual_seed(2)).float(), tcfg, run,
                           diffusion_config=dcfg, progress=args.progress)
        print(f"[{world}] trained g, {args.tp_steps} steps, in {time.perf_counter() - t0:.0f} s")
    return load_time_predictor(run).predictor


def family_wrappers(mix, oracle, window: float = 0.05, cutoff: float = 0.3) -> dict:
    """The TP family's relatives as toy variants: name -> a function of the model."""
    m = mixture_pixel_variance(mix)
    return {
        f"oracle ±{window:g}": lambda mod: TimePredictorSampling(mod, oracle, window=window),
        f"time-shift ±{window:g}": lambda mod: TimeShiftSampling(mod, m, window=window, cutoff=cutoff),
        f"time-shift ±{window:g} x0": lambda mod: TimeShiftSampling(mod, m, window=window, cutoff=cutoff,
                                                                   x0_readout=True),
        "t+0.01": lambda mod: ConstantShift(mod, 0.01),
        "t-0.01": lambda mod: ConstantShift(mod, -0.01),
        "eps/1.005": lambda mod: EpsilonScaling(mod, 1.005),
        "eps/0.995": lambda mod: EpsilonScaling(mod, 0.995),
    }


def geo_mean(xs):
    xs = [x for x in xs if x > 0 and math.isfinite(x)]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else float("nan")


def summary(rows):
    """Geometric means over models and T of the TP/original ratios, per (world, sampler, variant)."""
    base = {(r["world"], r["model"], r["sampler"], r["steps"]): r for r in rows if r["variant"] == "original"}
    groups: dict = {}
    for r in rows:
        if r["variant"] == "original":
            continue
        b = base[(r["world"], r["model"], r["sampler"], r["steps"])]
        key = (r["world"], r["sampler"], r["variant"] + (" +coef" if r["coefficients"] else ""))
        groups.setdefault(key, []).append((r["sliced_w2"] / b["sliced_w2"], r["mmd2"] / max(b["mmd2"], 1e-6),
                                           r["mean_log_density"] - b["mean_log_density"], r["blown_up"]))
    out = []
    for (world, s, v), vals in groups.items():
        w, m, d, lost = zip(*vals)
        gw = geo_mean(w)
        out.append({"world": world, "sampler": s, "variant": v, "sw2_ratio": gw, "mmd2_ratio": geo_mean(m),
                    "wins": sum(x < 1 for x in w), "runs": len(w), "log_density_change": statistics.median(d),
                    "max_blown_up": max(lost),
                    "verdict": "helps" if gw < 0.95 else "hurts" if gw > 1.05 else "neutral"})
    return out


def plot(rows, path):
    from difflab.viz import _mpl

    plt = _mpl()
    panels = list(dict.fromkeys((r["world"], r["model"]) for r in rows))
    ticks = sorted({r["steps"] for r in rows})
    samplers = list(dict.fromkeys(r["sampler"] for r in rows))
    fig, axes = plt.subplots(len(panels), len(samplers), figsize=(4.2 * len(samplers), 3.3 * len(panels)),
                             squeeze=False)
    for i, (world, model) in enumerate(panels):
        for j, s in enumerate(samplers):
            ax = axes[i][j]
            sel = [r for r in rows if r["world"] == world and r["model"] == model and r["sampler"] == s]
            variants = list(dict.fromkeys(r["variant"] + (" +coef" if r["coefficients"] else "") for r in sel))
            for k, v in enumerate(variants):
                pts = sorted((r["steps"], r["sliced_w2"]) for r in sel
                             if r["variant"] + (" +coef" if r["coefficients"] else "") == v)
                ax.plot(*zip(*pts), marker="o", ms=3, c="k" if v == "original" else f"C{k}", lw=2 if v == "original" else 1,
                        ls="--" if "+coef" in v else "-", label=v)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(ticks, [str(t) for t in ticks], minor=False)
            ax.set_xticks([], minor=True)
            ax.set_title(f"{world}, {model} model, {s}", fontsize=9)
            ax.set_xlabel("steps T")
            ax.set_ylabel("sliced W2 to the truth")
            ax.grid(alpha=0.3, which="both")
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fid_rows(args):
    """FID (difflab's MNIST-family feature space) of original vs TP sampling for an image model."""
    from difflab.errors import DataError
    from difflab.metrics.evaluator import evaluate_images
    from difflab.train.api import load_model

    model, cfg, _ = load_model(args.ckpt, map_location=args.device)
    if cfg.data.name not in ("mnist", "fashion-mnist"):
        raise DataError(f"FID rows need an mnist or fashion-mnist model (the evaluator's feature space), "
                        f"got {cfg.data.name!r}")
    g = load_time_predictor(args.tp_ckpt, map_location=args.device).predictor
    shape = (1, 28, 28) if not cfg.data.image_size else (1, cfg.data.image_size, cfg.data.image_size)
    out = []
    for s in args.fid_samplers:
        for T in args.fid_steps:
            opts = {"clip_denoised": True} if s in ("ancestral", "ddim") else {}
            for variant, coef in (("original", None), ("tp", False), ("tp +coef", True)):
                m = model if coef is None else TimePredictorSampling(model, g, use_in_coefficients=coef)
                xs, gen = [], torch.Generator(args.device).manual_seed(0)
                for lo in range(0, args.fid_n, 500):
                    with torch.no_grad():
                        xs.append(tp_sample(m, (min(500, args.fid_n - lo), *shape), sampler=s, steps=T,
                                            generator=gen, device=args.device, **opts).x.cpu())
                met = evaluate_images(torch.cat(xs), name=cfg.data.name, data_dir=args.data_dir)
                out.append({"sampler": s, "steps": T, "variant": variant, "fid": met["fid"],
                            "feature_space": met["feature_space"]})
                print(f"  FID {s} T={T} {variant}: {met['fid']:.2f}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", default="ring8,mix16")
    ap.add_argument("--steps", default="5,10,20,50")
    ap.add_argument("--samplers", default="euler_maruyama,ancestral,ddim")
    ap.add_argument("--n", type=int, default=2000, help="samples per run")
    ap.add_argument("--preset", default="toy-vpsde", help="diffusion preset of the trained toy model (toy-vpsde: the "
                    "issue's VP-SDE; toy-ddpm: discrete)")
    ap.add_argument("--train-steps", type=int, default=2000)
    ap.add_argument("--tp-steps", type=int, default=2000)
    ap.add_argument("--tp-param", default="t", choices=["t", "log_snr"])
    ap.add_argument("--no-coefficients", action="store_true", help="only the model-only TP variant")
    ap.add_argument("--family", action="store_true", help="add the TP family's relatives (see above)")
    ap.add_argument("--oracle-nodes", type=int, default=64, help="quadrature nodes of E[t | x] (64: error ~1e-4)")
    ap.add_argument("--runs", default="runs/tp-bench", help="cache of the trained models")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--plot", default=None, help="PNG: sliced W2 against T, every model, sampler and variant")
    ap.add_argument("--json", default=None)
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--ckpt", default=None, help="an MNIST-family diffusion checkpoint for FID rows (with --tp-ckpt)")
    ap.add_argument("--tp-ckpt", default=None)
    ap.add_argument("--fid-n", type=int, default=5000)
    ap.add_argument("--fid-steps", default="10")
    ap.add_argument("--fid-samplers", default="euler_maruyama,ddim")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    steps = [int(v) for v in args.steps.split(",")]
    samplers = args.samplers.split(",")
    args.fid_steps = [int(v) for v in args.fid_steps.split(",")]
    args.fid_samplers = args.fid_samplers.split(",")
    t_start = time.perf_counter()
    machine = f"{platform.machine()}, {torch.get_num_threads()} torch thread(s)"

    rows, accuracy = [], {}
    for world in [w for w in args.worlds.split(",") if w]:
        mix = world_mixture(world)
        model, dcfg = trained_model(world, mix, args)
        g = trained_g(world, mix, model.schedule, dcfg, args)
        oracle = OracleTimePredictor(mix, model.schedule, num_points=args.oracle_nodes)
        acc = accuracy_by_t({"g": g, "oracle": oracle}, mix.sample(5000, torch.Generator().manual_seed(3)),
                            model.schedule, n=2000, bins=5)
        accuracy[world] = {k: {"rmse": acc[k]["rmse"], "overall_rmse": acc[k]["overall_rmse"]} for k in ("g", "oracle")}
        print(f"[{world}] RMSE of g {acc['g']['overall_rmse']:.4f}, of the oracle E[t|x] {acc['oracle']['overall_rmse']:.4f}"
              f" (a constant 0.5: 0.2887)")
        t0 = time.perf_counter()
        wr = toy_sampling_rows({"exact": exact_mixture_model(mix, model.schedule), "trained": model},
                               {"g": g, "oracle": oracle}, mix, samplers=samplers, steps=steps, n=args.n,
                               coefficients=(False,) if args.no_coefficients else (False, True),
                               wrappers=family_wrappers(mix, oracle) if args.family else None,
                               progress=print if args.progress else None)
        print(f"[{world}] {len(wr)} sampling runs in {time.perf_counter() - t0:.0f} s")
        for r in wr:
            r["world"] = world
        rows += wr

    print(f"\n## TP sampling on toy worlds ({machine}; {args.n} samples per run; preset {args.preset})\n")
    for world in dict.fromkeys(r["world"] for r in rows):
        print(f"### {world}\n")
        print("\n".join(toy_sampling_table([r for r in rows if r["world"] == world])))
        print()
    summ = summary(rows)
    print(f"### Geometric-mean TP/original ratios over models and T (reference: CIFAR-10 FID ratio {REFERENCE_RATIO:.2f})\n")
    print("| world | sampler | variant | SW2 ratio | MMD² ratio | TP better (SW2) in | median Δ log-density "
          "| most blown up | verdict |")
    print("|---|---|---|---:|---:|---:|---:|---:|---|")
    for s in summ:
        print(f"| {s['world']} | {s['sampler']} | {s['variant']} | {s['sw2_ratio']:.2f} | {s['mmd2_ratio']:.2f} | "
              f"{s['wins']}/{s['runs']} | {s['log_density_change']:+.1f} | {100 * s['max_blown_up']:.1f}% | "
              f"{s['verdict']} |")
    better = [s for s in summ if s["sampler"] in BETTER_SAMPLERS]
    if better:
        helps = [s for s in better if s["verdict"] == "helps"]
        print(f"\nOn the better samplers ({', '.join(BETTER_SAMPLERS)}) TP helps in {len(helps)} of {len(better)} "
              f"(world, sampler, variant) groups: " + ("; ".join(f"{s['world']} {s['sampler']} {s['variant']}" for s in helps)
                                                      if helps else "nowhere") + ".")
    base = {(r["world"], r["model"], r["sampler"], r["steps"]): r for r in rows if r["variant"] == "original"}
    wins = [(r, r["sliced_w2"] / base[(r["world"], r["model"], r["sampler"], r["steps"])]["sliced_w2"]) for r in rows
            if r["variant"] != "original"]
    wins = [(r, q) for r, q in wins if q < 0.95]
    print(f"\nSingle runs where TP lowers sliced W2 by more than 5% ({len(wins)} of {len(rows) - len(base)}): " +
          ("; ".join(f"{r['world']} {r['model']} {r['sampler']} T={r['steps']} {r['variant']}"
                     f"{' +coef' if r['coefficients'] else ''} x{q:.2f}" for r, q in wins) or "none") + ".")
    fid = fid_rows(args) if args.ckpt and args.tp_ckpt else []
    if args.ckpt and not args.tp_ckpt or args.tp_ckpt and not args.ckpt:
        print("FID rows need both --ckpt and --tp-ckpt; skipped.")
    total = time.perf_counter() - t_start
    print(f"\nTotal {total:.0f} s.")
    if args.plot:
        plot(rows, args.plot)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"machine": machine, "args": vars(args), "seconds": total,
                                               "reference_ratio": REFERENCE_RATIO, "accuracy": accuracy,
                                               "rows": rows, "summary": summ, "fid": fid}, indent=2, default=str))


if __name__ == "__main__":
    main()
