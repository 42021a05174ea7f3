"""Checkpoints: one directory per saved step, written atomically and verified on load.

Layout of a run::

    <run>/checkpoints/
        latest                    text: the name of the newest complete checkpoint directory
        step-00001234/
            model.safetensors     network weights
            ema.safetensors       EMA weights (what sampling uses); absent when there is no EMA
            config.toml           the full run config, so the checkpoint rebuilds its own model
            state.pt              resume state: step, optimizer, LR scheduler, timestep sampler,
                                  RNG states, and the trainer's `extra` dict
            meta.json             step, save time, versions, and the size and sha256 of each file

Why the split: the weights are the part people share and load to sample, so they are
safetensors: no pickle (loading cannot run code), mmap-able, readable outside Python. Their
metadata carries the format version, the model kind, the step and the config, so a lone
.safetensors file still says what it is. Resume state needs Python containers (optimizer
dicts, RNG tuples), so it is a torch pickle, read back with `weights_only=True`.

Crash safety: a checkpoint is written into a temporary sibling directory (`*.tmp-*`), every
file and the directory are fsynced, and one `os.replace` gives it its final name; `latest` is
replaced the same way. A crash leaves either the old state or the new one, plus at worst a
temporary directory that loading ignores and the next save removes. One writer per run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import random
import re
import shutil
import time
import tomllib
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import safetensors
import safetensors.torch
import tomli_w
import torch

from difflab import __version__
from difflab.errors import CheckpointError

FORMAT = "1"
CHECKPOINTS = "checkpoints"
LATEST = "latest"
_STEP_DIR = re.compile(r"^step-(\d+)$")
_REQUIRED = ("model.safetensors", "config.toml", "state.pt")


@dataclass
class Checkpoint:
    """A loaded checkpoint. `state` is the dict from state.pt ({} for a lone .safetensors file):
    keys "step", "optimizer", "scheduler", "sampler", "rng", "extra"."""

    step: int
    config: dict
    model_state: dict[str, torch.Tensor]
    ema_state: dict[str, torch.Tensor] | None
    state: dict
    path: Path
    kind: str
    meta: dict = field(default_factory=dict)


def step_dir_name(step: int) -> str:
    """The directory name of a step: zero-padded so names sort like steps."""
    return f"step-{step:08d}"


def config_sha(config: Mapping[str, Any]) -> str:
    """sha256 of the config as canonical JSON: equal configs, equal hashes."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# RNG state


def capture_rng_state() -> dict[str, Any]:
    """The global RNG states of Python `random`, NumPy, torch CPU and every CUDA device.

    NumPy's key array is stored as a tensor so the dict loads with `torch.load(weights_only=True)`.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what `capture_rng_state` captured; parts absent from `state` are left alone.

    CUDA states are restored for as many devices as both the state and this machine have.
    """
    if "python" in state:
        random.setstate(_as_tuple(state["python"]))
    if "numpy" in state:
        s = state["numpy"]
        keys = np.asarray(torch.as_tensor(s["keys"]).cpu().numpy(), dtype=np.uint32)
        np.random.set_state((s["kind"], keys, s["pos"], s["has_gauss"], s["cached_gaussian"]))
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        for i, s in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(s.cpu(), i)


def _as_tuple(x: Any) -> Any:
    """random.setstate wants tuples all the way down."""
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


# ---------------------------------------------------------------------------------------------
# writing


