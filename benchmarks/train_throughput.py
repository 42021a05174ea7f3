"""Training throughput: difflab's Trainer step against a bare PyTorch loop, side by side.

Both train the same U-Net (same init) with L_simple at the same batch, AdamW, gradient clipping
and an EMA update per step. The difflab side is ``Trainer.train_step()`` (the path ``fit()``
runs: seeded CPU-side data order and noise, the objective, the one-sync divergence check, LR
schedule, EMA, loss-aware bookkeeping); the bare side writes the same math inline with data
already on the device and no checks. Repeats alternate which side runs first, so drift in machine
load hits both. The table reports the median images/s, difflab's overhead in time per step, and
peak memory (CUDA max_memory_allocated per side; on CPU the peak RSS sampled while each side
runs, plus the process's ru_maxrss).

    python benchmarks/train_throughput.py                      # digits 8x8 U-Net, batch 128
    python benchmarks/train_throughput.py --preset toy --batch 512 --steps 50   # the toy MLP (hidden 256, depth 3)
    python benchmarks/train_throughput.py --preset 28x28 --steps 5 --json out.json
    python benchmarks/train_throughput.py --preset 32x32 --amp bf16 --threads 0   # the CIFAR-10 GPU recipe's model
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import sys
import tempfile
import threading
import time

import torch

from difflab.train.build import build_model, build_objective, build_process
from difflab.config import apply_overrides, load_config
from difflab.data import ArrayDataset, load_dataset
from difflab.train import Trainer

RECIPES = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "recipes")
# 32x32: recipes/cifar10-ddpm-gpu.toml (the 35.7M-parameter U-Net of DDPM's CIFAR-10 model).
PRESETS = {"toy": "toy-ddpm", "8x8": "digits-ddpm", "28x28": "mnist-ddpm", "32x32": os.path.join(RECIPES, "cifar10-ddpm-gpu.toml")}
SHAPES = {"28x28": ("mnist", (1, 28, 28)), "32x32": ("cifar10", (3, 32, 32))}


class PeakRSS:
    """Peak resident memory of this process while the block runs, sampled every 2 ms (Linux)."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self._page
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _run(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._rss())

    def __enter__(self):
        self.peak = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def dataset_for(preset: str, data_dir: str | None) -> ArrayDataset:
    """digits for 8x8; MNIST (28x28) or CIFAR-10 (32x32) when a data dir has it, else random images of that
    shape (throughput does not depend on the pixels)."""
    if preset == "toy":
        ds = load_dataset("toy:ring8", num_samples=20_000)
    elif preset == "8x8":
        ds = load_dataset("digits")
    else:
        name, shape = SHAPES[preset]
        try:
            ds = load_dataset(name, data_dir)
        except Exception:  # not here: a same-shaped stand-in
            ds = ArrayDataset(torch.rand(10_000, *shape, generator=torch.Generator().manual_seed(0)) * 2 - 1,
                              name=f"random-{preset}")
    return ArrayDataset(ds.x, None, name=ds.name)


def make_bare_step(model, ds: ArrayDataset, diffusion, tcfg, device: torch.device):
    """The same training step written directly in PyTorch: returns step()."""
    net = model.net
    params = [p for p in net.parameters()]
    opt = torch.optim.AdamW(params, lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    ema = [p.detach().clone() for p in params]
    data = ds.x.to(device)
    T = diffusion.num_timesteps
    sqrt_ac = diffusion.sqrt_alphas_cumprod.float().to(device)
    sqrt_1m = diffusion.sqrt_one_minus_alphas_cumprod.float().to(device)
    times = diffusion.times.float().to(device)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(tcfg.amp)
    n = [0]

    def step():
        idx = torch.randint(data.shape[0], (tcfg.batch_size,), device=device)
        x0 = data[idx]
        i = torch.randint(T, (tcfg.batch_size,), device=device)
        noise = torch.randn_like(x0)
        shape = (-1,) + (1,) * (x0.dim() - 1)
        x_t = sqrt_ac[i].view(shape) * x0 + sqrt_1m[i].view(shape) * noise
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            eps = net(x_t, times[i])
        loss = ((eps.float() - noise) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, tcfg.grad_clip)
        opt.step()
        with torch.no_grad():
            decay = min(tcfg.ema_rate, (1 + n[0]) / (10 + n[0]))
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1.0 - decay)
        n[0] += 1

    return step


