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

import os
import sys

from difflab.cli import analyze, demo, dsno, evaluate, guidance, run, tp
from difflab.cli.options import Parser, apply_rules
from difflab.errors import DifflabError

GROUPS = (run, evaluate, tp, guidance, dsno, analyze, demo)


def build_parser() -> tuple[Parser, dict]:
    """The parser with every group's commands (each option under :data:`options.RULES`), and the
    table {command: function}."""
    ap = Parser(prog="difflab", description="Diffusion models: train, sample, evaluate.")
    sub = ap.add_subparsers(dest="command", required=True)
    commands: dict = {}
    for group in GROUPS:
        commands.update(group.register(sub))
    for parser in _all_parsers(sub):
        apply_rules(parser)
    return ap, commands


def _all_parsers(sub):
    for p in sub.choices.values():
        yield p
        for action in p._actions:
            if hasattr(action, "choices") and isinstance(action.choices, dict):  # nested (analyze ...)
                yield from _all_parsers(action)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def main(argv=None) -> int:
    """Run one command. A bad input (DifflabError, or a ValueError the library raises on a bad
    argument) and a failed file operation (OSError: disk full, permission) end in one line on stderr
    and exit status 2; DIFFLAB_TRACEBACK=1 shows the traceback instead."""
    ap, commands = build_parser()
    try:
        args = ap.parse_args(argv)
    except SystemExit as e:  # a parse error (one line already printed) returns its status; --help exits
        if e.code in (0, None):
            raise
        return int(e.code)
    try:
        from difflab.train.distributed import set_threads

        set_threads(args.threads)
        return commands[args.command](args)
    except (DifflabError, ValueError, OSError) as e:
        if os.environ.get("DIFFLAB_TRACEBACK"):
            raise
        print(f"difflab: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        notes = "; ".join(getattr(e, "__notes__", ()))
        print(f"difflab: interrupted{': ' + notes if notes else ''}", file=sys.stderr)
        return 130


__all__ = ["GROUPS", "build_parser", "main"]
