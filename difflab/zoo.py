"""The model zoo: small checkpoints shipped inside the package, usable by name
(``difflab sample toy-ddpm ...``, ``load_model("digits-ddpm")``).

Each entry is one ``difflab/zoo/<name>.safetensors`` holding the EMA weights with the full config,
kind, step and the metrics its recipe reached in the file's metadata; ``recipes/<name>.md`` says how
it was trained (config, command, time, hardware).
"""
from __future__ import annotations

import difflib
from pathlib import Path

from .errors import CheckpointError

ZOO_DIR = Path(__file__).parent / "zoo"


def zoo_names() -> list[str]:
    return sorted(p.stem for p in ZOO_DIR.glob("*.safetensors"))


def is_zoo_name(name) -> bool:
    s = str(name)
    return "/" not in s and not s.endswith(".safetensors") and not Path(s).exists()


def resolve(name) -> Path:
    """A zoo entry's file, or CheckpointError listing the entries (with a did-you-mean)."""
    p = ZOO_DIR / f"{name}.safetensors"
    if p.is_file():
        return p
    names = zoo_names()
    near = difflib.get_close_matches(str(name), names, n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    raise CheckpointError(f"{name}: no such file, and not a zoo model (shipped: {', '.join(names) or 'none'}){hint}")


def resolve_reference(ref):
    """``ref`` itself, unless it is a bare name that is no file (e.g. "digits-ddpm"): then the zoo entry's
    file (CheckpointError listing the entries when there is none of that name)."""
    return resolve(ref) if is_zoo_name(ref) else ref
