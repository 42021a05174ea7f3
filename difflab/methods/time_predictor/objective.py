"""The time predictor's training objective (for :class:`difflab.train.loop.Trainer`)."""
from __future__ import annotations

import torch

from difflab.process.schedules import F64, Schedule
from difflab.train.objectives import Objective, randn_like_from

from .network import KIND, TimeScale


class TimePredictorObjective(Objective):
    """MSE between g's unit and the true time's: t ~ U(t_min, 1), x_t = α(t) x0 + σ(t) ε, ε ~ N(0, I).

    draws: ``t`` (B,) float64, ``noise`` like x (Gaussian; the original code drew uniform noise,
    which gives x_t another marginal than the one the sampler visits). loss: (B,) (u(g(x_t)) - u(t))²,
    which is the MSE on t itself for the 't' parameterisation (up to 1 / (1 - t_min)²) and on the
    normalised log-SNR for 'log_snr'.
    """

    kind = KIND

    def __init__(self, schedule: Schedule, scale: TimeScale):
        self.schedule, self.scale = schedule, scale

    def draw(self, x, y, gen):
        u = torch.rand(x.shape[0], generator=gen, device=gen.device, dtype=F64)
        t_min = self.scale.t_min
        return {"t": (t_min + (1.0 - t_min) * u).to(x.device), "noise": randn_like_from(x, gen)}

    def noisy(self, x: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = α(t) x0 + σ(t) ε, (B, ...)."""
        return self.schedule.perturb(x, t, noise)

    def loss(self, module, x, y, draws):
        pred = module(self.noisy(x, draws["t"], draws["noise"]), raw=True)
        target = self.scale.to_unit(draws["t"]).to(device=pred.device, dtype=pred.dtype)
        err = pred - target
        return err**2, {"mse": (err.detach() ** 2).mean(), "bias": err.detach().mean()}
