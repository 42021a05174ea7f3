"""A bank: many arrays drawn from a model (samples, teacher trajectories), written in resumable shards.

Discriminator guidance trains on the model's own samples and DSNO on its teacher's trajectories;
drawing them is the expensive part, so both write the same kind of bank::

    out_dir/bank.json           the settings (JSON, given by the caller) and n
    out_dir/shard-00000.npz     the arrays of shard 0 (leading dimension = its count) and meta (JSON)

``draw(k, start, count)`` makes shard k's arrays. Seeding it from :func:`shard_seed` (one generator
per shard) or :func:`sample_seeds` (one per sample) makes a shard's content independent of which
shards were written before it: an interrupted bank completed later is the same bank as one written
in one go, and a larger n keeps every full shard (a partial last shard is redrawn at its new size).
A shard is written to a temporary file and renamed, and carries the sha256 of each array; a shard
that exists and verifies is never redrawn, one that does not (cut by a kill, or from other
settings) is.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch

from difflab.errors import DataError
from difflab.io import atomic_write, read_json, write_json
from difflab.samplers.noise import sample_seeds, seed_of

MANIFEST = "bank.json"
FORMAT = 2


@dataclass
class Bank:
    """A loaded bank: ``arrays`` {name: (n, ...) tensor} and ``meta`` (the manifest: settings and n)."""

    arrays: dict[str, torch.Tensor]
    meta: dict

    def __len__(self) -> int:
        return next(iter(self.arrays.values())).shape[0] if self.arrays else 0

    def __getitem__(self, key: str) -> torch.Tensor:
        return self.arrays[key]

    @property
    def x(self) -> torch.Tensor:
        return self.arrays["x"]

    @property
    def y(self) -> torch.Tensor | None:
        return self.arrays.get("y")

    @property
    def settings(self) -> dict:
        return self.meta.get("settings", {})


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.npz"


def shard_seed(seed: int, k: int) -> int:
    """The generator seed of shard k of a bank seeded ``seed``."""
    return seed_of(seed, k)


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _shard_counts(n: int, shard_size: int) -> list[int]:
    full, rest = divmod(n, shard_size)
    return [shard_size] * full + ([rest] if rest else [])


def _settings_key(settings: Mapping) -> str:
    return json.dumps(settings, sort_keys=True, default=str)


def _read_shard(path: Path, k: int, count: int, key: str) -> dict[str, np.ndarray] | None:
    """The shard's arrays if it is complete and belongs to this bank, else None."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {name: z[name] for name in z.files if name != "meta"}
    except Exception:  # missing, truncated zip, missing array, bad JSON: the shard is (re)drawn
        return None
    digests = meta.get("sha256") or {}
    ok = (meta.get("index") == k and meta.get("count") == count and meta.get("settings") == key
          and set(arrays) == set(digests) and arrays
          and all(a.shape[:1] == (count,) and digests[name] == _digest(a) for name, a in arrays.items()))
    return arrays if ok else None


def _write_shard(path: Path, k: int, arrays: dict[str, np.ndarray], key: str) -> None:
    count = next(iter(arrays.values())).shape[0]
    meta = {"index": k, "count": int(count), "settings": key, "sha256": {n: _digest(a) for n, a in arrays.items()}}
    atomic_write(path, lambda f: np.savez(f, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays))


def _as_numpy(arrays: Mapping, count: int, k: int) -> dict[str, np.ndarray]:
    out = {}
    for name, a in arrays.items():
        if name == "meta":
            raise ValueError("a bank's array may not be called 'meta'")
        a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        if a.shape[:1] != (count,):
            raise ValueError(f"draw() returned {name!r} of shape {a.shape} for shard {k}; expected {count} rows")
        out[name] = a
    return out


def write_bank(out_dir: str | os.PathLike, n: int, draw: Callable[[int, int, int], Mapping], *, settings: dict,
               shard_size: int = 1000, progress: bool = True, desc: str = "bank") -> Path:
    """Write an ``n``-row bank under ``out_dir`` in shards of ``shard_size``; returns ``out_dir``.

    ``draw(k, start, count)`` returns shard k's arrays {name: (count, ...)} (tensors or NumPy);
    ``settings`` (JSON-able) say what the bank holds and how it was drawn: shards of a bank with
    other settings are refused (DataError naming the first differing setting). Shards that exist
    and verify are skipped (the progress bar starts past them).
    """
    if n < 1 or shard_size < 1:
        raise DataError(f"bank {out_dir}: n = {n} and shard_size = {shard_size}; expected both >= 1")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {**json.loads(_settings_key(settings)), "format": FORMAT, "shard_size": int(shard_size)}
    old = read_json(out_dir / MANIFEST, "delete the bank directory to start again")
    if old is not None and _settings_key(old.get("settings")) != _settings_key(settings):
        was = old.get("settings") or {}
        diff = sorted(k for k in set(was) | set(settings) if was.get(k) != settings.get(k))
        held = ", ".join(f"{k}={was.get(k)!r} (asked {settings.get(k)!r})" for k in diff[:3])
        raise DataError(f"{out_dir} holds a bank with other settings: {held}; use another directory or the same settings")
    write_json(out_dir / MANIFEST, {"settings": settings, "n": int(n)})
    key = _settings_key(settings)
    counts = _shard_counts(n, shard_size)
    todo = [k for k, c in enumerate(counts) if _read_shard(out_dir / shard_name(k), k, c, key) is None]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, initial=n - sum(counts[k] for k in todo), desc=desc, unit="row", dynamic_ncols=True)
    try:
        for k in todo:
            arrays = _as_numpy(draw(k, k * shard_size, counts[k]), counts[k], k)
            _write_shard(out_dir / shard_name(k), k, arrays, key)
            if bar is not None:
                bar.update(counts[k])
    finally:
        if bar is not None:
            bar.close()
    return out_dir


def load_bank(out_dir: str | os.PathLike, n: int | None = None, *, what: str = "sample bank",
              hint: str = "run the command that wrote it again with the same settings to complete it") -> Bank:
    """Load a complete bank (every shard verified); ``n`` keeps the first n rows.

    DataError, with one line ending in ``hint``, when the directory is no bank or a shard is
    missing or corrupt.
    """
    d = Path(out_dir)
    if not d.is_dir():
        raise DataError(f"{what} {d} not found; {hint}")
    manifest = read_json(d / MANIFEST, hint)
    if manifest is None or "settings" not in manifest or manifest["settings"].get("format") != FORMAT:
        raise DataError(f"{d} is not a {what} (no {MANIFEST} of format {FORMAT}); {hint}")
    settings = manifest["settings"]
    key = _settings_key(settings)
    total = int(manifest["n"]) if n is None else min(int(n), int(manifest["n"]))
    parts, have = [], 0
    for k, c in enumerate(_shard_counts(int(manifest["n"]), int(settings["shard_size"]))):
        if have >= total:
            break
        got = _read_shard(d / shard_name(k), k, c, key)
        if got is None:
            state = "missing" if not (d / shard_name(k)).exists() else "corrupt or from other settings"
            raise DataError(f"{what} {d}: {shard_name(k)} is {state}; {hint}")
        parts.append(got)
        have += c
    arrays = {name: torch.from_numpy(np.concatenate([p[name] for p in parts])[:total]) for name in parts[0]}
    return Bank(arrays=arrays, meta=manifest)


__all__ = ["Bank", "MANIFEST", "load_bank", "sample_seeds", "shard_name", "shard_seed", "write_bank"]
