"""The DSNO commands: dsno-data (record a teacher-trajectory bank), dsno-train, dsno-sample (one-step samples
and, with --trajectory, a picture of the decoded trajectory). Thin wrappers over :mod:`difflab.methods.dsno`."""
from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import torch

from difflab import viz
from difflab.cli.options import input_path, output_dir, output_file
from difflab.train.api import final_loss
from difflab.errors import CheckpointError
from difflab.io.samples import save_samples
from difflab.loading import load_any
from difflab.methods.dsno import (DEFAULT_MAX_WEIGHT, LOSSES, ODE_SAMPLERS, READOUTS, REFINES, SPACINGS, WEIGHTINGS,
                                  bank_meta,
                                  generate_trajectories, train_dsno)
from difflab.train.distributed import auto_device

EXAMPLES = {
    "dsno-data": """examples:
  difflab dsno-data runs/toy --out runs/toy-bank --n 20000 --M 8
  difflab dsno-data runs/digits --out runs/digits-bank --n 5000 --M 6 --sampler ddim --clip --steps 50
  (rerun the same command after an interruption: finished shards are kept)""",
    "dsno-train": """examples:
  difflab dsno-train runs/toy --data runs/toy-bank --out runs/toy-dsno --steps 3000
  difflab dsno-train runs/digits --data runs/digits-bank --out runs/digits-dsno --modes 3 --set train.lr=1e-4
  difflab dsno-train mnist-ddpm-ext --data bank --out runs/dsno-adv --init-dsno mnist-dsno --adv mnist-ext-dg --adv-weight 0.01 --steps 200""",
    "dsno-sample": """examples:
  difflab dsno-sample runs/toy-dsno --n 2000 --out toy-dsno.png
  difflab dsno-sample runs/digits-dsno --n 64 --out digits.png --trajectory""",
}


def register(sub) -> dict:
    """Add dsno-data, dsno-train and dsno-sample to the difflab CLI."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("dsno-data", help="record teacher ODE trajectories for DSNO (sharded, resumable)",
                       epilog=EXAMPLES["dsno-data"], formatter_class=fmt)
    p.add_argument("checkpoint", help="the diffusion (teacher) checkpoint: run dir, checkpoint dir or .safetensors")
    p.add_argument("--out", required=True, type=output_dir, help="bank directory (bank.json + shard-KKKKK.npz files)")
    p.add_argument("--n", type=int, required=True, help="number of trajectories")
    p.add_argument("--M", type=int, required=True, help="recorded times per trajectory, t = 1 and t = 0 included")
    p.add_argument("--spacing", default="quadratic", choices=SPACINGS)
    p.add_argument("--sampler", default="pf_heun", choices=ODE_SAMPLERS)
    p.add_argument("--steps", type=int, default=64, help="solver steps (the grid refines the M times)")
    p.add_argument("--refine", default="t", choices=REFINES,
                   help="cut each interval between recorded times into equal steps in t or in log-SNR (DPM-Solver's)")
    p.add_argument("--clip", action="store_true", help="clip x̂0 to [-1, 1] at every step (images; not pf_euler/pf_heun)")
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--batch", type=int, default=None, help="trajectories per solver batch (default: a shard)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("dsno-train", help="train a DSNO operator on a trajectory bank", epilog=EXAMPLES["dsno-train"],
                       formatter_class=fmt)
    p.add_argument("checkpoint", help="the teacher checkpoint the bank was made with (initialises the backbone)")
    p.add_argument("--data", required=True, type=input_path, help="the bank directory from dsno-data")
    p.add_argument("--out", required=True, type=output_dir, help="run directory")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--modes", type=int, default=3, help="Fourier modes J kept by every temporal block")
    p.add_argument("--readout", default="x0", choices=READOUTS)
    p.add_argument("--loss", default="l1", choices=LOSSES)
    p.add_argument("--max-weight", type=float, default=DEFAULT_MAX_WEIGHT, help="upper clamp of the time weight λ(t)")
    p.add_argument("--weighting", default="snr", choices=WEIGHTINGS, help="λ(t) = α_t/σ_t (the paper's), uniform, or relative (1 / how far the bank's trajectories moved from x_T by t)")
    p.add_argument("--min-weight", type=float, default=0.0, help="floor of λ(t): keeps the early times in the loss")
    p.add_argument("--heldout", type=input_path, default=None,
                   help="a bank of other seeds: its RMS error per time is logged to OUT/heldout.jsonl")
    p.add_argument("--eval-every", type=int, default=250, help="steps between held-out evaluations (with --heldout)")
    p.add_argument("--init-dsno", default=None, metavar="RUN",
                   help="start from a trained DSNO of the same times (run, checkpoint or zoo name): a fine-tune")
    p.add_argument("--adv", default=None, metavar="DG_RUN",
                   help="a discriminator (dg-train run or zoo name), frozen: adds -log d at the decoded times")
    p.add_argument("--adv-weight", type=float, default=0.0, help="weight of the -log d term (with --adv; 0: none)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="train.KEY=VALUE")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("dsno-sample", help="one-step samples (and the decoded trajectory) from a DSNO",
                       epilog=EXAMPLES["dsno-sample"], formatter_class=fmt)
    p.add_argument("checkpoint", help="a dsno-train run dir or checkpoint")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="noise seed (sample i = the bank's sample i for that seed)")
    p.add_argument("--out", required=True, type=output_file(".png", ".npz"), help="FILE.png (grid or scatter) or FILE.npz")
    p.add_argument("--trajectory", action="store_true", help="also write FILE-trajectory.png, the decoded trajectory")
    p.add_argument("--no-ema", action="store_true")
    p.add_argument("--batch", type=int, default=500, help="samples per network batch (the samples do not depend on it)")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true", help="(one evaluation per batch: nothing to show)")
    return {"dsno-data": cmd_dsno_data, "dsno-train": cmd_dsno_train, "dsno-sample": cmd_dsno_sample}


def cmd_dsno_data(args) -> int:
    device = auto_device(args.device)
    lm = load_any(args.checkpoint, device=device)
    teacher = ({"checkpoint": str(lm.checkpoint.path), "step": lm.checkpoint.step} if lm.checkpoint is not None
               else {"source": lm.source})
    out = generate_trajectories(lm.model, args.out, args.n, args.M, args.spacing, args.sampler, args.steps,
                                args.shard_size, args.seed, shape=lm.data_shape, batch_size=args.batch, device=device,
                                clip_denoised=args.clip, refine=args.refine, teacher=teacher,
                                progress=not args.no_progress)
    meta = bank_meta(out)
    print(f"{meta['n']} trajectories x {meta['M']} times ({meta['sampler']}, {meta['steps']} steps) in "
          f"{meta['num_shards']} shards -> {out}")
    return 0


def save_heldout_curve(rows: list, path, title: str = "") -> Path:
    """The held-out RMS error against training step, one line per recorded time t_m < 1, with the x_T
    predictor's error at each time as a reference line (rows as ``read_heldout`` returns them)."""
    times = rows[0]["times"]
    series = {f"t = {t:.3f}": ([r["step"] for r in rows], [r["rms"][m] for r in rows])
              for m, t in enumerate(times) if t < 1}
    hlines = {f"x_T at t = {t:.3f}": rows[0]["x_T_rms"][m] for m, t in enumerate(times) if t < 1}
    return viz.save_curves(series, path, "training step", "held-out RMS error vs the teacher",
                           title or f"DSNO held-out trajectory error, n = {rows[0]['n']}", logy=True, hlines=hlines)


