"""Discriminator guidance (Kim et al., ICML 2023) and classifier guidance (Dhariwal & Nichol 2021).

A trained score model s_θ whose error no further score training reduces is corrected with the
gradient of a density ratio. With p_t the diffused data and q_t the diffused model samples,

    ∇ log p_t = s_θ + ∇ log (p_t / q_t),     p_t / q_t = d*/(1 - d*),  d* = p_t / (p_t + q_t),

where d* is the optimal discriminator between diffused real data and diffused model samples.
A trained discriminator d_φ gives the correction c_φ = ∇_x logit d_φ(x_t, t), and in ε form

    ε' = ε - σ(t) w(t) ∇_x logit d_φ(x_t, t)        (score' = score + w ∇ logit).

Classifier guidance is the same construction with log p(y | x_t, t) of a noisy classifier in
place of the logit; the paper's joint sampler stacks both wrappers (the discriminator may be
class-conditional, d(x_t, t, y)). Both are model wrappers, so they work with every sampler and
stack with each other and with time-predictor sampling.

Pieces (the toy world's exact discriminator and classifier are in :mod:`.guidance_toy`, the
sample bank in :mod:`.guidance_bank`, the CLI and quickstart section in :mod:`.guidance_cli`)::

    bank = load_bank(generate_bank(model, "ddim", 50, n, "bank", shape=(2,)))
    disc = Discriminator.build((2,))
    train_discriminator(model, real_x, bank, "runs/dg", discriminator=disc)   # BCE on (x_t, t)
    guided = DiscriminatorGuidance(model, load_discriminator("runs/dg"), weight=1.0)
    sample(guided, (n, 2), sampler="ancestral", steps=1000)
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from difflab.errors import CheckpointError, DataError, DifflabError
from difflab.methods.guidance_bank import Bank, generate_bank, load_bank
from difflab.models import ModelWrapper, bcast
from difflab.nets import Encoder, MLPEncoder
from difflab.train.objectives import Objective, randn_like_from

F64 = torch.float64
T_SAMPLING = ("uniform", "log_snr")
EVAL_FILE = "t_bins.json"


# ----------------------------------------------------------------------------------- small helpers
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


def _toml_safe(v: Any) -> Any:
    """Config values as TOML can store them: None dropped, tuples as lists, classes by name."""
    if isinstance(v, dict):
        return {str(k): _toml_safe(x) for k, x in v.items() if x is not None}
    if isinstance(v, (list, tuple)):
        return [_toml_safe(x) for x in v]
    if isinstance(v, type):
        return v.__name__.lower()
    return v


def _module_dtype(module: nn.Module, default: torch.dtype) -> torch.dtype:
    p = next(module.parameters(), None)
    return p.dtype if p is not None else default


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
    tc = t.detach().to("cpu", F64)
    return bcast(schedule.alpha(tc), x0) * x0 + bcast(schedule.sigma(tc), x0) * noise


# ----------------------------------------------------------------------------------- networks
def make_encoder(data_shape, out_dim: int, *, num_classes: int | None = None, **options) -> nn.Module:
    """A time-conditional encoder with ``out_dim`` outputs for samples of per-sample shape
    ``data_shape``: :class:`MLPEncoder` for vectors (D,), :class:`Encoder` for images (C, H, H).
    ``options`` override the defaults (small nets: a discriminator saturates in a few epochs)."""
    shape = tuple(int(s) for s in data_shape)
    if len(shape) == 1:
        kw = dict(dim=shape[0], hidden=128, depth=3, out_dim=out_dim, time_conditional=True, num_classes=num_classes)
        return MLPEncoder(**{**kw, **options})
    if len(shape) == 3 and shape[1] == shape[2]:
        c, h, _ = shape
        kw = dict(in_channels=c, image_size=h, base_channels=32, channel_mult=(1, 2, 2) if h >= 16 else (1, 2),
                  num_res_blocks=1, attention_resolutions=(), out_dim=out_dim, time_conditional=True,
                  num_classes=num_classes)
        return Encoder(**{**kw, **options})
    raise DataError(f"no encoder for samples of shape {shape}; expected vectors (D,) or square images (C, H, H)")


def net_spec(net: nn.Module) -> dict:
    """{'kind': 'mlp' | 'encoder', 'net': constructor arguments} of an MLPEncoder or Encoder."""
    if isinstance(net, MLPEncoder):
        return {"kind": "mlp", "net": _toml_safe(net.config)}
    if isinstance(net, Encoder):
        return {"kind": "encoder", "net": _toml_safe(net.config)}
    raise DifflabError(f"cannot describe a {type(net).__name__} for a checkpoint; expected an MLPEncoder or Encoder")


def net_from_spec(spec: dict) -> nn.Module:
    kinds = {"mlp": MLPEncoder, "encoder": Encoder}
    if spec.get("kind") not in kinds:
        raise CheckpointError(f"unknown network kind {spec.get('kind')!r} in checkpoint; expected 'mlp' or 'encoder'")
    return kinds[spec["kind"]](**spec["net"])


class Discriminator(nn.Module):
    """d(x_t, t[, y]) as its logit: ``forward(x, t, y=None) -> (B,)`` = log d/(1 - d).

    Args:
        net: a time-conditional network with one output (``MLPEncoder`` / ``Encoder``, out_dim 1);
            with ``num_classes`` set it is the class-conditional d(x_t, t, y).
        extractor: optional frozen feature network with ``.features(x, t) -> (B, F)`` (e.g. the
            Encoder of a noisy classifier trained by difflab). Then ``net`` is a small head on
            (features, t), the only part that trains (the paper's pixel-space setup, with ADM's
            classifier as the extractor). Gradients still flow through it to x.

    Build one with :meth:`build`; :meth:`spec` / :meth:`from_spec` describe it in a checkpoint.
    """

    def __init__(self, net: nn.Module, extractor: nn.Module | None = None):
        super().__init__()
        if isinstance(extractor, NoisyClassifier):
            extractor = extractor.net  # its encoder: the head needs only the features
        self.net = net
        self.extractor = extractor
        if extractor is not None:
            extractor.requires_grad_(False).eval()

    @classmethod
    def build(cls, data_shape, *, num_classes: int | None = None, extractor: nn.Module | None = None,
              **options) -> "Discriminator":
        """The default discriminator for ``data_shape``; with an extractor, an MLP head on its features."""
        if extractor is not None:
            head = dict(hidden=128, depth=2, **options)
            return cls(make_encoder((extractor.feature_dim,), 1, num_classes=num_classes, **head), extractor)
        return cls(make_encoder(data_shape, 1, num_classes=num_classes, **options))

    @property
    def num_classes(self) -> int | None:
        return self.net.num_classes

    def train(self, mode: bool = True):
        super().train(mode)
        if self.extractor is not None:  # frozen: its dropout stays off while the head trains
            self.extractor.eval()
        return self

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, ...), t (B,) float, y (B,) int64 or None -> logits (B,)."""
        h = x if self.extractor is None else self.extractor.features(x, t)
        return self.net(h, t, y).squeeze(-1)

    def spec(self) -> dict:
        s = net_spec(self.net)
        if self.extractor is not None:
            s["extractor"] = net_spec(self.extractor)
        return s

    @classmethod
    def from_spec(cls, spec: dict) -> "Discriminator":
        ext = net_from_spec(spec["extractor"]) if "extractor" in spec else None
        return cls(net_from_spec(spec), ext)


