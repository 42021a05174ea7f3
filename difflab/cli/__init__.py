"""The difflab command line: thin commands over the Python API, one module per command group.

    run        train, sample, info
    evaluate   eval, bench, nll
    tp         tp-train, tp-report, tp-sample
    guidance   dg-bank, dg-train, dg-sample, cg-train
    dsno       dsno-data, dsno-train, dsno-sample
    analyze    analyze sdedit|sdedit-curve|posterior|rate-distortion|interp|spectrum|density-ratio
    demo       demo

Each group has ``register(subparsers) -> {command: function(args) -> int}``; :data:`GROUPS` is the
explicit table. Every bad input ends in one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import sys

from difflab.cli import analyze, demo, dsno, evaluate, guidance, run, tp
from difflab.errors import DifflabError

GROUPS = (run, evaluate, tp, guidance, dsno, analyze, demo)


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    """The parser with every group's commands, and the table {command: function}."""
    ap = argparse.ArgumentParser(prog="difflab", description="Diffusion models: train, sample, evaluate.")
    sub = ap.add_subparsers(dest="command", required=True)
    commands: dict = {}
    for group in GROUPS:
        commands.update(group.register(sub))
    return ap, commands


def main(argv=None) -> int:
    ap, commands = build_parser()
    args = ap.parse_args(argv)
    try:
        return commands[args.command](args)
    except DifflabError as e:
        print(f"difflab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("difflab: interrupted", file=sys.stderr)
        return 130


__all__ = ["GROUPS", "build_parser", "main"]
