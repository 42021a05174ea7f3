"""Training a discriminator (diffused real data vs diffused model samples) or a noisy classifier.

Both runs go through difflab's Trainer (AdamW, warm-up, cosine decay, EMA, resumable
checkpoints). After every ``every`` steps (default one epoch) a held-out part of the data is
scored per band of t (:func:`.diagnostics.evaluate_by_t`) into ``run_dir/t_bins.json`` and a
checkpoint is kept, so the epoch can be picked from the table.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import torch

from difflab.config import TrainConfig
from difflab.data import ArrayDataset
from difflab.errors import DataError
from difflab.io import atomic_write
from difflab.io.bank import Bank
from difflab.methods.guidance.diagnostics import evaluate_by_t
from difflab.config import toml_safe
from difflab.methods.guidance.network import Discriminator, NoisyClassifier
from difflab.methods.guidance.objective import ClassifierObjective, DiscriminatorObjective, discriminator_dataset
from difflab.train.loop import Trainer

EVAL_FILE = "t_bins.json"


def _append_eval(path: Path, record: dict) -> None:
    """Add one epoch's table to the JSON list at ``path`` (records of this step or later, left by
    a killed run being resumed, are replaced)."""
    recs = json.loads(path.read_text()) if path.is_file() else []
    recs = [r for r in recs if r["step"] < record["step"]] + [record]
    atomic_write(path, lambda f: f.write((json.dumps(recs, indent=1) + "\n").encode()))


def _split(n: int, holdout: float, seed: int, max_eval: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, held-out indices) of a seeded permutation; the held-out part has at most max_eval."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = min(int(round(holdout * n)), max_eval) if holdout > 0 else 0
    return perm[k:].sort().values, perm[:k].sort().values


def _train_config(tcfg, steps, batch_size, lr, seed, every, device):
    if tcfg is None:
        tcfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, warmup_steps=min(50, max(steps // 10, 1)),
                           lr_schedule="cosine", ema_rate=0.99, seed=seed, keep_ckpts=0, log_every=25, device=device)
    return dataclasses.replace(tcfg, ckpt_every=every, sample_every=every)


def _fit(module, objective, dataset, tcfg, run_dir, config, *, kind, eval_fn, progress, resume, tensorboard, extra):
    trainer = Trainer(module, objective, dataset, tcfg, run_dir, toml_safe(config), kind=kind, sample_fn=eval_fn,
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


__all__ = ["EVAL_FILE", "train_classifier", "train_discriminator"]
