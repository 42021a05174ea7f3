"""The guidance wrappers: discriminator guidance (Kim et al., ICML 2023) and classifier guidance
(Dhariwal & Nichol 2021), both as ε' = ε - σ(t) w(t) ∇_x g(x_t, t, y).

For discriminator guidance g = logit d = log d/(1 - d); with the optimal discriminator
d* = p_t / (p_t + q_t) between diffused data p_t and diffused model samples q_t, ∇ logit d* =
∇ log (p_t / q_t), so the corrected score is the data score. For classifier guidance
g = log p(y | x_t, t) of a noisy classifier. Both are model wrappers: they work with every
sampler and stack with each other and with time-predictor sampling.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch
from torch import nn

from difflab.errors import DifflabError
from difflab.models import ModelWrapper, bcast

from difflab.process.schedules import F64


def takes_labels(model) -> bool:
    """Whether ``model(x, t, y)`` may be given labels: a wrapper says so itself (``takes_labels``),
    a network-backed model asks its network (``net.num_classes``), other wrappers ask their inner
    model; plain functions accept y. Guidance wrappers use it to keep the sampler's y (the
    guidance target) away from an unconditional network, which would refuse it."""
    flag = getattr(model, "takes_labels", None)
    if flag is not None:
        return bool(flag)
    net = getattr(model, "net", None)
    if net is not None and hasattr(net, "num_classes"):
        return net.num_classes is not None
    inner = getattr(model, "inner", None)
    return takes_labels(inner) if inner is not None else True


def _module_dtype(module: nn.Module, default: torch.dtype) -> torch.dtype:
    p = next(module.parameters(), None)
    return p.dtype if p is not None else default


class GradientGuidance(ModelWrapper):
    """Base of the guidance wrappers: ε' = ε - σ(t) w(t) ∇_x g(x_t, t, y) for a scalar
    function g per sample (:meth:`log_term`), i.e. score' = score + w ∇g.

    Args:
        model: the model to guide (any difflab model, or another wrapper).
        weight: a number, or a callable ``w(t)`` of the (B,) float64 times returning (B,) or a number.
        t_window: (t_lo, t_hi): guide only at times in [t_lo, t_hi].
        max_norm: clip ∇g per sample to this L2 norm (before the weight), or None.

    Where w = 0 or t lies outside the window, the inner output is returned untouched and g is
    never evaluated: a zero weight gives the unguided sampler bit for bit. The time used is the
    inner output's ``out.t`` (a time predictor below may have changed it), with σ of that time.
    Gradients are taken under ``torch.enable_grad()`` since samplers run under no_grad.
    ``num_guided`` counts the samples whose correction was computed.
    """

    def __init__(self, model, *, weight: float | Callable = 1.0, t_window: tuple[float, float] = (0.0, 1.0),
                 max_norm: float | None = None):
        super().__init__(model)
        lo, hi = (float(v) for v in t_window)
        if not 0.0 <= lo <= hi <= 1.0:
            raise DifflabError(f"t_window = {tuple(t_window)}; expected 0 <= t_lo <= t_hi <= 1")
        if max_norm is not None and not max_norm > 0:
            raise DifflabError(f"max_norm = {max_norm}; expected a positive number or None")
        self.weight, self.t_window, self.max_norm = weight, (lo, hi), max_norm
        self._inner_takes_labels = takes_labels(model)
        self.num_guided = 0

    # the sampler's y is (or may be) the guidance target; the inner model gets it only if it takes labels
    takes_labels = True

    def log_term(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """g(x, t, y) per sample, (B,), differentiable in x."""
        raise NotImplementedError

    def grad_dtype(self, x: torch.Tensor) -> torch.dtype:
        return x.dtype

    def guide_labels(self, y: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
        """The (B,) labels :meth:`log_term` sees (default: the sampler's y)."""
        return y

    def correction(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """∇_x g(x, t, y), (B, ...) in x's dtype (unweighted, unclipped); t (B,) float64."""
        with torch.enable_grad():
            xg = x.detach().to(self.grad_dtype(x)).requires_grad_(True)
            g = self.log_term(xg, t, y)
            (grad,) = torch.autograd.grad(g.sum(), xg)  # rows are independent: the sum's gradient is per-row
        return grad.to(x.dtype)

    def _weights(self, t: torch.Tensor) -> torch.Tensor:
        w = self.weight(t) if callable(self.weight) else self.weight
        return torch.as_tensor(w, dtype=F64).reshape(-1).expand(t.shape[0])

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None):
        out = self.inner(x, t, y if self._inner_takes_labels else None)
        B = x.shape[0]
        tc = out.t.detach().to("cpu", F64).reshape(-1).expand(B)
        w = self._weights(tc)
        lo, hi = self.t_window
        active = (w != 0) & (tc >= lo) & (tc <= hi)
        if not bool(active.any()):
            return out
        every = bool(active.all())
        idx = None if every else active.nonzero().squeeze(1).to(x.device)
        pick = (lambda v: v) if every else (lambda v: None if v is None else v[idx])
        xs, ys = pick(x), pick(self.guide_labels(y, x))
        ts = tc if every else tc[active]
        grad = self.correction(xs, ts, ys)
        self.num_guided += xs.shape[0]
        if self.max_norm is not None:
            norm = grad.flatten(1).norm(dim=1)
            grad = grad * bcast((self.max_norm / norm).clamp(max=1.0), grad)
        sw = self.schedule.sigma(ts) * (w if every else w[active])
        delta = bcast(sw, grad) * grad
        if every:
            eps = out.eps - delta
        else:
            eps = out.eps.clone()
            eps[idx] = eps[idx] - delta
        return replace(out, eps=eps)


class DiscriminatorGuidance(GradientGuidance):
    """Discriminator guidance: ε' = ε - σ(t) w(t) ∇_x logit d(x_t, t[, y]).

    ``discriminator(x, t, y) -> (B,)`` returns the logit log d/(1 - d) itself (not d), which is
    how it stays stable where d saturates. A class-conditional discriminator (``num_classes``
    set) is given the sampler's y. With the optimal discriminator and w = 1 the corrected score
    is the data score. See :class:`GradientGuidance` for weight, t_window and max_norm.
    """

    def __init__(self, model, discriminator: nn.Module, *, weight: float | Callable = 1.0,
                 t_window: tuple[float, float] = (0.0, 1.0), max_norm: float | None = None):
        super().__init__(model, weight=weight, t_window=t_window, max_norm=max_norm)
        self.discriminator = discriminator

    def grad_dtype(self, x):
        return _module_dtype(self.discriminator, x.dtype)

    def log_term(self, x, t, y):
        conditional = getattr(self.discriminator, "num_classes", None) is not None
        if conditional and y is None:
            raise DifflabError("this discriminator is class-conditional: sample with labels y (e.g. --label)")
        return self.discriminator(x, t.to(x.device), y if conditional else None)


class ClassifierGuidance(GradientGuidance):
    """Classifier guidance: ε' = ε - σ(t) w(t) ∇_x log p(y | x_t, t).

    ``classifier(x, t) -> (B, K)`` logits of a noisy classifier. The target class is the
    sampler's y, or ``target`` (an int or (B,) labels) when the sampler passes none. The sampler's
    y also reaches the inner model when that model takes labels (a class-conditional model).
    """

    def __init__(self, model, classifier: nn.Module, *, weight: float | Callable = 1.0,
                 t_window: tuple[float, float] = (0.0, 1.0), max_norm: float | None = None, target=None):
        super().__init__(model, weight=weight, t_window=t_window, max_norm=max_norm)
        self.classifier = classifier
        self.target = target

    def grad_dtype(self, x):
        return _module_dtype(self.classifier, x.dtype)

    def guide_labels(self, y, x):
        if y is not None or self.target is None:
            return y
        return torch.as_tensor(self.target, dtype=torch.long, device=x.device).reshape(-1).expand(x.shape[0])

    def log_term(self, x, t, y):
        if y is None:
            raise DifflabError("classifier guidance needs a target class: pass y to the sampler or target=...")
        logp = torch.log_softmax(self.classifier(x, t.to(x.device)), dim=1)
        return logp.gather(1, y.to(x.device).long().reshape(-1, 1)).squeeze(1)


__all__ = ["ClassifierGuidance", "DiscriminatorGuidance", "GradientGuidance", "takes_labels"]
