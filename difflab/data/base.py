"""The in-memory dataset every loader returns, where data files live, and shared image helpers.

Images are stored as float32 (N, C, H, W) in [-1, 1] (uint8 u -> u / 127.5 - 1); toy data as
float32 (N, D). Labels are int64 (N,) or absent.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from difflab.io import file_hexdigest
from difflab.errors import DataError

DATA_ENV = "DIFFLAB_DATA"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root: ``data_dir`` if given, else ``$DIFFLAB_DATA``; DataError when neither is set."""
    if data_dir is not None and str(data_dir).strip():
        root, origin = Path(data_dir).expanduser(), "--data-dir"
    elif os.environ.get(DATA_ENV, "").strip():
        root, origin = Path(os.environ[DATA_ENV].strip()).expanduser(), DATA_ENV
    else:
        raise DataError(f"no data directory: pass --data-dir (data_dir=...) or set {DATA_ENV}")
    if not root.is_dir():
        raise DataError(f"data directory {root} (from {origin}) does not exist or is not a directory")
    return root


class ArrayDataset(Dataset):
    """A whole dataset held in memory.

    Attributes:
        x: float32, images (N, C, H, W) in [-1, 1], or points (N, D).
        y: int64 (N,) labels in [0, num_classes), or None.
        name: the name it was loaded under, e.g. "mnist" or "toy:ring8".
        num_classes: number of classes, or None without labels.
        classes: class names (index -> name), or None.

    ``ds[i]`` is ``(x_i, y_i)`` with ``y_i`` an int64 scalar tensor, -1 when there are no labels,
    so the default collate works for labelled and unlabelled data alike.
    """

    def __init__(self, x, y=None, *, name: str, num_classes: int | None = None, classes=None):
        x = torch.as_tensor(x, dtype=torch.float32)
        if x.dim() not in (2, 4):
            raise DataError(f"{name}: expected data of shape (N, D) or (N, C, H, W), got {tuple(x.shape)}")
        if y is not None:
            y = torch.as_tensor(y, dtype=torch.int64)
            if y.shape != (x.shape[0],):
                raise DataError(f"{name}: expected labels of shape ({x.shape[0]},), got {tuple(y.shape)}")
        classes = list(classes) if classes is not None else None
        if num_classes is None and classes is not None:
            num_classes = len(classes)
        if y is not None and num_classes is not None and len(y) and not (0 <= int(y.min()) and int(y.max()) < num_classes):
            raise DataError(f"{name}: labels must lie in [0, {num_classes}), found [{int(y.min())}, {int(y.max())}]")
        self.x, self.y, self.name = x, y, name
        self.num_classes = num_classes if y is not None else None
        self.classes = classes if y is not None else None
        self._no_label = torch.tensor(-1, dtype=torch.int64)

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i):
        return self.x[i], (self.y[i] if self.y is not None else self._no_label)

    @property
    def shape(self) -> tuple[int, ...]:
        """Per-sample shape: (C, H, W) for images, (D,) for points."""
        return tuple(self.x.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.x.dim() == 4

    def to_uint8(self) -> torch.Tensor:
        """Images as uint8 (N, C, H, W) in [0, 255]: the inverse of u / 127.5 - 1, rounded (for metrics)."""
        if not self.is_image:
            raise DataError(f"{self.name}: to_uint8() needs image data (N, C, H, W), this has shape {tuple(self.x.shape)}")
        return to_uint8(self.x)

    def describe(self) -> str:
        """One line: name, size, per-sample shape, range, classes."""
        lo, hi = (float(self.x.min()), float(self.x.max())) if len(self) else (0.0, 0.0)
        labels = f"{self.num_classes} classes" if self.y is not None else "no labels"
        return f"{self.name}: {len(self)} x {self.shape} float32 in [{lo:.3g}, {hi:.3g}], {labels}"

    def __repr__(self) -> str:
        return f"ArrayDataset({self.describe()})"


# ---------------------------------------------------------------------- shared helpers

def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8 [0, 255], rounded and clipped."""
    return ((x + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


def uint8_to_float(u8: np.ndarray) -> torch.Tensor:
    """uint8 (N, C, H, W) [0, 255] -> float32 [-1, 1] (a fresh tensor; the input may be read-only)."""
    return torch.from_numpy(np.asarray(u8).astype(np.float32)).div_(127.5).sub_(1.0)


def resize_images(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, size, size), bilinear, antialiased when shrinking; no-op at the same size."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=size < min(h, w)).clamp_(-1, 1)


def subset_indices(n: int, num_samples: int | None, seed: int, what: str) -> np.ndarray | None:
    """Indices of the first ``num_samples`` of a seeded shuffle of range(n), in ascending order.

    None means "all, in the original order". Nested: a smaller num_samples gives a subset of a larger one.
    """
    if num_samples is None:
        return None
    if num_samples > n:
        raise DataError(f"{what}: asked for num_samples={num_samples}, but it has only {n} samples")
    return np.sort(np.random.default_rng(seed).permutation(n)[:num_samples])


def md5_file(path: Path) -> str:
    return file_hexdigest(path, "md5")


def check_md5(path: Path, expected: str) -> None:
    """DataError unless the file's md5 is ``expected``."""
    found = md5_file(path)
    if found != expected:
        raise DataError(f"{path}: md5 {found}, expected {expected} (the official file); it is corrupt or a different file")


def one_line(err: BaseException) -> str:
    """An exception's text on one line (for wrapping library errors into a DataError)."""
    text = " ".join(str(err).split())
    return text or type(err).__name__
