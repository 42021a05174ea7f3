"""A sample bank: many samples of a diffusion model, written in resumable shards.

Discriminator guidance trains on the model's own samples, and drawing them is the expensive
part (tens of thousands of samples at full NFE), so the bank is written shard by shard::

    out_dir/bank.json           the settings (sampler, steps, seed, shard size, shape, ...) and n
    out_dir/shard-00000.npz     x (count, ...) float32, y (count,) int64 when labelled, meta (JSON)

Shard k draws everything from its own generator, seeded by (seed, k), so a shard's content does
not depend on which shards were written before it: an interrupted bank completed later is the
same bank as one written in one go, and a larger n keeps every full shard (a partial last shard
is redrawn at its new size). A shard is written to a
temporary file and renamed, and carries the sha256 of its samples; a shard that exists and
verifies is never redone, one that does not (cut by a kill, or from other settings) is.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from difflab.io import atomic_write, read_json, write_json
from difflab.errors import DataError

MANIFEST = "bank.json"
FORMAT = 1
# Manifest keys that must match for shards to belong to the same bank (n may grow).
SETTINGS = ("format", "sampler", "steps", "seed", "shard_size", "shape", "num_classes", "label", "dtype",
            "options", "source")


@dataclass
class Bank:
    """A loaded bank: x (n, ...) float32, y (n,) int64 or None, meta (the manifest)."""

    x: torch.Tensor
    y: torch.Tensor | None
    meta: dict

    def __len__(self) -> int:
        return self.x.shape[0]


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.npz"


def shard_seed(seed: int, k: int) -> int:
    """The generator seed of shard k: (seed, k) mixed by NumPy's SeedSequence (torch keeps 63 bits)."""
    return int(np.random.SeedSequence([int(seed), int(k)]).generate_state(1, np.uint64)[0]) & (2**63 - 1)


