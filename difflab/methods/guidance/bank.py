"""The sample bank of discriminator guidance: many samples of a diffusion model, in resumable shards.

Discriminator guidance trains on the model's own samples, and drawing them is the expensive
part (tens of thousands of samples at full NFE), so they go into a :mod:`difflab.io.bank`::

    out_dir/bank.json           the settings (sampler, steps, seed, shard size, shape, ...) and n
    out_dir/shard-00000.npz     x (count, ...) float32, y (count,) int64 when labelled

Shard k draws everything (noise, labels) from its own generator, seeded by
``shard_seed(seed, k)``, so a shard's content does not depend on which shards were written
before it: an interrupted bank completed later is the same bank as one written in one go, and a
larger n keeps every full shard. A shard that exists and verifies is never redrawn; a bank with
other settings is refused.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from difflab.errors import DataError
from difflab.io import bank as io_bank
from difflab.io.bank import Bank, shard_name, shard_seed
from difflab.samplers import sample

HINT = "run generate_bank (difflab dg-bank) with the same settings to write or complete it"


def generate_bank(model, sampler: str = "ddim", steps: int = 50, n: int = 10_000, out_dir: str | os.PathLike = "bank",
                  shard_size: int = 1000, seed: int = 0, *, shape, num_classes: int | None = None,
                  label: int | None = None, batch_size: int | None = None, device="cpu", dtype=torch.float32,
                  source: str = "", progress: bool = True, **sampler_options) -> Path:
    """Draw ``n`` samples of ``model`` (per-sample ``shape``) into resumable shards under ``out_dir``.

    Args:
        model: any difflab model callable.
        sampler, steps, sampler_options: passed to :func:`difflab.samplers.sample`.
        n: bank size; shards hold ``shard_size`` samples each (the last one the rest).
        seed: shard k is drawn from a generator seeded by ``shard_seed(seed, k)``.
        num_classes: for a class-conditional model: each sample's label is drawn uniformly from
            the shard's generator (or fixed to ``label``) and stored as y.
        batch_size: samples per sampler call (default: a whole shard).
        source: a string naming the model (e.g. its checkpoint); shards of another source are refused.

    Existing shards that verify are skipped (the progress bar starts past them); a bank written
    with other settings is refused with a DataError. Returns ``out_dir``.
    """
    if label is not None and num_classes is None:
        raise DataError(f"generate_bank: label = {label} needs num_classes (a class-conditional model)")
    out_dir = Path(out_dir)
    settings = {"sampler": sampler, "steps": int(steps), "seed": int(seed), "shape": [int(s) for s in shape],
                "num_classes": num_classes, "label": label, "dtype": str(dtype).replace("torch.", ""),
                "options": json.loads(json.dumps(sampler_options, default=str)), "source": str(source)}
    bs = batch_size or shard_size

    def draw(k: int, start: int, count: int) -> dict[str, torch.Tensor]:
        g = torch.Generator(device).manual_seed(shard_seed(seed, k))
        xs, ys, done = [], [], 0
        while done < count:
            b = min(bs, count - done)
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
        return {"x": torch.cat(xs), **({"y": torch.cat(ys).long()} if ys else {})}

    return io_bank.write_bank(out_dir, n, draw, settings=settings, shard_size=shard_size, progress=progress,
                              desc=f"bank {out_dir.name}")


def load_bank(bank_dir: str | os.PathLike, n: int | None = None) -> Bank:
    """Load a complete bank (every shard verified); ``n`` keeps the first n samples.
    ``bank.x`` (n, ...) float32, ``bank.y`` (n,) int64 or None, ``bank.settings`` how it was drawn.

    DataError, with one line, when the directory is no bank or a shard is missing or corrupt
    (run :func:`generate_bank` with the same settings again to complete it).
    """
    return io_bank.load_bank(bank_dir, n, what="sample bank", hint=HINT)


__all__ = ["Bank", "generate_bank", "load_bank", "shard_name", "shard_seed"]
