"""Datasets at the edge of difflab: toys, digits, the MNIST family, CIFAR-10 and image folders.

Every loader returns an in-memory :class:`ArrayDataset`: images float32 (N, C, H, W) in [-1, 1],
toys float32 (N, 2) at unit scale, labels int64 (N,) or None. Bad names and bad files raise
:class:`difflab.errors.DataError` with one line naming the file and what was expected.
"""
from difflab.data.base import ArrayDataset, resolve_data_dir
from difflab.data.idx import read_idx, write_idx
from difflab.data.registry import DATASETS, load_dataset
from difflab.data.toy import TOY_DATASETS, sample_toy, toy_mixture, toy_mixture_params, toy_normalization

__all__ = [
    "ArrayDataset",
    "DATASETS",
    "TOY_DATASETS",
    "load_dataset",
    "read_idx",
    "resolve_data_dir",
    "sample_toy",
    "toy_mixture",
    "toy_mixture_params",
    "toy_normalization",
    "write_idx",
]
