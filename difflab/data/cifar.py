"""CIFAR-10, python version: <root>/cifar-10-batches-py/ or <root>/cifar-10-python.tar.gz (read in place).

Each batch is a pickle of a dict with b"data", uint8 (N, 3072) whose rows are the 1024 red,
then 1024 green, then 1024 blue pixels of a 32×32 image (row-major), and b"labels", a list of N
ints in 0..9; batches.meta holds b"label_names". Batches are unpickled with a restricted
unpickler that builds only plain containers and numpy arrays, so a crafted file cannot run code.
"""
from __future__ import annotations

import io
import os
import pickle
import tarfile
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from difflab.data.base import DATA_ENV, check_md5, one_line
from difflab.errors import DataError

CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TAR = "cifar-10-python.tar.gz"
CIFAR_TAR_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
CIFAR_BATCHES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

# Everything a numpy array pickle may reference (numpy 1.x and 2.x module names).
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 writes bytes at protocol 2 (a text codec call, nothing more)
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _unpickle(data: bytes, where: str) -> dict:
    try:
        obj = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # any malformed pickle: EOFError, UnpicklingError, ValueError, ...
        raise DataError(f"{where}: not a readable CIFAR-10 pickle ({one_line(e)})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a pickled dict, found {type(obj).__name__}")
    return obj


def _parse_batch(obj: dict, where: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 3, 32, 32) and uint8 labels (N,) from one unpickled batch."""
    data, labels = obj.get(b"data"), obj.get(b"labels")
    if data is None or labels is None:
        raise DataError(f"{where}: expected the keys b'data' and b'labels', found {sorted(obj)}")
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{where}: expected b'data' as uint8 (N, 3072), found {data.dtype} {data.shape}")
    labels = np.asarray(labels)
    if labels.shape != (len(data),):
        raise DataError(f"{where}: expected {len(data)} labels, found shape {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{where}: labels must lie in 0..9, found {int(labels.min())}..{int(labels.max())}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.uint8)


def _class_names(meta: bytes | None, where: str) -> list[str]:
    if meta is None:
        return list(CIFAR_CLASSES)
    names = _unpickle(meta, where).get(b"label_names")
    if not isinstance(names, list) or len(names) != 10:
        raise DataError(f"{where}: expected b'label_names' with 10 names")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def find_cifar(root: Path) -> Path:
    """The batches directory or the .tar.gz under <root> or <root>/cifar10/, directories first."""
    candidates = [root / CIFAR_DIR, root / "cifar10" / CIFAR_DIR, root / CIFAR_TAR, root / "cifar10" / CIFAR_TAR]
    for c in candidates:
        if c.is_dir() if c.name == CIFAR_DIR else c.is_file():
            return c
    raise DataError(f"missing CIFAR-10: expected {CIFAR_DIR}{os.sep} or {CIFAR_TAR} in {root} or {root / 'cifar10'}"
                    f" (set --data-dir or {DATA_ENV})")


def _read_dir(src: Path, split: str):
    names = CIFAR_BATCHES[split]
    for n in names:
        if not (src / n).is_file():
            raise DataError(f"missing {src / n}; expected the CIFAR-10 batch {n} in {src}{os.sep}")
    batches = [_parse_batch(_unpickle((src / n).read_bytes(), str(src / n)), str(src / n)) for n in names]
    meta = src / "batches.meta"
    return batches, _class_names(meta.read_bytes() if meta.is_file() else None, str(meta))


def _read_tar(src: Path, split: str):
    names = CIFAR_BATCHES[split]
    wanted = {f"{CIFAR_DIR}/{n}": n for n in names + ("batches.meta",)}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(src, "r:gz") as tar:
            for member in tar:  # one pass: a .tar.gz has no index, each lookup would rescan it
                key = wanted.get(member.name.removeprefix("./"))
                if key is not None and member.isfile():
                    found[key] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{src}: not a readable .tar.gz ({one_line(e)})") from None
    missing = [n for n in names if n not in found]
    if missing:
        raise DataError(f"{src}: missing member {CIFAR_DIR}/{missing[0]}; expected the CIFAR-10 batches {', '.join(names)}")
    batches = [_parse_batch(_unpickle(found[n], f"{src}:{CIFAR_DIR}/{n}"), f"{src}:{CIFAR_DIR}/{n}") for n in names]
    return batches, _class_names(found.get("batches.meta"), f"{src}:{CIFAR_DIR}/batches.meta")


@lru_cache(maxsize=4)
def _load_cached(src: str, split: str, mtime_ns: int):
    path = Path(src)
    batches, classes = (_read_dir if path.is_dir() else _read_tar)(path, split)
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    images.flags.writeable = labels.flags.writeable = False
    return images, labels, classes


def load_cifar10(root: Path, split: str, verify: bool = False):
    """uint8 images (N, 3, 32, 32), uint8 labels (N,), class names; arrays are read-only and cached."""
    src = find_cifar(root)
    if verify:  # checksums only; the parse below is cached
        if src.is_dir():
            for n in CIFAR_BATCHES[split] + ("batches.meta",):
                if (src / n).is_file():
                    check_md5(src / n, CIFAR_MD5[n])
        else:
            check_md5(src, CIFAR_TAR_MD5)
    mtime = max((p.stat().st_mtime_ns for p in src.iterdir()), default=0) if src.is_dir() else src.stat().st_mtime_ns
    return _load_cached(str(src), split, mtime)