def _digest(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


def _settings_key(manifest: dict) -> str:
    return json.dumps({k: manifest.get(k) for k in SETTINGS}, sort_keys=True)


def _shard_counts(n: int, shard_size: int) -> list[int]:
    full, rest = divmod(n, shard_size)
    return [shard_size] * full + ([rest] if rest else [])


def _read_shard(path: Path, k: int, count: int, settings: str) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The shard's (x, y) if it is complete and belongs to this bank, else None."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            x = z["x"]
            y = z["y"] if "y" in z.files else None
    except Exception:  # a truncated zip, a missing array, bad JSON: the shard is redone
        return None
    ok = (meta.get("index") == k and meta.get("count") == count and meta.get("settings") == settings
          and x.shape[0] == count and meta.get("sha256") == _digest(x)
          and (y is None or (y.shape == (count,) and meta.get("y_sha256") == _digest(y))))
    return (x, y) if ok else None


def _write_shard(path: Path, k: int, x: np.ndarray, y: np.ndarray | None, settings: str) -> None:
    meta = {"index": k, "count": int(x.shape[0]), "settings": settings, "sha256": _digest(x)}
    arrays: dict[str, Any] = {"x": x}
    if y is not None:
        arrays["y"] = y
        meta["y_sha256"] = _digest(y)
    atomic_write(path, lambda f: np.savez(f, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays))


def _write_manifest(out_dir: Path, manifest: dict) -> None:
    write_json(out_dir / MANIFEST, manifest)


def _read_manifest(out_dir: Path) -> dict | None:
    return read_json(out_dir / MANIFEST, "delete the bank directory to start again")


def generate_bank(model, sampler: str = "ddim", steps: int = 50, n: int = 10_000, out_dir: str | os.PathLike = "bank",
                  shard_size: int = 1000, seed: int = 0, *, shape, num_classes: int | None = None,
                  label: int | None = None, batch_size: int | None = None, device="cpu", dtype=torch.float32,
                  source: str = "", progress: bool = True, **sampler_options) -> Path:
    """Draw ``n`` samples of ``model`` (per-sample ``shape``) into resumable shards under ``out_dir``.

    Args:
        model: any difflab model callable.
        sampler, steps, sampler_options: passed to :func:`difflab.samplers.sample`.
        n: bank size; shards hold ``shard_size`` samples each (the last one the rest).
        seed: shard k is drawn from a generator seeded by (seed, k).
        num_classes: for a class-conditional model: each sample's label is drawn uniformly from
            the shard's generator (or fixed to ``label``) and stored as y.
        batch_size: samples per sampler call (default: a whole shard).
        source: a string naming the model (e.g. its checkpoint); shards of another source are refused.

    Existing shards that verify are skipped (the progress bar starts past them); a bank written
    with other settings is refused with a DataError. Returns ``out_dir``.
    """
    from difflab.samplers import sample

    if n < 1 or shard_size < 1:
        raise DataError(f"generate_bank: n = {n} and shard_size = {shard_size}; expected both >= 1")
    if label is not None and num_classes is None:
        raise DataError(f"generate_bank: label = {label} needs num_classes (a class-conditional model)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"format": FORMAT, "sampler": sampler, "steps": int(steps), "seed": int(seed),
                "shard_size": int(shard_size), "shape": [int(s) for s in shape], "num_classes": num_classes,
                "label": label, "dtype": str(dtype).replace("torch.", ""),
                "options": json.loads(json.dumps(sampler_options, default=str)), "source": str(source)}
    old = _read_manifest(out_dir)
    settings = _settings_key(manifest)
    if old is not None and _settings_key(old) != settings:
        diff = [k for k in SETTINGS if old.get(k) != manifest.get(k)]
        held = ", ".join(f"{k}={old.get(k)!r}" for k in diff)
        raise DataError(f"{out_dir} holds a bank with other settings ({held}); "
                        "use another directory or the same settings")
    _write_manifest(out_dir, {**manifest, "n": int(n)})

    counts = _shard_counts(n, shard_size)
    todo = [k for k, c in enumerate(counts) if _read_shard(out_dir / shard_name(k), k, c, settings) is None]
    pbar = None
    if progress:
        from tqdm.auto import tqdm

        pbar = tqdm(total=n, initial=n - sum(counts[k] for k in todo), desc=f"bank {out_dir.name}", unit="sample",
                    dynamic_ncols=True)
    bs = batch_size or shard_size
    try:
        for k in todo:
            g = torch.Generator(device).manual_seed(shard_seed(seed, k))
            xs, ys, done = [], [], 0
            while done < counts[k]:
                b = min(bs, counts[k] - done)
                y = None
                if num_classes is not None:
                    y = (torch.full((b,), label, dtype=torch.long, device=device) if label is not None
                         else torch.randint(0, num_classes, (b,), generator=g, device=device))
                r = sample(model, (b, *shape), sampler=sampler, steps=steps, generator=g, device=device, dtype=dtype,
                           y=y, **sampler_options)
                xs.append(r.x.detach().float().cpu())
                if y is not None:
                    ys.append(y.cpu())
                done += b
            x = torch.cat(xs).numpy()
            _write_shard(out_dir / shard_name(k), k, x, torch.cat(ys).numpy() if ys else None, settings)
            if pbar is not None:
                pbar.update(counts[k])
    finally:
        if pbar is not None:
            pbar.close()
    return out_dir


def load_bank(bank_dir: str | os.PathLike, n: int | None = None) -> Bank:
    """Load a complete bank (every shard verified); ``n`` keeps the first n samples.

    DataError, with one line, when the directory is no bank or a shard is missing or corrupt
    (run :func:`generate_bank` with the same settings again to complete it).
    """
    d = Path(bank_dir)
    if not d.is_dir():
        raise DataError(f"sample bank {d} not found; expected a directory written by generate_bank / difflab dg-bank")
    manifest = _read_manifest(d)
    if manifest is None:
        raise DataError(f"{d} is not a sample bank (no {MANIFEST}); expected a directory written by generate_bank")
    settings = _settings_key(manifest)
    total = int(manifest["n"]) if n is None else min(int(n), int(manifest["n"]))
    xs, ys, have = [], [], 0
    for k, c in enumerate(_shard_counts(int(manifest["n"]), int(manifest["shard_size"]))):
        if have >= total:
            break
        got = _read_shard(d / shard_name(k), k, c, settings)
        if got is None:
            state = "missing" if not (d / shard_name(k)).exists() else "corrupt or from other settings"
            raise DataError(f"sample bank {d}: {shard_name(k)} is {state}; run generate_bank "
                            "(difflab dg-bank) again with the same settings to complete it")
        xs.append(got[0])
        if got[1] is not None:
            ys.append(got[1])
        have += c
    x = torch.from_numpy(np.concatenate(xs)[:total]).float()
    y = torch.from_numpy(np.concatenate(ys)[:total]).long() if ys else None
    return Bank(x=x, y=y, meta=manifest)


__all__ = ["Bank", "generate_bank", "load_bank", "shard_name", "shard_seed"]
