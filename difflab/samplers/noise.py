"""Noise that belongs to a sample, not to a batch: sample i of a run seeded s draws all of its noise
(the prior draw and every step's fresh noise) from its own generator seeded by (s, i), so the samples
of one seed are the same whatever the batch size, and any one can be regenerated alone."""
from __future__ import annotations

import numpy as np
import torch


def seed_of(*key: int) -> int:
    """A 63-bit seed (torch's generators keep 63 bits) from integers mixed by NumPy's SeedSequence."""
    return int(np.random.SeedSequence([int(v) for v in key]).generate_state(1, np.uint64)[0]) & (2**63 - 1)


def sample_seeds(seed: int, start: int, count: int) -> torch.Tensor:
    """(count,) int64 seeds of samples start .. start+count-1 of a run seeded ``seed``."""
    return torch.tensor([seed_of(seed, i) for i in range(start, start + count)], dtype=torch.int64)


class PerSampleNoise:
    """``noise(n, like)`` (a sampler's ``noise_sampler``) and ``randn(shape)`` whose row i comes from
    generator i only. One generator per sample: a few microseconds per sample and step."""

    def __init__(self, seeds, device="cpu"):
        self.generators = [torch.Generator(device).manual_seed(int(s)) for s in seeds]
        self.device = device

    def randn(self, shape, dtype=torch.float32) -> torch.Tensor:
        if shape[0] != len(self.generators):
            raise ValueError(f"noise for {shape[0]} samples asked of {len(self.generators)} per-sample generators")
        return torch.stack([torch.randn(tuple(shape[1:]), generator=g, dtype=dtype, device=self.device)
                            for g in self.generators])

    def __call__(self, n, like: torch.Tensor) -> torch.Tensor:
        return self.randn(like.shape, like.dtype).to(like.device)


__all__ = ["PerSampleNoise", "sample_seeds", "seed_of"]
