"""What every command's options obey: one-line parse errors, and one rule per option name.

Every parser of the CLI is a :class:`Parser`. Its ``add_argument`` gives an option that is a count
(``--n``, ``--steps``, ``--batch`` ...) the positive-integer check, ``--seed`` the non-negative one,
a float option a finite-number check (and its range where it has one), and ``--device`` the check
that the device exists here, so ``sample``, ``tp-sample``, ``dg-sample``, ``dsno-sample``, ``eval``,
``bench`` and ``nll`` cannot drift apart. An output is checked before any work starts
(:func:`output_file`, :func:`output_dir`).
"""
from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block) with exit status 2."""

    def error(self, message):  # noqa: D401 - argparse's hook
        self.exit(2, f"difflab: error: {message} (see {self.prog} --help)\n")


def threads_value(text: str) -> str:
    if text != "auto":
        positive_int(text)
    return text


def apply_rules(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give every option of ``parser`` (argument groups included) named in :data:`RULES` that rule's
    type check, every other float option the finite check, and ``--device`` the device check; add
    ``--threads`` to every command; a ``--batch`` that defaulted to a fixed number defaults to the
    measured best (:func:`difflab.samplers.batched.auto_batch`)."""
    if not any(a.dest == "threads" for a in parser._actions):
        parser.add_argument("--threads", default="auto", type=threads_value,
                            help="torch intra-op threads: N, or auto (default: $DIFFLAB_THREADS, else the idle cores, "
                                 "at least 1)")
    for action in parser._actions:  # groups add their options to the parser's own list
        if action.dest == "batch" and action.default == 500:  # the old fixed default of the sampling commands
            action.default = None
            action.help = (action.help or "samples per network batch") + (" (default: the measured best, 256 for a small "
                                                                           "network, 64 otherwise on a CPU; 500 on a GPU)")
        rule = RULES.get(action.dest)
        if rule is not None and action.type in (int, float):
            action.type = rule
        elif action.type is float:
            action.type = finite_float
        if action.dest == "device" and action.type is None:
            action.type = device_name
    return parser


def _checker(what: str, ok, parse=int):
    def check(text: str):
        try:
            v = parse(text)
        except (TypeError, ValueError):
            v = None
        if v is None or (isinstance(v, float) and not math.isfinite(v)) or not ok(v):
            raise argparse.ArgumentTypeError(f"{text!r}; expected {what}")
        return v

    check.__name__ = what.replace(" ", "_")
    return check


positive_int = _checker("a positive integer", lambda v: v >= 1)
nonneg_int = _checker("a non-negative integer", lambda v: v >= 0)
finite_float = _checker("a finite number", lambda v: True, float)
nonneg_float = _checker("a non-negative number", lambda v: v >= 0, float)
positive_float = _checker("a positive number", lambda v: v > 0, float)
unit_float = _checker("a number in [0, 1]", lambda v: 0 <= v <= 1, float)

# One rule per option name, for every command that has the option.
RULES = {
    **dict.fromkeys(("n", "steps", "batch", "batch_size", "shard_size", "bins", "drift_n", "M", "modes", "seeds",
                     "max_real"), positive_int),
    **dict.fromkeys(("seed", "n_boot", "label"), nonneg_int),
    **dict.fromkeys(("eta", "max_norm", "cg_weight", "cg_scale", "max_weight"), nonneg_float),
    **dict.fromkeys(("lr",), positive_float),
    **dict.fromkeys(("t0", "t_min"), unit_float),
}

def device_name(text: str) -> str:
    """``--device``: auto, cpu, cuda, cuda:N or mps, and only one this machine has."""
    from difflab.errors import ConfigError
    from difflab.train.distributed import check_device

    try:
        return check_device(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("device ")) from None


def _writable_dir(d: Path, what: str) -> None:
    """ArgumentTypeError unless directory ``d`` exists (or can be created under an existing writable
    directory) and is writable."""
    probe = d
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise argparse.ArgumentTypeError(f"{what}: {probe} is a file, not a directory")
    try:  # a real write (os.access says yes to root, and knows nothing of read-only mounts)
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise argparse.ArgumentTypeError(f"{what}: cannot write in {probe} ({e.strerror or e})") from None


def output_file(*suffixes: str):
    """An ``--out FILE`` type: the suffix one of ``suffixes`` and the directory writable, checked when
    the command line is parsed, before any sampling work."""

    def check(text: str) -> str:
        p = Path(text)
        if p.suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(f"{text!r}; expected a file ending in {' or '.join(suffixes)}")
        if p.is_dir():
            raise argparse.ArgumentTypeError(f"{text!r} is a directory; expected a file ending in {' or '.join(suffixes)}")
        _writable_dir(p.parent if str(p.parent) else Path("."), repr(text))
        return text

    check.__name__ = "output file"
    return check


def output_dir(text: str) -> str:
    """An ``--out DIR`` type (a run, bank or report directory): creatable and writable."""
    p = Path(text)
    if p.exists() and not p.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file; expected a directory")
    _writable_dir(p, repr(text))
    return text


def input_path(text: str) -> str:
    """An input file or directory that must exist (``--init``, ``--bank`` ...)."""
    if not Path(text).exists():
        raise argparse.ArgumentTypeError(f"{text!r}: no such file or directory")
    return text


__all__ = ["Parser", "RULES", "apply_rules", "device_name", "finite_float", "input_path", "nonneg_float", "nonneg_int",
           "output_dir", "output_file", "positive_float", "positive_int", "unit_float"]
