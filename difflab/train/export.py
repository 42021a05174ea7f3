"""Exporting a trained run as a shipped zoo entry (``difflab/zoo/<name>.safetensors``)."""
from __future__ import annotations

import json
from pathlib import Path

from difflab.train.checkpoint import load_checkpoint, save_weights_file
from difflab.zoo import ZOO_DIR


def export_zoo_entry(checkpoint, name: str, *, metrics: dict | None = None, dest: Path | None = None) -> Path:
    """Write a checkpoint's EMA weights (or model weights if it has no EMA) with its config and
    ``metrics`` as a zoo entry."""
    ck = load_checkpoint(checkpoint)
    state = ck.ema_state if ck.ema_state is not None else ck.model_state
    extra = {k: v for k, v in ((ck.state or {}).get("extra") or {}).items() if k in ("data_shape", "num_classes", "dataset")}
    meta = {"difflab_format": "1", "kind": ck.kind, "step": str(ck.step), "weights": "ema" if ck.ema_state else "model",
            "config": json.dumps(ck.config), "extra": json.dumps(extra, default=str),
            "metrics": json.dumps(metrics or {})}
    return save_weights_file(state, Path(dest or ZOO_DIR) / f"{name}.safetensors", meta)
