"""`difflab tp-train`, `tp-report`, `tp-sample`: thin commands over :mod:`difflab.methods.time_predictor`
(the library computes; these write the files and draw the plots through :mod:`difflab.viz`)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from difflab import viz
from difflab.cli.common import float_pair, parse_ints
from difflab.cli.options import output_dir, output_file
from difflab.train.api import final_loss
from difflab.methods.time_predictor import (LABELS, STATE_DEFAULTS, TP_TRAIN_DEFAULTS, accuracy_table, drift_table, tp_report,
                                            train_time_predictor)
from difflab.methods.time_predictor.tuner import TARGETS
from difflab.samplers import SAMPLERS, SPECS
from difflab.train.distributed import auto_device

EXAMPLES = {
    "tp-train": """examples:
  difflab tp-train runs/toy --out runs/toy-tp
  difflab tp-train runs/digits --out runs/digits-tp --steps 3000 --set train.lr=5e-4
  difflab tp-train runs/mnist --out runs/mnist-tp --set tp.parameterization=log_snr
  difflab tp-train runs/cifar --out runs/cifar-tp --set tp.net=efficientnet_v2_s --set tp.weights_path=effv2s.pth
  difflab tp-train mnist-ddpm-ext --out runs/mnist-tp-ddim10 --on-states ddim:10 --states-n 4096   # g on DDIM@10's own states""",
    "tp-report": """examples:
  difflab tp-report runs/toy --tp runs/toy-tp --out runs/toy-tp/report
  difflab tp-report runs/digits --tp runs/digits-tp --out reports/digits-tp --drift-steps 5,10,20 --drift-sampler ddim
  difflab tp-report mnist-ddpm --tp mnist-tp --out reports/mnist-tp --no-drift""",
    "tp-tune": """examples:
  difflab tp-tune runs/toy --sampler ddim --steps 10 --out runs/toy-ddim10-times.json
  difflab tp-tune mnist-ddpm-ext --sampler ddim --steps 10 --window 0.1 --n 128 --out ddim10-times.json
  difflab eval mnist-ddpm-ext --sampler ddim --steps 10 --step-times ddim10-times.json --n 2000 --vs plain.npz""",
    "tp-sample": """examples:
  difflab tp-sample runs/toy --tp runs/toy-tp --sampler euler_maruyama --steps 10 --n 2000 --out tp-toy.png
  difflab tp-sample mnist-ddpm --tp mnist-tp --sampler ddim --steps 10 --n 64 --coefficients --out tp-mnist.png
  (TP with any other method: difflab sample mnist-ddpm --tp mnist-tp --dg mnist-dg --sampler dpmpp_2m ...)""",
}


