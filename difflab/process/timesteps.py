"""Which timesteps to train on: uniform, or Improved DDPM's loss-aware importance sampling.

A sampler returns indices (B,) and importance weights (B,) with E[w · L_i] = the uniform average,
so the weighted loss stays an unbiased estimate of the objective.
"""
from __future__ import annotations

import torch


class UniformSampler:
    def __init__(self, num_timesteps: int):
        self.num_timesteps = num_timesteps

    def probs(self) -> torch.Tensor:
        return torch.full((self.num_timesteps,), 1.0 / self.num_timesteps, dtype=torch.float64)

    def sample(self, batch_size: int, generator=None, device="cpu"):
        p = self.probs()
        i = torch.multinomial(p, batch_size, replacement=True, generator=generator)
        w = 1.0 / (self.num_timesteps * p[i])
        return i.to(device), w.to(device=device, dtype=torch.float32)

    def update(self, indices, losses):
        """Uniform sampling learns nothing from the losses."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict):
        pass


class LossAwareSampler(UniformSampler):
    """p_i ∝ sqrt(E[L_i²]) over the last ``history`` losses of each step, mixed with
    ``uniform_prob`` of the uniform distribution; uniform until every step has a full history."""

    def __init__(self, num_timesteps: int, history: int = 10, uniform_prob: float = 0.001):
        super().__init__(num_timesteps)
        self.history, self.uniform_prob = history, uniform_prob
        self.losses = torch.zeros(num_timesteps, history, dtype=torch.float64)
        self.counts = torch.zeros(num_timesteps, dtype=torch.long)

    def warmed_up(self) -> bool:
        return bool((self.counts == self.history).all())

    def probs(self) -> torch.Tensor:
        if not self.warmed_up():
            return super().probs()
        p = torch.sqrt((self.losses**2).mean(1))
        p = p / p.sum()
        return p * (1 - self.uniform_prob) + self.uniform_prob / self.num_timesteps

    def update(self, indices, losses):
        """Record per-sample losses (B,) at their indices (B,), keeping the last ``history`` per step."""
        for i, l in zip(indices.tolist(), losses.detach().double().cpu().tolist()):
            if self.counts[i] == self.history:
                self.losses[i, :-1] = self.losses[i, 1:].clone()
                self.losses[i, -1] = l
            else:
                self.losses[i, self.counts[i]] = l
                self.counts[i] += 1

    def state_dict(self) -> dict:
        return {"losses": self.losses.clone(), "counts": self.counts.clone()}

    def load_state_dict(self, state: dict):
        self.losses.copy_(state["losses"])
        self.counts.copy_(state["counts"])


def make_timestep_sampler(name: str, num_timesteps: int):
    if name == "uniform":
        return UniformSampler(num_timesteps)
    if name == "loss-aware":
        return LossAwareSampler(num_timesteps)
    raise ValueError(f"unknown timestep sampler {name!r}; expected 'uniform' or 'loss-aware'")
