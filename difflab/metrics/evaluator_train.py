"""Training of the MNIST-family evaluator (scripts/train_evaluator.py is a thin CLI over this).

Cross-entropy, AdamW with a one-cycle learning rate, light augmentation (random shifts by up to
±2 pixels; also horizontal flips for Fashion-MNIST, whose classes are mirror-symmetric). No
label smoothing: the evaluator's probabilities feed the Inception Score, which needs confident
predictions on real data.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from difflab.errors import DataError
from difflab.metrics.evaluator import EVALUATOR_KINDS, EVALUATOR_NAMES, MnistEvaluator


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image (N, C, H, W) by its own random integer offset in [-max_shift, max_shift]².

    Uncovered pixels are filled with -1, the background of the MNIST family in [-1, 1] units.
    """
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    s = max_shift
    xp = F.pad(x, (s, s, s, s), value=-1.0)
    dy = torch.randint(0, 2 * s + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * s + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]  # (N, H, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, :]  # (N, 1, W)
    return xp[torch.arange(n)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)


@torch.no_grad()
def accuracy(model: MnistEvaluator, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of the model (put in eval mode) on images (N, 1, 28, 28) and labels (N,)."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
    return correct / len(x)


def random_erase(x: torch.Tensor, generator: torch.Generator, p: float = 0.5, max_side: int = 10) -> torch.Tensor:
    """With probability p per image, blank one random rectangle (sides 2..max_side px) to the background -1."""
    n, _, h, w = x.shape
    hit = torch.rand(n, generator=generator) < p
    sh = torch.randint(2, max_side + 1, (n,), generator=generator)
    sw = torch.randint(2, max_side + 1, (n,), generator=generator)
    y0 = (torch.rand(n, generator=generator) * (h - sh + 1)).long()
    x0 = (torch.rand(n, generator=generator) * (w - sw + 1)).long()
    rows, cols = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
    box = ((rows >= y0[:, None, None]) & (rows < (y0 + sh)[:, None, None]) & (cols >= x0[:, None, None])
           & (cols < (x0 + sw)[:, None, None]) & hit[:, None, None])
    return torch.where(box[:, None], torch.full_like(x, -1.0), x)


def train_evaluator(name: str = "mnist", data_dir=None, epochs: int = 5, batch_size: int = 128, lr: float = 3e-3,
                    weight_decay: float = 5e-4, max_shift: int = 2, hflip: bool | None = None, seed: int = 0,
                    progress: bool = True, kind: str = "cnn", label_smoothing: float | None = None,
                    erase: bool | None = None) -> tuple[torch.nn.Module, dict]:
    """Train a ``kind`` evaluator ("cnn": MnistEvaluator; "res": ResidualEvaluator) on the train split
    of ``name``; returns (model in eval mode, metadata).

    The second feature space ("res") is trained apart from the first: its own architecture, seed and
    objective (label smoothing 0.1 and random erasing by default; the CNN's defaults are none of
    either, since its probabilities feed the Inception Score). metadata holds test_accuracy (on the
    full test split), dataset, epochs and the other settings, as strings ready for safetensors.
    ``hflip`` defaults to True for fashion-mnist only.
    """
    from tqdm import tqdm

    from difflab.data import load_dataset

    if name not in EVALUATOR_NAMES:
        raise DataError(f"no difflab evaluator for dataset {name!r}; accepted: {', '.join(EVALUATOR_NAMES)}")
    if kind not in EVALUATOR_KINDS:
        raise DataError(f"no evaluator kind {kind!r}; accepted: {', '.join(EVALUATOR_KINDS)}")
    hflip = (name == "fashion-mnist") if hflip is None else hflip
    label_smoothing = (0.1 if kind == "res" else 0.0) if label_smoothing is None else label_smoothing
    erase = (kind == "res") if erase is None else erase
    train = load_dataset(name, data_dir=data_dir, split="train")
    test = load_dataset(name, data_dir=data_dir, split="test")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = EVALUATOR_KINDS[kind][0]()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = len(train) // batch_size  # the last partial batch is dropped
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.2)
    start = time.time()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(train), generator=g)
        bar = tqdm(range(steps_per_epoch), desc=f"{name} epoch {epoch + 1}/{epochs}", disable=not progress,
                   mininterval=10)
        for step in bar:
            idx = perm[step * batch_size:(step + 1) * batch_size]
            x, y = random_shift(train.x[idx], max_shift, g), train.y[idx]
            if hflip:
                flip = torch.rand(len(x), generator=g) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            if erase:
                x = random_erase(x, g)
            loss = F.cross_entropy(model(x), y, label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{sched.get_last_lr()[0]:.2e}")
        acc = accuracy(model, test.x, test.y)
        if progress:
            print(f"{name} epoch {epoch + 1}/{epochs}: test accuracy {acc:.4f} ({time.time() - start:.0f} s)", flush=True)
    model.eval()
    meta = {"test_accuracy": f"{acc:.4f}", "dataset": name, "epochs": str(epochs), "batch_size": str(batch_size),
            "lr": str(lr), "max_shift": str(max_shift), "hflip": str(hflip), "seed": str(seed),
            "train_seconds": f"{time.time() - start:.0f}", "kind": kind, "label_smoothing": str(label_smoothing),
            "random_erase": str(erase),
            "arch": "MnistEvaluator(width=32)" if kind == "cnn" else "ResidualEvaluator(widths=(32, 64, 96))"}
    return model, meta


def save_evaluator(model: MnistEvaluator, path, metadata: dict) -> Path:
    """Write the weights as safetensors with string metadata (and their digest, verified on load)."""
    from difflab.train.checkpoint import save_weights_file

    path = save_weights_file(model.state_dict(), path, metadata)
    path.chmod(0o644)  # package data: readable by everyone who installs it
    return path
