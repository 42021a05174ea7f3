"""scikit-learn's 8×8 handwritten digits (1797 images with values 0..16, 10 classes), bundled with sklearn."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

DIGITS_TOTAL = 1797
DIGITS_TRAIN_FRACTION = 0.9
DIGITS_SPLIT_SEED = 0  # fixed: the train/test split never depends on the caller's seed


@lru_cache(maxsize=1)
def _all_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # lazy: sklearn is slow to import

    bunch = load_digits()
    images = bunch.images.astype(np.float32)  # (1797, 8, 8), integers 0..16
    labels = bunch.target.astype(np.int64)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def digits_split_indices(split: str) -> np.ndarray:
    """Ascending indices into the 1797 digits: a seeded 90% for "train" (1617), the other 10% for "test" (180)."""
    perm = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(DIGITS_TOTAL)
    n_train = int(round(DIGITS_TRAIN_FRACTION * DIGITS_TOTAL))
    return np.sort(perm[:n_train] if split == "train" else perm[n_train:])


def load_digits_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """float32 images (N, 1, 8, 8) in [-1, 1] (value v -> v / 8 - 1) and int64 labels (N,) 0..9."""
    images, labels = _all_digits()
    idx = digits_split_indices(split)
    return images[idx][:, None] / 8.0 - 1.0, labels[idx]
