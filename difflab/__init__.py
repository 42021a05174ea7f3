"""difflab: diffusion models — train, sample in few steps, improve samples with auxiliary networks."""

__version__ = "0.1.0"
