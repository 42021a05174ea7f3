"""DSNO's training objective (weighted L1/L2 over the M decoded times) and its trajectory error metric.

Training (:class:`DSNOObjective`): weighted L1 (or L2) over the M outputs with λ(t) = α_t/σ_t clamped at
``max_weight``; the dataset is the trajectory bank, with x = x_T and y = the target trajectory. With an
``adversary`` (a frozen discriminator's logit d(x_t, t), e.g. discriminator guidance's) a distributional term
is added: the non-saturating generator loss softplus(-logit d) = -log d at every decoded time t_m < 1.
"""
from __future__ import annotations

import torch

from difflab.errors import ConfigError, DataError
from difflab.train.objectives import Objective

from difflab.process.schedules import F64
KIND = "dsno"
LOSSES = ("l1", "l2")
WEIGHTINGS = ("snr", "uniform", "relative")
# λ(t) = α/σ is infinite at t = 0; 100 is its value at a DDPM's first trained step (t = 1e-3), so the sample
# weighs most, as the one-step sampler needs (10 gave better mid-trajectory but worse final errors in a toy trial).
DEFAULT_MAX_WEIGHT = 100.0

__all__ = ["DEFAULT_MAX_WEIGHT", "DSNOObjective", "KIND", "LOSSES", "WEIGHTINGS", "loss_weights", "trajectory_error", "x_T_baseline"]


def loss_weights(schedule, times, max_weight: float = DEFAULT_MAX_WEIGHT, weighting: str = "snr",
                 min_weight: float = 0.0, baseline=None) -> torch.Tensor:
    """(M,) float64 weights normalised to sum 1: λ(t_m) = α_m / σ_m ("snr"; σ = 0 at t = 0), 1 ("uniform") or
    max(b) / b_m ("relative"; ``baseline`` b (M,) the RMS distance of the bank's x(t_m) from x_T, see
    :func:`trajectory_error`; at t = 1, b = 0 and λ is the clamp), clamped to [``min_weight``, ``max_weight``].
    A floor keeps the early times in the loss: under "snr" they weigh almost nothing (λ(0.5) = 0.29 against 100
    at the sample); "relative" weighs where the trajectory has barely moved most, where predicting x_T is hard
    to beat."""
    if weighting not in WEIGHTINGS:
        raise ConfigError(f"weighting = {weighting!r}; expected one of {', '.join(WEIGHTINGS)}")
    if not 0 <= min_weight <= max_weight:
        raise ConfigError(f"min_weight = {min_weight}, max_weight = {max_weight}; expected 0 <= min_weight <= max_weight")
    t = torch.as_tensor(times, dtype=F64)
    if weighting == "relative":
        if baseline is None:
            raise ConfigError("weighting = 'relative' needs the bank's baseline distances b_m (DSNOObjective(baseline=...))")
        b = torch.as_tensor(baseline, dtype=F64).reshape(-1)
        if b.shape != t.shape or not bool((b >= 0).all()) or float(b.max()) <= 0:
            raise ConfigError(f"baseline = {b.tolist()}: expected {len(t)} non-negative distances, not all 0")
        lam = b.max() / b.clamp_min(1e-300)
    elif weighting == "snr":
        lam = schedule.alpha(t) / schedule.sigma(t).clamp_min(1e-12)
    else:
        lam = torch.ones_like(t)
    lam = lam.clamp(min=min_weight, max=max_weight)
    return lam / lam.sum()


class DSNOObjective(Objective):
    """Weighted trajectory loss of a DSNO module on a trajectory bank (trainer protocol, kind "dsno").

    x: (B, ...) x_T; y: (B, M, ...) the teacher trajectory. loss (B,) = Σ_m w_m e_m with e_m the mean
    absolute ("l1") or squared ("l2") error over the coordinates of time m and w = :func:`loss_weights`.
    No randomness: ``draw`` returns nothing. Logs the per-time-averaged error and the final sample's.
    """

    kind = KIND

    def __init__(self, schedule, times, loss: str = "l1", max_weight: float = DEFAULT_MAX_WEIGHT,
                 weighting: str = "snr", min_weight: float = 0.0, baseline=None, adversary=None,
                 adv_weight: float = 0.0, adv_t_min: float = 1e-3):
        if loss not in LOSSES:
            raise ConfigError(f"loss = {loss!r}; expected one of {', '.join(LOSSES)}")
        if not adv_weight >= 0:
            raise ConfigError(f"adversarial weight {adv_weight}; expected a weight >= 0")
        if adv_weight > 0 and adversary is None:
            raise ConfigError(f"adversarial weight {adv_weight} without a discriminator; pass one (--adv DG_RUN)")
        self.loss_type = loss
        self.weights = loss_weights(schedule, times, max_weight, weighting, min_weight, baseline)
        self.times = torch.as_tensor(times, dtype=F64)
        self.adversary, self.adv_weight, self.adv_t_min = adversary, float(adv_weight), float(adv_t_min)
        if adversary is not None and isinstance(adversary, torch.nn.Module):
            adversary.requires_grad_(False).eval()  # frozen: only the student learns from it

    def adversarial(self, pred: torch.Tensor) -> torch.Tensor:
        """(B,) the mean over the decoded times t_m < 1 of softplus(-logit d(x̂_m, max(t_m, adv_t_min))):
        -log d, small where the discriminator takes the student's states for diffused real data."""
        keep = [m for m, t in enumerate(self.times.tolist()) if t < 1]
        B = pred.shape[0]
        xs = pred[:, keep].reshape(B * len(keep), *pred.shape[2:])
        t = self.times[keep].clamp_min(self.adv_t_min).repeat(B).to(device=pred.device, dtype=pred.dtype)
        logit = self.adversary(xs, t).reshape(B, len(keep))
        return torch.nn.functional.softplus(-logit.float()).mean(1)

    def loss(self, module, x, y, draws):
        pred = module(x)
        if pred.shape != y.shape:
            raise DataError(f"DSNO outputs {tuple(pred.shape)} but the trajectories are {tuple(y.shape)}")
        d = (pred.float() - y.float()).flatten(2)
        err = d.abs().mean(2) if self.loss_type == "l1" else d.pow(2).mean(2)  # (B, M)
        loss = (err * self.weights.to(err)).sum(1)
        logs = {"err_mean": err.detach().mean(), "err_final": err.detach()[:, -1].mean()}
        if self.adv_weight > 0:
            adv = self.adversarial(pred)
            loss = loss + self.adv_weight * adv
            logs["adv"] = adv.detach().mean()
        return loss, logs


def x_T_baseline(x_T: torch.Tensor, traj: torch.Tensor) -> torch.Tensor:
    """(M,) float64: the RMS error per time of the trivial predictor x(t_m) = x_T, i.e. how far the trajectories
    (N, M, ...) have moved from their start (N, ...) by each time."""
    return trajectory_error(x_T.unsqueeze(1).expand_as(traj), traj)


def trajectory_error(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Root-mean-square error per time, (M,) float64, of trajectories (N, M, ...) against (N, M, ...)."""
    if pred.shape != ref.shape:
        raise DataError(f"trajectory_error: shapes differ, {tuple(pred.shape)} vs {tuple(ref.shape)}")
    d = (pred.to(F64) - ref.to(F64)).transpose(0, 1).reshape(pred.shape[1], -1)
    return d.pow(2).mean(1).sqrt()
