"""`difflab demo`: the quickstart."""
from __future__ import annotations

import argparse
from pathlib import Path

from difflab.cli.options import output_dir

EXAMPLES = """examples:
  difflab demo --out runs/demo
  difflab demo --out runs/quick --toy-steps 500 --digits-steps 300"""


def register(sub) -> dict:
    p = sub.add_parser("demo", help="the quickstart: train small toy and digits models, sample, report",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", type=output_dir)
    p.add_argument("--toy-steps", type=int, default=3000)
    p.add_argument("--digits-steps", type=int, default=1500)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--no-progress", action="store_true")
    return {"demo": cmd_demo}


def cmd_demo(args) -> int:
    from difflab.demo import run_demo

    report = run_demo(Path(args.out), toy_steps=args.toy_steps, digits_steps=args.digits_steps,
                      data_dir=args.data_dir, progress=not args.no_progress)
    print(f"report: {report}")
    return 0
