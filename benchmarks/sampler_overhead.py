"""Sampler overhead: each sampler against the same number of bare model calls (same batch, model, inputs).

    python benchmarks/sampler_overhead.py [--batch 256] [--steps 20] [--repeats 3] [--preset 8x8] [--samplers a,b] [--json out.json]

Both arms run interleaved in one process; the table gives the median of the repeats and the
overhead = sampler time / bare-calls time - 1. The issue's target: under 3% at batch 256 with a
small U-Net on CPU.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from difflab.models import DiffusionModel
from difflab.nets import unet_from_preset
from difflab.process import GaussianDiffusion, linear_betas
from difflab.samplers import SAMPLERS, time_grid


def bare_calls(model, x, ts, nfe):
    with torch.no_grad():
        for n in range(nfe):
            model(x, torch.full((x.shape[0],), float(ts[n % (len(ts) - 1)]), dtype=torch.float64))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--preset", default="8x8")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--samplers", default=None, help="comma-separated subset of the samplers (default: all)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    size = {"8x8": 8, "28x28": 28, "32x32": 32}[args.preset]
    chans = 3 if args.preset == "32x32" else 1
    net = unet_from_preset(args.preset, in_channels=chans, image_size=size).to(args.device).eval()
    for p in net.parameters():  # non-zero output (the last conv is zero-initialised)
        p.data.add_(0.01 * torch.randn_like(p))
    d = GaussianDiffusion(linear_betas(1000))
    model = DiffusionModel(net, d.schedule)
    x = torch.randn(args.batch, chans, size, size, device=args.device)
    rows = []
    names = [n for n in SAMPLERS if n != "pf_adaptive"]
    if args.samplers:
        bad = [n for n in args.samplers.split(",") if n not in names]
        if bad:
            raise SystemExit(f"--samplers: unknown {bad[0]!r}; accepted: {', '.join(names)}")
        names = args.samplers.split(",")
    for name in names:
        ts = time_grid(d.schedule, args.steps)
        t_s, t_b, nfe = [], [], 0
        for _ in range(args.repeats):
            g = torch.Generator(args.device).manual_seed(0)
            t0 = time.perf_counter()
            r = SAMPLERS[name](model, x, ts, generator=g)
            t_s.append(time.perf_counter() - t0)
            nfe = r.nfe
            t0 = time.perf_counter()
            bare_calls(model, x, ts, nfe)
            t_b.append(time.perf_counter() - t0)
        s, b = statistics.median(t_s), statistics.median(t_b)
        rows.append({"sampler": name, "nfe": nfe, "sampler_s": s, "bare_s": b, "overhead_pct": 100 * (s / b - 1)})
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {args.device}"
    print(f"Sampler overhead, batch {args.batch}, U-Net preset {args.preset} "
          f"({sum(p.numel() for p in net.parameters()) / 1e6:.2f}M params), {args.steps} steps, {machine}")
    print("| sampler | NFE | sampler (s) | bare calls (s) | overhead |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['sampler']} | {r['nfe']} | {r['sampler_s']:.3f} | {r['bare_s']:.3f} | {r['overhead_pct']:+.1f}% |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "batch": args.batch, "preset": args.preset, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
