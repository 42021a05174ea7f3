"""DSNO ablation on the exact toy world (#20): M, J, the time weighting and the readout, one row each.

    python benchmarks/dsno_ablation.py [--json out.json] [--steps 600] [--quick]

Teacher: the closed-form score of toy:ring8 on DDPM's linear schedule, so every bank trajectory is the exact
PF-ODE solution (PF-Heun, ``--bank-steps`` steps) and what a row shows is the operator's error, not a teacher's.
Each row trains a fresh MLP operator (hidden 64, depth 3) from the same seed for the same steps on a bank of
``--n`` trajectories, then on 2,000 held-out noises reports:

* the held-out RMS trajectory error per recorded time beside the x_T predictor's (how far the trajectory has
  moved), the number of times t_m < 1 where the operator beats x_T, and the final-sample error;
* sliced W2 of its one-step samples against true samples, beside the true-vs-true floor and the teacher's own
  samples (the bank's solver from the same noises);
* the held-out error against training step (six evaluations per row; the base row's is printed) and, in the
  last rows, against bank size (the first 500, 1000, 2000 of the same bank).

The base row is M = 4, J = 3 (= all modes at M = 4), weighting "snr" (α/σ clamped at 100, the paper's), readout
"x0"; every other row changes one of these (J at M = 8, where J = 3 is against 1, 2 and all 5). Default runtime: about 4 minutes on one core of a 2-core CPU.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from difflab.config import TrainConfig
from difflab.data import toy_mixture
from difflab.methods.dsno import (TrajectoryDataset, build_dsno, dsno_sample, fit_dsno, generate_trajectories,
                                  read_heldout, trajectory_error, x_T_baseline)
from difflab.metrics.toy import toy_metrics
from difflab.models import exact_mixture_model
from difflab.nets import MLP
from difflab.process import VPLinear

BASE = {"M": 4, "modes": 3, "weighting": "snr", "max_weight": 100.0, "min_weight": 0.0, "readout": "x0"}
ROWS = [
    ("base: M 4, J 3, snr, x0", {}),
    ("M 6", {"M": 6}), ("M 8", {"M": 8}),
    ("M 8, J 1", {"M": 8, "modes": 1}), ("M 8, J 2", {"M": 8, "modes": 2}),
    ("M 8, J all (5)", {"M": 8, "modes": 5}),
    ("weighting uniform", {"weighting": "uniform"}),
    ("weighting snr, floor 1, clamp 10", {"min_weight": 1.0, "max_weight": 10.0}),
    ("weighting relative, clamp 10", {"weighting": "relative", "max_weight": 10.0}),
    ("readout x (the paper's)", {"readout": "x"}),
    ("bank 500", {"n": 500}), ("bank 1000", {"n": 1000}), ("bank 2000", {"n": 2000}),
]


def run_row(cfg: dict, banks: dict, test_banks: dict, args, work: Path, mix, schedule) -> dict:
    bank, test = banks[cfg["M"]], test_banks[cfg["M"]]
    if cfg.get("n"):
        bank = bank.subset(slice(0, cfg["n"]))  # the first n trajectories of the same bank
    torch.manual_seed(0)
    dsno = build_dsno(MLP(2, args.hidden, 3), schedule, bank.times, modes=cfg["modes"], readout=cfg["readout"])
    tcfg = TrainConfig(steps=args.steps, batch_size=256, lr=2e-3, warmup_steps=20, ema_rate=0.99, ckpt_every=0,
                       log_every=100, sample_every=max(args.steps // 6, 1), lr_schedule="cosine", device="cpu")
    t0 = time.perf_counter()
    run = work / f"run-{len(list(work.iterdir()))}"
    ema, _ = fit_dsno(dsno, bank, run, tcfg, schedule=schedule, weighting=cfg["weighting"],
                      max_weight=cfg["max_weight"], min_weight=cfg["min_weight"], heldout=test, progress=False,
                      tensorboard=False)
    seconds = time.perf_counter() - t0
    r = dsno_sample(ema, test.x, return_trajectory=True)
    err = trajectory_error(r.trajectory.transpose(0, 1), test.y)
    base = x_T_baseline(test.x, test.y)
    return {"times": test.times.tolist(), "rms": err.tolist(), "x_T_rms": base.tolist(),
            "beats_x_T": int((err[1:] < base[1:]).sum()), "interior_times": len(err) - 1,
            "final_rms": float(err[-1]), "sliced_w2": toy_metrics(r.x.double(), mix, seed=1)["sliced_w2"],
            "train_seconds": seconds, "n_bank": len(bank),
            "curve": [{"step": r["step"], "rms": r["rms"]} for r in read_heldout(run)]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default=None)
    ap.add_argument("--n", type=int, default=4000, help="bank size")
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=600, help="training steps per row")
    ap.add_argument("--bank-steps", type=int, default=60, help="PF-Heun steps of the exact bank")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="smoke run: small banks, few steps")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.n_test, args.steps = 500, 300, 30
    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    schedule = VPLinear()
    mix = toy_mixture("toy:ring8")
    teacher = exact_mixture_model(mix, schedule)
    work = Path(tempfile.mkdtemp(prefix="dsno-ablation-"))
    out = {"machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                       "threads": torch.get_num_threads(), "torch": torch.__version__}, "args": vars(args), "rows": []}
    try:
        banks, tests = {}, {}
        kw = dict(spacing="quadratic", steps=args.bank_steps, shape=(2,), progress=False)
        for M in sorted({BASE["M"], *(c.get("M", BASE["M"]) for _, c in ROWS)}):
            generate_trajectories(teacher, work / f"bank{M}", n=args.n, M=M, shard_size=args.n, seed=0, **kw)
            generate_trajectories(teacher, work / f"test{M}", n=args.n_test, M=M, shard_size=args.n_test, seed=1, **kw)
            banks[M], tests[M] = TrajectoryDataset(work / f"bank{M}"), TrajectoryDataset(work / f"test{M}")
        runs = work / "runs"
        runs.mkdir()
        teacher_x = tests[BASE["M"]].y[:, -1].double()
        out["teacher_sliced_w2"] = toy_metrics(teacher_x, mix, seed=1)["sliced_w2"]
        out["true_sliced_w2"] = toy_metrics(mix.sample(args.n_test, torch.Generator().manual_seed(7)), mix, seed=1)["sliced_w2"]
        print(f"exact teacher (PF-Heun {args.bank_steps}) SW2 {out['teacher_sliced_w2']:.4f}; true vs true "
              f"{out['true_sliced_w2']:.4f}; bank {args.n}, {args.steps} training steps per row, n_test {args.n_test}")
        print(f"{'row':<36}{'beats x_T':>10}{'final RMS':>11}{'SW2':>8}{'SW2/teacher':>13}   RMS per time (x_T's)")
        for name, change in ROWS:
            cfg = {**BASE, **change}
            res = run_row(cfg, banks, tests, args, runs, mix, schedule)
            res.update(name=name, config=cfg)
            out["rows"].append(res)
            per_t = "  ".join(f"{t:.2f}:{e:.4f}({b:.4f})" for t, e, b in zip(res["times"][1:], res["rms"][1:],
                                                                            res["x_T_rms"][1:]))
            print(f"{name:<36}{res['beats_x_T']:>5}/{res['interior_times']:<4}{res['final_rms']:>11.4f}"
                  f"{res['sliced_w2']:>8.4f}{res['sliced_w2'] / out['teacher_sliced_w2']:>13.2f}   {per_t}", flush=True)
        base = out["rows"][0]
        print("held-out error against training step, base row (time: RMS at each evaluation):")
        for m, t in enumerate(base["times"][1:], start=1):
            print(f"  t = {t:.2f}: " + "  ".join(f"{r['step']}:{r['rms'][m]:.4f}" for r in base["curve"]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out["total_seconds"] = time.perf_counter() - t_all
    print(f"total {out['total_seconds']:.0f} s on {out['machine']['processor']}, {torch.get_num_threads()} thread(s)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
