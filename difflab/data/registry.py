"""load_dataset: one entry point from a dataset name to an in-memory ArrayDataset."""
from __future__ import annotations

import difflib
import os
from pathlib import Path

import numpy as np
import torch

from difflab.data.base import ArrayDataset, resize_images, resolve_data_dir, subset_indices, uint8_to_float
from difflab.data.cifar import load_cifar10
from difflab.data.digits import load_digits_split
from difflab.data.folder import load_folder, parse_channels
from difflab.data.idx import MNIST_FAMILY, load_mnist_family
from difflab.data.toy import DEFAULT_TOY_SAMPLES, TOY_DATASETS, TOY_NUM_CLASSES, sample_toy
from difflab.errors import DataError

FOLDER_PREFIX = "folder:"
DATASETS = [*TOY_DATASETS, "digits", "mnist", "fashion-mnist", "cifar10", FOLDER_PREFIX + "PATH"]
SPLITS = ("train", "test")


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    split: str = "train",
    image_size: int | None = None,
    num_samples: int | None = None,
    seed: int = 0,
    *,
    verify: bool = False,
    channels: str | int | None = None,
) -> ArrayDataset:
    """Load a dataset by name (see ``DATASETS``) into memory.

    Images come back as float32 (N, C, H, W) in [-1, 1] with int64 labels; toys as float32 (N, 2)
    at unit scale (see difflab.data.toy).

    Args:
        name: "toy:ring8", "toy:grid25", "toy:moons", "toy:swissroll", "toy:checkerboard",
            "toy:gaussian", "digits" (1, 8, 8), "mnist" / "fashion-mnist" (1, 28, 28),
            "cifar10" (3, 32, 32), or "folder:PATH" (PATH absolute, relative to the working
            directory, or else relative to the data directory).
        data_dir: root holding the data files; defaults to $DIFFLAB_DATA. Unused by toys and digits.
        split: "train" or "test". Toys draw the test split from a separate seed stream; digits
            split 90/10 with a fixed seed; folders have only "train".
        image_size: square output side. None keeps the native size. For MNIST-family 32 zero-pads
            28 -> 32 (2 background pixels each side, exact); any other size resizes bilinearly
            (antialiased when shrinking). Folders center-crop and resize (bicubic). Not for toys.
        num_samples: toys draw this many (default 50,000); other datasets keep the first
            num_samples of a seeded shuffle (in their original order), for quick runs.
        seed: toy sampling seed, or the seed of that shuffle.
        verify: check the md5 of the official MNIST-family / CIFAR-10 files (header and size
            checks always run).
        channels: folders only: "RGB", "L", or None (grayscale when every image is).
    """
    if not isinstance(name, str):
        raise DataError(f"dataset name must be a string, got {type(name).__name__}")
    _check_args(split, image_size, num_samples, seed)
    key = name.strip()
    if key.lower().startswith(FOLDER_PREFIX):
        return _folder(key, data_dir, split, image_size, num_samples, seed, channels)
    key = key.lower()
    if key not in DATASETS:
        close = difflib.get_close_matches(key, DATASETS, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise DataError(f"unknown dataset {name!r}{hint} (accepted: {', '.join(DATASETS)})")
    if channels is not None:
        raise DataError(f"channels={channels!r} applies only to {FOLDER_PREFIX}PATH datasets, not {key}")

    if key in TOY_DATASETS:
        if image_size is not None:
            raise DataError(f"image_size={image_size} does not apply to the 2-D toy {key}")
        n = DEFAULT_TOY_SAMPLES if num_samples is None else num_samples
        x, y = sample_toy(key, n, seed, stream=SPLITS.index(split))
        return ArrayDataset(x, y, name=key, num_classes=TOY_NUM_CLASSES.get(key))

    if key == "digits":
        x, y = load_digits_split(split)
        idx = subset_indices(len(x), num_samples, seed, f"digits {split}")
        if idx is not None:
            x, y = x[idx], y[idx]
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        if image_size is not None:
            x = resize_images(x, image_size)
        return ArrayDataset(x, y, name=key, classes=[str(d) for d in range(10)])

    if key in MNIST_FAMILY:
        u8, y, classes = load_mnist_family(key, resolve_data_dir(data_dir), split, verify)
        return _images(key, u8, y, classes, split, image_size, num_samples, seed, pad_28_to_32=True)

    if key == "cifar10":
        u8, y, classes = load_cifar10(resolve_data_dir(data_dir), split, verify)
        return _images(key, u8, y, classes, split, image_size, num_samples, seed)

    raise AssertionError(f"{key} is listed in DATASETS but has no loader")  # unreachable unless DATASETS drifts


def _check_args(split, image_size, num_samples, seed) -> None:
    if split not in SPLITS:
        raise DataError(f"split={split!r}: expected one of {', '.join(SPLITS)}")
    for arg, value in (("image_size", image_size), ("num_samples", num_samples)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise DataError(f"{arg}={value!r}: expected a positive integer or None")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed={seed!r}: expected a non-negative integer")


def _images(name, u8, y, classes, split, image_size, num_samples, seed, pad_28_to_32=False) -> ArrayDataset:
    """uint8 (N, C, H, W) -> ArrayDataset in [-1, 1]; subset before converting, so quick runs stay quick."""
    idx = subset_indices(len(u8), num_samples, seed, f"{name} {split}")
    if idx is not None:
        u8, y = u8[idx], y[idx]
    if pad_28_to_32 and image_size == 32 and u8.shape[-2:] == (28, 28):
        u8 = np.pad(u8, ((0, 0), (0, 0), (2, 2), (2, 2)))  # 0 is the background of both MNISTs
    x = uint8_to_float(u8)
    if image_size is not None:
        x = resize_images(x, image_size)
    return ArrayDataset(x, y.astype(np.int64), name=name, classes=classes)


def _folder_path(spec: str, data_dir) -> Path:
    """PATH as given when absolute or present in the working directory, else under the data root."""
    path = Path(spec).expanduser()
    if path.is_absolute() or path.exists():
        return path
    try:
        root = resolve_data_dir(data_dir)
    except DataError:
        raise DataError(f"image folder {path} not found in the working directory (and no --data-dir or"
                        f" DIFFLAB_DATA to look under)") from None
    if not (root / path).exists():
        raise DataError(f"image folder {path} not found in the working directory nor in {root}")
    return root / path


def _folder(key, data_dir, split, image_size, num_samples, seed, channels) -> ArrayDataset:
    spec = key[len(FOLDER_PREFIX):].strip()
    if not spec:
        raise DataError(f"{key!r}: expected {FOLDER_PREFIX}PATH with the path of a folder of images")
    if split != "train":
        raise DataError(f"{key}: an image folder has no {split!r} split; point {FOLDER_PREFIX} at the folder holding that split")
    parse_channels(channels)  # fail on a bad value before reading any image
    u8, y, classes = load_folder(_folder_path(spec, data_dir), image_size, channels)
    idx = subset_indices(len(u8), num_samples, seed, key)
    if idx is not None:
        u8, y = u8[idx], (y[idx] if y is not None else None)
    return ArrayDataset(uint8_to_float(u8), y, name=key, classes=classes)
