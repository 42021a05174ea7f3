"""DSNO on the toy world: trajectory error, one-step sample quality, speed, parameters, spectrum.

    python benchmarks/dsno_bench.py [--json out.json] [--plot out.png] [--threads 1] [--quick]
    python benchmarks/dsno_bench.py --ckpt runs/digits [--fid --data-dir DIR]   # an image (or any) teacher

Two teachers on toy:ring8 (8 Gaussians of std 0.05 on the circle of radius √2), both on DDPM's linear schedule:

* ``exact``: the closed-form ε of the mixture; its DSNO is a fresh MLP operator (no teacher network to copy).
* ``trained``: a small MLP (hidden 128) trained here with toy-ddpm; its DSNO starts from a copy of it.

For each: a bank of PF-Heun trajectories at M quadratic times (t = 1 ... 0), a DSNO trained on it with difflab's
Trainer, then on held-out noises x_T:

* the trajectory error (RMS per coordinate) at every one of the M times against the teacher's ODE solution
  from the same x_T solved finely (``--ref-steps`` Heun steps), beside the trivial predictors x(t) = x_T and
  x(t) = the bank's mean trajectory, and beside the teacher's own solver at the bank's step count;
* sample quality (difflab.metrics.toy.toy_metrics) of DSNO at 1 NFE, the teacher solver at its NFE, DDIM at 1, 2,
  4 NFE and PF-Heun at 1, 3 and 5 NFE (1, 2, 3 steps, the last an Euler step to t = 0), all from the same x_T; the sliced-W2 ratio DSNO / teacher beside DSNO's CIFAR-10 FID ratio 3.78 / 2.51 = 1.51;
* wall-clock per sample (batched, median of repeats) and the temporal blocks' parameter overhead;
* the power spectrum over time of PF-ODE trajectories: the energy fraction in the first J Fourier modes for a
  few M (to choose M and J).

Default runtime: about 3-5 minutes on a 2-core CPU with one thread. ``--quick`` is a smoke run.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from difflab.config import TrainConfig, load_config
from difflab.data import toy_mixture
from difflab.methods.dsno import (TrajectoryDataset, build_dsno, dsno_from_teacher, dsno_sample, fit_dsno,
                                  generate_trajectories, noise_from_seeds, noise_seeds,
                                  refine_grid, trajectory_error, trajectory_spectrum, trajectory_times)
from difflab.metrics.toy import toy_metrics
from difflab.models import exact_mixture_model
from difflab.nets import MLP
from difflab.samplers import ddim, pf_heun, time_grid
from difflab.metrics.references import PAPER_RATIOS

REFERENCE_RATIO = PAPER_RATIOS["DSNO"]  # DSNO one-step FID / teacher ODE FID on CIFAR-10 (Zheng et al. 2022)


def timed(fn, repeats: int = 3) -> tuple[float, object]:
    """Median seconds of ``repeats`` calls, and the last result."""
    ts, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), out


def solve_at(model, x_T, times, steps):
    """The teacher's PF-Heun solution (N, M, ...) at ``times`` on a grid of ~steps intervals through them."""
    grid, idx = refine_grid(times, steps)
    r = pf_heun(model, x_T, grid, return_trajectory=True)
    return r.trajectory[idx].transpose(0, 1), r.nfe


def few_step_baselines(model, x_T):
    """{name: (NFE, samples)} of DDIM and PF-Heun at 1, 2 and 4 network evaluations."""
    s = model.schedule
    out = {}
    for nfe in (1, 2, 4):
        # uniform grids: the respaced "auto" grid of a discrete model spends one of very few steps on 1e-3 -> 0
        out[f"DDIM {nfe}"] = (nfe, ddim(model, x_T, time_grid(s, nfe, spacing="uniform")).x)
    # Heun's last step to t = 0 is an Euler step (Karras et al.), so s steps cost 2s - 1 evaluations: 1, 3, 5.
    # (Ending at t = 1e-3 instead, for 2 and 4 evaluations, puts an evaluation at σ ≈ 0.01 whose ε/σ blows the
    # one- and two-step solutions up: RMSE 5.5 and 2.5 in a trial, so the Karras grid is the fair baseline.)
    for steps in (1, 2, 3):
        r = pf_heun(model, x_T, time_grid(s, steps, spacing="uniform"))
        out[f"PF-Heun {r.nfe}"] = (r.nfe, r.x)
    return out


