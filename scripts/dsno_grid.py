"""A DSNO student's one-evaluation samples under its teacher's, from the same per-sample noises: the top rows
are the teacher exactly as its trajectory bank ran it (solver, grid through the recorded times, clipping), the
bottom rows the student (README's "DSNO vs teacher" figure).

    python scripts/dsno_grid.py mnist-dsno --n 32 --seed 0 --out docs/figures/mnist_dsno_vs_teacher.png

The bank (``--bank``; default: the one the student's config names) supplies only the teacher's settings.
"""
from __future__ import annotations

import argparse
import sys

import torch

from difflab.compose import build_stack, stack_generate
from difflab.errors import DifflabError
from difflab.loading import load_any
from difflab.methods.dsno import bank_meta, load_dsno, teacher_grid
from difflab.samplers import generate
from difflab.viz import auto_scale, save_grid


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dsno")
    p.add_argument("--bank", default=None, help="the trajectory bank whose teacher settings to use")
    p.add_argument("--n", type=int, default=32, help="samples per half (a multiple of 8 fills the rows)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=int, default=None, help="enlarge each image (default: 2 for 28x28)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    try:
        _, cfg, _ = load_dsno(args.dsno)
        meta = bank_meta(args.bank or cfg.get("bank") or "")
        teacher = load_any(cfg["teacher_checkpoint"])
        shape = tuple(teacher.data_shape)
        t = generate(teacher.model, shape, sampler=meta["sampler"], steps=int(meta["steps"]), n=args.n, seed=args.seed,
                     clip=bool(meta.get("clip_denoised")), ts=teacher_grid(meta, teacher.model.schedule))["x"]
        s = stack_generate(build_stack(args.dsno), n=args.n, seed=args.seed)["x"]
    except DifflabError as e:
        print(f"dsno_grid: {e}", file=sys.stderr)
        return 2
    out = save_grid(torch.cat([t, s]), args.out, nrow=8, scale=args.scale or max(2, auto_scale(shape[-1])))
    print(f"wrote {out}: top {args.n} the teacher ({meta['sampler']}, {meta['steps']} steps), bottom the student "
          f"(1 evaluation), seed {args.seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