def cmd_dsno_train(args) -> int:
    res = train_dsno(args.checkpoint, args.data, args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                     modes=args.modes, readout=args.readout, loss=args.loss, max_weight=args.max_weight,
                     weighting=args.weighting, min_weight=args.min_weight, heldout_dir=args.heldout,
                     eval_every=args.eval_every, overrides=args.overrides, resume=args.resume, progress=not args.no_progress,
                     init_dsno=args.init_dsno, disc=args.adv, adv_weight=args.adv_weight)
    o = res["param_overhead"]
    print(f"trained to step {res['final_step']} ({final_loss(res)}); temporal blocks add "
          f"{o['temporal_params']:,} parameters to {o['backbone_params']:,} ({o['overhead_pct']:.1f}%); "
          f"checkpoint {res['checkpoint']}")
    if "heldout_error" in res:
        from difflab.methods.dsno import read_heldout

        errs = ", ".join(f"{e:.4f}" for e in res["heldout_error"])
        plot = save_heldout_curve(read_heldout(args.out), Path(args.out) / "heldout.png")
        print(f"held-out RMS error per time: {errs} ({Path(args.out) / 'heldout.jsonl'}, {plot})")
    return 0


def cmd_dsno_sample(args) -> int:
    from difflab.compose import build_stack, checkpoint_kind, stack_generate

    if checkpoint_kind(args.checkpoint) != "dsno":
        raise CheckpointError(f"{args.checkpoint} is a {checkpoint_kind(args.checkpoint)} checkpoint; expected a "
                              f"DSNO operator (dsno-train)")
    device = auto_device(args.device)
    stack = build_stack(args.checkpoint, device=device, use_ema=not args.no_ema)
    res = stack_generate(stack, n=args.n, seed=args.seed, batch=args.batch, device=device, trajectory=args.trajectory)
    r = SimpleNamespace(x=res["x"], trajectory=res["trajectory"], times=stack.dsno.times.to(torch.float64).cpu())
    written = save_samples(r.x, Path(args.out))
    if r.trajectory is not None:
        strip = Path(args.out).with_suffix("").as_posix() + "-trajectory.png"
        if r.trajectory.dim() == 5:
            written.append(viz.save_trajectory_strip(r.trajectory, strip, num_frames=r.trajectory.shape[0],
                                                     scale=viz.auto_scale(r.trajectory.shape[-1])))
        else:
            panels = {f"t = {float(t):.3f}": r.trajectory[m, :, :2] for m, t in enumerate(r.times)}
            written.append(viz.save_scatter(panels, strip))
    print(f"{args.n} samples, DSNO, 1 network evaluation -> {', '.join(map(str, written))}")
    return 0