def register(sub) -> dict:
    """Add ``tp-train``, ``tp-report`` and ``tp-sample`` to the CLI's subparsers."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("tp-train", help="train a time predictor g(x_t) -> t for a diffusion checkpoint",
                       epilog=EXAMPLES["tp-train"], formatter_class=fmt)
    p.add_argument("diffusion", help="the diffusion run or checkpoint (its data and schedule are used)")
    p.add_argument("--out", required=True, type=output_dir, help="run directory for the time predictor")
    p.add_argument("--steps", type=int, default=None, help=f"training steps (default {TP_TRAIN_DEFAULTS['steps']})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="train.* (e.g. train.lr=1e-4) or tp.* (net, parameterization, t_min, hidden, depth, "
                        "base_channels, channel_mult, num_res_blocks, dropout, weights_path); repeatable")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--on-states", type=sampler_steps, default=None, metavar="SAMPLER:T",
                   help="train g on the states the model's own T-step sampler visits, each labelled with the time "
                        "whose marginal pixel variance it matches (the sampler-state variant), not on q(x_t | x0)")
    p.add_argument("--states-n", type=int, default=STATE_DEFAULTS["n"], help="sampler runs for --on-states (K states each)")
    p.add_argument("--states-window", type=float, default=STATE_DEFAULTS["window"],
                   help="--on-states: a label lies within ±W of the state's nominal time")
    p.add_argument("--states-label", choices=LABELS, default=STATE_DEFAULTS["per"],
                   help="--on-states: match each state's own pixel variance (sample) or each step's mean (step)")
    p.add_argument("--states-seed", type=int, default=STATE_DEFAULTS["seed"])
    p.add_argument("--states-cutoff", type=float, default=STATE_DEFAULTS["cutoff"], metavar="T_C",
                   help="--on-states: states above nominal time T_C keep it as their label (the reading is noise there)")

    p = sub.add_parser("tp-report", help="per-t accuracy of a time predictor, and the drift of few-step samplers",
                       epilog=EXAMPLES["tp-report"], formatter_class=fmt)
    p.add_argument("checkpoint", help="the diffusion model (run, checkpoint or zoo name) whose sampler drift is measured")
    p.add_argument("--tp", required=True, metavar="RUN", help="the time-predictor run, checkpoint or zoo name")
    p.add_argument("--out", required=True, type=output_dir, help="directory for report.md, accuracy.{json,png}, drift.{json,png}")
    p.add_argument("--n", type=int, default=4000, help="(t, x_t) pairs for the accuracy table")
    p.add_argument("--bins", type=int, default=10)
    p.add_argument("--drift-steps", default="5,10,20,50,1000", help="comma-separated step counts T")
    p.add_argument("--drift-sampler", default="euler_maruyama", choices=sorted(SAMPLERS))
    p.add_argument("--drift-n", type=int, default=256, help="trajectories per T")
    p.add_argument("--no-drift", action="store_true")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("tp-tune", help="the timestep tuner: fit the time the model is shown at each step of a "
                       "deterministic sampler to the model's converged ODE", epilog=EXAMPLES["tp-tune"], formatter_class=fmt)
    p.add_argument("checkpoint", help="the diffusion model (run, checkpoint or zoo name)")
    p.add_argument("--sampler", default="ddim", choices=sorted(k for k, v in SPECS.items() if not v.stochastic and v.evals_per_step is not None))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--grid", default="auto", metavar="SPACING", help="the sampler's grid (as in sample --grid)")
    p.add_argument("--window", type=float, default=0.1, help="each step's time moves within ±W of the nominal one")
    p.add_argument("--candidates", type=int, default=5, help="equally spaced times tried per step (then a parabola)")
    p.add_argument("--target", choices=TARGETS, default="final",
                   help="fit each step to the final sample (default) or to its own landing")
    p.add_argument("--sweeps", type=int, default=1, help="passes over the steps")
    p.add_argument("--n", type=int, default=128, help="pilot noises (keep their seed apart from the judged ones)")
    p.add_argument("--seed", type=int, default=4321)
    p.add_argument("--teacher", default="dpmpp_2m", help="the ODE solver the target is solved with")
    p.add_argument("--teacher-steps", type=int, default=200)
    p.add_argument("--clip", action=argparse.BooleanOptionalAction, default=None,
                   help="clip x̂0 to [-1, 1] (default: the checkpoint's sampling default)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", required=True, type=output_file(".json"), help="FILE.json: the table, for --step-times")

    p = sub.add_parser("tp-sample", help="sample a diffusion checkpoint with time-predictor sampling",
                       epilog=EXAMPLES["tp-sample"], formatter_class=fmt)
    p.add_argument("checkpoint", help="the diffusion model (run, checkpoint or zoo name)")
    p.add_argument("--tp", required=True, metavar="RUN", help="the time-predictor run, checkpoint or zoo name")
    p.add_argument("--sampler", default="euler_maruyama", choices=sorted(SAMPLERS))
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--coefficients", action="store_true", help="also take the sampler's α, σ, β at g(x) (Algorithm 3)")
    p.add_argument("--clamp", type=float_pair, default=None, metavar="LO,HI", help="bounds on g(x)")
    p.add_argument("--no-compare", action="store_true", help="skip the original sampler's samples")
    p.add_argument("--clip", action=argparse.BooleanOptionalAction, default=None,
                   help="clip x̂0 to [-1, 1] (default: on for images)")
    p.add_argument("--batch", type=int, default=500, help="samples per network batch (the samples do not depend on it)")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--out", required=True, type=output_file(".png", ".npz"), help="FILE.png (FILE-tp.png and FILE-original.png for images) + FILE.npz")
    return {"tp-train": cmd_tp_train, "tp-report": cmd_tp_report, "tp-tune": cmd_tp_tune, "tp-sample": cmd_tp_sample}


def sampler_steps(text: str) -> tuple[str, int]:
    """argparse type for ``SAMPLER:T`` (--on-states): a known sampler and a positive step count."""
    name, _, steps = text.partition(":")
    if name not in SAMPLERS or not steps.isdigit() or int(steps) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}; expected SAMPLER:T with SAMPLER one of "
                                         f"{', '.join(sorted(SAMPLERS))} and T a positive integer, e.g. ddim:10")
    return name, int(steps)


def cmd_tp_train(args) -> int:
    states = None
    if args.on_states:
        states = {"sampler": args.on_states[0], "steps": args.on_states[1], "n": args.states_n,
                  "window": args.states_window, "per": args.states_label, "seed": args.states_seed,
                  "cutoff": args.states_cutoff}
    res = train_time_predictor(args.diffusion, args.out, steps=args.steps, overrides=args.overrides,
                               data_dir=args.data_dir, progress=not args.no_progress, resume=args.resume,
                               states=states)
    print(f"trained g to step {res['final_step']} ({final_loss(res, digits=5)}); checkpoint {res['checkpoint']}")
    return 0


def write_report(rep: dict, out: str | Path) -> Path:
    """``out``/report.md, accuracy.{json,png} and (with drift) drift.{json,png} of :func:`tp_report`'s
    result. Returns report.md's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    acc = rep["accuracy"]
    viz.save_tp_accuracy(acc, out / "accuracy.png", title=f"time predictor on {rep['data']}")
    (out / "accuracy.json").write_text(json.dumps({k: v for k, v in acc.items() if k != "samples"}, indent=2))
    lines = [f"# Time-predictor report: {rep['checkpoint']}", "",
             f"Data {rep['data']} ({rep['split']} split), schedule {rep['schedule']}, g = {rep['net']} predicting "
             f"{'t' if rep['parameterization'] == 't' else 'the normalised log-SNR'}, trained {rep['step']} "
             f"steps. {rep['n']} fresh (t, x_t) pairs, t uniform per bin"
             + (" (`exact`: the Bayes-optimal E[t | x] of the true mixture)." if rep["exact"] else "."), "",
             *accuracy_table(acc), "", "![accuracy](accuracy.png)", ""]
    if rep["drift_error"]:
        lines += [f"Drift diagnostics skipped: {rep['drift_error']}; pass --ckpt.", ""]
    elif rep["drift"] is not None:
        d, sampler = rep["drift"], rep["drift_sampler"]
        viz.save_tp_drift(d, out / "drift.png", title=f"{sampler} trajectories of {rep['diffusion_checkpoint']}")
        (out / "drift.json").write_text(json.dumps({str(k): v for k, v in d.items()}, indent=2))
        lines += [f"## Drift of the original sampler ({sampler}, {rep['drift_n']} trajectories)", "",
                  "Predicted t of the states along the trajectories against the grid's nominal t "
                  "(mean over states; the band is ± one std). Above the diagonal: the states are noisier than "
                  "the grid assumes.", "", *drift_table(d), "", "![drift](drift.png)", ""]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def cmd_tp_report(args) -> int:
    rep = tp_report(args.tp, diffusion_ckpt=args.checkpoint, n=args.n, bins=args.bins,
                    drift_steps=parse_ints(args.drift_steps, "--drift-steps"), drift_sampler=args.drift_sampler,
                    drift_n=args.drift_n, drift=not args.no_drift, data_dir=args.data_dir, seed=args.seed)
    print(f"report: {write_report(rep, args.out)}")
    return 0


