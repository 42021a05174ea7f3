"""The training objectives of discriminator and classifier guidance.

The discriminator is trained by BCE on diffused real data (label 1) and diffused model samples
(label 0): its optimum is d* = p_t / (p_t + q_t) at every t, the density ratio the correction
needs. The noisy classifier is trained by cross-entropy on diffused labelled data.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from difflab.data import ArrayDataset
from difflab.errors import DataError, DifflabError
from difflab.train.objectives import Objective, randn_like_from

from difflab.process.schedules import F64
T_SAMPLING = ("uniform", "log_snr")


def sample_times(n: int, gen: torch.Generator, schedule, t_min: float, how: str = "uniform") -> torch.Tensor:
    """(n,) float64 training times in [t_min, 1] from ``gen``.

    'uniform' is uniform in t; 'log_snr' is uniform in the log-SNR λ(t), i.e. density ∝ -dλ/dt =
    β(t)/σ²(t): the likelihood weighting of the VP-SDE drawn as importance sampling (it puts
    more draws at small t, where the samples' fine detail lives). The optimal discriminator at
    each t does not depend on how often t is drawn, so no loss reweighting is needed.
    """
    u = torch.rand(n, generator=gen, dtype=F64, device=gen.device).cpu()
    if how == "uniform":
        return t_min + (1.0 - t_min) * u
    if how == "log_snr":
        hi, lo = schedule.log_snr(torch.tensor(t_min, dtype=F64)), schedule.log_snr(torch.tensor(1.0, dtype=F64))
        return schedule.t_from_log_snr(lo + u * (hi - lo)).clamp(t_min, 1.0)
    raise DifflabError(f"unknown t sampling {how!r}; expected one of {', '.join(T_SAMPLING)}")


def diffuse(schedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_t = α(t) x0 + σ(t) ε with α, σ of the model's forward process; t (B,) float64."""
    return schedule.perturb(x0, t, noise)


def discriminator_dataset(real: torch.Tensor, fake: torch.Tensor, real_labels: torch.Tensor | None = None,
                          fake_labels: torch.Tensor | None = None, name: str = "dg") -> ArrayDataset:
    """An ArrayDataset of real (N_r, ...) and generated (N_f, ...) samples for the trainer.

    Its y packs both targets in one integer, y = is_real + 2·class (class 0 when unconditional),
    so the in-memory fast path of the trainer carries them; :class:`DiscriminatorObjective`
    unpacks it.
    """
    if real.shape[1:] != fake.shape[1:]:
        raise DataError(f"real samples {tuple(real.shape[1:])} and generated samples {tuple(fake.shape[1:])} "
                        "differ in shape; the bank must come from a model of this data")
    if (real_labels is None) != (fake_labels is None):
        raise DataError("a class-conditional discriminator needs labels for both the real data and the bank")
    is_real = torch.cat([torch.ones(len(real), dtype=torch.long), torch.zeros(len(fake), dtype=torch.long)])
    cls = torch.cat([real_labels.long(), fake_labels.long()]) if real_labels is not None else torch.zeros_like(is_real)
    return ArrayDataset(torch.cat([real.float(), fake.float()]), is_real + 2 * cls, name=name)


def _check_t_sampling(t_sampling: str) -> None:
    if t_sampling not in T_SAMPLING:
        raise DifflabError(f"unknown t sampling {t_sampling!r}; expected one of {', '.join(T_SAMPLING)}")


class DiscriminatorObjective(Objective):
    """BCE-with-logits of d(x_t, t[, class]) on diffused real (label 1) and generated (label 0) samples.

    draws: ``t`` (B,) float64 in [t_min, 1] ('uniform' or 'log_snr', see :func:`sample_times`),
    ``noise`` like x. The batch's y is :func:`discriminator_dataset`'s packed label. loss: (B,)
    per-sample BCE times the class weight (``real_weight`` / ``fake_weight``; with N/(2 N_class)
    each set counts equally whatever the sizes, so the optimum stays d* = p/(p + q)).
    logs: bce, acc (logit > 0 on real, < 0 on generated).
    """

    kind = "discriminator"

    def __init__(self, schedule, *, t_min: float = 1e-3, t_sampling: str = "uniform", num_classes: int | None = None,
                 real_weight: float = 1.0, fake_weight: float = 1.0):
        _check_t_sampling(t_sampling)
        self.schedule, self.t_min, self.t_sampling = schedule, float(t_min), t_sampling
        self.num_classes, self.real_weight, self.fake_weight = num_classes, float(real_weight), float(fake_weight)

    def draw(self, x, y, gen):
        return {"t": sample_times(x.shape[0], gen, self.schedule, self.t_min, self.t_sampling).to(x.device),
                "noise": randn_like_from(x, gen)}

    def loss(self, module, x, y, draws):
        is_real = (y % 2).to(x.dtype)
        cls = (y // 2) if self.num_classes is not None else None
        logit = module(diffuse(self.schedule, x, draws["t"], draws["noise"]), draws["t"], cls)
        bce = F.binary_cross_entropy_with_logits(logit, is_real, reduction="none")
        w = torch.where(is_real > 0, self.real_weight, self.fake_weight).to(bce.dtype)
        acc = ((logit > 0).to(x.dtype) == is_real).float().mean()
        return w * bce, {"bce": bce.detach().mean(), "acc": acc}


class ClassifierObjective(Objective):
    """Cross-entropy of a noisy classifier p(y | x_t, t) on diffused labelled data.

    draws: ``t`` (B,) float64 in [t_min, 1], ``noise`` like x. loss: (B,) CE. logs: ce, acc.
    """

    kind = "classifier"

    def __init__(self, schedule, *, t_min: float = 1e-3, t_sampling: str = "uniform"):
        _check_t_sampling(t_sampling)
        self.schedule, self.t_min, self.t_sampling = schedule, float(t_min), t_sampling

    def draw(self, x, y, gen):
        return {"t": sample_times(x.shape[0], gen, self.schedule, self.t_min, self.t_sampling).to(x.device),
                "noise": randn_like_from(x, gen)}

    def loss(self, module, x, y, draws):
        logits = module(diffuse(self.schedule, x, draws["t"], draws["noise"]), draws["t"])
        ce = F.cross_entropy(logits, y, reduction="none")
        return ce, {"ce": ce.detach().mean(), "acc": (logits.argmax(1) == y).float().mean()}


__all__ = ["T_SAMPLING", "ClassifierObjective", "DiscriminatorObjective", "diffuse", "discriminator_dataset",
           "sample_times"]
