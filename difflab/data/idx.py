"""IDX files (LeCun's format) and the MNIST family: MNIST and Fashion-MNIST.

An images file is a 16-byte header (magic 2051, count, rows, cols; big-endian uint32) followed by
count*rows*cols uint8 pixels, row-major; a labels file is an 8-byte header (magic 2049, count)
followed by count uint8 labels. Both usually gzip-compressed. Header and payload size are always
checked; the md5 of the official .gz files only with ``verify=True``.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

from difflab.data.base import DATA_ENV, check_md5, md5_file, one_line
from difflab.errors import DataError

IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
_KIND = {IMAGES_MAGIC: ("images", 3), LABELS_MAGIC: ("labels", 1)}

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class _Family(NamedTuple):
    title: str
    subdirs: tuple[str, ...]  # searched in order under the data root ("." is the root itself)
    md5: dict[str, str]  # of the official .gz files
    classes: list[str]


MNIST_FAMILY = {
    "mnist": _Family(
        "MNIST",
        ("mnist", "MNIST/raw", "."),
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        [str(d) for d in range(10)],
    ),
    "fashion-mnist": _Family(
        "Fashion-MNIST",
        ("fashion-mnist", "FashionMNIST/raw", "."),
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    ),
}


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when the name ends in .gz; DataError on a missing or bad file."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"missing {path}") from None
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError; a cut-off stream an EOFError
        raise DataError(f"{path}: not a readable gzip file ({one_line(e)})") from None


def read_idx(path: str | os.PathLike, magic: int) -> np.ndarray:
    """Read an IDX file of unsigned bytes: images (N, rows, cols) for magic 2051, labels (N,) for 2049.

    The array is read-only (it may be shared through the cache of the MNIST loaders).
    """
    path = Path(path)
    kind, ndim = _KIND[magic]
    raw = _read_bytes(path)
    header = 4 + 4 * ndim
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found is not None and found != magic:
        raise DataError(f"{path}: expected IDX magic {magic} ({kind}), found {found}")
    if len(raw) < header:
        raise DataError(f"{path}: expected a {header}-byte IDX {kind} header, found {len(raw)} bytes")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        shape = " x ".join(map(str, dims))
        raise DataError(f"{path}: expected {expected} {kind[:-1]} bytes after the header ({shape}), found {len(raw) - header}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write uint8 images (N, rows, cols) or labels (N,) as IDX, gzip-compressed when the name ends in .gz."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    magic = {3: IMAGES_MAGIC, 1: LABELS_MAGIC}[a.ndim]
    data = struct.pack(f">{1 + a.ndim}I", magic, *a.shape) + a.tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


@lru_cache(maxsize=16)
def _read_idx_cached(path: str, magic: int, mtime_ns: int, size: int) -> np.ndarray:
    # mtime and size are part of the key so that a replaced file is read again.
    return read_idx(path, magic)


def _read_cached(path: Path, magic: int) -> np.ndarray:
    st = path.stat()
    return _read_idx_cached(str(path), magic, st.st_mtime_ns, st.st_size)


def find_mnist_dir(name: str, root: Path, split: str) -> Path:
    """The first of <root>/<name>/, <root>/<Torchvision>/raw/, <root>/ that holds the split's images file."""
    fam, (images, _) = MNIST_FAMILY[name], MNIST_FILES[split]
    for sub in fam.subdirs:
        d = root / sub
        if (d / images).is_file():
            return d
    where = ", ".join(f"{(root / s)}{os.sep}" for s in fam.subdirs[:-1]) + f" or {root}{os.sep}"
    raise DataError(f"missing {fam.title} file {images}: looked in {where} (set --data-dir or {DATA_ENV})")


def load_mnist_family(name: str, root: Path, split: str, verify: bool = False):
    """uint8 images (N, 1, 28, 28), uint8 labels (N,), class names; arrays are read-only and cached."""
    fam = MNIST_FAMILY[name]
    d = find_mnist_dir(name, root, split)
    images_path, labels_path = (d / f for f in MNIST_FILES[split])
    if not labels_path.is_file():
        raise DataError(f"missing {labels_path}; expected the {fam.title} file {labels_path.name} next to {images_path.name}")
    # The label files are tiny: their md5 tells MNIST and Fashion-MNIST apart even without verify,
    # which matters when the files sit directly in the data root.
    label_md5 = md5_file(labels_path)
    for other_name, other in MNIST_FAMILY.items():
        if other_name != name and label_md5 == other.md5[labels_path.name]:
            raise DataError(f"{labels_path}: this is the {other.title} label file, but {fam.title} was asked for")
    if verify:
        for p in (images_path, labels_path):
            check_md5(p, fam.md5[p.name])
    images = _read_cached(images_path, IMAGES_MAGIC)
    labels = _read_cached(labels_path, LABELS_MAGIC)
    if len(labels) != len(images):
        raise DataError(f"{labels_path}: {len(labels)} labels, but {images_path.name} holds {len(images)} images")
    if len(labels) and labels.max() >= len(fam.classes):
        raise DataError(f"{labels_path}: labels must lie in 0..{len(fam.classes) - 1}, found {int(labels.max())}")
    return images[:, None], labels, fam.classes
