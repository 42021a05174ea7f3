"""difflab's own feature space for the MNIST family: a small CNN classifier and the metrics on it.

The standard FID uses the 2015 Inception network (see difflab.metrics.inception). For 28×28
grayscale digits and clothes a classifier trained on the data itself is the more sensitive and
far cheaper feature extractor, but its numbers are NOT comparable with Inception FID: every
result here carries ``feature_space="difflab-<dataset>"`` to say so.

Weights ship in the package as ``difflab/weights/evaluator-<name>.safetensors`` (made by
scripts/train_evaluator.py; the recipe is in recipes/evaluator.md). Reference statistics of the
real data are computed once and cached as .npz under ``$DIFFLAB_CACHE/ref`` (default
``~/.cache/difflab/ref``), keyed by the weights' sha256 so new weights invalidate them.
"""
from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from difflab.io import file_hexdigest
from difflab.errors import CheckpointError, DataError
from difflab.metrics.features import (fid_interval, frechet_distance, inception_score, kid, kid_blocks,
                                      precision_recall)

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
EVALUATOR_NAMES = ("mnist", "fashion-mnist")
CACHE_ENV = "DIFFLAB_CACHE"
FEATURE_DIM = 128
REF_FORMAT = 1  # bump when the content of the cached reference files changes


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice with a skip (a 1x1 conv when the width or the stride changes)."""

    def __init__(self, ci: int, co: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(nn.GroupNorm(8, ci), nn.SiLU(), nn.Conv2d(ci, co, 3, stride, 1, bias=False),
                                  nn.GroupNorm(8, co), nn.SiLU(), nn.Conv2d(co, co, 3, 1, 1, bias=False))
        self.skip = nn.Identity() if ci == co and stride == 1 else nn.Conv2d(ci, co, 1, stride, bias=False)

    def forward(self, x):
        return self.skip(x) + self.body(x)


class ResidualEvaluator(nn.Module):
    """The second feature space: a residual network trained apart from :class:`MnistEvaluator`.

    Another architecture (pre-activation residual blocks with GroupNorm and SiLU, strided
    downsampling, global average pooling) and another objective (label-smoothed cross-entropy with
    random erasing), another seed: a ranking that both feature spaces support does not rest on one
    network's blind spots. Features: the 192 LayerNorm-ed pooled activations (order-one scale for
    FID and KID). (N, 1, 28, 28) in [-1, 1] -> logits (N, 10).
    """

    feature_dim = 192

    def __init__(self, num_classes: int = 10, widths: tuple[int, int, int] = (32, 64, 96)):
        super().__init__()
        w1, w2, w3 = widths
        self.stem = nn.Conv2d(1, w1, 3, padding=1, bias=False)
        self.blocks = nn.Sequential(_ResBlock(w1, w1, 1), _ResBlock(w1, w2, 2), _ResBlock(w2, w3, 2))  # 28, 14, 7
        self.proj = nn.Sequential(nn.GroupNorm(8, w3), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(w3, self.feature_dim))
        self.feature_norm = nn.LayerNorm(self.feature_dim, elementwise_affine=False)
        self.head = nn.Sequential(nn.SiLU(), nn.Linear(self.feature_dim, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) in [-1, 1] -> (N, 192) features."""
        return self.feature_norm(self.proj(self.blocks(self.stem(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        return self(x).softmax(dim=1)


class MnistEvaluator(nn.Module):
    """CNN classifier for (N, 1, 28, 28) images in [-1, 1], 10 classes.

    conv32-conv32-pool-conv64-conv64-pool-pool (3×3 convs, BatchNorm, ReLU) -> 64·4·4 -> fc128 ->
    BatchNorm without affine -> [features] -> ReLU, dropout -> fc10. The features are the 128
    pre-activation values, standardised by the running statistics of training: about zero mean and
    unit variance per dimension on real data, so FID and KID (whose cubic kernel assumes features
    of order one) have a stable scale; they are also denser and closer to Gaussian than post-ReLU
    values, which suits the Fréchet distance.
    """

    def __init__(self, num_classes: int = 10, width: int = 32, dropout: float = 0.3):
        super().__init__()
        w1, w2 = width, 2 * width

        def conv(ci, co):
            return [nn.Conv2d(ci, co, 3, padding=1, bias=False), nn.BatchNorm2d(co), nn.ReLU(inplace=True)]

        self.body = nn.Sequential(
            *conv(1, w1), *conv(w1, w1), nn.MaxPool2d(2),        # 28 -> 14
            *conv(w1, w2), *conv(w2, w2), nn.MaxPool2d(2),       # 14 -> 7
            nn.MaxPool2d(2, ceil_mode=True), nn.Flatten(),       # 7 -> 4
        )
        self.feature_dim = FEATURE_DIM
        self.fc = nn.Linear(w2 * 16, FEATURE_DIM)
        self.feature_norm = nn.BatchNorm1d(FEATURE_DIM, affine=False)
        self.head = nn.Sequential(nn.ReLU(), nn.Dropout(dropout), nn.Linear(FEATURE_DIM, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) in [-1, 1] -> (N, 128) penultimate features."""
        return self.feature_norm(self.fc(self.body(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) -> logits (N, 10)."""
        return self.head(self.features(x))

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, 28, 28) -> class probabilities (N, 10)."""
        return self(x).softmax(dim=1)


# ---------------------------------------------------------------------- weights

# The two independent feature spaces of the MNIST family: kind -> (network class, weights-file prefix).
EVALUATOR_KINDS = {"cnn": (MnistEvaluator, "evaluator-"), "res": (ResidualEvaluator, "evaluator-res-")}


def feature_space_name(name: str, kind: str = "cnn") -> str:
    """'difflab-mnist' (the first space) or 'difflab-mnist-res' (the residual network's)."""
    return f"difflab-{name}" if kind == "cnn" else f"difflab-{name}-{kind}"


def available_kinds(name: str) -> list[str]:
    """The evaluator kinds whose weights ship for ``name``."""
    return [k for k in EVALUATOR_KINDS if evaluator_path(name, k).is_file()]


def _check_kind(kind: str) -> str:
    if kind not in EVALUATOR_KINDS:
        raise DataError(f"no evaluator kind {kind!r}; accepted: {', '.join(EVALUATOR_KINDS)}")
    return kind


def _check_name(name: str) -> str:
    if name not in EVALUATOR_NAMES:
        raise DataError(f"no difflab evaluator for dataset {name!r}; accepted: {', '.join(EVALUATOR_NAMES)}")
    return name


def evaluator_path(name: str, kind: str = "cnn") -> Path:
    """Where the shipped weights of the ``kind`` evaluator for ``name`` live."""
    return WEIGHTS_DIR / f"{EVALUATOR_KINDS[_check_kind(kind)][1]}{_check_name(name)}.safetensors"


def load_evaluator(name: str = "mnist", device="cpu", path: str | os.PathLike | None = None,
                   kind: str = "cnn") -> nn.Module:
    """The trained ``kind`` evaluator ("cnn" or "res") for ``name`` ("mnist" or "fashion-mnist"), in eval mode.

    Reads ``path`` if given, else the shipped ``difflab/weights/evaluator-<name>.safetensors``.
    Attributes set on the module: ``weights_path``, ``weights_sha256``, ``metadata`` (dict, e.g.
    test_accuracy), ``feature_space`` ("difflab-<name>").
    """
    import safetensors
    from safetensors.torch import load_file, safe_open

    _check_name(name)
    unreadable = (getattr(safetensors, "SafetensorError", OSError), OSError, ValueError)
    p = Path(path) if path is not None else evaluator_path(name, kind)
    if not p.is_file():
        raise CheckpointError(f"missing evaluator weights {p}; train them with scripts/train_evaluator.py "
                              f"--dataset {name} --kind {kind} --out {p}")
    try:
        state = load_file(str(p))
        with safe_open(str(p), "pt") as f:
            meta = dict(f.metadata() or {})
    except unreadable as e:
        raise CheckpointError(f"{p}: not a readable safetensors file ({' '.join(str(e).split())})") from None
    from difflab.train.checkpoint import check_weights

    check_weights(state, p, meta)
    if meta.get("dataset", name) != name:
        raise CheckpointError(f"{p}: these evaluator weights were trained on {meta['dataset']!r}, not {name!r}")
    cls = EVALUATOR_KINDS[kind][0]
    model = cls()
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{p}: weights do not match {cls.__name__} ({' '.join(str(e).split())[:200]})") from None
    model.eval().requires_grad_(False).to(device)
    model.weights_path, model.weights_sha256 = p, file_hexdigest(p)
    model.metadata, model.feature_space = meta, feature_space_name(name, kind)
    return model


@functools.lru_cache(maxsize=8)
def shipped_evaluator(name: str = "mnist", kind: str = "cnn") -> nn.Module:
    """The shipped evaluator, loaded (and its sha256 taken) once per process: a bench scores every row and
    its floor in two spaces, and re-reading the weights each time was repeated I/O. Frozen (no grad, eval)."""
    return load_evaluator(name, kind=kind)


# ---------------------------------------------------------------------- features

def to_evaluator_input(images) -> torch.Tensor:
    """(N, 1, 28, 28) uint8 [0, 255] or float [-1, 1] (numpy or torch) -> float32 [-1, 1] on the uint8 grid.

    Floats are clamped to [-1, 1] and rounded to the 256 levels of a saved 8-bit image, so generated
    samples are scored exactly as if written to PNG and read back (real data already are on it).
    """
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images))
    if x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
        raise DataError(f"expected images of shape (N, 1, 28, 28), got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.float().div_(127.5).sub_(1.0)
    if not x.is_floating_point():
        raise DataError(f"expected uint8 or float images, got dtype {x.dtype}")
    x = x.detach().cpu().float()
    if not torch.isfinite(x).all():
        raise DataError(f"images contain NaN or inf values ({int((~torch.isfinite(x)).sum())} entries)")
    return ((x.clamp(-1, 1) + 1) * 127.5).round_().div_(127.5).sub_(1.0)


@torch.no_grad()
def extract(images, evaluator: MnistEvaluator, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, 128) float64 and class probabilities (N, 10) float64 of images (N, 1, 28, 28).

    Images: uint8 in [0, 255] or float in [-1, 1] (see ``to_evaluator_input``).
    """
    x = to_evaluator_input(images)
    dev = next(evaluator.parameters()).device
    was_training = evaluator.training
    evaluator.eval()
    feats, probs = [], []
    for i in range(0, x.shape[0], batch_size):
        f = evaluator.features(x[i:i + batch_size].to(dev))
        feats.append(f.double().cpu())
        probs.append(evaluator.head(f).double().softmax(dim=1).cpu())
    evaluator.train(was_training)
    if not feats:
        return np.zeros((0, evaluator.feature_dim)), np.zeros((0, 10))
    return torch.cat(feats).numpy(), torch.cat(probs).numpy()


# ---------------------------------------------------------------------- reference statistics

def default_cache_dir() -> Path:
    """``$DIFFLAB_CACHE/ref`` when the variable is set, else ``~/.cache/difflab/ref``."""
    root = os.environ.get(CACHE_ENV, "").strip()
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "difflab") / "ref"


def reference_stats(name: str = "mnist", data_dir=None, split: str = "train", cache_dir=None,
                    evaluator: nn.Module | None = None, keep: int = 10000, seed: int = 0, kind: str = "cnn") -> dict:
    """Statistics of the real ``split`` of ``name`` in the evaluator's feature space, cached.

    Returns a dict: mu (128,), cov (128, 128), feats (keep, 128) a seeded random subsample of the
    features (for KID and precision/recall), n (number of real images), weights_sha256, split,
    feature_space. The cache file is <cache_dir>/<name>-<split>-<sha256[:16]>.npz.
    """
    _check_name(name)
    ev = evaluator if evaluator is not None else shipped_evaluator(name, kind)
    sha = getattr(ev, "weights_sha256", None)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    path = cache / f"{name}-{split}-{sha[:16]}.npz" if sha else None
    if path is not None and path.is_file():
        try:
            with np.load(path) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("weights_sha256") == sha and meta.get("format") == REF_FORMAT:
                    return {"mu": z["mu"], "cov": z["cov"], "feats": z["feats"], **meta}
        except (OSError, ValueError, KeyError):
            pass  # a corrupt or foreign cache file is recomputed and overwritten
    from difflab.data import load_dataset

    ds = load_dataset(name, data_dir=data_dir, split=split)
    feats, _ = extract(ds.x, ev)
    mu, cov = feats.mean(0), np.cov(feats, rowvar=False)
    idx = np.sort(np.random.default_rng(seed).permutation(len(feats))[:keep])
    meta = {"name": name, "split": split, "n": int(len(feats)), "weights_sha256": sha,
            "feature_space": getattr(ev, "feature_space", f"difflab-{name}"), "format": REF_FORMAT}
    if path is not None:
        cache.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache, suffix=".npz")  # write then rename: no half-written cache
        with os.fdopen(fd, "wb") as f:
            np.savez(f, mu=mu, cov=cov, feats=feats[idx], meta=json.dumps(meta))
        os.replace(tmp, path)
    return {"mu": mu, "cov": cov, "feats": feats[idx], **meta}


# ---------------------------------------------------------------------- the metrics

def evaluate_images(fake, name: str = "mnist", data_dir=None, split: str = "train", cache_dir=None,
                    evaluator: nn.Module | None = None, kid_subsets: int = 100, kid_subset_size: int = 1000,
                    pr_k: int = 3, is_splits: int = 10, seed: int = 0, kind: str = "cnn", n_boot: int = 100) -> dict:
    """FID (with its bootstrap interval), KID (with a block standard error), IS and precision/recall of
    generated images against the real ``split`` of ``name``, in the ``kind`` evaluator's feature space.

    fake: (N, 1, 28, 28) uint8 or float in [-1, 1]. FID uses the full real statistics;
    fid_lo / fid_hi is the 95% basic-bootstrap interval of the Fréchet distance itself
    (:func:`~difflab.metrics.features.fid_interval`; ``n_boot`` resamples, 0 for none). KID and
    precision/recall use the cached real subsample, PR on min(N, subsample) real images so both sets
    have equal size; kid_se is the standard error from disjoint blocks. Returns a dict of floats with
    ``feature_space`` "difflab-<name>" (or "difflab-<name>-res"): these are NOT Inception FIDs.
    """
    ev = evaluator if evaluator is not None else shipped_evaluator(name, kind)
    ref = reference_stats(name, data_dir, split, cache_dir, evaluator=ev)
    feats, probs = extract(fake, ev)
    if len(feats) < 2:
        raise DataError(f"evaluate_images: need at least 2 images, got {len(feats)}")
    mu, cov = feats.mean(0), np.cov(feats, rowvar=False)
    kid_mean, kid_std = kid(feats, ref["feats"], subsets=kid_subsets, subset_size=kid_subset_size, seed=seed)
    is_mean, is_std = inception_score(probs, splits=min(is_splits, len(probs)))
    m = min(len(feats), len(ref["feats"]))
    rng = np.random.default_rng(seed)
    real_pr = ref["feats"][np.sort(rng.permutation(len(ref["feats"]))[:m])]
    fake_pr = feats[np.sort(rng.permutation(len(feats))[:m])]
    precision, recall = precision_recall(real_pr, fake_pr, k=pr_k) if m > pr_k else (float("nan"), float("nan"))
    out = {
        "fid": frechet_distance(mu, cov, ref["mu"], ref["cov"]),
        "kid": kid_mean, "kid_std": kid_std,
        "is": is_mean, "is_std": is_std,
        "precision": precision, "recall": recall,
        "n_fake": int(len(feats)), "n_real": int(ref["n"]),
        "feature_space": getattr(ev, "feature_space", f"difflab-{name}"),
    }
    if len(feats) >= 8:
        _, out["kid_se"], out["kid_blocks"] = kid_blocks(feats, ref["feats"], block=kid_subset_size, seed=seed)
    if n_boot >= 2:
        iv = fid_interval(feats, ref["mu"], ref["cov"], n_boot=n_boot, seed=seed)
        out.update(fid_lo=iv["lo"], fid_hi=iv["hi"], fid_debiased=iv["debiased"], fid_se=iv["se"])
    return out


def compare_images(a, b, name: str = "mnist", data_dir=None, split: str = "train", kind: str = "cnn",
                   n_boot: int = 200, seed: int = 0, paired: bool | None = None) -> dict:
    """FID_a / FID_b and FID_a − FID_b of two image sets against the real ``split`` of ``name`` in the
    ``kind`` evaluator's space, with :func:`~difflab.metrics.features.paired_fid_comparison`'s 95%
    intervals (paired when both sets have the same size: image i of both from the same noise)."""
    from .features import paired_fid_comparison

    ev = shipped_evaluator(name, kind)
    ref = reference_stats(name, data_dir, split, evaluator=ev)
    fa, _ = extract(a, ev)
    fb, _ = extract(b, ev)
    return {**paired_fid_comparison(fa, fb, ref["mu"], ref["cov"], n_boot=n_boot, seed=seed, paired=paired),
            "feature_space": getattr(ev, "feature_space", f"difflab-{name}")}
