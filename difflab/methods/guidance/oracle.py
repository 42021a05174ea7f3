"""The exact discriminator and classifier of the toy world, where every answer is known.

A "pre-trained" score model that is deliberately wrong, ``exact_mixture_model(wrong)`` for a
Gaussian mixture with the wrong weights and/or shifted means (:func:`wrong_mixture`), is
corrected towards the true mixture. Since both marginals are closed form, the optimal
discriminator is too:

    d*(x_t, t) = p_t(x) / (p_t(x) + q_t(x)),   logit d* = log p_t(x) - log q_t(x)

(:class:`MixtureLogRatio`), and with it the corrected score equals the true score exactly. The
exact noisy classifier of a mixture, with class = component, is p(k | x_t) = the responsibilities
(:class:`MixtureClassifier`); with it classifier guidance at w = 1 gives the component's score.
"""
from __future__ import annotations

import torch
from torch import nn

from difflab.process.toy import GaussianMixture

from difflab.process.schedules import F64


def _coefs(schedule, t: torch.Tensor):
    tc = torch.as_tensor(t).detach().to("cpu", F64).reshape(-1)
    return schedule.alpha(tc), schedule.sigma(tc)


class MixtureLogRatio(nn.Module):
    """The optimal discriminator's logit between two diffused mixtures, in closed form:
    ``forward(x, t) -> (B,)`` = log p_t(x) - log q_t(x), differentiable in x (computed in float64,
    returned in x's dtype). p is the data ("real"), q the model's samples ("generated")."""

    num_classes = None

    def __init__(self, real: GaussianMixture, generated: GaussianMixture, schedule):
        super().__init__()
        self.real, self.generated, self.schedule = real, generated, schedule

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        a, s = _coefs(self.schedule, t)
        xd = x.to(F64)
        return (self.real.log_prob(xd, a, s) - self.generated.log_prob(xd, a, s)).to(x.dtype)


class MixtureClassifier(nn.Module):
    """The exact noisy classifier of a mixture with class = component:
    ``forward(x, t) -> (B, K)`` logits log w_k + log N(x; α μ_k, α² Σ_k + σ² I), so that their
    softmax is the responsibilities p(k | x_t)."""

    def __init__(self, mixture: GaussianMixture, schedule):
        super().__init__()
        self.mixture, self.schedule = mixture, schedule
        covs = mixture.covs
        self.components = [GaussianMixture(mixture.means[k:k + 1], covs=covs[k:k + 1])
                           for k in range(mixture.num_components)]

    @property
    def num_classes(self) -> int:
        return self.mixture.num_components

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        a, s = _coefs(self.schedule, t)
        xd = x.to(F64)
        logn = torch.stack([c.log_prob(xd, a, s) for c in self.components], dim=1)
        return (logn + torch.log(self.mixture.weights)).to(x.dtype)


def wrong_mixture(true: GaussianMixture, kind: str = "weights", weight_ratio: float = 3.0,
                  shift: float = 0.1) -> GaussianMixture:
    """A deliberately wrong copy of ``true``: 'weights' alternates component weights in the ratio
    ``weight_ratio`` : 1; 'shift' moves every mean outwards by the factor 1 + ``shift``; 'both' does both."""
    if kind not in ("weights", "shift", "both"):
        raise ValueError(f"unknown wrong-score kind {kind!r}; expected 'weights', 'shift' or 'both'")
    K = true.num_components
    w = true.weights.clone()
    if kind in ("weights", "both"):
        w = w * torch.tensor([weight_ratio if k % 2 == 0 else 1.0 for k in range(K)], dtype=F64)
    means = true.means * (1.0 + shift) if kind in ("shift", "both") else true.means
    return GaussianMixture(means, covs=true.covs, weights=w)


__all__ = ["MixtureClassifier", "MixtureLogRatio", "wrong_mixture"]
