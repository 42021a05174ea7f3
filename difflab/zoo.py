"""The model zoo: small checkpoints shipped inside the package, usable by name
(``difflab sample toy-ddpm ...``, ``load_model("digits-ddpm")``).

Each entry is one ``difflab/zoo/<name>.safetensors`` holding the EMA weights with the full config,
kind, step and the metrics its recipe reached in the file's metadata; ``recipes/<name>.md`` says how
it was trained (config, command, time, hardware).
"""
from __future__ import annotations

import difflib
import json
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


def export(checkpoint, name: str, *, metrics: dict | None = None, dest: Path | None = None) -> Path:
    """Write a checkpoint's EMA weights (or model weights if it has no EMA) with its config and
    ``metrics`` as a zoo entry."""
    from safetensors.torch import save_file

    from .train.checkpoint import load_checkpoint

    ck = load_checkpoint(checkpoint)
    state = ck.ema_state if ck.ema_state is not None else ck.model_state
    extra = {k: v for k, v in ((ck.state or {}).get("extra") or {}).items() if k in ("data_shape", "num_classes", "dataset")}
    meta = {"difflab_format": "1", "kind": ck.kind, "step": str(ck.step), "weights": "ema" if ck.ema_state else "model",
            "config": json.dumps(ck.config), "extra": json.dumps(extra, default=str),
            "metrics": json.dumps(metrics or {})}
    out = Path(dest or ZOO_DIR) / f"{name}.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous().clone() for k, v in state.items()}, str(out), metadata=meta)
    return out
