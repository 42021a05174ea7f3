"""`difflab demo`: the quickstart."""
from __future__ import annotations

import argparse
from pathlib import Path

from difflab.cli.options import output_dir

EXAMPLES = """examples:
  difflab demo --out runs/demo                 (the quickstart: a few minutes on 2 CPU cores)
  difflab demo --full --out runs/demo-full     (the long tour: trains every model and method itself)
  difflab demo --full --out runs/quick --toy-steps 500 --digits-steps 300"""


def register(sub) -> dict:
    p = sub.add_parser("demo", help="the quickstart: train small toy and digits models, sample, report",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", type=output_dir)
    p.add_argument("--full", action="store_true", help="the long tour (trains toy, digits and every method's net)")
    p.add_argument("--toy-steps", type=int, default=None, help="toy training steps (default 600; --full 3000)")
    p.add_argument("--digits-steps", type=int, default=1500, help="--full: digits training steps")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--no-progress", action="store_true")
    return {"demo": cmd_demo}


def cmd_demo(args) -> int:
    if args.full:
        from difflab.demo import run_demo

        report = run_demo(Path(args.out), toy_steps=args.toy_steps or 3000, digits_steps=args.digits_steps,
                          data_dir=args.data_dir, progress=not args.no_progress)
    else:
        from difflab.demo.quick import run_quick

        report = run_quick(Path(args.out), toy_steps=args.toy_steps or 600, progress=not args.no_progress)
    print(f"report: {report}")
    return 0
