"""`difflab eval` and `difflab bench` (registered into the main CLI)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from difflab.cli.common import TIME_OPTIONS, add_external_args, add_stack_args, grid_spec, parse_ints, stack_from_args, stack_options
from difflab.cli.options import input_path, output_dir, output_file
from difflab.errors import ConfigError
from difflab.loading import load_any
from difflab.samplers import GRID_SPACINGS, SAMPLERS, SPECS
from difflab.train.distributed import auto_device

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
    p = sub.add_parser("eval", help="metrics of samples (.npz) or of a checkpoint + sampler", epilog=EVAL_EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="a checkpoint / run dir, or an .npz with 'samples' (float in [-1,1]) or 'images_uint8'")
    p.add_argument("--data", default=None, help="dataset the samples should match (default: the checkpoint's)")
    p.add_argument("--sampler", default="ddim", choices=sorted(SAMPLERS))
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--n", type=int, default=None,
                   help="samples (default: 10000 for the MNIST family at <= 50 NFE, 2000 above, 1000 elsewhere)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=1, help="independent sample sets; >= 2: the FID interval is over seeds")
    p.add_argument("--grid", default="auto", type=grid_spec, metavar="GRID",
                   help=f"time grid: {', '.join(GRID_SPACINGS)}; power and karras take an exponent, e.g. "
                        f"power:0.8 (default: the sampler's own)")
    p.add_argument("--n-boot", type=int, default=100, help="bootstrap resamples of each FID interval (0: none)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, type=output_file(".json"), help="write the metrics JSON here (default: print it)")
    p.add_argument("--save", default=None, type=output_file(".npz"), help="also write the generated samples (.npz)")
    p.add_argument("--vs", default=None, type=input_path, metavar="OTHER.npz",
                   help="compare with these samples (e.g. another run's --save): FID ratio and difference with "
                        "95%% intervals, paired when both have n samples from the same seeds (the MNIST family)")
    p.add_argument("--clip", action=argparse.BooleanOptionalAction, default=None,
                   help="clip x̂0 to [-1, 1] (images; default off, or as a --step-times table was tuned)")
    p.add_argument("--label", type=int, default=None, help="class of every sample (CG's target)")
    p.add_argument("--batch", type=int, default=500, help="samples per network batch (the samples do not depend on it)")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    add_stack_args(p)
    add_external_args(p, data=False)
    p = sub.add_parser("bench", help="every sampler x NFE side by side (+ diffusers peers): tables, JSON, plot",
                       epilog=BENCH_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True, type=output_dir)
    p.add_argument("--n", type=int, default=None, help="samples per row (default: 10000 for the MNIST family at "
                   "<= 50 NFE, 2000 above, 1000 elsewhere; every row prints its n)")
    p.add_argument("--seeds", type=int, default=1, help="independent sample sets per row; >= 2: the FID interval "
                   "is Student's t over the seeds instead of the bootstrap")
    p.add_argument("--n-boot", type=int, default=100, help="bootstrap resamples of each FID interval (0: none)")
    p.add_argument("--nfe", default=None, help="comma-separated NFE budgets (default 1000,100,50,20,10,5)")
    p.add_argument("--quick", action="store_true", help="NFE 100,20,10,5 only")
    p.add_argument("--solvers", action="store_true", help="the few-step table instead: every solver (DPM-Solver++ "
                   "2M/3M/SDE, UniPC, EDM Euler/Heun, iPNDM) x grid (default, power, logsnr, karras) at NFE "
                   "3,4,5,6,8,10,15,20 (or --nfe), beside the diffusers peers")
    p.add_argument("--no-peers", action="store_true", help="skip diffusers' DDIM and DPM-Solver++")
    p.add_argument("--samplers", default=None, help="comma-separated subset of the plain samplers (default: all)")
    p.add_argument("--no-adaptive", action="store_true",
                   help="skip the adaptive PF-ODE row (hundreds of NFE per sample on image models)")
    p.add_argument("--grid", default="auto", type=grid_spec, metavar="GRID",
                   help=f"time grid of every difflab row ({', '.join(GRID_SPACINGS)}; e.g. power:0.8; default: each "
                        f"sampler's own); the row names it")
    p.add_argument("--clip", action="store_true",
                   help="clip x̂0 to [-1, 1] in every row whose sampler forms x̂0 (needed by schedules whose ᾱ(1) is ~0, "
                        "such as the cosine one: x̂0 = (x − σ ε̂)/α amplifies ε̂'s error by 1/α at the first step)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch", type=int, default=500, help="samples per sampler call (64 is fastest for small CPU models)")
    p.add_argument("--no-progress", action="store_true")
    add_external_args(p)
    add_stack_args(p)
    m = p.add_argument_group("how --tp / --dg apply (and DSNO)")
    m.add_argument("--disc", default=None, dest="dg", metavar="RUN", help="the same as --dg")
    m.add_argument("--label", type=int, default=None, help="CG's target class (with --stack --cg)")
    m.add_argument("--stack", action="store_true", help="wrap every row (the peers' too) in the --tp / --dg / --cg "
                   "stack, exactly as `difflab sample` builds it; without it --tp and --dg add TP, DG and TP+DG rows "
                   "beside the plain ones, each with its ratio to the plain sampler")
    m.add_argument("--dsno", default=None, metavar="RUN", help="a DSNO operator (dsno-train): its 1-NFE row beside "
                   "its teacher and DDIM / DPM-Solver++ at 1, 2, 4 NFE")
    m.add_argument("--method-nfe", default="50,20,10,5", help="NFE budgets of the side-by-side TP and DG rows "
                   "(default 50,20,10,5)")
    p = sub.add_parser("nll", help="likelihood on a test split: VLB bits/dim (with per-term output) or PF-ODE",
                       epilog=NLL_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--method", default="vlb", choices=["vlb", "ode"])
    p.add_argument("--split", default="test")
    p.add_argument("--n", type=int, default=256, help="test points (the VLB costs T evaluations per batch)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, type=output_file(".json"), help="write the JSON (with every per-step term) here")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--device", default="auto")
    add_external_args(p)
    return {"eval": cmd_eval, "bench": cmd_bench, "nll": cmd_nll}


def cmd_nll(args) -> int:
    from difflab.data import load_dataset
    from difflab.metrics.likelihood import test_split_nll

    loaded = load_any(args.checkpoint, flags=getattr(args, "flags", None), device=auto_device(args.device))
    data = load_dataset(loaded.data_name(args.data), args.data_dir or loaded.data_dir, split=args.split,
                        image_size=loaded.train_image_size, num_samples=args.n, seed=args.seed)
    res = test_split_nll(loaded.model, loaded.process(), data, method=args.method, batch=args.batch,
                         seed=args.seed, progress=not args.no_progress)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2))
    head = {k: v for k, v in res.items() if k != "terms"}
    print(json.dumps(head, indent=2))
    return 0


def cmd_eval(args) -> int:
    import torch

    from difflab.errors import DataError
    from difflab.metrics.bench import evaluate_samples

    src = Path(args.source)
    if src.suffix == ".npz":
        if not args.data:
            raise DataError(f"{src}: pass --data NAME (e.g. mnist, toy:ring8) to say what the samples should match")
        if args.save:
            raise DataError(f"--save writes generated samples; {src} is already a sample file (drop --save)")
        from difflab.io.samples import load_sample_meta

        x = _load_samples(src)
        data, info = args.data, {"source": str(src)}
        made = load_sample_meta(src) or {}
        if "seed" in made:
            info["seed"] = made["seed"]
        m = evaluate_samples(x, data, data_dir=args.data_dir, seed=args.seed, n_boot=args.n_boot)
    else:
        from difflab.metrics.bench import combine_seeds, default_n

        from difflab.compose import check_label, stack_generate

        device = auto_device(args.device)
        stack = stack_from_args(args, device, ref=args.source)
        check_label(stack.num_classes, args.label, guided=args.cg is not None)
        loaded = stack.loaded
        data = loaded.data_name(args.data) if loaded is not None else (args.data or stack.data_name)
        if not data:
            raise DataError(f"{args.source}: pass --data NAME to say what the samples should match")
        n = args.n or default_n(data, 1 if stack.dsno is not None else SPECS[args.sampler].nfe(args.steps))
        per_seed, res = [], None
        # eval's x̂0 clipping default is off (a --step-times table's own otherwise), unlike sample's, which
        # follows the checkpoint's [sample] table: every reported figure is unclipped unless it says --clip
        clip = args.clip if args.clip is not None else stack.tuned_clip
        for k in range(max(1, args.seeds)):
            res = stack_generate(stack, sampler=args.sampler, steps=args.steps, n=n, seed=args.seed + k,
                                 device=device, spacing=args.grid, batch=args.batch, clip=clip,
                                 label=args.label if stack.num_classes is not None else None,
                                 progress=not args.no_progress)
            per_seed.append(evaluate_samples(res["x"], data, data_dir=args.data_dir, seed=args.seed + k,
                                             n_boot=args.n_boot))
        x, m = res["x"], per_seed[0] if len(per_seed) == 1 else combine_seeds(per_seed)
        # "seed": the seed of the samples in x (the last of --seeds), the one --save records
        info = {"source": " + ".join(stack.parts), "sampler": "dsno" if stack.dsno is not None else args.sampler,
                "steps": args.steps, "grid": args.grid, "clip": bool(clip), "nfe": res["nfe"],
                "seed": args.seed + len(per_seed) - 1, "seeds": len(per_seed), "first_seed": args.seed,
                "seconds_per_sample": res["seconds_per_sample"]}
    result = {**info, "data": data, "n": len(x), **{k: v for k, v in m.items() if isinstance(v, (int, float, str))}}
    if args.save:
        from difflab.io.samples import save_samples

        save_samples(x, Path(args.save), meta={**info, "data": data, "n": len(x)})
        result["samples_file"] = str(args.save)
    vs = None
    if args.vs:
        from difflab.io.samples import load_sample_meta
        from difflab.metrics.bench import compare_samples

        y = _load_samples(args.vs)
        other = load_sample_meta(args.vs) or {}
        if other.get("data") not in (None, data):
            raise DataError(f"--vs {args.vs}: those are samples of {other['data']!r}, these of {data!r}; compare "
                            f"samples of the same data")
        paired, why = pairing(len(x), info.get("seed"), len(y), other.get("seed"))
        vs = compare_samples(x, y, data, data_dir=args.data_dir, seed=args.seed, n_boot=max(args.n_boot, 2),
                             paired=paired)
        vs["pairing"] = why
        result["vs"] = {"file": str(args.vs), "n_other": len(y), "other": other or None, **vs}
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    else:
        print(text)
    print(summary_line(m, len(x), data))
    if vs is not None:
        print(compare_line(vs, args.vs))
    return 0


def _load_samples(path):
    """(N, ...) float samples in [-1, 1] from an .npz with 'samples' (floats) or 'images_uint8'."""
    import torch

    from difflab.io.samples import load_sample_arrays

    key, a = load_sample_arrays(path, ("samples", "images_uint8"))
    x = torch.from_numpy(a).float()
    return x / 127.5 - 1 if key == "images_uint8" else x


def pairing(n_a: int, seed_a, n_b: int, seed_b) -> tuple[bool, str]:
    """Whether two sample sets may be compared pairwise (sample i of both from the same starting noise),
    and why: the same size and the same recorded seed; the same size and no record of one seed (paired
    by position, as files from before the record or other tools must be); else unpaired."""
    if n_a != n_b:
        return False, f"unpaired: {n_a} and {n_b} samples"
    if seed_a is not None and seed_b is not None:
        if int(seed_a) != int(seed_b):
            return False, f"unpaired: seeds {seed_a} and {seed_b} (different noise)"
        return True, f"paired: both seed {seed_a}"
    return True, "paired by position (no seed recorded for one set)"


def compare_line(c: dict, other) -> str:
    """'vs OTHER (paired): FID ratio, difflab-mnist: 0.87 [0.83, 0.91], difference -0.12 [...]; res: ...'."""
    from difflab.metrics.bench import SPACE_PREFIX

    parts = []
    for pre in SPACE_PREFIX.values():
        if pre + "ratio" in c:
            parts.append(f"{c[pre + 'feature_space']} FID ratio {c[pre + 'ratio']:.3f} [{c[pre + 'ratio_lo']:.3f}, "
                         f"{c[pre + 'ratio_hi']:.3f}], difference {c[pre + 'diff']:+.3f} [{c[pre + 'diff_lo']:+.3f}, "
                         f"{c[pre + 'diff_hi']:+.3f}]")
    how = c.get("pairing") or ("paired" if c.get("paired") else "unpaired")
    return f"vs {other} ({how}; 95% intervals; one excluding 1 / 0 is a difference): " + "; ".join(parts)


def summary_line(m: dict, n: int, data: str) -> str:
    """'FID, difflab-mnist features: 2.42 [2.31, 2.55], floor 0.30 (8.1x); res: ...' (n samples of data)."""
    from difflab.metrics.bench import SPACE_PREFIX

    if "fid_floor" not in m:
        return f"{m['quality_name']}: {m['quality']:.4g} ({n} samples of {data})"
    parts = []
    for pre in SPACE_PREFIX.values():
        if pre + "fid" in m:
            iv = f" [{m[pre + 'fid_lo']:.3g}, {m[pre + 'fid_hi']:.3g}]" if pre + "fid_lo" in m else ""
            parts.append(f"{m[pre + 'feature_space']} FID {m[pre + 'fid']:.3g}{iv}, floor {m[pre + 'fid_floor']:.3g} "
                         f"({m[pre + 'fid_ratio']:.2f}x)")
    return "; ".join(parts) + f" ({n} samples of {data})"


def cmd_bench(args) -> int:
    from difflab.metrics.bench import NFE_LEVELS, QUICK_NFE_LEVELS, default_grid, run_bench

    from difflab.compose import check_label, stack_on

    if args.step_times is not None:
        raise ConfigError("--step-times is a table for one sampler and T, not for bench's rows; judge it with "
                          "`difflab eval MODEL --sampler S --steps T --step-times FILE --vs PLAIN.npz`")
    device = auto_device(args.device)
    loaded = load_any(args.checkpoint, flags=args.flags, device=device)
    model, stack = loaded.model, None
    if args.stack:
        if not (args.dg or args.cg or any(getattr(args, k) is not None for k in TIME_OPTIONS)):
            raise ConfigError("--stack wraps every row in the methods (--tp, --time-shift, --t-shift, --eps-scale, "
                              "--dg, --cg); pass at least one of them")
        stack = stack_on(loaded, **stack_options(args), device=device)
        check_label(stack.num_classes, args.label, guided=args.cg is not None)
        model = stack.model
    elif args.cg or args.label is not None:
        raise ConfigError("--cg / --label guide every sample toward one class: bench them with --stack (a side-by-"
                          "side CG row would compare one class with the whole data)")
    levels = QUICK_NFE_LEVELS if args.quick else NFE_LEVELS
    if args.nfe:
        levels = parse_ints(args.nfe, "--nfe")
    grid = [g for g in default_grid(levels) if not (args.no_adaptive and SPECS[g[0]].evals_per_step is None)]
    if args.solvers:
        from difflab.metrics.bench import SOLVER_NFE_LEVELS, solver_grid

        grid = solver_grid(parse_ints(args.nfe, "--nfe") if args.nfe else SOLVER_NFE_LEVELS)
    if args.samplers:
        keep = [v.strip() for v in args.samplers.split(",") if v.strip()]
        bad = [v for v in keep if v not in SAMPLERS]
        if bad or not keep:
            raise ConfigError(f"--samplers {args.samplers!r}; expected a comma-separated subset of {', '.join(SAMPLERS)}")
        grid = [g for g in grid if g[0] in keep]
    if args.clip:
        grid = [(*g[:2], {**(g[2] if len(g) > 2 else {}), "clip": True}) if SPECS[g[0]].clip else g for g in grid]
    if args.grid != "auto":
        grid = [(*g[:2], {**(g[2] if len(g) > 2 else {}), "spacing": args.grid}) if SPECS[g[0]].evals_per_step else g
                for g in grid]
    if args.batch is None:  # the measured best for this network (benchmarks/cost.py), as generate() picks it
        from difflab.samplers.batched import auto_batch

        args.batch = auto_batch(model, loaded.data_shape, device)
    if stack is not None and stack.tp_coefficients:  # the seed's Algorithm 3: its own per-sample-time samplers
        from difflab.methods.time_predictor import tp_sample

        grid = [(*g[:2], {**(g[2] if len(g) > 2 else {}), "sample_fn": tp_sample}) for g in grid]
    extra, one_step, peer_nfe = method_rows(loaded, args, device, grid)
    res = run_bench(model, loaded.data_name(args.data), loaded.data_shape, args.out, seeds=args.seeds,
                    n_boot=args.n_boot, grid=grid, n=args.n, seed=args.seed,
                    data_dir=args.data_dir, peers=not args.no_peers, device=device, extra_models=extra,
                    one_step=one_step, peer_nfe=peer_nfe, batch=args.batch, progress=not args.no_progress,
                    stack=stack.parts if stack is not None else None)
    print((Path(args.out) / "table.md").read_text())
    print(f"{len(res['rows'])} rows -> {args.out}/results.json, table.md, table.csv, quality_vs_nfe.png")
    return 0


METHOD_SAMPLERS = ("euler_maruyama", "ancestral", "ddim")


def time_row_name(args) -> str:
    """The bench row name of the time layer the options ask for ('' for none): TP, TS (Time-Shift),
    t+ξ, with '+ε' for ε scaling below it."""
    name = "TP" if args.tp else f"TS ±{args.time_shift:g}" if args.time_shift is not None else (
        f"t{args.t_shift:+g}" if args.t_shift is not None else "")
    if args.eps_scale is not None:
        eps = f"ε/{args.eps_scale[0]:g}" + (f"{args.eps_scale[1]:+g}t" if args.eps_scale[1] else "")
        name = f"{name}+{eps}" if name else eps
    return name


def method_rows(loaded, args, device, grid: list) -> tuple[dict, dict, tuple]:
    """The extra models, one-step samplers and peer budgets that --tp / --dg (side by side, without
    --stack) and --dsno add to the bench; the TP, DG and TP+DG models are :func:`difflab.compose.stack_on`
    of the loaded model, as ``sample`` builds them. The plain sampler's rows they are compared with are
    added to ``grid`` when missing."""
    from difflab.compose import stack_on

    model = loaded.model
    nfe = parse_ints(args.method_nfe, "--method-nfe")
    method_grid = [(s, k) for k in nfe for s in METHOD_SAMPLERS]
    extra, one_step, peer_nfe = {}, {}, ()
    if not args.stack:
        opts = stack_options(args, cg=False)
        tp_grid = method_grid
        if args.tp_coefficients or args.time_readout == "coefficients":
            from difflab.methods.time_predictor import tp_sample

            tp_grid = [(s, k, {"sample_fn": tp_sample}) for s, k in method_grid]
        name = time_row_name(args)
        if name:
            extra[name] = (stack_on(loaded, **{**opts, "dg": None}, device=device).model, tp_grid)
        if args.dg:
            plain_time = {k: None for k in TIME_OPTIONS}
            extra[f"DG w={args.dg_weight:g}"] = (stack_on(loaded, **{**opts, **plain_time}, device=device).model,
                                                method_grid)
        if name and args.dg:
            extra[f"{name}+DG"] = (stack_on(loaded, **opts, device=device).model, tp_grid)
    if args.dsno:
        from difflab.methods.dsno import dsno_sample, load_dsno

        dsno, dcfg, _ = load_dsno(args.dsno, map_location=device)
        peer_nfe = (4, 2, 1)
        baseline = None
        bank = _bank_meta(dcfg.get("bank"))
        if bank:  # the teacher exactly as it made the trajectories (its grid through the M times), same noise
            from difflab.methods.dsno import teacher_grid

            ts = teacher_grid(bank, model.schedule)  # refined in t or log-SNR, as the bank recorded
            opts = {"ts": ts, **({"clip": True} if bank.get("clip_denoised") else {})}
            extra["teacher"] = (model, [(bank["sampler"], len(ts) - 1, opts)])
            from difflab.metrics.bench import row_name

            baseline = ("teacher", row_name(bank["sampler"], opts), len(ts) - 1)
        one_step["DSNO"] = (lambda x_T: dsno_sample(dsno, x_T).x, baseline)
    if extra or one_step:
        have = {(s, k) for s, k, *_ in grid}
        wrapped = bool(extra.keys() - {"teacher"})  # TP / DG rows need the plain rows they are compared with
        want = (method_grid if wrapped else []) + [("ddim", k) for k in peer_nfe]
        grid += [item for item in dict.fromkeys(want) if item not in have]
    return extra, one_step, peer_nfe


def _bank_meta(path) -> dict | None:
    """The teacher settings a DSNO's trajectory bank recorded (None when the bank is not at hand)."""
    from difflab.errors import DataError
    from difflab.methods.dsno import bank_meta

    if not path or not Path(path).is_dir():
        return None
    try:
        return bank_meta(path)
    except DataError:
        return None