def toy_case(name: str, teacher, make_dsno, args, work: Path, mix) -> dict:
    """Bank -> DSNO -> every number of the report, for one teacher."""
    print(f"[{name}] bank: {args.n} trajectories, M = {args.M}, PF-Heun {args.steps} steps", flush=True)
    t0 = time.perf_counter()
    generate_trajectories(teacher, work / f"{name}-bank", n=args.n, M=args.M, spacing=args.spacing, steps=args.steps,
                          shard_size=max(args.n // 4, 1), seed=0, shape=(2,), progress=False)
    bank_s = time.perf_counter() - t0
    bank = TrajectoryDataset(work / f"{name}-bank")
    times = bank.times

    dsno = make_dsno(times)
    tcfg = TrainConfig(steps=args.train_steps, batch_size=args.batch, lr=args.lr, warmup_steps=100,
                       lr_schedule="cosine", ema_rate=0.995, ckpt_every=0, log_every=200, device="cpu")
    print(f"[{name}] training DSNO: {args.train_steps} steps, batch {args.batch}", flush=True)
    t0 = time.perf_counter()
    ema, res = fit_dsno(dsno, bank, work / f"{name}-run", tcfg, schedule=teacher.schedule, max_weight=args.max_weight,
                        progress=False, tensorboard=False)
    train_s = time.perf_counter() - t0

    # held-out noises and the teacher's ODE solution from them, solved finely ("exact")
    x_T = noise_from_seeds(noise_seeds(1, 0, args.n_test), (2,))
    ref, _ = solve_at(teacher, x_T, times, args.ref_steps)
    at_bank_steps, teacher_nfe = solve_at(teacher, x_T, times, args.steps)
    t_dsno, r = timed(lambda: dsno_sample(ema, x_T, return_trajectory=True))
    t_teacher, _ = timed(lambda: solve_at(teacher, x_T, times, args.steps), repeats=1)
    traj = r.trajectory.transpose(0, 1)
    errors = {
        "DSNO (1 NFE)": trajectory_error(traj, ref),
        "x_T (trivial)": trajectory_error(x_T[:, None].expand_as(ref), ref),
        "mean trajectory (trivial)": trajectory_error(bank.y.mean(0, keepdim=True).expand_as(ref), ref),
        f"teacher at {args.steps} steps": trajectory_error(at_bank_steps, ref),
    }

    samples = {"DSNO": (1, r.x), f"teacher PF-Heun {args.steps} steps": (teacher_nfe, at_bank_steps[:, -1])}
    samples.update(few_step_baselines(teacher, x_T))
    quality = []
    for label, (nfe, xs) in samples.items():
        m = toy_metrics(xs.double(), mix, seed=1)
        rmse = float((xs.double() - ref[:, -1].double()).pow(2).mean().sqrt())
        quality.append({"method": label, "nfe": nfe, "rmse_to_teacher_ode": rmse, **m})
    truth = toy_metrics(mix.sample(args.n_test, torch.Generator().manual_seed(7)), mix, seed=1)
    q = {row["method"]: row for row in quality}
    teacher_row = q[f"teacher PF-Heun {args.steps} steps"]
    return {
        "teacher": name, "times": times.tolist(), "M": args.M, "modes": args.modes,
        "bank_seconds": bank_s, "train_seconds": train_s, "train_steps": res["final_step"],
        "final_loss": res["last_loss"], "param_overhead": res["param_overhead"],
        "trajectory_error": {k: v.tolist() for k, v in errors.items()},
        "quality": quality, "true_samples": truth,
        "sw2_ratio_dsno_over_teacher": q["DSNO"]["sliced_w2"] / teacher_row["sliced_w2"],
        "mmd2_dsno": q["DSNO"]["mmd2"], "mmd2_teacher": teacher_row["mmd2"],
        "seconds_per_sample": {"DSNO": t_dsno / args.n_test, "teacher": t_teacher / args.n_test},
        "teacher_nfe": teacher_nfe,
        "samples": {k: v[1][:1000].tolist() for k, v in samples.items() if k in ("DSNO", "DDIM 1", "DDIM 4")}
        | {"teacher": at_bank_steps[:1000, -1].tolist()},
    }


def spectrum_table(model, Ms=(8, 16, 32), n: int = 1000, steps: int = 256) -> dict:
    """Energy fraction in the first J modes of PF-ODE trajectories recorded at M uniform times."""
    x_T = noise_from_seeds(noise_seeds(2, 0, n), (2,))
    out = {}
    for M in Ms:
        traj, _ = solve_at(model, x_T, trajectory_times(M, "uniform"), steps)
        spec = trajectory_spectrum(traj)
        centred = trajectory_spectrum(traj - traj.mean(1, keepdim=True))
        out[M] = {"fraction_first_J": [float(spec[:J].sum()) for J in range(1, M // 2 + 2)],
                  "fraction_first_J_without_mean": [float(centred[:J].sum()) for J in range(1, M // 2 + 2)]}
    return out


def print_toy(res: dict) -> None:
    M = res["M"]
    print(f"\n== teacher: {res['teacher']} ==  bank {res['bank_seconds']:.0f} s, DSNO training {res['train_seconds']:.0f} s "
          f"({res['train_steps']} steps, loss {res['final_loss']:.4f}); temporal blocks +{res['param_overhead']['temporal_params']:,} "
          f"params on {res['param_overhead']['backbone_params']:,} ({res['param_overhead']['overhead_pct']:.0f}%)")
    print("trajectory error (RMS per coordinate) vs the teacher's fine ODE solution, per time:")
    print(f"  {'t':<30}" + "".join(f"{t:>8.3f}" for t in res["times"]))
    for k, v in res["trajectory_error"].items():
        print(f"  {k:<30}" + "".join(f"{e:>8.4f}" for e in v))
    print(f"\n  {'method':<28}{'NFE':>5}{'RMSE→ODE':>10}{'log-dens':>10}{'SW2':>8}{'MMD²':>9}{'modes':>7}{'TV':>7}")
    for row in res["quality"]:
        print(f"  {row['method']:<28}{row['nfe']:>5}{row['rmse_to_teacher_ode']:>10.4f}{row['mean_log_density']:>10.3f}"
              f"{row['sliced_w2']:>8.4f}{row['mmd2']:>9.5f}{row['coverage']:>7.2f}{row['weight_tv']:>7.3f}")
    t = res["true_samples"]
    print(f"  {'true samples (noise floor)':<28}{'':>5}{'':>10}{t['mean_log_density']:>10.3f}{t['sliced_w2']:>8.4f}"
          f"{t['mmd2']:>9.5f}{t['coverage']:>7.2f}{t['weight_tv']:>7.3f}")
    sp = res["seconds_per_sample"]
    print(f"\n  sliced-W2 ratio DSNO / teacher = {res['sw2_ratio_dsno_over_teacher']:.2f} "
          f"(reference: CIFAR-10 FID ratio {REFERENCE_RATIO:.2f});  wall-clock per sample: DSNO {1e6 * sp['DSNO']:.1f} µs, "
          f"teacher ({res['teacher_nfe']} NFE) {1e6 * sp['teacher']:.1f} µs ({sp['teacher'] / sp['DSNO']:.0f}x)")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = results["toy"]
    fig, axes = plt.subplots(2, 4, figsize=(16, 7.5))
    for row, res in enumerate(cases):
        ax = axes[row, 0]
        for k, v in res["trajectory_error"].items():
            ax.plot(res["times"], v, marker="o", ms=3, label=k)
        ax.set_xlabel("t")
        ax.set_ylabel("RMS error vs teacher ODE")
        ax.set_yscale("log")
        ax.set_title(f"{res['teacher']} teacher: trajectory error", fontsize=9)
        ax.legend(fontsize=7)
        for col, key in enumerate(("teacher", "DSNO", "DDIM 1"), start=1):
            pts = torch.tensor(res["samples"][key])
            ax = axes[row, col]
            ax.scatter(pts[:, 0], pts[:, 1], s=1)
            ax.set_xlim(-2.2, 2.2)
            ax.set_ylim(-2.2, 2.2)
            ax.set_aspect("equal")
            ax.set_title(f"{res['teacher']}: {key}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"plot -> {path}")


def ckpt_case(args, work: Path) -> dict:
    """Any diffusion checkpoint (e.g. the digits U-Net): bank with DDIM, DSNO from the teacher, errors."""
    from difflab.train.api import load_model

    model, cfg, ckpt = load_model(args.ckpt)
    shape = tuple((ckpt.state.get("extra") or {}).get("data_shape"))
    M = args.ckpt_M
    clip = len(shape) == 3  # images: x̂0 clipped to [-1, 1] at every DDIM step, as image samplers do
    print(f"[ckpt] {ckpt.path}: data {cfg.data.name} {shape}, bank of {args.ckpt_n} DDIM trajectories", flush=True)
    t0 = time.perf_counter()
    generate_trajectories(model, work / "ckpt-bank", n=args.ckpt_n, M=M, spacing="quadratic", sampler="ddim",
                          steps=args.ckpt_steps, shard_size=max(args.ckpt_n // 4, 1), shape=shape,
                          clip_denoised=clip, progress=False)
    bank_s = time.perf_counter() - t0
    bank = TrajectoryDataset(work / "ckpt-bank")
    dsno = dsno_from_teacher(model, bank.times, modes=args.modes)
    tcfg = TrainConfig(steps=args.ckpt_train_steps, batch_size=32, lr=2e-4, warmup_steps=50, ema_rate=0.99,
                       ckpt_every=0, log_every=100, device="cpu")
    t0 = time.perf_counter()
    ema, res = fit_dsno(dsno, bank, work / "ckpt-run", tcfg, schedule=model.schedule, progress=False,
                        tensorboard=False)
    train_s = time.perf_counter() - t0
    n_test = args.ckpt_test
    generate_trajectories(model, work / "ckpt-test", n=n_test, M=M, spacing="quadratic", sampler="ddim",
                          steps=args.ckpt_steps, shard_size=n_test, seed=1, shape=shape, clip_denoised=clip,
                          progress=False)
    test = TrajectoryDataset(work / "ckpt-test")
    t_dsno, r = timed(lambda: dsno_sample(ema, test.x, return_trajectory=True))
    grid, _ = refine_grid(test.times, args.ckpt_steps)
    t_teacher, _ = timed(lambda: ddim(model, test.x, grid, clip_denoised=clip), repeats=1)
    out = {"checkpoint": str(ckpt.path), "data": cfg.data.name, "times": test.times.tolist(),
           "bank_seconds": bank_s, "train_seconds": train_s, "param_overhead": res["param_overhead"],
           "trajectory_error": {"DSNO (1 NFE)": trajectory_error(r.trajectory.transpose(0, 1), test.y).tolist(),
                                "x_T (trivial)": trajectory_error(test.x[:, None].expand_as(test.y), test.y).tolist()},
           "final_rmse": {}, "seconds_per_sample": {"DSNO": t_dsno / n_test, "teacher": t_teacher / n_test}}
    out["final_rmse"]["DSNO 1"] = float((r.x - test.y[:, -1]).pow(2).mean().sqrt())
    for nfe in (1, 2, 4):
        x = ddim(model, test.x, time_grid(model.schedule, nfe, spacing="uniform"), clip_denoised=clip).x
        out["final_rmse"][f"DDIM {nfe}"] = float((x - test.y[:, -1]).pow(2).mean().sqrt())
    if args.fid and cfg.data.name in ("mnist", "fashion-mnist"):
        from difflab.metrics import evaluate_images
        out["fid"] = {"DSNO": evaluate_images(r.x, cfg.data.name, data_dir=args.data_dir)["fid"],
                      "teacher": evaluate_images(test.y[:, -1], cfg.data.name, data_dir=args.data_dir)["fid"]}
    elif args.fid:
        out["fid"] = f"skipped: the evaluator covers mnist / fashion-mnist, not {cfg.data.name}"
    print(f"\n== checkpoint teacher {ckpt.path} ({cfg.data.name}) ==  bank {bank_s:.0f} s, training {train_s:.0f} s, "
          f"temporal +{res['param_overhead']['overhead_pct']:.1f}% params")
    print(f"  {'t':<16}" + "".join(f"{t:>8.3f}" for t in out["times"]))
    for k, v in out["trajectory_error"].items():
        print(f"  {k:<16}" + "".join(f"{e:>8.4f}" for e in v))
    print("  final-sample RMSE vs the teacher's DDIM sample: " + ", ".join(f"{k} {v:.4f}" for k, v in out["final_rmse"].items()))
    sp = out["seconds_per_sample"]
    print(f"  per sample: DSNO {1e3 * sp['DSNO']:.2f} ms, teacher {1e3 * sp['teacher']:.2f} ms; FID: {out.get('fid', 'not asked (--fid)')}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default=None, help="write every number here")
    ap.add_argument("--plot", default=None, help="write a PNG: error per time and sample scatter plots")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="a smoke run (seconds; the numbers mean little)")
    ap.add_argument("--teachers", default="exact,trained")
    ap.add_argument("--n", type=int, default=8000, help="bank size (trajectories)")
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--M", type=int, default=8)
    ap.add_argument("--spacing", default="quadratic")
    ap.add_argument("--modes", type=int, default=3)
    ap.add_argument("--steps", type=int, default=64, help="teacher PF-Heun steps for the bank")
    ap.add_argument("--ref-steps", type=int, default=512, help="Heun steps of the reference ('exact') solution")
    ap.add_argument("--train-steps", type=int, default=1200)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--max-weight", type=float, default=100.0)
    ap.add_argument("--hidden", type=int, default=128, help="width of the toy MLPs (teacher and exact-teacher DSNO)")
    ap.add_argument("--teacher-steps", type=int, default=2000, help="training steps of the small toy teacher")
    ap.add_argument("--ckpt", default=None, help="also distil this diffusion checkpoint (e.g. a digits U-Net)")
    ap.add_argument("--ckpt-n", type=int, default=2000)
    ap.add_argument("--ckpt-test", type=int, default=200)
    ap.add_argument("--ckpt-M", type=int, default=6)
    ap.add_argument("--ckpt-steps", type=int, default=32)
    ap.add_argument("--ckpt-train-steps", type=int, default=400)
    ap.add_argument("--fid", action="store_true", help="FID with difflab's MNIST-family evaluator (--ckpt on mnist)")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.n_test, args.train_steps, args.teacher_steps, args.ref_steps = 1000, 500, 100, 300, 128
        args.ckpt_n, args.ckpt_train_steps, args.ckpt_test = 200, 30, 50
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t_all = time.perf_counter()
    results = {"machine": {"platform": platform.platform(), "processor": platform.processor(),
                           "threads": torch.get_num_threads(), "torch": torch.__version__},
               "args": vars(args), "reference_ratio": REFERENCE_RATIO, "toy": []}
    mix = toy_mixture("toy:ring8")
    work = Path(tempfile.mkdtemp(prefix="dsno-bench-"))
    try:
        cfg = load_config("toy-ddpm", [f"train.steps={args.teacher_steps}", f"model.hidden={args.hidden}",
                                       "train.ckpt_every=0"])
        from difflab.train.build import build_process, schedule_of
        schedule = schedule_of(build_process(cfg.diffusion))
        exact = exact_mixture_model(mix, schedule)
        for name in args.teachers.split(","):
            if name == "exact":
                def make(times):
                    torch.manual_seed(0)
                    return build_dsno(MLP(2, args.hidden, 3), schedule, times, modes=args.modes)
                results["toy"].append(toy_case("exact", exact, make, args, work, mix))
            elif name == "trained":
                from difflab.train.api import load_model, train
                print(f"[trained] toy teacher: MLP hidden {args.hidden}, {args.teacher_steps} steps", flush=True)
                t0 = time.perf_counter()
                train(cfg, work / "teacher", progress=False)
                teacher, _, _ = load_model(work / "teacher")
                print(f"[trained] teacher trained in {time.perf_counter() - t0:.0f} s", flush=True)
                results["toy"].append(toy_case("trained", teacher,
                                               lambda times: dsno_from_teacher(teacher, times, modes=args.modes),
                                               args, work, mix))
            else:
                raise SystemExit(f"unknown teacher {name!r}; expected exact or trained")
            print_toy(results["toy"][-1])
        print("\nspectrum of exact PF-ODE trajectories (uniform times): energy fraction in the first J modes", flush=True)
        results["spectrum"] = spectrum_table(exact, n=500 if args.quick else 1000, steps=args.ref_steps // 2)
        for M, s in results["spectrum"].items():
            print(f"  M = {M:>2}:  " + "  ".join(f"J={J + 1}: {f:.4f}" for J, f in enumerate(s["fraction_first_J"][:6]))
                  + "   | without the time-mean: " + "  ".join(f"J={J + 1}: {f:.3f}" for J, f in
                                                                enumerate(s["fraction_first_J_without_mean"][:6]) if J))
        if args.ckpt:
            results["checkpoint"] = ckpt_case(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["total_seconds"] = time.perf_counter() - t_all
    print(f"\ntotal {results['total_seconds']:.0f} s on {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} thread(s)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.plot and results["toy"]:
        plot(results, Path(args.plot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