class NoisyClassifier(nn.Module):
    """p(y | x_t, t): ``forward(x, t) -> (B, K)`` logits of a time-conditional encoder with K
    outputs. ``features(x, t)`` exposes the encoder's pooled features, so a trained noisy
    classifier can serve as a discriminator's frozen extractor."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    @classmethod
    def build(cls, data_shape, num_classes: int, **options) -> "NoisyClassifier":
        return cls(make_encoder(data_shape, num_classes, **options))

    @property
    def num_classes(self) -> int:
        return self.net.out_dim

    @property
    def feature_dim(self) -> int:
        return self.net.feature_dim

    def features(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net.features(x, t)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, ...), t (B,) -> (B, K) logits (y is ignored: the classifier predicts it)."""
        return self.net(x, t)

    def spec(self) -> dict:
        return net_spec(self.net)

    @classmethod
    def from_spec(cls, spec: dict) -> "NoisyClassifier":
        return cls(net_from_spec(spec))


# ----------------------------------------------------------------------------------- wrappers
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


# ----------------------------------------------------------------------------------- objectives
def discriminator_dataset(real: torch.Tensor, fake: torch.Tensor, real_labels: torch.Tensor | None = None,
                          fake_labels: torch.Tensor | None = None, name: str = "dg"):
    """An ArrayDataset of real (N_r, ...) and generated (N_f, ...) samples for the trainer.

    Its y packs both targets in one integer, y = is_real + 2·class (class 0 when unconditional),
    so the in-memory fast path of the trainer carries them; :class:`DiscriminatorObjective`
    unpacks it.
    """
    from difflab.data import ArrayDataset

    if real.shape[1:] != fake.shape[1:]:
        raise DataError(f"real samples {tuple(real.shape[1:])} and generated samples {tuple(fake.shape[1:])} "
                        "differ in shape; the bank must come from a model of this data")
    if (real_labels is None) != (fake_labels is None):
        raise DataError("a class-conditional discriminator needs labels for both the real data and the bank")
    is_real = torch.cat([torch.ones(len(real), dtype=torch.long), torch.zeros(len(fake), dtype=torch.long)])
    cls = torch.cat([real_labels.long(), fake_labels.long()]) if real_labels is not None else torch.zeros_like(is_real)
    return ArrayDataset(torch.cat([real.float(), fake.float()]), is_real + 2 * cls, name=name)


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
        if t_sampling not in T_SAMPLING:
            raise DifflabError(f"unknown t sampling {t_sampling!r}; expected one of {', '.join(T_SAMPLING)}")
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
        if t_sampling not in T_SAMPLING:
            raise DifflabError(f"unknown t sampling {t_sampling!r}; expected one of {', '.join(T_SAMPLING)}")
        self.schedule, self.t_min, self.t_sampling = schedule, float(t_min), t_sampling

    def draw(self, x, y, gen):
        return {"t": sample_times(x.shape[0], gen, self.schedule, self.t_min, self.t_sampling).to(x.device),
                "noise": randn_like_from(x, gen)}

    def loss(self, module, x, y, draws):
        logits = module(diffuse(self.schedule, x, draws["t"], draws["noise"]), draws["t"])
        ce = F.cross_entropy(logits, y, reduction="none")
        return ce, {"ce": ce.detach().mean(), "acc": (logits.argmax(1) == y).float().mean()}


