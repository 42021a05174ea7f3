"""Small file helpers shared by the data layer, metrics and the methods' resumable banks."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

from difflab.errors import DataError


def atomic_write(path: Path, write: Callable) -> None:
    """``write(file)`` into a temporary sibling, fsync, then rename over ``path``: a killed run leaves
    the whole file or none (the temporary file is removed on any failure)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, obj) -> None:
    """Pretty JSON, written atomically."""
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()))


def read_json(path: Path, hint: str) -> dict | None:
    """The JSON object in ``path``, None if there is no file; a one-line DataError (ending in ``hint``) if it is invalid."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise DataError(f"{path}: not valid JSON; {hint}") from None


def file_hexdigest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in chunks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()
