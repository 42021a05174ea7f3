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


class Counting(torch.nn.Module):
    """A model that counts its calls (each call is one network evaluation of the whole batch)."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls, self.schedule, self.var_type = inner, 0, inner.schedule, inner.var_type

    def forward(self, x, t, y=None):
        self.calls += 1
        return self.inner(x, t, y)
