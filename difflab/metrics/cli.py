"""`difflab eval` and `difflab bench` (registered into the main CLI)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

EVAL_EXAMPLES = """examples:
  difflab eval runs/mnist --sampler ddim --steps 50 --n 10000 --out metrics.json
  difflab eval samples.npz --data mnist --data-dir /data
  difflab eval runs/toy --sampler pf_heun --steps 10 --n 5000"""
NLL_EXAMPLES = """examples:
  difflab nll runs/mnist --method vlb --n 256 --out nll.json
  difflab nll runs/mnist --method ode --n 64
  difflab nll runs/toy --method ode --n 500"""
BENCH_EXAMPLES = """examples:
  difflab bench runs/toy --out runs/toy/bench --n 2000
  difflab bench runs/mnist --out runs/mnist/bench --n 10000 --nfe 1000,100,50,20,10,5
  difflab bench runs/digits --out bench --quick --no-peers"""


def register(sub) -> dict:
    from ..samplers import SAMPLERS

    p = sub.add_parser("eval", help="metrics of samples (.npz) or of a checkpoint + sampler", epilog=EVAL_EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="a checkpoint / run dir, or an .npz with 'samples' (float in [-1,1]) or 'images_uint8'")
    p.add_argument("--data", default=None, help="dataset the samples should match (default: the checkpoint's)")
    p.add_argument("--sampler", default="ddim", choices=sorted(SAMPLERS))
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, help="write the metrics JSON here (default: print it)")
    p = sub.add_parser("bench", help="every sampler x NFE side by side (+ diffusers peers): tables, JSON, plot",
                       epilog=BENCH_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True)
    p.add_argument("--n", type=int, default=1000, help="samples per row")
    p.add_argument("--nfe", default=None, help="comma-separated NFE budgets (default 1000,100,50,20,10,5)")
    p.add_argument("--quick", action="store_true", help="NFE 100,20,10,5 only")
    p.add_argument("--no-peers", action="store_true", help="skip diffusers' DDIM and DPM-Solver++")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    p = sub.add_parser("nll", help="likelihood on a test split: VLB bits/dim (with per-term output) or PF-ODE",
                       epilog=NLL_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--method", default="vlb", choices=["vlb", "ode"])
    p.add_argument("--split", default="test")
    p.add_argument("--n", type=int, default=256, help="test points (the VLB costs T evaluations per batch)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, help="write the JSON (with every per-step term) here")
    return {"eval": cmd_eval, "bench": cmd_bench, "nll": cmd_nll}


def cmd_nll(args) -> int:
    from ..build import build_process
    from ..data import load_dataset
    from ..train.api import load_model
    from .likelihood import test_split_nll

    model, cfg, _ = load_model(args.checkpoint)
    data = load_dataset(cfg.data.name, args.data_dir or cfg.data.data_dir or None, split=args.split,
                        image_size=cfg.data.image_size or None, num_samples=args.n, seed=args.seed)
    res = test_split_nll(model, build_process(cfg.diffusion), data, method=args.method, batch=args.batch,
                         seed=args.seed, progress=True)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2))
    head = {k: v for k, v in res.items() if k != "terms"}
    print(json.dumps(head, indent=2))
    return 0


def _device(name):
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def _shape(ckpt, cfg):
    from ..build import data_shape_of

    return tuple((ckpt.state.get("extra") or {}).get("data_shape") or data_shape_of(cfg))


def cmd_eval(args) -> int:
    import numpy as np
    import torch

    from ..errors import DataError
    from .bench import evaluate_samples

    src = Path(args.source)
    if src.suffix == ".npz":
        if not args.data:
            raise DataError(f"{src}: pass --data NAME (e.g. mnist, toy:ring8) to say what the samples should match")
        arr = np.load(src)
        if "samples" in arr:
            x = torch.from_numpy(arr["samples"]).float()
        elif "images_uint8" in arr:
            x = torch.from_numpy(arr["images_uint8"]).float() / 127.5 - 1
        else:
            raise DataError(f"{src}: expected an array 'samples' (float in [-1,1]) or 'images_uint8'; found {list(arr)}")
        data, info = args.data, {"source": str(src)}
    else:
        from ..samplers import generate
        from ..train.api import load_model

        device = _device("auto")
        model, cfg, ckpt = load_model(src, map_location=device)
        res = generate(model, _shape(ckpt, cfg), sampler=args.sampler, steps=args.steps, n=args.n, seed=args.seed,
                       device=device)
        x, data = res["x"], args.data or cfg.data.name
        info = {"source": str(ckpt.path), "sampler": args.sampler, "steps": args.steps, "nfe": res["nfe"],
                "seed": args.seed, "seconds_per_sample": res["seconds_per_sample"]}
    m = evaluate_samples(x, data, data_dir=args.data_dir, seed=args.seed)
    result = {**info, "data": data, "n": len(x), **{k: v for k, v in m.items() if isinstance(v, (int, float, str))}}
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)
    print(f"{m['quality_name']}: {m['quality']:.4g} ({len(x)} samples of {data})")
    return 0


def cmd_bench(args) -> int:
    from ..train.api import load_model
    from .bench import NFE_LEVELS, QUICK_NFE_LEVELS, default_grid, run_bench

    device = _device(args.device)
    model, cfg, ckpt = load_model(args.checkpoint, map_location=device)
    levels = QUICK_NFE_LEVELS if args.quick else NFE_LEVELS
    if args.nfe:
        levels = tuple(int(v) for v in args.nfe.split(","))
    res = run_bench(model, cfg.data.name, _shape(ckpt, cfg), args.out, grid=default_grid(levels), n=args.n,
                    seed=args.seed, data_dir=args.data_dir, peers=not args.no_peers, device=device,
                    progress=not args.no_progress)
    print((Path(args.out) / "table.md").read_text())
    print(f"{len(res['rows'])} rows -> {args.out}/results.json, table.md, table.csv, quality_vs_nfe.png")
    return 0
