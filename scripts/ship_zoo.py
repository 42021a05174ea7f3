"""Ship a trained checkpoint as a zoo entry: ``difflab/zoo/<NAME>.safetensors`` holding its EMA weights with the
config, kind, step, extra state and the metrics its recipe measured in the file's metadata.

    python scripts/ship_zoo.py runs/ext-dsno/checkpoints/step-00000800 mnist-dsno \\
        --metrics '{"fid_difflab_mnist_10000_1nfe": 4.1}'

The checkpoint is verified on load (sizes and sha256 of its files); the written file carries the digest of its
tensors, so a flipped byte in the zoo is refused later. The recipe (``recipes/``) says how the run was made.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from difflab.errors import DifflabError
from difflab.loading import open_checkpoint
from difflab.train.checkpoint import FORMAT, save_weights_file
from difflab.zoo import ZOO_DIR


def _jsonable(d: dict) -> dict:
    """The entries of a checkpoint's extra state that JSON can hold (data_shape, parameter counts; not tensors)."""
    out = {}
    for k, v in d.items():
        try:
            json.dumps(v)
        except TypeError:
            continue
        out[k] = v
    return out


def ship(source, name: str, metrics: dict) -> Path:
    ckpt = open_checkpoint(source)
    weights = ckpt.ema_state if ckpt.ema_state is not None else ckpt.model_state
    meta = {"difflab_format": FORMAT, "kind": ckpt.kind, "step": str(ckpt.step),
            "weights": "ema" if ckpt.ema_state is not None else "model", "config": json.dumps(ckpt.config, sort_keys=True),
            "extra": json.dumps(_jsonable((ckpt.state or {}).get("extra") or {})), "metrics": json.dumps(metrics)}
    return save_weights_file(weights, ZOO_DIR / f"{name}.safetensors", meta)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", help="a run dir, checkpoint dir or .safetensors file")
    ap.add_argument("name", help="the zoo name (difflab/zoo/NAME.safetensors is written, replacing any)")
    ap.add_argument("--metrics", default="{}", help="JSON object of the figures the recipe measured")
    args = ap.parse_args(argv)
    try:
        metrics = json.loads(args.metrics)
        if not isinstance(metrics, dict):
            raise ValueError
    except ValueError:
        print(f"ship_zoo: --metrics {args.metrics!r} is not a JSON object", file=sys.stderr)
        return 2
    try:
        path = ship(args.source, args.name, metrics)
    except DifflabError as e:
        print(f"ship_zoo: {e}", file=sys.stderr)
        return 2
    print(f"{args.source} -> {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
