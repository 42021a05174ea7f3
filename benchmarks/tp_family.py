"""The TP family against its base samplers, paired (issue #21): each variant's FID ratio to the plain
sampler at the same T, made from the same per-sample noise, with paired-bootstrap 95% intervals in
every MNIST-family feature space.

    python benchmarks/tp_family.py mnist-ddpm-ext --samplers ddim,dpmpp_2m --steps 10 --n 2000 --seed 1 \\
        --variant "--time-shift 0.05 --ts-cutoff 0.2" --variant "--eps-scale 1.005" --out tp_family.json

A variant is a string of ``difflab sample``'s method options (the same parser), or ``calibrated W
[x0|coefficients]``: a per-step time map (``StepTimeMap``) from a 512-sample pilot run of the same
sampler and T (its own seed), each step's time moved within ±W to where the pilot states' mean pixel
variance matches the marginal's (``calibrate_step_times``); or ``tuned W [N [SWEEPS]]``: the timestep
tuner's per-step map (``tune_step_times``: each step's time within ±W fitted on N pilot noises of its own
seed so the samples land on the same model's converged ODE, dpmpp_2m on 200 log-SNR steps; deterministic
samplers only). ``--save-dir`` keeps
every sample set as .npz (``difflab eval X.npz --data mnist --vs Y.npz`` re-scores a pair). A ratio
interval that excludes 1 is a difference; one that contains it is "no difference". Tune on one seed
and report on another (the README's figures: tuned at --seed 1, reported at --seed 0).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path


def variant_options(text: str) -> dict | None:
    """:func:`difflab.compose.stack_on`'s keywords from a string of ``sample``'s method options (None
    for a ``calibrated`` variant, built per sampler and T)."""
    if text.split()[0] in ("calibrated", "tuned"):
        return None
    from difflab.cli.common import add_stack_args, stack_options

    p = argparse.ArgumentParser(prog="variant", add_help=False)
    add_stack_args(p)
    try:
        args = p.parse_args(shlex.split(text))
    except SystemExit:
        raise SystemExit(f"tp_family: bad --variant {text!r}; expected difflab sample's method options, "
                         f"e.g. \"--time-shift 0.05 --ts-cutoff 0.2\"") from None
    return stack_options(args, cg=False)


def calibrated_stack(loaded, text: str, sampler: str, steps: int, data_dir, spacing: str = "auto"):
    """The ``calibrated W [readout]`` or ``tuned W [N [SWEEPS]]`` variant's stack for this sampler and T."""
    from difflab.compose import SamplingStack, training_pixel_variance
    from difflab.methods.time_predictor import StepTimeMap, calibrate_step_times, tune_step_times, tuner_table

    words = text.split()
    if words[0] == "tuned":
        window = float(words[1])
        n = int(words[2]) if len(words) > 2 else 128
        sweeps = int(words[3]) if len(words) > 3 else 1
        mapping, report = tune_step_times(loaded.model, tuple(loaded.data_shape), sampler=sampler, steps=steps,
                                          spacing=spacing, window=window, n=n, sweeps=sweeps, progress=True)
        print(tuner_table(report), flush=True)
        moved = ", ".join(f"{t:.2f}->{tau:.3f}" for t, tau in sorted(mapping.items(), reverse=True))
        return SamplingStack(model=StepTimeMap(loaded.model, mapping), data_shape=tuple(loaded.data_shape),
                             loaded=loaded, parts=(loaded.describe(), f"tuned times: {moved or 'none moved'}"))
    window, readout = float(words[1]), (words[2] if len(words) > 2 else "input")
    if spacing != "auto":
        raise SystemExit(f"tp_family: the calibrated variant runs on the sampler's own grid; --grid {spacing!r} is for "
                         f"plain and tuned variants")
    m = training_pixel_variance(loaded, data_dir)
    mapping = calibrate_step_times(loaded.model, m, tuple(loaded.data_shape), sampler=sampler, steps=steps,
                                   window=window, n=512)
    model = StepTimeMap(loaded.model, mapping, x0_readout=readout == "x0",
                        use_in_coefficients=readout == "coefficients")
    moved = ", ".join(f"{t:.2f}->{tau:.3f}" for t, tau in sorted(mapping.items(), reverse=True))
    return SamplingStack(model=model, data_shape=tuple(loaded.data_shape), loaded=loaded,
                         parts=(loaded.describe(), f"calibrated times ({readout}): {moved}"),
                         tp_coefficients=readout == "coefficients")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--samplers", default="ddim,dpmpp_2m,ancestral")
    p.add_argument("--steps", default="10", help="comma-separated T")
    p.add_argument("--grid", default="auto", help="time grid of every row (auto: each sampler's own; e.g. power:0.8)")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--variant", action="append", default=[], help="sample's method options (repeatable)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--n-boot", type=int, default=200)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--save-dir", default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    import torch

    from difflab.cli.common import parse_ints
    from difflab.compose import stack_generate, stack_on
    from difflab.io.samples import save_samples
    from difflab.loading import load_any
    from difflab.metrics.bench import SPACE_PREFIX, compare_samples, evaluate_samples

    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.variant:
        raise SystemExit("tp_family: pass at least one --variant")
    variants = [(v, variant_options(v)) for v in args.variant]
    loaded = load_any(args.checkpoint)
    data = loaded.data_name()
    stacks = [(v, None if o is None else stack_on(loaded, **{**o, "data_dir": args.data_dir})) for v, o in variants]
    save = Path(args.save_dir) if args.save_dir else None
    if save:
        save.mkdir(parents=True, exist_ok=True)
    rows = []

    def made(row: dict) -> dict:  # what a saved sample file records: the row's settings, not its metrics
        keep = ("sampler", "grid", "steps", "variant", "n", "seed")
        return {k: row[k] for k in keep if k in row} | {"source": args.checkpoint, "data": data}

    for T in parse_ints(args.steps, "--steps"):
        for sampler in [s.strip() for s in args.samplers.split(",") if s.strip()]:
            t0 = time.perf_counter()
            base = stack_generate(stack_on(loaded), sampler=sampler, steps=T, n=args.n, seed=args.seed,
                                  batch=args.batch, spacing=args.grid)
            base_s = time.perf_counter() - t0
            m = evaluate_samples(base["x"], data, data_dir=args.data_dir, seed=args.seed, n_boot=args.n_boot)
            row = {"sampler": sampler, "grid": args.grid, "steps": T, "variant": "plain", "n": args.n, "seed": args.seed,
                   "seconds_per_sample": base_s / args.n}
            row.update({k: v for k, v in m.items() if isinstance(v, (int, float, str))})
            rows.append(row)
            print(_line(row, SPACE_PREFIX), flush=True)
            if save:
                save_samples(base["x"], save / f"{sampler}-{T}-plain-s{args.seed}.npz", meta=made(row))
            for k, (v, stack) in enumerate(stacks):
                t0 = time.perf_counter()
                if stack is None:
                    stack = calibrated_stack(loaded, v, sampler, T, args.data_dir, args.grid)
                    print(f"    {v}: {stack.parts[-1]}", flush=True)
                r = stack_generate(stack, sampler=sampler, steps=T, n=args.n, seed=args.seed, batch=args.batch,
                                   spacing=args.grid)
                secs = time.perf_counter() - t0
                c = compare_samples(r["x"], base["x"], data, data_dir=args.data_dir, seed=args.seed,
                                    n_boot=args.n_boot)
                row = {"sampler": sampler, "grid": args.grid, "steps": T, "variant": v, "stack": " + ".join(stack.parts[1:]),
                       "n": args.n, "seed": args.seed, "seconds_per_sample": secs / args.n}
                row.update({kk: vv for kk, vv in c.items() if isinstance(vv, (int, float, str, bool))})
                rows.append(row)
                print(_line(row, SPACE_PREFIX), flush=True)
                if save:
                    save_samples(r["x"], save / f"{sampler}-{T}-v{k}-s{args.seed}.npz", meta=made(row))
            if args.out:
                Path(args.out).write_text(json.dumps({"checkpoint": args.checkpoint, "rows": rows}, indent=2))
    return 0


def _line(row: dict, prefixes: dict) -> str:
    head = f"{row['sampler']:>10s} T={row['steps']:<3d} {row['variant'][:48]:<48s}"
    parts = []
    for pre in prefixes.values():
        if row["variant"] == "plain" and pre + "fid" in row:
            parts.append(f"{row[pre + 'feature_space']}: FID {row[pre + 'fid']:.3f} floor {row[pre + 'fid_floor']:.3f}")
        elif pre + "ratio" in row:
            flag = "*" if row[pre + "ratio_hi"] < 1 else ("+" if row[pre + "ratio_lo"] > 1 else " ")
            parts.append(f"FID {row[pre + 'fid_a']:.3f} ratio {row[pre + 'ratio']:.3f} [{row[pre + 'ratio_lo']:.3f}, "
                         f"{row[pre + 'ratio_hi']:.3f}]{flag}")
    return f"{head} {' | '.join(parts)}  ({row['seconds_per_sample'] * 1000:.1f} ms/sample)"


if __name__ == "__main__":
    sys.exit(main())
