"""Discriminator and classifier guidance in the toy world, where every answer is known.

A "pre-trained" score model that is deliberately wrong, ``exact_mixture_model(wrong)`` for a
Gaussian mixture with the wrong weights (and/or shifted means), is corrected towards the true
mixture. Since both marginals are closed form, the optimal discriminator is too:

    d*(x_t, t) = p_t(x) / (p_t(x) + q_t(x)),   logit d* = log p_t(x) - log q_t(x)

(:class:`MixtureLogRatio`), and with it the corrected score equals the true score exactly. The
exact noisy classifier of a mixture, with class = component, is p(k | x_t) = the responsibilities
(:class:`MixtureClassifier`); with it classifier guidance at w = 1 gives the component's score.
:func:`toy_experiment` compares no guidance, the analytic discriminator and a trained one.
"""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from difflab.methods.guidance import (DiscriminatorGuidance, checkpoints_by_step, load_discriminator,
                                      train_discriminator)
from difflab.methods.guidance_bank import generate_bank, load_bank
from difflab.process.toy import GaussianMixture

F64 = torch.float64
ERROR_METRICS = ("sliced_w2", "mmd2", "weight_tv")
PAPER_RATIO = 1.77 / 2.03  # CIFAR-10 FID of EDM-G++ / EDM (Kim et al. 2023, Table 2)


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


def _samples(model, n, sampler, steps, seed):
    from difflab.samplers import sample

    g = torch.Generator().manual_seed(seed)
    return sample(model, (n, 2), sampler=sampler, steps=steps, generator=g, dtype=torch.float32).x


