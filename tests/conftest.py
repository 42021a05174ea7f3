"""Shared test settings."""
import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One intra-op thread for the whole suite: its models and tensors are small, and on a 2-core
    machine that runs anything else torch's threads only spin-wait (10-25x slower measured here)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _deterministic_seed():
    torch.manual_seed(0)
    yield


def real_data_dir():
    """The real-data directory from DIFFLAB_DATA, or None (tests that need it skip)."""
    d = os.environ.get("DIFFLAB_DATA")
    return d if d and os.path.isdir(d) else None