def cmd_tp_tune(args) -> int:
    import time

    from difflab.compose import stack_on
    from difflab.loading import load_any
    from difflab.methods.time_predictor import save_step_times, tune_step_times, tuner_table

    loaded = load_any(args.checkpoint)
    plain = stack_on(loaded)
    clip = bool(plain.defaults.get("clip_denoised", False) and plain.is_image) if args.clip is None else args.clip
    t0 = time.perf_counter()
    mapping, report = tune_step_times(loaded.model, tuple(loaded.data_shape), sampler=args.sampler, steps=args.steps,
                                      spacing=args.grid, window=args.window, candidates=args.candidates,
                                      target=args.target, sweeps=args.sweeps, n=args.n, seed=args.seed,
                                      teacher=args.teacher, teacher_steps=args.teacher_steps,
                                      progress=not args.no_progress, **({"clip_denoised": True} if clip else {}))
    secs = time.perf_counter() - t0
    out = save_step_times(args.out, mapping, report, checkpoint=str(args.checkpoint), sampler=args.sampler,
                          steps=args.steps, spacing=args.grid, window=args.window, candidates=args.candidates,
                          target=args.target, sweeps=args.sweeps, n=args.n, seed=args.seed, teacher=args.teacher,
                          teacher_steps=args.teacher_steps, clip_denoised=bool(clip), seconds=secs)
    print(tuner_table(report))
    print(f"{len(mapping)} of {len(report)} step times moved in {secs:.0f} s; table {out} "
          f"(use: --sampler {args.sampler} --steps {args.steps}{'' if args.grid == 'auto' else f' --grid {args.grid}'} "
          f"--step-times {out})")
    return 0


def cmd_tp_sample(args) -> int:
    from difflab.compose import build_stack, stack_generate

    device = auto_device(args.device)
    stacks = {"tp": build_stack(args.checkpoint, tp=args.tp, tp_coefficients=args.coefficients, tp_clamp=args.clamp,
                                device=device)}
    if not args.no_compare:
        stacks["original"] = build_stack(args.checkpoint, device=device)
    clip = stacks["tp"].is_image if args.clip is None else args.clip
    xs = {k: stack_generate(st, sampler=args.sampler, steps=args.steps, n=args.n, seed=args.seed, clip=clip,
                            batch=args.batch, device=device, progress=not args.no_progress)["x"]
          for k, st in stacks.items()}
    out = Path(args.out)
    written = []
    if next(iter(xs.values())).dim() == 4:  # images: one grid per variant
        for k, x in xs.items():
            written.append(viz.save_grid(x, out.with_name(f"{out.stem}-{k}.png"), scale=viz.auto_scale(x.shape[-1])))
    else:
        written.append(viz.save_scatter({f"{k}, {args.sampler} T={args.steps}": x for k, x in xs.items()},
                                        out.with_suffix(".png")))
    npz = out.with_suffix(".npz")
    npz.parent.mkdir(parents=True, exist_ok=True)
    for k, x in xs.items():
        if not bool(x.isfinite().all()):
            raise ValueError(f"non-finite values in the {k} samples; nothing written to {npz}")
    np.savez_compressed(npz, **{k: x.numpy() for k, x in xs.items()})
    written.append(npz)
    print(f"{args.n} samples, TP {args.sampler} T={args.steps} -> {', '.join(map(str, written))}")
    return 0