# ----------------------------------------------------------------------------------- evaluation by t
@torch.no_grad()
def evaluate_by_t(module: nn.Module, schedule, x: torch.Tensor, target: torch.Tensor, *, kind: str = "discriminator",
                  classes: torch.Tensor | None = None, bins: int = 10, t_min: float = 1e-3, seed: int = 0,
                  batch_size: int = 2048) -> dict:
    """Accuracy and loss of a discriminator or noisy classifier per band of t, on held-out samples.

    x (N, ...) clean samples; target (N,) is_real in {0, 1} (discriminator) or the class (classifier);
    classes (N,) the class input of a class-conditional discriminator. Band b covers
    [t_b, t_{b+1}] of ``bins`` equal bands of [t_min, 1]; every sample is diffused once per band at
    a time uniform in it, with noise fixed by ``seed``. For a discriminator, accuracy and BCE are
    balanced (the mean of the real and the generated halves). Returns dict(bins=[{t_lo, t_hi,
    acc, loss}], acc, loss) with plain floats.
    """
    was = module.training
    module.eval()
    dev = next(module.parameters(), x).device
    g = torch.Generator().manual_seed(seed)
    edges = torch.linspace(t_min, 1.0, bins + 1, dtype=F64)
    rows = []
    for b in range(bins):
        t = edges[b] + (edges[b + 1] - edges[b]) * torch.rand(len(x), generator=g, dtype=F64)
        noise = torch.randn(x.shape, generator=g, dtype=x.dtype)
        outs = []
        for lo in range(0, len(x), batch_size):
            sl = slice(lo, lo + batch_size)
            xt = diffuse(schedule, x[sl], t[sl], noise[sl]).to(dev)
            if kind == "discriminator":
                outs.append(module(xt, t[sl].to(dev), None if classes is None else classes[sl].to(dev)).float().cpu())
            else:
                outs.append(module(xt, t[sl].to(dev)).float().cpu())
        out = torch.cat(outs)
        if kind == "discriminator":
            real = target.bool()
            bce = F.binary_cross_entropy_with_logits(out, target.float(), reduction="none")
            correct = ((out > 0) == real).float()
            acc = 0.5 * float(correct[real].mean() + correct[~real].mean())
            loss = 0.5 * float(bce[real].mean() + bce[~real].mean())
        else:
            acc = float((out.argmax(1) == target).float().mean())
            loss = float(F.cross_entropy(out, target.long()))
        rows.append({"t_lo": float(edges[b]), "t_hi": float(edges[b + 1]), "acc": acc, "loss": loss})
    module.train(was)
    return {"bins": rows, "acc": sum(r["acc"] for r in rows) / bins, "loss": sum(r["loss"] for r in rows) / bins}