def toy_experiment(*, dataset: str = "toy:ring8", wrong: str = "weights", timesteps: int = 1000,
                   n_train: int = 20_000, n_eval: int = 2000, settings=(("ancestral", 1000), ("ddim", 10)),
                   bank_setting=("ancestral", 1000), curve_setting=("ddim", 50), disc_steps: int = 1000,
                   batch_size: int = 512, lr: float = 3e-3, hidden: int = 128, depth: int = 3, t_min: float = 1e-3,
                   t_sampling: str = "log_snr", weight: float = 1.0, run_dir=None, seed: int = 0,
                   progress: bool = False, figure=None) -> dict:
    """The 2-D toy experiment of discriminator guidance.

    A wrong exact score (:func:`wrong_mixture` of ``dataset``'s mixture, discrete linear process
    with ``timesteps`` steps) is sampled into a bank (``bank_setting``, n_train samples), a
    discriminator (MLPEncoder hidden x depth) is trained against n_train true samples for
    ``disc_steps`` steps, and at every (sampler, steps) in ``settings`` n_eval samples of four
    models are scored with :func:`difflab.metrics.toy.toy_metrics` against the true mixture:
    'wrong' (no guidance), 'dg_analytic' (the optimal discriminator, closed form), 'dg_trained',
    and 'true' (the exact true score through the same sampler: the floor of that sampler).
    All four start from the same noise. Each epoch's checkpoint is also scored at ``curve_setting``
    (the curve's step 0 is the unguided model there).

    Returns dict(rows, ratios, curve, config, timings); ``figure`` (a PNG path) gets the four
    sample sets of the first setting side by side.
    """
    from difflab.data import toy_mixture
    from difflab.metrics.toy import toy_metrics
    from difflab.models import exact_mixture_model
    from difflab.process import GaussianDiffusion, linear_betas

    timings = {}
    t0 = time.perf_counter()
    true = toy_mixture(dataset)
    bad = wrong_mixture(true, wrong)
    schedule = GaussianDiffusion(linear_betas(timesteps)).schedule
    wrong_model, true_model = exact_mixture_model(bad, schedule), exact_mixture_model(true, schedule)
    tmp = None
    if run_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="dg-toy-")
        run_dir = tmp.name
    run_dir = Path(run_dir)
    try:
        real = true.sample(n_train, torch.Generator().manual_seed(seed)).float()
        bank_dir = generate_bank(wrong_model, bank_setting[0], bank_setting[1], n_train, run_dir / "bank",
                                 shard_size=max(1, n_train // 4), seed=seed, shape=(2,), progress=progress,
                                 source=f"exact {wrong} {dataset}")
        bank = load_bank(bank_dir)
        timings["bank_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        from difflab.methods.guidance import Discriminator

        disc_dir = run_dir / "disc"
        if (disc_dir / "checkpoints").exists():
            import shutil

            shutil.rmtree(disc_dir)  # a fresh discriminator every run
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            disc = Discriminator.build((2,), hidden=hidden, depth=depth)
        fit = train_discriminator(wrong_model, real, bank, disc_dir, discriminator=disc, steps=disc_steps,
                                  batch_size=batch_size, lr=lr, t_min=t_min, t_sampling=t_sampling, seed=seed,
                                  device="cpu", progress=progress, tensorboard=False)
        timings["train_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        trained = load_discriminator(disc_dir)
        analytic = MixtureLogRatio(true, bad, schedule)
        models = {"wrong": wrong_model,
                  "dg_analytic": DiscriminatorGuidance(wrong_model, analytic, weight=weight),
                  "dg_trained": DiscriminatorGuidance(wrong_model, trained, weight=weight),
                  "true": true_model}
        rows, panels = [], {}
        for i, (sampler, steps) in enumerate(settings):
            for name, m in models.items():
                x = _samples(m, n_eval, sampler, steps, seed + 1000)
                rows.append({"sampler": sampler, "steps": steps, "model": name,
                             **toy_metrics(x.double(), true, seed=seed + 7)})
                if i == 0:
                    panels[name] = x
        timings["eval_s"] = time.perf_counter() - t2
        t3 = time.perf_counter()
        table = json.loads(Path(fit["table"]).read_text()) if Path(fit["table"]).is_file() else []
        accs = {r["step"]: r for r in table}
        base = toy_metrics(_samples(wrong_model, n_eval, *curve_setting, seed + 1000).double(), true, seed=seed + 7)
        curve = [{"step": 0, "epoch": 0.0, "heldout_acc": None, "heldout_bce": None,  # step 0: no guidance
                  **{k: base[k] for k in (*ERROR_METRICS, "mean_log_density")}}]
        for step, path in checkpoints_by_step(disc_dir):
            m = DiscriminatorGuidance(wrong_model, load_discriminator(path), weight=weight)
            met = toy_metrics(_samples(m, n_eval, *curve_setting, seed + 1000).double(), true, seed=seed + 7)
            rec = accs.get(step, {})
            curve.append({"step": step, "epoch": step / fit["steps_per_epoch"], "heldout_acc": rec.get("acc"),
                          "heldout_bce": rec.get("loss"), **{k: met[k] for k in (*ERROR_METRICS, "mean_log_density")}})
        timings["curve_s"] = time.perf_counter() - t3
        if figure is not None:
            from difflab import viz

            s, n = settings[0]
            titles = {"wrong": f"wrong score ({wrong})", "dg_analytic": "+ DG, analytic d*",
                      "dg_trained": "+ DG, trained d", "true": "true score"}
            tv = {r["model"]: r["weight_tv"] for r in rows if (r["sampler"], r["steps"]) == (s, n)}
            viz.save_scatter({f"{titles[k]}\n{s} {n}, weight TV {tv[k]:.3f}": v for k, v in panels.items()}, figure,
                             reference=true.sample(n_eval, torch.Generator().manual_seed(seed + 3)))
        timings["total_s"] = time.perf_counter() - t0
        return {"rows": rows, "ratios": ratios(rows), "curve": curve, "timings": timings,
                "training": {k: fit[k] for k in ("final_step", "last_loss", "steps_per_epoch", "last_eval")},
                "config": {"dataset": dataset, "wrong": wrong, "timesteps": timesteps, "n_train": n_train,
                           "n_eval": n_eval, "settings": [list(s) for s in settings], "bank": list(bank_setting),
                           "curve": list(curve_setting), "disc_steps": disc_steps, "batch_size": batch_size, "lr": lr,
                           "hidden": hidden, "depth": depth, "t_min": t_min, "t_sampling": t_sampling,
                           "weight": weight, "seed": seed, "bank_size": len(bank)}}
    finally:
        if tmp is not None:
            tmp.cleanup()


def ratios(rows: list[dict]) -> list[dict]:
    """Per setting and error metric: the DG / no-DG ratio (the paper's FID ratio is 0.87) and the
    fraction of the wrong-to-true gap that guidance closes, (m_wrong - m_dg) / (m_wrong - m_true)."""
    out = []
    for key in sorted({(r["sampler"], r["steps"]) for r in rows}, key=lambda k: -k[1]):
        by = {r["model"]: r for r in rows if (r["sampler"], r["steps"]) == key}
        for metric in ERROR_METRICS:
            w, tr = by["wrong"][metric], by["true"][metric]
            rec = {"sampler": key[0], "steps": key[1], "metric": metric, "wrong": w, "true": tr}
            for name in ("dg_analytic", "dg_trained"):
                m = by[name][metric]
                rec[f"{name}"] = m
                rec[f"{name}_ratio"] = m / w if w else float("nan")
                rec[f"{name}_gap_closed"] = (w - m) / (w - tr) if w != tr else float("nan")
            out.append(rec)
    return out


__all__ = ["MixtureClassifier", "MixtureLogRatio", "PAPER_RATIO", "ratios", "toy_experiment", "wrong_mixture"]
