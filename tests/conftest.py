"""Shared test settings."""
import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_seed():
    torch.manual_seed(0)
    yield


def real_data_dir():
    """The real-data directory from DIFFLAB_DATA, or None (tests that need it skip)."""
    d = os.environ.get("DIFFLAB_DATA")
    return d if d and os.path.isdir(d) else None
