"""`difflab train`, `difflab sample` and `difflab info`: thin commands over the Python API.

    difflab train CONFIG [--set key=value ...] [--out DIR] [--resume] [--data-dir DIR]
    difflab sample CKPT --sampler NAME --steps N --n N --seed S --out FILE.png|FILE.npz
    difflab info CKPT
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from difflab.cli.common import add_stack_args, grid_spec, stack_from_args
from difflab.train.api import final_loss
from difflab.cli.options import input_path, output_dir, output_file
from difflab.io.samples import save_samples
from difflab.samplers.batched import generate
from difflab.train.distributed import auto_device

EXAMPLES = {
    "train": """examples:
  difflab train toy-ddpm --out runs/toy
  difflab train digits-iddpm --set train.steps=5000 --set train.lr=3e-4 --out runs/digits
  difflab train mnist-vpsde --data-dir /data --out runs/mnist
  difflab train runs/mnist/config.toml --out runs/mnist --resume --set train.steps=40000""",
    "sample": """examples:
  difflab sample runs/toy --sampler ddim --steps 50 --n 2000 --out toy.png
  difflab sample runs/digits --sampler ancestral --steps 1000 --n 64 --seed 1 --out grid.png
  difflab sample runs/mnist --sampler pf_heun --steps 18 --n 10000 --out mnist.npz --no-progress
  difflab sample toy-ddpm --sampler ddim --steps 20 --n 2000 --out toy.png          (a shipped zoo model)
  difflab sample diffusers:./ddpm-cifar10-32 --sampler ddim --steps 50 --out c.png  (a diffusers pipeline)
  difflab sample improved-diffusion:model.pt --flags "--image_size 32 --num_channels 128 --num_res_blocks 3 --learn_sigma True" --out c.png""",
    "info": """examples:
  difflab info runs/toy
  difflab info runs/toy/checkpoints/step-00002000""",
}


def _add_train(sub):
    p = sub.add_parser("train", help="train a model from a config file or preset", epilog=EXAMPLES["train"],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="a TOML file or a preset name (e.g. toy-ddpm, digits-iddpm, mnist-vpsde)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. train.lr=1e-4 (repeatable)")
    p.add_argument("--out", default=None, type=output_dir, help="run directory (default runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument("--data-dir", default=None, help="data directory (default: $DIFFLAB_DATA)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs still go to log.jsonl)")


def _add_sample(sub):
    from difflab.samplers import SAMPLERS

    p = sub.add_parser("sample", help="draw samples from a checkpoint", epilog=EXAMPLES["sample"],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a run dir, a checkpoint dir or a .safetensors file")
    p.add_argument("--sampler", default=None, choices=sorted(SAMPLERS),
                   help="default: the checkpoint's [sample] sampler (ddim when it records none)")
    p.add_argument("--steps", type=int, default=None,
                   help="grid intervals (NFE for 1-evaluation samplers); default: the checkpoint's [sample] steps")
    p.add_argument("--n", type=int, default=None, help="number of samples (default: the checkpoint's [sample] n)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eta", type=float, default=None, help="DDIM's η (default: the checkpoint's [sample] eta)")
    p.add_argument("--clip", action=argparse.BooleanOptionalAction, default=None,
                   help="clip x̂0 to [-1, 1] (images; default: the checkpoint's [sample] clip_denoised)")
    p.add_argument("--grid", default=None, type=grid_spec, metavar="GRID",
                   help="time grid: trailing/respace (a discrete model's trained steps), uniform, quadratic, "
                        "power[:RHO] (t = (i/N)^RHO, default 0.8), logsnr, karras[:RHO] (default: the checkpoint's "
                        "[sample] grid, else the sampler's own)")
    p.add_argument("--label", type=int, default=None, help="class label for a class-conditional model (CG's target)")
    p.add_argument("--batch", type=int, default=500, help="samples per network batch (the samples do not depend on it)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--device", default="auto")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="assert a training setting (e.g. diffusion.schedule=cosine): refused if the checkpoint differs")
    p.add_argument("--out", required=True, type=output_file(".png", ".npz"), help="FILE.png (grid or scatter plot) or FILE.npz (arrays); both with --npz")
    p.add_argument("--npz", action="store_true", help="also write the samples as .npz beside the PNG")
    p.add_argument("--trajectory", action="store_true", help="also write a strip of the trajectory (images)")
    p.add_argument("--init", default=None, type=input_path, help="SDEdit: start from these images (.npz with 'samples' or "
                   "'images_uint8', or a folder of images) noised to --t0, instead of pure noise")
    p.add_argument("--t0", type=float, default=0.5, help="with --init: the noise level to start from (0 returns the input)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--flags", default=None, help="for improved-diffusion:MODEL.pt, their model/diffusion flags")
    add_stack_args(p)


def cmd_train(args) -> int:
    from difflab.config import load_config
    from difflab.train.api import train

    cfg = load_config(args.config, args.overrides)
    out = Path(args.out or f"runs/{cfg.name or Path(args.config).stem}")
    res = train(cfg, out, resume=args.resume, data_dir=args.data_dir, progress=not args.no_progress,
                sample_fn=_grid_sample_fn(cfg))
    print(f"trained to step {res['final_step']} ({final_loss(res)}); checkpoint {res['checkpoint']}")
    return 0


def _grid_sample_fn(cfg):
    """Periodic sample grids during training (images) or scatter plots (2-D)."""

    from difflab.train.build import data_shape_of

    def fn(model, step, run_dir):
        shape = tuple(data_shape_of(cfg))
        x = generate(model, shape, sampler="ddim", steps=50, n=64 if len(shape) == 3 else 2000,
                     device=next(model.parameters()).device)["x"]
        save_samples(x, Path(run_dir) / "samples" / f"step-{step:08d}.png")

    return fn


SAMPLE_FALLBACKS = {"sampler": "ddim", "steps": 50, "n": 64, "eta": 0.0, "clip_denoised": False, "grid": "auto"}


def sample_settings(args, stack) -> dict:
    """sampler, steps, n, eta, clip, grid: the user's option, else the checkpoint's ``[sample]`` table
    (its clip default only for images: 2-D data has no [-1, 1] range), else SAMPLE_FALLBACKS."""
    d = {**SAMPLE_FALLBACKS, **{k: v for k, v in stack.defaults.items() if k in SAMPLE_FALLBACKS}}
    if not stack.is_image:
        d["clip_denoised"] = False
    if stack.tuned_for is not None:  # a --step-times table applies to the clipping it was tuned with
        d["clip_denoised"] = stack.tuned_clip
    given = {"sampler": args.sampler, "steps": args.steps, "n": args.n, "eta": args.eta, "clip_denoised": args.clip,
             "grid": args.grid}
    return {k: (given[k] if given[k] is not None else d[k]) for k in SAMPLE_FALLBACKS}


def cmd_sample(args) -> int:
    from difflab import viz
    from difflab.compose import check_label, stack_generate

    device = auto_device(args.device)
    stack = stack_from_args(args, device)
    check_label(stack.num_classes, args.label, guided=args.cg is not None)
    st = sample_settings(args, stack)
    if stack.dsno is not None:
        res = stack_generate(stack, n=st["n"], seed=args.seed, batch=args.batch, device=device,
                             trajectory=args.trajectory)
        x, traj, nfe, what = res["x"], res["trajectory"], 1, "DSNO"
    elif args.init:
        x, nfe, traj, what = _sdedit_from(args, stack.model, stack.loaded, device, st), st["steps"], None, st["sampler"]
    else:
        res = stack_generate(stack, sampler=st["sampler"], steps=st["steps"], n=st["n"], seed=args.seed, eta=st["eta"],
                             clip=st["clip_denoised"], label=args.label, batch=args.batch, device=device,
                             progress=not args.no_progress, trajectory=args.trajectory, spacing=st["grid"])
        x, traj, nfe, what = res["x"], res["trajectory"], res["nfe"], st["sampler"]
    meta = {"source": " + ".join(stack.parts), "sampler": what, "steps": st["steps"], "grid": st["grid"],
            "clip": bool(st["clip_denoised"]), "nfe": nfe, "seed": args.seed, "n": len(x)}
    written = save_samples(x, Path(args.out), npz=args.npz, meta=meta)
    if traj is not None and traj.dim() == 5:
        written.append(viz.save_trajectory_strip(traj, Path(args.out).with_suffix("").as_posix() + "-trajectory.png",
                                                 num_frames=traj.shape[0], scale=viz.auto_scale(traj.shape[-1])))
    clipped = "" if stack.dsno is not None or not stack.is_image else \
        (", x̂0 clipped" if st["clip_denoised"] else ", x̂0 unclipped")
    print(f"{len(x)} samples of {' + '.join(stack.parts)}, {what}{clipped}, {nfe} network evaluations per sample -> "
          f"{', '.join(map(str, written))}")
    return 0


def _sdedit_from(args, model, loaded, device, st):
    """The images of --init (first --n), noised to --t0 and denoised with --sampler."""
    import torch

    from difflab.analysis import sdedit

    init = Path(args.init)
    if init.suffix == ".npz":
        from difflab.io.samples import load_sample_arrays

        key, a = load_sample_arrays(init)
        x = torch.from_numpy(a[: st["n"]]).float()
        x = x / 127.5 - 1 if key == "images_uint8" else x
    else:
        from difflab.data import load_dataset

        x = load_dataset(f"folder:{init}", image_size=loaded.image_size).x[: st["n"]]
    g = torch.Generator(device).manual_seed(args.seed)
    if tuple(x.shape[1:]) != tuple(loaded.data_shape):
        raise ValueError(f"--init {init}: images of shape {tuple(x.shape[1:])}, the model makes "
                         f"{tuple(loaded.data_shape)}; expected inputs of the model's shape")
    return sdedit(model, x.to(device), args.t0, sampler=st["sampler"], steps=st["steps"], generator=g,
                  spacing=st["grid"]).cpu()


def cmd_info(args) -> int:
    from difflab.loading import open_checkpoint

    ckpt = open_checkpoint(args.checkpoint)
    n_params = sum(v.numel() for v in ckpt.model_state.values())
    info = {"path": str(ckpt.path), "kind": ckpt.kind, "step": ckpt.step, "parameters": n_params,
            "has_ema": ckpt.ema_state is not None, "extra": (ckpt.state or {}).get("extra"),
            "sample_defaults": (ckpt.config or {}).get("sample"),
            "config": ckpt.config}
    print(json.dumps(info, indent=2, default=str))
    return 0


def register(sub) -> dict:
    _add_train(sub)
    _add_sample(sub)
    p = sub.add_parser("info", help="describe a checkpoint", epilog=EXAMPLES["info"],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    return {"train": cmd_train, "sample": cmd_sample, "info": cmd_info}