def count_flops(net, x, times) -> dict:
    """FLOP per image of ``net`` on the batch ``x``: forward alone, and forward + backward (a training step)."""
    from torch.utils.flop_counter import FlopCounterMode

    t = times[torch.arange(len(x)) * 7 % len(times)]
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        net(x, t)
    forward = fc.get_total_flops() / len(x)
    with FlopCounterMode(display=False) as fc:
        net(x, t).float().pow(2).mean().backward()
    net.zero_grad(set_to_none=True)
    return {"forward": forward, "train_step": fc.get_total_flops() / len(x)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="8x8")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per side per repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per side first")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (0: torch's default); 1 by default because on a shared CPU "
                         "extra threads can thrash (20x slower measured on a loaded 2-core box)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--flops", action="store_true",
                    help="also count the U-Net's FLOP per image (forward, and forward+backward of a training step) "
                         "with torch.utils.flop_counter: the basis of a run's expected cost on any hardware")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = apply_overrides(load_config(PRESETS[args.preset]), [
        f"train.batch_size={args.batch}", f"train.device={args.device}", f"train.amp={args.amp}",
        "train.ckpt_every=0", "train.log_every=0", "train.warmup_steps=0"])
    ds = dataset_for(args.preset, args.data_dir)
    diffusion = build_process(cfg.diffusion)
    torch.manual_seed(0)
    model = build_model(cfg, ds.shape, process=diffusion)
    bare_model = copy.deepcopy(model)

    run_dir = tempfile.mkdtemp(prefix="difflab-bench-")
    trainer = Trainer(model, build_objective(cfg, diffusion), ds, cfg.train, run_dir, cfg.to_dict(),
                      progress=False, tensorboard=False)
    device = trainer.device
    bare_step = make_bare_step(bare_model.to(device), ds, diffusion, cfg.train, device)
    sides = {"difflab Trainer": trainer.train_step, "bare PyTorch": bare_step}

    for fn in sides.values():
        for _ in range(args.warmup):
            fn()
    sync(device)
    times = {name: [] for name in sides}
    peaks = {name: 0 for name in sides}
    names = list(sides)
    for r in range(args.repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            with PeakRSS() as rss:
                sync(device)
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    sides[name]()
                sync(device)
                times[name].append(time.perf_counter() - t0)
            peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else rss.peak
            peaks[name] = max(peaks[name], peak)

    images = args.steps * args.batch
    rows = {}
    for name in names:
        per_repeat = [images / t for t in times[name]]
        rows[name] = {"images_per_s": statistics.median(per_repeat), "min": min(per_repeat), "max": max(per_repeat),
                      "peak_mem_mb": peaks[name] / 2**20}
    base = rows["bare PyTorch"]["images_per_s"]
    for name in names:
        rows[name]["overhead_pct"] = 100.0 * (base / rows[name]["images_per_s"] - 1.0)

    params = sum(p.numel() for p in model.parameters())
    flops = count_flops(bare_model.net, ds.x[:2].to(device), diffusion.times.float().to(device)) if args.flops else None
    mem_kind = "CUDA max allocated" if device.type == "cuda" else "peak RSS while running"
    threads = torch.get_num_threads()
    print(f"training throughput: {type(model.net).__name__} {args.preset} ({params / 1e6:.2f}M params), {ds.name} x{ds.x.shape[0]}, "
          f"batch {args.batch}, amp {args.amp}, {device} ({threads} threads), "
          f"{args.repeats} interleaved repeats x {args.steps} steps")
    print(f"{'':18}{'images/s (median)':>19}{'range':>19}{'overhead':>10}{'peak mem':>11}")
    for name in names:
        r = rows[name]
        rng = f"{r['min']:.0f}-{r['max']:.0f}"
        print(f"{name:18}{r['images_per_s']:>19.1f}{rng:>19}{r['overhead_pct']:>+9.1f}%{r['peak_mem_mb']:>8.0f} MB")
    print(f"(peak mem: {mem_kind}; process ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")
    if flops:
        print(f"FLOP per image: forward {flops['forward'] / 1e9:.1f} G, training step (forward + backward) "
              f"{flops['train_step'] / 1e9:.1f} G; batch {args.batch}: {flops['train_step'] * args.batch / 1e12:.2f} TFLOP per step")
    result = {"preset": args.preset, "batch": args.batch, "steps": args.steps, "repeats": args.repeats,
              "device": str(device), "threads": threads, "amp": args.amp, "params": params, "dataset": ds.name,
              "peak_mem_kind": mem_kind, "rows": rows, "flop_per_image": flops, "torch": torch.__version__}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
