"""Training objectives: small classes that turn (module, batch, randomness) into per-sample losses.

The :class:`~difflab.train.loop.Trainer` knows nothing about diffusion; it only calls this protocol::

    draws = objective.draw(x, y, gen)                # all randomness of the (global) batch, (B, ...) each
    loss, logs = objective.loss(module, x, y, draws)  # loss (B,) on any slice of the batch and its draws
    objective.observe(draws, loss)                    # after a good step, with the whole batch's losses
    objective.state_dict() / load_state_dict()        # what must be checkpointed (e.g. a timestep sampler)
    objective.kind                                    # what the trained weights are ("diffusion", ...)

Why randomness is drawn apart from the loss: the trainer draws it once for the whole global batch
from its seeded generator and hands every rank and every accumulation micro-batch its slice, so a
2-process run, a run with gradient accumulation and a resumed run all see the same t and noise for
the same sample as a plain single-process run. ``objective(module, x, y, gen)`` does all three
steps at once, for use outside the trainer.
"""
from __future__ import annotations

from typing import Any

import torch

from difflab.process.gaussian import GaussianDiffusion
from difflab.process.losses import ddpm_losses, dsm_loss
from difflab.process.schedules import Schedule
from difflab.process.timesteps import UniformSampler

Draws = dict[str, torch.Tensor]


def randn_like_from(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, drawn from ``gen`` on the generator's device, then
    moved to ``x``'s device (so the numbers do not depend on where training runs)."""
    return torch.randn(x.shape, generator=gen, device=gen.device, dtype=x.dtype).to(x.device)


class Objective:
    """Base class. Subclasses draw their randomness in :meth:`draw` and compute losses in :meth:`loss`."""

    kind = "diffusion"

    def draw(self, x: Any, y: torch.Tensor | None, gen: torch.Generator) -> Draws:
        """Every random tensor the loss needs, each with leading dimension B = len(x), from ``gen``."""
        return {}

    def loss(self, module, x: Any, y: torch.Tensor | None, draws: Draws) -> tuple[torch.Tensor, dict[str, Any]]:
        """Per-sample losses (B,) to be averaged, and logs: batch means as floats or 0-dim tensors
        (tensors let the trainer read every number of a step in one device sync)."""
        raise NotImplementedError

    def observe(self, draws: Draws, losses: torch.Tensor) -> None:
        """Learn from the per-sample losses (B,) of a completed step (all ranks' samples, in batch order)."""

    def __call__(self, module, x, y, gen: torch.Generator) -> tuple[torch.Tensor, dict[str, Any]]:
        draws = self.draw(x, y, gen)
        loss, logs = self.loss(module, x, y, draws)
        self.observe(draws, loss.detach())
        return loss, {k: float(v) for k, v in logs.items()}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class DDPMObjective(Objective):
    """Discrete-time DDPM losses (L_simple, L_hybrid or L_vlb) at importance-sampled steps.

    draws: ``i`` (B,) int64 step indices, ``w`` (B,) importance weights 1 / (T p_i), ``noise`` like x.
    loss: ``w * L_i`` (B,), so its mean is an unbiased estimate of the uniform-t objective for any
    sampler; the loss-aware sampler learns from the unweighted ``L_i`` (Improved DDPM, sec. 3.3).
    """

    def __init__(self, diffusion: GaussianDiffusion, loss: str = "simple", hybrid_lambda: float = 0.001,
                 timestep_sampler=None):
        self.diffusion = diffusion
        self.loss_type = loss
        self.hybrid_lambda = hybrid_lambda
        self.timestep_sampler = timestep_sampler or UniformSampler(diffusion.num_timesteps)

    def draw(self, x, y, gen):
        i, w = self.timestep_sampler.sample(x.shape[0], gen, "cpu")
        return {"i": i.to(x.device), "w": w.to(x.device), "noise": randn_like_from(x, gen)}

    def loss(self, module, x, y, draws):
        terms = ddpm_losses(module, self.diffusion, x, draws["i"], loss=self.loss_type,
                            hybrid_lambda=self.hybrid_lambda, noise=draws["noise"], y=y)
        logs = {k: v.detach().float().mean() for k, v in terms.items() if k != "loss"}
        return terms["loss"] * draws["w"].to(terms["loss"].dtype), logs

    def observe(self, draws, losses):
        if type(self.timestep_sampler) is UniformSampler:
            return
        # w > 0 always (the loss-aware sampler mixes in a little of the uniform distribution)
        self.timestep_sampler.update(draws["i"].cpu(), (losses.double() / draws["w"].double()).cpu())

    def state_dict(self):
        return {"timestep_sampler": self.timestep_sampler.state_dict()}

    def load_state_dict(self, state):
        self.timestep_sampler.load_state_dict(state.get("timestep_sampler", {}))


class DSMObjective(Objective):
    """Continuous-time denoising score matching on a VP schedule, t ~ U(t_min, 1).

    draws: ``t`` (B,) float64 times, ``noise`` like x. loss: (B,) ‖ε̂ - z‖², times β(t)/σ(t)² with
    likelihood weighting.
    """

    def __init__(self, schedule: Schedule, t_min: float = 1e-5, likelihood_weighting: bool = False):
        self.schedule = schedule
        self.t_min = t_min
        self.likelihood_weighting = likelihood_weighting

    def draw(self, x, y, gen):
        u = torch.rand(x.shape[0], generator=gen, device=gen.device, dtype=torch.float64)
        return {"t": (self.t_min + (1.0 - self.t_min) * u).to(x.device), "noise": randn_like_from(x, gen)}

    def loss(self, module, x, y, draws):
        terms = dsm_loss(module, self.schedule, x, draws["t"], noise=draws["noise"], y=y,
                         likelihood_weighting=self.likelihood_weighting)
        return terms["loss"], {"mse": terms["mse"].detach().float().mean()}


__all__ = ["DDPMObjective", "DSMObjective", "Draws", "Objective", "randn_like_from"]
