"""The three shipped MNIST base models (DDPM, Improved DDPM, VP-SDE) are trained, and agree with each other.

Two routes to one quantity: each model estimates E[ε | x_t] for the same noised test digits, at its own
time with the same log-SNR (the three use different schedules and time parameterisations). Independently
trained estimators of the same conditional mean agree far better than either agrees with the noise that was
actually drawn (whose error has the irreducible part Var[ε | x_t]). And the Improved DDPM's learned variance
must tighten the variational bound against DDPM's fixed β̃ with the same mean, which is what it is trained for.
"""
import itertools
from pathlib import Path

import pytest
import torch

from conftest import real_data_dir
from difflab import zoo
from difflab.train.api import load_model

BASES = ("mnist-ddpm", "mnist-iddpm", "mnist-vpsde")
SHIPPED = [m for m in BASES if m in zoo.zoo_names()]


def _test_digits(n: int) -> torch.Tensor:
    if not (real_data_dir() and (Path(real_data_dir()) / "mnist").is_dir()):
        pytest.skip("needs DIFFLAB_DATA with mnist/ for held-out digits")
    from difflab.data import load_dataset

    return load_dataset("mnist", split="test", num_samples=n).x


def eps_at_log_snr(model, x0: torch.Tensor, noise: torch.Tensor, log_snr: float) -> torch.Tensor:
    """The model's ε prediction for x_t = α x0 + σ ε at the time where its schedule has this log-SNR."""
    lam = torch.tensor([log_snr], dtype=torch.float64)
    t = model.schedule.t_from_log_snr(lam).float()
    a2 = torch.sigmoid(lam).float()  # ᾱ = sigmoid(λ)
    x_t = a2.sqrt() * x0 + (1 - a2).sqrt() * noise
    with torch.no_grad():
        return model(x_t, t.expand(len(x0))).eps


def noise_prediction_errors(names, x0: torch.Tensor, log_snrs, seed: int = 0) -> dict:
    """{λ: {"mse": {name: E||ε̂ − ε||²}, "disagree": {(a, b): E||ε̂_a − ε̂_b||²}}} per pixel."""
    models = {n: load_model(n)[0] for n in names}
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    out = {}
    for lam in log_snrs:
        eps = {n: eps_at_log_snr(m, x0, noise, lam) for n, m in models.items()}
        out[lam] = {"mse": {n: float(((e - noise) ** 2).mean()) for n, e in eps.items()},
                    "disagree": {(a, b): float(((eps[a] - eps[b]) ** 2).mean())
                                 for a, b in itertools.combinations(names, 2)}}
    return out


@pytest.mark.skipif(len(SHIPPED) < 2, reason="fewer than two MNIST base models shipped")
def test_shipped_mnist_models_agree_on_the_noise_better_than_with_the_drawn_noise():
    x0 = _test_digits(128)
    res = noise_prediction_errors(SHIPPED, x0, (-4.0, -1.0, 2.0, 5.0))
    for lam, r in res.items():
        for n, mse in r["mse"].items():
            assert mse < 0.6, (lam, n, mse)  # trained: predicting ε̂ = 0 scores 1
        for (a, b), d in r["disagree"].items():
            assert d < 0.5 * min(r["mse"][a], r["mse"][b]), (lam, a, b, d, r["mse"])


def variance_gain_bpd(model, cfg, x0: torch.Tensor, indices, seed: int = 0) -> dict:
    """Per index i: the bound's term (bits/dim, mean over x0) with the model's learned variance and with DDPM's
    fixed β̃ variance, for the same mean."""
    from difflab.train.build import build_process

    diffusion = build_process(cfg.diffusion)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k in indices:
        i = torch.full((len(x0),), k, dtype=torch.long)
        x_t = diffusion.q_sample(x0, i, torch.randn(x0.shape, generator=g))
        with torch.no_grad():
            o = model(x_t, diffusion.model_time(i))
            learned, _ = diffusion.vb_terms_bpd(o, x0, x_t, i, var_type=model.var_type)
            fixed, _ = diffusion.vb_terms_bpd(o, x0, x_t, i, var_type="fixed_small")
        out[k] = (float(learned.mean()), float(fixed.mean()))
    return out


@pytest.mark.skipif("mnist-iddpm" not in zoo.zoo_names(), reason="mnist-iddpm not shipped")
def test_shipped_mnist_iddpm_learned_variance_tightens_the_bound():
    model, cfg, _ = load_model("mnist-iddpm")
    assert model.var_type == "learned_range" and cfg.diffusion.schedule == "cosine"
    x0 = _test_digits(32)
    gains = variance_gain_bpd(model, cfg, x0, (0, 1, 3, 10, 30, 100, 300))
    # The KL terms (index 0 is the decoder, where the two variances nearly coincide): measured 0.80.
    learned = sum(v[0] for k, v in gains.items() if k > 0)
    fixed = sum(v[1] for k, v in gains.items() if k > 0)
    assert learned < 0.9 * fixed, gains
    for k in (1, 3, 10):  # where the optimal variance differs most from β̃
        assert gains[k][0] < gains[k][1], (k, gains[k])


@pytest.mark.skipif("mnist-iddpm" not in zoo.zoo_names(), reason="mnist-iddpm not shipped")
def test_shipped_mnist_iddpm_needs_clipping_and_samples_digits_with_it():
    """The cosine schedule's ᾱ(1) ~ 2e-9 makes the unclipped first step divide ε̂'s error by α ~ 5e-5: samples
    blow up. With x̂0 clipped (Improved DDPM's clip_denoised) the learned-variance ancestral sampler makes digits."""
    from difflab.metrics.bench import evaluate_samples
    from difflab.samplers.batched import generate

    model, _, _ = load_model("mnist-iddpm")
    assert float(model.schedule.alpha_bar(torch.tensor([1.0], dtype=torch.float64))) < 1e-8
    raw = generate(model, (1, 28, 28), sampler="ddim", steps=10, n=16, seed=0, batch=16)["x"]
    assert float(raw.abs().max()) > 50
    _test_digits(1)  # skips without the MNIST files
    clipped = generate(model, (1, 28, 28), sampler="ancestral", steps=10, n=128, seed=0, batch=64, clip=True)["x"]
    m = evaluate_samples(clipped, "mnist", data_dir=real_data_dir())
    # 128 samples: FID's own spread is several units. Measured 7.25 and (per-sample noise, 2026-12) 10.7 against
    # a floor of 3.98; unclipped samples score > 100
    assert m["quality"] < m["quality_floor"] + 12.0, m