def _write(path: Path, data: bytes) -> dict[str, Any]:
    """Write bytes and fsync; returns the size and sha256 recorded in meta.json."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _fsync_dir(path: Path) -> None:
    """Make a rename or new entry in `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _tmp_name(name: str) -> str:
    return f"{name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _tensors_for_saving(state: Any, what: str) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors that own their memory, as safetensors requires.

    Tied weights (two names, one storage) and views into larger buffers are cloned; on load the
    names are separate tensors and `load_state_dict` copies both into the one tied parameter.
    """
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{what} is {type(state).__name__}; expected a state dict (name -> tensor)")
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, value in state.items():
        if not isinstance(name, str):
            raise CheckpointError(f"{what} key {name!r} is {type(name).__name__}; expected str keys")
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{what}[{name!r}] is {type(value).__name__}; expected a torch.Tensor (pass other values in extra=)"
            )
        t = value.detach().cpu()
        storage = t.untyped_storage()
        owns_all = (
            t.is_contiguous() and t.storage_offset() == 0 and storage.nbytes() == t.numel() * t.element_size()
        )
        if not owns_all or (storage.nbytes() and storage.data_ptr() in seen):
            t = t.contiguous().clone()
        if t.numel():
            seen.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out


def _install(tmp: Path, final: Path) -> None:
    """Rename the finished temporary directory into place, replacing a checkpoint of the same step."""
    if final.exists():
        old = final.with_name(_tmp_name(final.name))
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def _write_latest(root: Path, name: str) -> None:
    tmp = root / _tmp_name(LATEST)
    _write(tmp, f"{name}\n".encode())
    os.replace(tmp, root / LATEST)
    _fsync_dir(root)


def _step_dirs(root: Path) -> list[tuple[int, Path]]:
    """(step, dir) of the complete-looking checkpoint directories under root, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found)


def _prune(root: Path, keep: int, current: Path) -> None:
    """Remove leftovers of interrupted saves and all but the newest `keep` checkpoints (keep < 1: keep all)."""
    for p in root.iterdir():
        if ".tmp" in p.name:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
    if keep < 1:
        return
    others = [p for _, p in _step_dirs(root) if p != current]
    for p in others[: max(0, len(others) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)


def save_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    *,
    model_state: Mapping[str, torch.Tensor],
    ema_state: Mapping[str, torch.Tensor] | None = None,
    config: Mapping[str, Any],
    optimizer_state: dict | None = None,
    scheduler_state: dict | None = None,
    sampler_state: dict | None = None,
    extra: dict | None = None,
    keep: int = 2,
    kind: str = "diffusion",
    rng_state: dict | None = None,
) -> Path:
    """Write `<run_dir>/checkpoints/step-<step>/` atomically, point `latest` at it, prune old ones.

    `config` is the run config as a dict (a `Config` is converted with `.to_dict()`); `kind` names
    what the weights are ("diffusion", "time_predictor", ...) so loading can refuse the wrong one.
    `rng_state` defaults to the RNG states at the time of the call. Returns the checkpoint dir.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"checkpoint step {step!r} is invalid; expected an int >= 0")
    if not isinstance(kind, str) or not kind:
        raise CheckpointError(f"checkpoint kind {kind!r} is invalid; expected a non-empty string such as 'diffusion'")
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    config = dict(config)
    try:
        config_text = tomli_w.dumps(config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(
            f"config cannot be written as TOML ({e}); "
            "expected a dict of str, numbers, bools, lists and tables"
        ) from None

    sha = config_sha(config)
    tensors = {"model.safetensors": _tensors_for_saving(model_state, "model_state")}
    if ema_state is not None:
        tensors["ema.safetensors"] = _tensors_for_saving(ema_state, "ema_state")

    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    tmp = root / _tmp_name(final.name)
    tmp.mkdir()
    try:
        files = {}
        for fname, ts in tensors.items():
            metadata = {
                "difflab_format": FORMAT,
                "kind": kind,
                "config_sha": sha,
                "step": str(step),
                "weights": fname.split(".")[0],
                "config": json.dumps(config, sort_keys=True),
            }
            files[fname] = _write(tmp / fname, safetensors.torch.save(ts, metadata=metadata))
        header = f"# difflab run config, saved with checkpoint {final.name}\n"
        files["config.toml"] = _write(tmp / "config.toml", (header + config_text).encode())
        state = {
            "difflab_format": int(FORMAT),
            "step": step,
            "optimizer": optimizer_state,
            "scheduler": scheduler_state,
            "sampler": sampler_state,
            "rng": rng_state if rng_state is not None else capture_rng_state(),
            "extra": dict(extra or {}),
        }
        buf = io.BytesIO()
        torch.save(state, buf)
        files["state.pt"] = _write(tmp / "state.pt", buf.getvalue())
        now = time.time()
        meta = {
            "difflab_format": FORMAT,
            "step": step,
            "kind": kind,
            "config_sha": sha,
            "saved_at": now,
            "saved_at_utc": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds"),
            "difflab_version": __version__,
            "torch_version": torch.__version__,
            "safetensors_version": safetensors.__version__,
            "files": files,
        }
        _write(tmp / "meta.json", (json.dumps(meta, indent=2) + "\n").encode())
        _fsync_dir(tmp)
        _install(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(root)
    _write_latest(root, final.name)
    _prune(root, keep, final)
    return final


# ---------------------------------------------------------------------------------------------
# reading


def _checkpoints_root(run_dir: Path) -> Path:
    """Accept a run dir or its checkpoints/ dir."""
    return run_dir / CHECKPOINTS if (run_dir / CHECKPOINTS).is_dir() else run_dir


def _read_latest(root: Path) -> Path | None:
    try:
        name = (root / LATEST).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return root / name if _STEP_DIR.match(name) and (root / name).is_dir() else None


def checkpoints_by_step(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """[(step, checkpoint dir)] of a run (or its checkpoints/ dir), oldest first: e.g. the per-epoch
    discriminators to choose one from."""
    return _step_dirs(_checkpoints_root(Path(run_dir)))


def load_weights(module: torch.nn.Module, ckpt: "Checkpoint", *, use_ema: bool = True,
                 map_location: Any = "cpu") -> torch.nn.Module:
    """``module`` with the checkpoint's weights (the EMA weights when ``use_ema`` and recorded), moved
    to ``map_location`` and in eval mode; a CheckpointError naming the checkpoint when they do not fit.
    The step every method loader (time predictor, discriminator, classifier, DSNO) shares."""
    state = ckpt.ema_state if use_ema and ckpt.ema_state is not None else ckpt.model_state
    check_state_dict_compatible(module, state, f"checkpoint {ckpt.path}")
    module.load_state_dict(state)
    return module.to(map_location).eval()


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint dir `latest` points to, else the highest step dir with a meta.json, else None.

    Cheap: no sha256 check (`load_checkpoint` does that, and falls back further if it fails).
    """
    root = _checkpoints_root(Path(run_dir))
    pointed = _read_latest(root)
    if pointed is not None and (pointed / "meta.json").is_file():
        return pointed
    for _, p in reversed(_step_dirs(root)):
        if (p / "meta.json").is_file():
            return p
    return None


def _read_verified(path: Path, info: Any) -> bytes:
    """The bytes of one listed file, after checking its size and sha256 against meta.json."""
    if not isinstance(info, Mapping) or "sha256" not in info:
        raise CheckpointError(
            f"{path.parent / 'meta.json'}: entry for {path.name} has no sha256; "
            f"expected {{'bytes': N, 'sha256': HEX}}"
        )
    expected = info["sha256"]
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; meta.json lists it with sha256 {expected}")
    data = path.read_bytes()
    if "bytes" in info and len(data) != info["bytes"]:
        raise CheckpointError(
            f"{path}: {len(data)} bytes (file truncated or corrupt); "
            f"expected {info['bytes']} bytes with sha256 {expected}"
        )
    got = hashlib.sha256(data).hexdigest()
    if got != expected:
        raise CheckpointError(f"{path}: sha256 mismatch (file corrupt or truncated); expected {expected}, got {got}")
    return data


WEIGHTS_DIGEST = "weights_sha256"  # metadata key: sha256 of the tensors themselves (see weights_digest)


def weights_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes in name order: what a standalone
    .safetensors file carries in its metadata (a file cannot hold the hash of its own bytes)."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        v = tensors[k].detach().cpu().contiguous()
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


def check_weights(tensors: Mapping[str, torch.Tensor], path, metadata: Mapping[str, str] | None = None) -> None:
    """CheckpointError unless the recorded weights digest (when present) matches and every floating
    tensor is finite: a flipped byte that turns one weight into NaN is refused on load."""
    expected = (metadata or {}).get(WEIGHTS_DIGEST)
    if expected is not None:
        got = weights_digest(tensors)
        if got != expected:
            raise CheckpointError(f"{path}: weights sha256 mismatch (file corrupt or altered); "
                                  f"expected {expected[:16]}..., got {got[:16]}...")
    for k, v in tensors.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            bad = int((~torch.isfinite(v)).sum())
            raise CheckpointError(f"{path}: weight {k!r} holds {bad} non-finite value(s) (file corrupt, or saved "
                                  f"from a diverged run); expected finite weights")


def save_weights_file(tensors: Mapping[str, torch.Tensor], path, metadata: Mapping[str, str]) -> Path:
    """Write a standalone .safetensors file atomically (temp file, fsync, rename), with its weights
    digest added to ``metadata`` so a later load can verify it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ts = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    meta = {**{k: str(v) for k, v in metadata.items()}, WEIGHTS_DIGEST: weights_digest(ts)}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        _write(tmp, safetensors.torch.save(ts, metadata=meta))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _safetensors_metadata(data: bytes, path: Path) -> dict[str, str]:
    """The __metadata__ table of a safetensors blob (8-byte little-endian header size, JSON header)."""
    try:
        n = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + n])
        return dict(header.get("__metadata__") or {})
    except (ValueError, AttributeError):
        raise CheckpointError(
            f"{path}: unreadable safetensors header (file corrupt or truncated); "
            "expected a safetensors file"
        ) from None


def _tensors_from_bytes(data: bytes, path: Path, map_location: Any) -> dict[str, torch.Tensor]:
    try:
        tensors = safetensors.torch.load(data)
    except Exception as e:  # safetensors raises its own SafetensorError, or others on garbage
        raise CheckpointError(
            f"{path}: unreadable safetensors ({' '.join(str(e).split())}); "
            "expected a safetensors file"
        ) from None
    if str(map_location) != "cpu":
        tensors = {k: v.to(map_location) for k, v in tensors.items()}
    return tensors


def _load_state(data: bytes, path: Path, map_location: Any, trust_pickle: bool) -> dict:
    try:
        state = torch.load(io.BytesIO(data), map_location=map_location, weights_only=not trust_pickle)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: holds objects outside torch's weights-only allowlist ({first[:120]}); "
            "expected tensors, numbers, strings and containers, or pass trust_pickle=True for a run you trust"
        ) from None
    except (RuntimeError, EOFError, ValueError) as e:
        raise CheckpointError(
            f"{path}: unreadable ({' '.join(str(e).split())[:160]}); "
            "expected a torch.save file"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds {type(state).__name__}; expected a dict")
    return state


def _load_dir(d: Path, map_location: Any, trust_pickle: bool) -> Checkpoint:
    meta_path = d / "meta.json"
    if not meta_path.is_file():
        raise CheckpointError(
            f"{meta_path}: missing; expected a checkpoint dir written by save_checkpoint "
            "(pass a .safetensors file to load weights only)"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError, OSError):
        raise CheckpointError(
            f"{meta_path}: not valid JSON (file corrupt or truncated); "
            "expected the checkpoint's file list"
        ) from None
    if not isinstance(meta, dict) or str(meta.get("difflab_format")) != FORMAT:
        got = meta.get("difflab_format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{meta_path}: difflab_format {got!r}; expected {FORMAT!r}")
    files = meta.get("files")
    if not isinstance(files, dict) or any(name not in files for name in _REQUIRED):
        listed = sorted(files) if isinstance(files, dict) else files
        raise CheckpointError(f"{meta_path}: file list {listed!r}; expected at least {', '.join(_REQUIRED)}")
    data = {name: _read_verified(d / name, info) for name, info in files.items()}
    model_state = _tensors_from_bytes(data["model.safetensors"], d / "model.safetensors", map_location)
    check_weights(model_state, d / "model.safetensors")
    ema_state = None
    if "ema.safetensors" in data:
        ema_state = _tensors_from_bytes(data["ema.safetensors"], d / "ema.safetensors", map_location)
        check_weights(ema_state, d / "ema.safetensors")
    try:
        config = tomllib.loads(data["config.toml"].decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"{d / 'config.toml'}: invalid TOML ({' '.join(str(e).split())}); "
            "expected the run config"
        ) from None
    state = _load_state(data["state.pt"], d / "state.pt", map_location, trust_pickle)
    return Checkpoint(
        step=int(meta.get("step", state.get("step", 0))),
        config=config,
        model_state=model_state,
        ema_state=ema_state,
        state=state,
        path=d,
        kind=str(meta.get("kind", "")),
        meta=meta,
    )


def _load_weights_file(path: Path, map_location: Any) -> Checkpoint:
    """A lone .safetensors file; verified against a sibling meta.json when it is part of a checkpoint."""
    meta_path = path.parent / "meta.json"
    data = None
    if meta_path.is_file():
        try:
            files = json.loads(meta_path.read_text()).get("files", {})
        except (ValueError, UnicodeDecodeError, AttributeError):
            files = {}
        if path.name in files:
            data = _read_verified(path, files[path.name])
    if data is None:
        data = path.read_bytes()
    metadata = _safetensors_metadata(data, path)
    tensors = _tensors_from_bytes(data, path, map_location)
    check_weights(tensors, path, metadata)
    try:
        config = json.loads(metadata["config"]) if "config" in metadata else {}
        step = int(metadata.get("step", 0))
    except ValueError:
        raise CheckpointError(
            f"{path}: unreadable difflab metadata (config or step); "
            "expected JSON config and an int step"
        ) from None
    return Checkpoint(
        step=step,
        config=config,
        model_state=tensors,
        ema_state=None,
        state={"extra": json.loads(metadata["extra"])} if "extra" in metadata else {},
        path=path,
        kind=metadata.get("kind", ""),
        meta=metadata,
    )


def load_checkpoint(
    path: str | os.PathLike,
    *,
    map_location: str | torch.device = "cpu",
    expect_kind: str | None = None,
    trust_pickle: bool = False,
) -> Checkpoint:
    """Load and verify a checkpoint.

    `path` is a checkpoint dir, a run dir (or its checkpoints/ dir: uses `latest`, falling back,
    with a warning, to the highest step dir that verifies), or a .safetensors file (its weights
    go to `model_state`; config and step come from its metadata). Every file listed in meta.json
    is checked for size and sha256 before it is read. `trust_pickle=True` lets state.pt hold
    arbitrary Python objects (it runs pickle; only for runs you trust).
    """
    path = Path(path)
    if path.is_file():
        if path.suffix != ".safetensors":
            raise CheckpointError(
                f"{path}: not a checkpoint; "
                "expected a checkpoint dir, a run dir or a .safetensors file"
            )
        ckpt = _load_weights_file(path, map_location)
    elif not path.is_dir():
        raise CheckpointError(f"{path}: not found; expected a checkpoint dir, a run dir or a .safetensors file")
    elif (path / "meta.json").exists() or _STEP_DIR.match(path.name):
        ckpt = _load_dir(path, map_location, trust_pickle)
    else:
        ckpt = _load_newest(_checkpoints_root(path), map_location, trust_pickle)
    if expect_kind is not None and ckpt.kind != expect_kind:
        held = f"a {ckpt.kind!r}" if ckpt.kind else "weights with no difflab kind"
        raise CheckpointError(f"checkpoint {ckpt.path} holds {held}, expected a {expect_kind!r} model")
    return ckpt


def _load_newest(root: Path, map_location: Any, trust_pickle: bool) -> Checkpoint:
    candidates = [p for _, p in reversed(_step_dirs(root))]
    pointed = _read_latest(root)
    if pointed is not None:
        candidates = [pointed] + [p for p in candidates if p != pointed]
    if not candidates:
        raise CheckpointError(
            f"{root}: no checkpoint found; "
            f"expected {CHECKPOINTS}/step-NNNNNNNN/ dirs written by save_checkpoint"
        )
    errors = []
    for p in candidates:
        try:
            ckpt = _load_dir(p, map_location, trust_pickle)
        except CheckpointError as e:
            errors.append(e)
            continue
        if errors:
            warnings.warn(
                f"skipped {len(errors)} unusable checkpoint(s) in {root}, loaded {p.name}; "
                f"first problem: {errors[0]}",
                stacklevel=3,
            )
        return ckpt
    raise CheckpointError(f"{root}: none of {len(candidates)} checkpoint(s) verifies; newest problem: {errors[0]}")


# ---------------------------------------------------------------------------------------------
# compatibility


def _few(keys: list[str], n: int = 3) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def check_state_dict_compatible(module: torch.nn.Module, state_dict: Mapping[str, Any], what: str) -> None:
    """Raise CheckpointError unless `state_dict` has exactly `module`'s keys and shapes.

    Catches loading weights saved from another model kind or config before `load_state_dict`
    does, with one line naming the first few missing, unexpected and mis-shaped keys.
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = []
    for k, v in expected.items():
        if k in state_dict:
            got = tuple(getattr(state_dict[k], "shape", ()))
            if got != tuple(v.shape):
                shapes.append(f"{k} {got} vs {tuple(v.shape)}")
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(f"missing {_few(missing)}")
    if unexpected:
        parts.append(f"unexpected {_few(unexpected)}")
    if shapes:
        parts.append(f"shape (checkpoint vs model) {_few(shapes)}")
    hint = "expected the state dict of the same model kind and config"
    for prefix in ("module.", "_orig_mod."):
        if unexpected and {k[len(prefix):] for k in state_dict if k.startswith(prefix)} == set(expected):
            hint = f"keys carry a {prefix!r} prefix (saved from a DDP or torch.compile wrapper); strip it"
    raise CheckpointError(f"{what} does not fit {type(module).__name__}: {'; '.join(parts)}; {hint}")


__all__ = [
    "Checkpoint",
    "capture_rng_state",
    "check_state_dict_compatible",
    "config_sha",
    "latest_checkpoint",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
    "step_dir_name",
]
