"""What sampling and training cost on this machine: images/s and peak memory against batch, threads and NFE,
for the shipped toy, digits and MNIST models and the 32x32 CIFAR-10 preset, each beside the model's GFLOP per
image and the fraction of the machine's fp32 matmul rate it reaches (measured in the same run).

Every configuration runs in a fresh subprocess, so its peak memory (ru_maxrss) is its own; each times one
untimed call then the median of ``--repeats`` timed calls. A table on stdout, JSON and a plot of throughput
against batch with ``--out DIR``.

    python benchmarks/cost.py --out runs/cost                       # the full CPU table (about 15 min, 2 cores)
    python benchmarks/cost.py --models toy --batches 16,64 --quick  # a smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODELS = {"toy": "toy-ddpm", "digits": "digits-ddpm", "mnist": "mnist-ddpm", "cifar32": "cifar32"}
RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def _model(name: str):
    """(model, data shape): a zoo model, or the CIFAR-10 recipe's U-Net at random init (its cost, not its samples)."""
    import torch

    if name == "cifar32":
        from difflab.config import load_config
        from difflab.train.build import build_model, build_process

        cfg = load_config(str(RECIPES / "cifar10-ddpm-gpu.toml"))
        torch.manual_seed(0)
        return build_model(cfg, (3, 32, 32), process=build_process(cfg.diffusion)).eval(), (3, 32, 32)
    from difflab.loading import load_any

    lm = load_any(MODELS[name])
    return lm.model, tuple(lm.data_shape)


def _gflop(model, shape) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(2, *shape)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model.net(x, torch.full((2,), 0.5))
    return fc.get_total_flops() / 2 / 1e9


def matmul_gflops(threads: int, n: int = 1024, reps: int = 10) -> float:
    """The machine's fp32 matmul rate at ``threads`` (the physical limit the table is read against)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def worker(spec: dict) -> dict:
    """One configuration, in this (fresh) process."""
    import torch

    torch.set_num_threads(spec["threads"])
    model, shape = _model(spec["model"])
    b = spec["batch"]
    if spec["kind"] == "sample":
        from difflab.samplers import generate

        def call():
            with torch.no_grad():
                generate(model, shape, sampler="ddim", steps=spec["nfe"], n=b, seed=0, batch=b)
    else:
        from difflab.config import load_config
        from difflab.data import ArrayDataset
        from difflab.train import Trainer
        from difflab.train.build import build_objective, build_process
        import tempfile

        cfg = load_config(MODELS.get(spec["model"], "mnist-ddpm"))
        model.train()
        x = torch.rand(max(b * 2, 256), *shape) * 2 - 1
        tr = Trainer(model, build_objective(cfg, build_process(cfg.diffusion)), ArrayDataset(x, None, name="random"),
                     cfg.train.__class__(batch_size=b, device="cpu", ckpt_every=0, log_every=0),
                     tempfile.mkdtemp(prefix="difflab-cost-"), cfg.to_dict(), progress=False, tensorboard=False)
        call = tr.train_step
    call()
    times = []
    for _ in range(spec["repeats"]):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    secs = statistics.median(times)
    gflop = _gflop(model, shape) * (spec["nfe"] if spec["kind"] == "sample" else 3)  # backward ~ 2x forward
    return {**spec, "images_per_s": b / secs, "seconds": secs, "gflop_per_image": gflop,
            "achieved_gflops": gflop * b / secs,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run(spec: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": str(spec["threads"])})
    if out.returncode:
        return {**spec, "error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="toy,digits,mnist,cifar32")
    ap.add_argument("--batches", default="16,64,256,1024")
    ap.add_argument("--threads", default=None, help="comma-separated (default: 1 and all cores)")
    ap.add_argument("--nfe", default="5,20", help="sampling NFE levels (DDIM)")
    ap.add_argument("--train-batches", default="32,128,512")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="NFE 5 only, no training rows")
    ap.add_argument("--out", default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return {}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = sorted({int(t) for t in (args.threads or f"1,{cores}").split(",")})
    batches = [int(b) for b in args.batches.split(",")]
    nfes = [5] if args.quick else [int(k) for k in args.nfe.split(",")]
    specs = []
    for m in args.models.split(","):
        cap = 64 if m == "cifar32" else 10**9  # the 35.7M-parameter U-Net: minutes per batch on a CPU
        for th in threads:
            for b in [b for b in batches if b <= cap] or [min(batches)]:
                specs.append({"kind": "sample", "model": m, "batch": b, "threads": th, "nfe": nfes[0],
                              "repeats": args.repeats})
            for k in nfes[1:]:
                specs.append({"kind": "sample", "model": m, "batch": 64 if cap > 64 else 16, "threads": th, "nfe": k,
                              "repeats": args.repeats})
            if not args.quick and m != "cifar32":
                for b in [int(v) for v in args.train_batches.split(",")]:
                    specs.append({"kind": "train", "model": m, "batch": b, "threads": th, "nfe": 0,
                                  "repeats": args.repeats})
    peak = {th: matmul_gflops(th) for th in threads}
    rows = []
    print(f"machine: {os.uname().machine}, {cores} cores; fp32 matmul (1024^2): "
          + ", ".join(f"{th} thread(s) {g:.0f} GFLOP/s" for th, g in peak.items()))
    print(f"{'kind':6}{'model':9}{'thr':>4}{'batch':>6}{'NFE':>5}{'img/s':>10}{'GFLOP/img':>11}{'% matmul':>9}{'peak MB':>9}")
    for spec in specs:
        r = run(spec)
        if "error" not in r:
            r["fraction_of_matmul"] = r["achieved_gflops"] / peak[r["threads"]]
            print(f"{r['kind']:6}{r['model']:9}{r['threads']:>4}{r['batch']:>6}{r['nfe'] or '':>5}"
                  f"{r['images_per_s']:>10.1f}{r['gflop_per_image']:>11.3f}{100 * r['fraction_of_matmul']:>8.0f}%"
                  f"{r['peak_rss_mb']:>9.0f}", flush=True)
        else:
            print(f"{spec['kind']:6}{spec['model']:9}{spec['threads']:>4}{spec['batch']:>6}  error: {r['error']}")
        rows.append(r)
    result = {"machine": f"{os.uname().machine}, {cores} cores", "matmul_gflops": peak, "rows": rows}
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "cost.json").write_text(json.dumps(result, indent=2))
        from difflab import viz

        series = {}
        for r in rows:
            if r["kind"] == "sample" and r.get("nfe") == nfes[0] and "error" not in r:
                series.setdefault(f"{r['model']}, {r['threads']} thr", ([], []))
                series[f"{r['model']}, {r['threads']} thr"][0].append(r["batch"])
                series[f"{r['model']}, {r['threads']} thr"][1].append(r["images_per_s"])
        viz.save_curves(series, out / "throughput_vs_batch.png", xlabel="batch", ylabel=f"images/s (DDIM, {nfes[0]} NFE)",
                        title="sampling throughput against batch", logx=True, logy=True)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