def _append_eval(path: Path, record: dict) -> None:
    """Add one epoch's table to the JSON list at ``path`` (records of this step or later, left by
    a killed run being resumed, are replaced)."""
    recs = json.loads(path.read_text()) if path.is_file() else []
    recs = [r for r in recs if r["step"] < record["step"]] + [record]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(recs, indent=1) + "\n")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------- training
def _split(n: int, holdout: float, seed: int, max_eval: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, held-out indices) of a seeded permutation; the held-out part has at most max_eval."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = min(int(round(holdout * n)), max_eval) if holdout > 0 else 0
    return perm[k:].sort().values, perm[:k].sort().values


def _train_config(tcfg, steps, batch_size, lr, seed, every, device):
    from difflab.config import TrainConfig

    if tcfg is None:
        tcfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=min(50, max(steps // 10, 1)),
                           lr_schedule="cosine", ema_rate=0.99, seed=seed, keep_ckpts=0, log_every=25, device=device)
    return dataclasses.replace(tcfg, ckpt_every=every, sample_every=every)


def _fit(module, objective, dataset, tcfg, run_dir, config, *, kind, eval_fn, progress, resume, tensorboard, extra):
    from difflab.train.loop import Trainer

    trainer = Trainer(module, objective, dataset, tcfg, run_dir, _toml_safe(config), kind=kind, sample_fn=eval_fn,
                      progress=progress, resume=resume, extra=extra, tensorboard=tensorboard)
    return trainer.fit()


def train_discriminator(model, real, fake, run_dir: str | os.PathLike, *, discriminator: Discriminator | None = None,
                        real_labels: torch.Tensor | None = None, fake_labels: torch.Tensor | None = None,
                        steps: int = 1000, batch_size: int = 256, lr: float = 1e-3, t_min: float = 1e-3,
                        t_sampling: str = "log_snr", holdout: float = 0.1, max_eval: int = 2000, t_bins: int = 10,
                        every: int | None = None, seed: int = 0, tcfg=None, device: str = "auto",
                        progress: bool = True, resume: bool = False, tensorboard: bool = True,
                        source: str = "") -> dict:
    """Train a discriminator between diffused real data and diffused model samples.

    Args:
        model: the diffusion model (or its schedule): x_t follows its forward process.
        real: (N_r, ...) real samples, or an ArrayDataset (its y become real_labels when the
            discriminator is class-conditional).
        fake: (N_f, ...) generated samples, or a :class:`Bank` (its y likewise).
        discriminator: default :meth:`Discriminator.build` for the data's shape.
        steps, batch_size, lr, seed: the run (AdamW, warm-up, cosine decay, EMA 0.99), or a full ``tcfg``.
        t_min, t_sampling: training times, see :func:`sample_times`. The default 'log_snr' puts
            half the draws where the diffused sets still differ (on toy:ring8, t < 0.2 of the
            linear schedule). Measured there with a 128x3 MLP: uniform t, 600 steps, held-out
            accuracy 0.50 at every t; 'log_snr', 1000 steps, 0.62 at t < 0.1 (the optimum is 0.625).
        holdout, max_eval, t_bins: a held-out fraction of both sets (at most max_eval each) is
            scored per band of t after every ``every`` steps (default one epoch) into
            ``run_dir/t_bins.json``; a checkpoint is kept at each of those steps, so the epoch
            can be picked from the table (the paper's discriminator saturates within epochs).

    Returns dict(final_step, last_loss, checkpoint, steps_per_epoch, table (path), last_eval).
    """
    schedule = getattr(model, "schedule", model)
    if hasattr(real, "x"):
        real_labels = real.y if real_labels is None else real_labels
        real = real.x
    if isinstance(fake, Bank):
        fake_labels = fake.y if fake_labels is None else fake_labels
        fake = fake.x
    disc = discriminator or Discriminator.build(real.shape[1:])
    num_classes = disc.num_classes
    if num_classes is None:
        real_labels = fake_labels = None
    elif real_labels is None or fake_labels is None:
        raise DataError("a class-conditional discriminator needs labels for the real data and the bank "
                        "(a bank of a class-conditional model stores them)")
    rtr, rev = _split(len(real), holdout, seed, max_eval)
    ftr, fev = _split(len(fake), holdout, seed + 1, max_eval)
    pick = (lambda v, i: None if v is None else v[i])
    ds = discriminator_dataset(real[rtr], fake[ftr], pick(real_labels, rtr), pick(fake_labels, ftr))
    n_r, n_f = len(rtr), len(ftr)
    objective = DiscriminatorObjective(schedule, t_min=t_min, t_sampling=t_sampling, num_classes=num_classes,
                                       real_weight=(n_r + n_f) / (2 * n_r), fake_weight=(n_r + n_f) / (2 * n_f))
    steps_per_epoch = max(1, math.ceil(len(ds) / (tcfg.batch_size if tcfg else batch_size)))
    tcfg = _train_config(tcfg, steps, batch_size, lr, seed, every or steps_per_epoch, device)
    run_dir = Path(run_dir)
    eval_x = torch.cat([real[rev], fake[fev]]).float()
    eval_target = torch.cat([torch.ones(len(rev)), torch.zeros(len(fev))])
    eval_cls = torch.cat([real_labels[rev], fake_labels[fev]]).long() if num_classes is not None else None

    def eval_fn(module, step, rdir):
        if len(rev) == 0 or len(fev) == 0:
            return
        rec = evaluate_by_t(module, schedule, eval_x, eval_target, classes=eval_cls, bins=t_bins, t_min=t_min)
        _append_eval(Path(rdir) / EVAL_FILE, {"step": step, "epoch": step / steps_per_epoch, **rec})

    config = {"method": "discriminator-guidance", "discriminator": disc.spec(),
              "objective": {"t_min": t_min, "t_sampling": t_sampling, "num_classes": num_classes},
              "data": {"n_real": n_r, "n_fake": n_f, "n_eval_real": len(rev), "n_eval_fake": len(fev),
                       "shape": list(real.shape[1:]), "source": source},
              "schedule": repr(schedule), "train": dataclasses.asdict(tcfg)}
    res = _fit(disc, objective, ds, tcfg, run_dir, config, kind="discriminator", eval_fn=eval_fn, progress=progress,
               resume=resume, tensorboard=tensorboard, extra={"data_shape": list(real.shape[1:])})
    table = run_dir / EVAL_FILE
    last = json.loads(table.read_text())[-1] if table.is_file() else None
    return {**res, "steps_per_epoch": steps_per_epoch, "table": str(table), "last_eval": last}


def train_classifier(model, data, run_dir: str | os.PathLike, *, classifier: NoisyClassifier | None = None,
                     labels: torch.Tensor | None = None, steps: int = 2000, batch_size: int = 256, lr: float = 1e-3,
                     t_min: float = 1e-3, t_sampling: str = "uniform", holdout: float = 0.1, max_eval: int = 2000,
                     t_bins: int = 10, every: int | None = None, seed: int = 0, tcfg=None, device: str = "auto",
                     progress: bool = True, resume: bool = False, tensorboard: bool = True) -> dict:
    """Train a noisy classifier p(y | x_t, t) on labelled data (an ArrayDataset, or x with ``labels``)
    diffused by the model's forward process; the held-out accuracy per band of t goes to
    ``run_dir/t_bins.json`` as for :func:`train_discriminator`."""
    from difflab.data import ArrayDataset

    schedule = getattr(model, "schedule", model)
    x, y = (data.x, data.y if labels is None else labels) if hasattr(data, "x") else (data, labels)
    if y is None:
        raise DataError("a noisy classifier needs labelled data; this dataset has no labels")
    num_classes = int(getattr(data, "num_classes", None) or int(y.max()) + 1)
    clf = classifier or NoisyClassifier.build(x.shape[1:], num_classes)
    tr, ev = _split(len(x), holdout, seed, max_eval)
    ds = ArrayDataset(x[tr], y[tr], name="classifier")
    steps_per_epoch = max(1, math.ceil(len(ds) / (tcfg.batch_size if tcfg else batch_size)))
    tcfg = _train_config(tcfg, steps, batch_size, lr, seed, every or steps_per_epoch, device)

    def eval_fn(module, step, rdir):
        if len(ev):
            rec = evaluate_by_t(module, schedule, x[ev].float(), y[ev], kind="classifier", bins=t_bins, t_min=t_min)
            _append_eval(Path(rdir) / EVAL_FILE, {"step": step, "epoch": step / steps_per_epoch, **rec})

    config = {"method": "noisy-classifier", "classifier": clf.spec(),
              "objective": {"t_min": t_min, "t_sampling": t_sampling, "num_classes": num_classes},
              "data": {"n_train": len(tr), "n_eval": len(ev), "shape": list(x.shape[1:])},
              "schedule": repr(schedule), "train": dataclasses.asdict(tcfg)}
    res = _fit(clf, ClassifierObjective(schedule, t_min=t_min, t_sampling=t_sampling), ds, tcfg, Path(run_dir), config,
               kind="classifier", eval_fn=eval_fn, progress=progress, resume=resume, tensorboard=tensorboard,
               extra={"data_shape": list(x.shape[1:]), "num_classes": num_classes})
    table = Path(run_dir) / EVAL_FILE
    return {**res, "steps_per_epoch": steps_per_epoch, "table": str(table),
            "last_eval": json.loads(table.read_text())[-1] if table.is_file() else None}


def _load(path, kind: str, key: str, cls, use_ema: bool, map_location):
    from difflab.train.checkpoint import check_state_dict_compatible, load_checkpoint

    ckpt = load_checkpoint(path, map_location="cpu", expect_kind=kind)
    spec = (ckpt.config or {}).get(key)
    if not spec:
        raise CheckpointError(f"checkpoint {ckpt.path} records no [{key}] network description; "
                              f"expected one written by difflab's {kind} training")
    module = cls.from_spec(spec)
    state = ckpt.ema_state if use_ema and ckpt.ema_state is not None else ckpt.model_state
    check_state_dict_compatible(module, state, f"checkpoint {ckpt.path}")
    module.load_state_dict(state)
    return module.to(map_location).eval()


def load_discriminator(path: str | os.PathLike, *, use_ema: bool = True, map_location="cpu") -> Discriminator:
    """A trained discriminator (run dir, checkpoint dir) in eval mode; EMA weights by default."""
    return _load(path, "discriminator", "discriminator", Discriminator, use_ema, map_location)


def load_classifier(path: str | os.PathLike, *, use_ema: bool = True, map_location="cpu") -> NoisyClassifier:
    """A trained noisy classifier (run dir, checkpoint dir) in eval mode; EMA weights by default."""
    return _load(path, "classifier", "classifier", NoisyClassifier, use_ema, map_location)


def checkpoints_by_step(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """[(step, checkpoint dir)] of a run, ascending: the per-epoch discriminators to choose from."""
    root = Path(run_dir) / "checkpoints"
    out = []
    for p in root.glob("step-*"):
        if p.is_dir() and p.name[5:].isdigit():
            out.append((int(p.name[5:]), p))
    return sorted(out)


def register(subparsers) -> dict:
    """CLI commands dg-bank, dg-train, dg-sample, cg-train (see :mod:`.guidance_cli`)."""
    from difflab.methods.guidance_cli import register as _register

    return _register(subparsers)


def demo_section(out, toy_model, toy_cfg, digits_model, digits_cfg, progress: bool = False) -> list[str]:
    """The quickstart's discriminator-guidance section (see :func:`.guidance_cli.demo_section`)."""
    from difflab.methods.guidance_cli import demo_section as _demo

    return _demo(out, toy_model, toy_cfg, digits_model, digits_cfg, progress)


def toy_experiment(**kwargs) -> dict:
    """The 2-D toy experiment (see :func:`.guidance_toy.toy_experiment`)."""
    from difflab.methods.guidance_toy import toy_experiment as _toy

    return _toy(**kwargs)


__all__ = ["Bank", "ClassifierGuidance", "ClassifierObjective", "Discriminator", "DiscriminatorGuidance",
           "DiscriminatorObjective", "GradientGuidance", "NoisyClassifier", "checkpoints_by_step", "demo_section",
           "diffuse", "discriminator_dataset", "evaluate_by_t", "generate_bank", "load_bank", "load_classifier",
           "load_discriminator", "make_encoder", "register", "sample_times", "takes_labels", "toy_experiment",
           "train_classifier", "train_discriminator"]
