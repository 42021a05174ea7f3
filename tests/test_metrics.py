"""difflab.metrics: feature-space metrics against closed forms and second routes, toy metrics
against the known mixture, the MNIST evaluator on real data, and the Inception loader's errors.

The evaluator checks on real MNIST run when DIFFLAB_DATA points at a folder holding it and the
shipped weights exist (scripts/train_evaluator.py makes them).
"""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from difflab.errors import CheckpointError, DataError, DifflabError
from difflab.metrics import evaluator as ev_mod
from difflab.metrics import inception as inc_mod
from difflab.metrics.evaluator import MnistEvaluator, evaluate_images, extract, load_evaluator, reference_stats
from difflab.metrics.features import (
    feature_stats,
    fid_from_features,
    frechet_distance,
    inception_score,
    kid,
    precision_recall,
)
from difflab.metrics.toy import (
    mean_log_density,
    mmd_permutation_test,
    mmd_rbf,
    mode_stats,
    sliced_wasserstein2,
    toy_metrics,
)
from difflab.process.toy import GaussianMixture, ring_mixture


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_spd(rng, d, ridge=0.1):
    a = rng.standard_normal((d, d))
    return a @ a.T / d + ridge * np.eye(d)


def sym_sqrt(a):
    """Square root of a symmetric PSD matrix through its eigen-decomposition (a route without sqrtm)."""
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


# ---------------------------------------------------------------------- Fréchet distance

def test_frechet_diagonal_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    a, b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_frechet_commuting_covariances_closed_form():
    # Σ1 = U diag(a) Uᵀ and Σ2 = U diag(b) Uᵀ commute: the trace term is Σ (√a - √b)² again.
    rng = np.random.default_rng(1)
    u, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    a, b = rng.uniform(0.2, 2, 5), rng.uniform(0.2, 2, 5)
    mu1, mu2 = np.zeros(5), np.full(5, 0.5)
    expected = 5 * 0.25 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = frechet_distance(mu1, u @ np.diag(a) @ u.T, mu2, u @ np.diag(b) @ u.T)
    assert got == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("d", [3, 16, 64])
def test_frechet_random_spd_matches_symmetric_route(d):
    # tr (Σ1 Σ2)^{1/2} = tr (Σ1^{1/2} Σ2 Σ1^{1/2})^{1/2}: the second form is symmetric PSD, rooted by eigh.
    rng = np.random.default_rng(d)
    c1, c2 = random_spd(rng, d), random_spd(rng, d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1 = sym_sqrt(c1)
    tr_root = np.sqrt(np.clip(np.linalg.eigvalsh(s1 @ c2 @ s1), 0, None)).sum()
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * tr_root
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expected, rel=1e-8, abs=1e-8)
    # symmetric in its two arguments
    assert frechet_distance(mu2, c2, mu1, c1) == pytest.approx(expected, rel=1e-8, abs=1e-8)


def test_fid_of_features_with_themselves_is_zero_and_stats_match_numpy():
    f = np.random.default_rng(2).standard_normal((500, 32)) @ np.diag(np.linspace(0.1, 3, 32))
    assert abs(fid_from_features(f, f)) < 1e-8
    mu, cov = feature_stats(torch.from_numpy(f))  # torch input works too
    assert np.allclose(mu, f.mean(0)) and np.allclose(cov, np.cov(f.T))


def test_fid_of_rank_deficient_features_is_finite():
    # fewer samples than dimensions: singular covariances, the eps·I repair of the root kicks in if needed
    rng = np.random.default_rng(3)
    f1, f2 = rng.standard_normal((20, 64)), rng.standard_normal((20, 64)) + 1.0
    got = fid_from_features(f1, f2)
    assert np.isfinite(got) and got > 64 * 0.9  # at least most of the mean shift ‖1‖² = 64


def test_frechet_repairs_non_finite_root_and_small_imaginary_parts(monkeypatch):
    from difflab.metrics import features

    rng = np.random.default_rng(12)
    c1, c2, mu = random_spd(rng, 8), random_spd(rng, 8), np.zeros(8)
    exact = frechet_distance(mu, c1, mu, c2)
    real_sqrtm, calls = scipy.linalg.sqrtm, []

    def flaky(a):  # first call: non-finite, as for a singular product; then a root with rounding-level imaginary part
        calls.append(a)
        return np.full_like(a, np.nan) if len(calls) == 1 else real_sqrtm(a) + 1e-12j

    monkeypatch.setattr(features.scipy.linalg, "sqrtm", flaky)
    got = frechet_distance(mu, c1, mu, c2, eps=1e-6)
    assert len(calls) == 2 and np.allclose(calls[1], (c1 + 1e-6 * np.eye(8)) @ (c2 + 1e-6 * np.eye(8)))
    assert got == pytest.approx(exact, abs=1e-4)
    monkeypatch.setattr(features.scipy.linalg, "sqrtm", lambda a: real_sqrtm(a) + 0.5j)
    with pytest.raises(DifflabError, match="imaginary"):
        frechet_distance(mu, c1, mu, c2)


def test_frechet_rejects_mismatched_shapes():
    with pytest.raises(DataError) as e:
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------- KID

def test_kid_same_distribution_near_zero_shifted_clearly_positive():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((1000, 16)), rng.standard_normal((1000, 16))
    same, same_std = kid(a, b, subsets=20, subset_size=500)
    shifted, shifted_std = kid(a, b + 0.5, subsets=20, subset_size=500)
    assert abs(same) < 3 * same_std + 1e-3
    assert shifted > 0.05 and shifted > 10 * shifted_std


def test_kid_linear_kernel_equals_unbiased_closed_form():
    # degree 1, coef0 0, γ 1: MMD²_u = mean_{i≠j} xi·xj + mean_{i≠j} yi·yj - 2 mean_{i,j} xi·yj,
    # and mean_{i≠j} zi·zj = (|Σ z|² - Σ |z|²) / (m (m - 1)) needs no kernel matrix.
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((50, 4)), rng.standard_normal((60, 4)) + 0.3

    def off_diag_mean(z):
        s = z.sum(0)
        return (s @ s - (z * z).sum()) / (len(z) * (len(z) - 1))

    got, _ = kid(x, y, subsets=1, subset_size=1000, degree=1, gamma=1.0, coef0=0.0, seed=0)
    draw = np.random.default_rng(0)  # the subset is capped at 50 rows: redo kid's draw of them
    xs, ys = x[draw.choice(50, 50, replace=False)], y[draw.choice(60, 50, replace=False)]
    expected = off_diag_mean(xs) + off_diag_mean(ys) - 2 * (xs.mean(0) @ ys.mean(0))
    assert got == pytest.approx(expected, rel=1e-10, abs=1e-12)


# ---------------------------------------------------------------------- Inception Score

def test_inception_score_one_hot_balanced_is_num_classes():
    c = 10
    probs = np.eye(c)[np.tile(np.arange(c), 50)]  # each of the 10 splits holds 5 of every class
    mean, std = inception_score(probs, splits=10)
    assert mean == pytest.approx(c, rel=1e-12) and std == pytest.approx(0, abs=1e-12)


def test_inception_score_constant_probs_is_one():
    p = np.random.default_rng(6).dirichlet(np.ones(7))
    mean, std = inception_score(np.tile(p, (100, 1)), splits=5)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0, abs=1e-12)


def test_inception_score_matches_direct_kl():
    probs = np.random.default_rng(7).dirichlet(np.full(5, 0.3), size=200)
    py = probs.mean(0)
    direct = math.exp(np.mean(np.sum(probs * (np.log(probs) - np.log(py)), axis=1)))
    assert inception_score(probs, splits=1)[0] == pytest.approx(direct, rel=1e-10)


def test_inception_score_rejects_logits():
    with pytest.raises(DataError, match="logits"):
        inception_score(np.random.default_rng(0).standard_normal((20, 10)))


# ---------------------------------------------------------------------- precision / recall

def test_precision_recall_real_vs_real_high_and_disjoint_zero():
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal((1000, 8)), rng.standard_normal((1000, 8))
    p, r = precision_recall(a, b, k=3)
    assert p > 0.7 and r > 0.7
    assert precision_recall(a, a, k=3) == (1.0, 1.0)
    assert precision_recall(a, b + 100.0, k=3) == (0.0, 0.0)


def test_precision_recall_detects_mode_dropping():
    # fake covers only half of the real data: precision stays high, recall drops to about half
    rng = np.random.default_rng(9)
    real = np.concatenate([rng.standard_normal((500, 4)), rng.standard_normal((500, 4)) + 20])
    fake = rng.standard_normal((1000, 4))
    p, r = precision_recall(real, fake, k=3)
    assert p > 0.9 and 0.4 < r < 0.55


def test_precision_recall_matches_brute_force():
    rng = np.random.default_rng(10)
    real, fake = rng.standard_normal((120, 3)), rng.standard_normal((90, 3)) * 1.3 + 0.2
    k = 4

    def radii(z):
        d = np.linalg.norm(z[:, None] - z[None], axis=-1)
        return np.sort(d, axis=1)[:, k]

    def inside(q, c):
        return np.mean((np.linalg.norm(q[:, None] - c[None], axis=-1) <= radii(c)[None]).any(1))

    got = precision_recall(real, fake, k=k, chunk=17)
    assert got == pytest.approx((inside(fake, real), inside(real, fake)))


# ---------------------------------------------------------------------- toy metrics

def test_mean_log_density_single_gaussian_is_minus_entropy():
    d, s = 3, 0.7
    g = GaussianMixture(torch.zeros(1, d), stds=s)
    x = g.sample(20_000, gen(0))
    neg_entropy = -0.5 * d * math.log(2 * math.pi * math.e * s**2)
    se = float(g.log_prob(x).std()) / math.sqrt(len(x))
    assert mean_log_density(x, g) == pytest.approx(neg_entropy, abs=4 * se)


def test_mean_log_density_of_true_samples_matches_monte_carlo_entropy():
    ring = ring_mixture(8)
    x = ring.sample(5000, gen(1))
    lp_big = ring.log_prob(ring.sample(50_000, gen(2)))
    se = float(lp_big.std()) * math.sqrt(1 / 5000 + 1 / 50_000)
    assert mean_log_density(x, ring) == pytest.approx(float(lp_big.mean()), abs=4 * se)
    # samples spread too wide score lower
    assert mean_log_density(1.3 * x, ring) < float(lp_big.mean()) - 1.0


def test_sliced_w2_same_mixture_small_and_pure_shift_closed_form():
    ring = ring_mixture(8)
    x, y = ring.sample(4000, gen(3)), ring.sample(4000, gen(4))
    same = sliced_wasserstein2(x, y)
    assert same < 0.12  # sampling noise only
    v = torch.tensor([0.6, 0.8], dtype=torch.float64)  # |v| = 1, D = 2: SW2 = |v|/sqrt(2)
    # an exact shift: every projection's W2² is (θ·v)², so only the Monte-Carlo over θ is left
    assert sliced_wasserstein2(x[:200], x[:200] + v, num_projections=10_000) == pytest.approx(1 / math.sqrt(2), rel=0.01)
    # independent samples: the shift dominates, the sampling noise adds a little
    assert sliced_wasserstein2(x, y + v, num_projections=512) == pytest.approx(1 / math.sqrt(2), abs=0.05)


def test_sliced_w2_shift_in_higher_dimension():
    d = 8
    x = torch.randn(200, d, generator=gen(5), dtype=torch.float64)
    v = torch.full((d,), 0.5, dtype=torch.float64)  # |v| = sqrt(2): SW2 = sqrt(2)/sqrt(8) = 0.5
    assert sliced_wasserstein2(x, x + v, num_projections=20_000) == pytest.approx(0.5, rel=0.02)


def test_sliced_w2_in_one_dimension_is_exact_w2():
    x = torch.randn(500, 1, generator=gen(6), dtype=torch.float64)
    y = 2 * torch.rand(500, 1, generator=gen(7), dtype=torch.float64)
    exact = float(((x.sort(0).values - y.sort(0).values) ** 2).mean().sqrt())
    assert sliced_wasserstein2(x, y, num_projections=3) == pytest.approx(exact, rel=1e-12)


def test_sliced_w2_needs_equal_sizes():
    with pytest.raises(DataError, match="same shape"):
        sliced_wasserstein2(torch.zeros(5, 2), torch.zeros(6, 2))


def test_mmd_rbf_matches_direct_double_sum():
    rng = np.random.default_rng(11)
    x, y = rng.standard_normal((30, 2)), rng.standard_normal((25, 2)) + 0.5
    bw = (0.5, 1.0)

    def k(a, b):
        d2 = ((a[:, None] - b[None]) ** 2).sum(-1)
        return sum(np.exp(-d2 / (2 * h * h)) for h in bw)

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    expected = ((kxx.sum() - np.trace(kxx)) / (30 * 29) + (kyy.sum() - np.trace(kyy)) / (25 * 24) - 2 * kxy.mean())
    assert mmd_rbf(x, y, bandwidths=bw) == pytest.approx(expected, rel=1e-10)


def test_mmd_permutation_test_accepts_same_and_rejects_different():
    ring = ring_mixture(8)
    x, y = ring.sample(300, gen(8)), ring.sample(300, gen(9))
    mmd_same, p_same = mmd_permutation_test(x, y, num_permutations=200)
    assert p_same > 0.01
    z = ring.sample(300, gen(10)) + torch.tensor([0.3, 0.0], dtype=torch.float64)  # every mode moved by 1.5 std
    mmd_diff, p_diff = mmd_permutation_test(x, z, num_permutations=200)
    assert p_diff < 0.01 and mmd_diff > 10 * abs(mmd_same)
    assert p_diff == pytest.approx(1 / 201)  # no permutation reached the observed value


def test_mode_stats_ring_all_modes_with_weights():
    w = torch.tensor([1, 2, 1, 2, 1, 2, 1, 2], dtype=torch.float64)
    ring = ring_mixture(8, weights=w)
    s = mode_stats(ring.sample(8000, gen(11)), ring)
    assert s["coverage"] == 1.0 and s["num_missing"] == 0 and s["missing"] == []
    assert np.allclose(s["weights"], (w / w.sum()).numpy(), atol=0.02)
    assert s["weight_tv"] < 0.03
    assert s["off_mode_fraction"] == pytest.approx(s["expected_off_mode"], abs=0.006)
    assert s["expected_off_mode"] == pytest.approx(math.exp(-4.5), rel=1e-9)  # chi2 with 2 dof at 9


def test_mode_stats_counts_a_dropped_mode_and_off_mode_points():
    ring = ring_mixture(8)
    w = torch.ones(8)
    w[3] = 0
    x = ring_mixture(8, weights=w).sample(4000, gen(12))
    x = torch.cat([x, torch.zeros(400, 2, dtype=torch.float64)])  # at the centre, 10 std from every mode
    s = mode_stats(x, ring)
    assert s["num_missing"] == 1 and s["missing"] == [3] and s["coverage"] == 7 / 8
    assert s["counts"][3] == 0
    assert s["weight_tv"] == pytest.approx(1 / 8, abs=0.02)  # 1/8 of the mass moved to the other seven
    assert s["off_mode_fraction"] == pytest.approx(400 / 4400 + s["expected_off_mode"] * 4000 / 4400, abs=0.01)


def test_mode_stats_sparse_mode_is_not_covered():
    ring = ring_mixture(8)
    x = ring.sample(4000, gen(13), return_labels=True)
    pts, labels = x
    keep = (labels != 5) | (torch.arange(len(labels)) % 100 == 0)  # mode 5 gets ~5 samples of ~500
    s = mode_stats(pts[keep], ring)
    assert s["missing"] == [5] and 0 < s["counts"][5] < 20


def test_toy_metrics_true_vs_collapsed():
    ring = ring_mixture(8)
    good = toy_metrics(ring.sample(2000, gen(14)), ring, seed=1)
    collapsed = toy_metrics(ring.means[:1].expand(2000, 2) + 0.05 * torch.randn(2000, 2, generator=gen(15),
                                                                                 dtype=torch.float64), ring, seed=1)
    assert good["coverage"] == 1.0 and good["num_missing"] == 0 and good["sliced_w2"] < 0.08
    assert good["mean_log_density"] == pytest.approx(good["ref_mean_log_density"], abs=0.1)
    assert collapsed["coverage"] == 1 / 8 and collapsed["num_missing"] == 7
    assert collapsed["sliced_w2"] > 1.0 and collapsed["mmd2"] > 20 * abs(good["mmd2"])


# ---------------------------------------------------------------------- evaluator (no real data needed)

def test_evaluator_shapes_and_probs():
    torch.manual_seed(0)
    m = MnistEvaluator().eval()
    x = torch.rand(6, 1, 28, 28) * 2 - 1
    assert m(x).shape == (6, 10) and m.features(x).shape == (6, 128)
    assert torch.allclose(m.probs(x).sum(1), torch.ones(6))
    n_params = sum(p.numel() for p in m.parameters())
    assert n_params * 4 < 1_000_000  # shipped weights stay under 1 MB


def test_extract_uint8_and_float_agree_and_quantize():
    torch.manual_seed(1)
    m = MnistEvaluator().eval()
    u8 = torch.randint(0, 256, (7, 1, 28, 28), dtype=torch.uint8)
    f_u8, p_u8 = extract(u8, m, batch_size=3)
    f_fl, p_fl = extract(u8.float() / 127.5 - 1 + 1e-4, m)  # off-grid floats are rounded to the uint8 grid
    assert f_u8.shape == (7, 128) and p_u8.shape == (7, 10) and f_u8.dtype == np.float64
    assert np.allclose(f_u8, f_fl, atol=1e-5) and np.allclose(p_u8, p_fl, atol=1e-6)
    with pytest.raises(DataError, match=r"\(N, 1, 28, 28\)"):
        extract(torch.zeros(2, 3, 28, 28), m)
    with pytest.raises(DataError, match="NaN"):
        extract(torch.full((2, 1, 28, 28), float("nan")), m)


def test_load_evaluator_missing_and_unknown(monkeypatch, tmp_path):
    monkeypatch.setattr(ev_mod, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(CheckpointError) as e:
        load_evaluator("mnist")
    assert "\n" not in str(e.value) and "train_evaluator.py" in str(e.value)
    with pytest.raises(DataError, match="fashion-mnist"):
        load_evaluator("cifar10")
    (tmp_path / "evaluator-mnist.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_evaluator("mnist")


def test_reference_stats_cache_and_invalidation(monkeypatch, tmp_path):
    import difflab.data
    from difflab.data import ArrayDataset

    calls = []

    def fake_load(name, data_dir=None, split="train", **kw):
        calls.append((name, split))
        x = torch.rand(64, 1, 28, 28, generator=gen(0)) * 2 - 1
        return ArrayDataset(x, torch.zeros(64, dtype=torch.int64), name=name, num_classes=10)

    monkeypatch.setattr(difflab.data, "load_dataset", fake_load)
    monkeypatch.setenv("DIFFLAB_CACHE", str(tmp_path))
    torch.manual_seed(2)
    m = MnistEvaluator().eval()
    m.weights_sha256 = "a" * 64
    first = reference_stats("mnist", evaluator=m, keep=10)
    again = reference_stats("mnist", evaluator=m, keep=10)
    assert len(calls) == 1 and (tmp_path / "ref").is_dir() and len(list((tmp_path / "ref").glob("*.npz"))) == 1
    assert np.array_equal(first["mu"], again["mu"]) and np.array_equal(first["cov"], again["cov"])
    assert first["feats"].shape == (10, 128) and first["n"] == 64 and again["feature_space"] == "difflab-mnist"
    m.weights_sha256 = "b" * 64  # new weights: recomputed
    reference_stats("mnist", evaluator=m, keep=10)
    assert len(calls) == 2


# ---------------------------------------------------------------------- evaluator on real MNIST

def _mnist_root():
    root = os.environ.get("DIFFLAB_DATA")
    return Path(root) if root and (Path(root) / "mnist").is_dir() else None


needs_real_mnist = pytest.mark.skipif(
    _mnist_root() is None or not ev_mod.evaluator_path("mnist").is_file(),
    reason="needs DIFFLAB_DATA with mnist/ and difflab/weights/evaluator-mnist.safetensors (scripts/train_evaluator.py)")


@pytest.fixture(scope="module")
def mnist_eval():
    from difflab.data import load_dataset

    model = load_evaluator("mnist")
    test = load_dataset("mnist", split="test")
    train = load_dataset("mnist", split="train", num_samples=1000, seed=1)
    feats, probs = extract(test.x, model, batch_size=1000)
    return {"model": model, "test": test, "train": train, "feats": feats, "probs": probs}


def _blur(x, sigma):
    r = torch.arange(-3, 4, dtype=torch.float32)
    k = torch.exp(-r**2 / (2 * sigma**2))
    k = k / k.sum()
    x = F.pad(x, (3, 3, 3, 3), value=-1.0)
    x = F.conv2d(x, k.view(1, 1, 1, 7))
    return F.conv2d(x, k.view(1, 1, 7, 1))


@needs_real_mnist
def test_evaluator_accuracy_on_full_mnist_test_set(mnist_eval):
    acc = float((mnist_eval["probs"].argmax(1) == mnist_eval["test"].y.numpy()).mean())
    assert acc >= 0.993
    assert float(mnist_eval["model"].metadata["test_accuracy"]) == pytest.approx(acc, abs=1e-4)


@needs_real_mnist
def test_inception_score_of_mnist_test_set_near_ten(mnist_eval):
    mean, std = inception_score(mnist_eval["probs"], splits=10)
    assert 9.0 < mean <= 10.0 and std < 0.2


@needs_real_mnist
def test_fid_grows_with_corruption(mnist_eval):
    # 1000 train vs 1000 test images: FID about 1.2 (mostly small-sample bias); σ=0.2 noise about 20
    model, test, train = mnist_eval["model"], mnist_eval["test"], mnist_eval["train"]
    f_train, _ = extract(train.x, model)
    clean, f_test = test.x[:1000], mnist_eval["feats"][:1000]
    noise = torch.randn(clean.shape, generator=gen(0))
    f_noisy = {s: extract((clean + s * noise).clamp(-1, 1), model)[0] for s in (0.2, 0.5)}
    fid_clean = fid_from_features(f_train, f_test)
    fid_noisy = {s: fid_from_features(f_train, f) for s, f in f_noisy.items()}
    fid_blur = fid_from_features(f_train, extract(_blur(clean, 1.0), model)[0])
    assert fid_clean < 3
    assert fid_clean < fid_noisy[0.2] < fid_noisy[0.5]
    assert fid_noisy[0.2] > 5 * fid_clean and fid_blur > 5 * fid_clean
    p, r = precision_recall(f_train, f_test, k=3)
    assert p > 0.6 and r > 0.6
    kid_clean = kid(f_train, f_test, subsets=5, subset_size=1000)[0]
    kid_noisy = kid(f_train, f_noisy[0.5], subsets=5, subset_size=1000)[0]
    assert kid_noisy > 10 * max(kid_clean, 1e-3)


@pytest.mark.slow
@needs_real_mnist
def test_evaluate_images_end_to_end(mnist_eval, tmp_path):
    out = evaluate_images(mnist_eval["test"].x[:5000], "mnist", cache_dir=tmp_path)
    assert out["feature_space"] == "difflab-mnist" and out["n_fake"] == 5000 and out["n_real"] == 60000
    assert out["fid"] < 5 and out["precision"] > 0.6 and out["recall"] > 0.6 and out["is"] > 9
    assert len(list(tmp_path.glob("mnist-train-*.npz"))) == 1
    again = evaluate_images(mnist_eval["test"].x[:5000], "mnist", cache_dir=tmp_path)
    assert again["fid"] == pytest.approx(out["fid"], rel=1e-12)


@pytest.mark.slow
@pytest.mark.skipif(_mnist_root() is None or not (_mnist_root() / "fashion-mnist").is_dir()
                    or not ev_mod.evaluator_path("fashion-mnist").is_file(),
                    reason="needs DIFFLAB_DATA with fashion-mnist/ and difflab/weights/evaluator-fashion-mnist.safetensors")
def test_fashion_evaluator_accuracy_and_feature_space():
    from difflab.data import load_dataset

    model = load_evaluator("fashion-mnist")
    test = load_dataset("fashion-mnist", split="test")
    _, probs = extract(test.x, model, batch_size=1000)
    assert float((probs.argmax(1) == test.y.numpy()).mean()) >= 0.92
    assert model.feature_space == "difflab-fashion-mnist" and model.metadata["dataset"] == "fashion-mnist"
    with pytest.raises(CheckpointError, match="trained on 'fashion-mnist'"):
        load_evaluator("mnist", path=ev_mod.evaluator_path("fashion-mnist"))


# ---------------------------------------------------------------------- Inception loader errors

def _assert_one_line(err, *parts):
    msg = str(err.value)
    assert "\n" not in msg, msg
    for part in parts:
        assert part in msg, msg


def test_inception_missing_weights_at_given_path(tmp_path):
    missing = tmp_path / "nowhere" / "pt_inception.pth"
    with pytest.raises(DifflabError) as e:
        inc_mod.load_inception(missing)
    _assert_one_line(e, str(missing), "pip install pytorch-fid", "--inception-weights", inc_mod.PYTORCH_FID_URL)


def test_inception_missing_weights_in_empty_hub(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(DifflabError) as e:
        inc_mod.load_inception()
    _assert_one_line(e, str(tmp_path / "checkpoints"), inc_mod.PYTORCH_FID_WEIGHTS, inc_mod.TORCH_FIDELITY_WEIGHTS,
                     "--inception-weights")


@pytest.mark.parametrize("filename,package,module", [
    (inc_mod.PYTORCH_FID_WEIGHTS, "pytorch-fid", "pytorch_fid"),
    (inc_mod.TORCH_FIDELITY_WEIGHTS, "torch-fidelity", "torch_fidelity"),
])
def test_inception_weights_present_but_package_missing(monkeypatch, tmp_path, filename, package, module):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / filename).write_bytes(b"\0")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")] + [module]:
        monkeypatch.setitem(sys.modules, name, None)  # import of it now fails, installed or not
    with pytest.raises(DifflabError) as e:
        inc_mod.load_inception()
    _assert_one_line(e, f"pip install {package}", filename)


@needs_real_mnist
def test_bench_mnist_rows_carry_the_real_data_floor_at_their_sample_size(mnist_eval):
    """The floor is what N real test images score: real images (other ones) land near it, noised ones far above."""
    from difflab.metrics.bench import evaluate_samples

    real = mnist_eval["test"].x[-300:]
    m = evaluate_samples(real, "mnist", seed=0)
    noisy = evaluate_samples((real + 0.2 * torch.randn(real.shape, generator=gen(1))).clamp(-1, 1), "mnist", seed=0)
    assert m["quality_name"] == "FID, difflab-mnist features"
    assert 0.5 * m["quality_floor"] < m["quality"] < 2 * m["quality_floor"]
    assert noisy["quality"] > 3 * m["quality_floor"]


@needs_real_mnist
def test_mnist_rows_carry_interval_floor_ratio_and_kid_error_in_every_feature_space(mnist_eval):
    """Every FID has its interval, the floor at the same n (with its own interval), the ratio to it and
    KID with a standard error, in each shipped feature space; real images sit near the floor (ratio near
    1, interval reaching down to it), noised ones far above it beyond the interval."""
    from difflab.metrics.bench import SPACE_PREFIX, evaluate_samples
    from difflab.metrics.evaluator import available_kinds

    real = mnist_eval["train"].x[:1000]
    m = evaluate_samples(real, "mnist", seed=0, n_boot=40)
    noisy = evaluate_samples((real + 0.3 * torch.randn(real.shape, generator=gen(1))).clamp(-1, 1), "mnist",
                             seed=0, n_boot=40)
    assert "cnn" in available_kinds("mnist")
    for kind in available_kinds("mnist"):
        p = SPACE_PREFIX[kind]
        assert m[p + "fid_floor_n"] == 1000 and m[p + "fid_lo"] <= m[p + "fid"] <= m[p + "fid_hi"] + m[p + "fid_se"]
        assert m[p + "fid_lo"] <= m[p + "fid_floor"] and 0.4 < m[p + "fid_ratio"] < 2.5, (kind, m)
        assert noisy[p + "fid_lo"] > 3 * m[p + "fid_floor_hi"] and noisy[p + "fid_ratio"] > 4
        assert m[p + "kid_se"] > 0 and noisy[p + "kid"] - 3 * noisy[p + "kid_se"] > m[p + "kid"] + 3 * m[p + "kid_se"]
        assert 0 <= noisy[p + "precision"] < m[p + "precision"]


@needs_real_mnist
def test_the_real_data_floor_shrinks_as_n_grows(mnist_eval):
    from difflab.metrics.bench import _real_fid_floor

    small, large = (_real_fid_floor("mnist", None, n, 0, "cnn", 2)["fid"] for n in (500, 4000))
    assert small > 3 * large, (small, large)


def test_default_sample_sizes_by_data_and_nfe():
    from difflab.metrics.bench import default_n

    assert (default_n("mnist", 10), default_n("fashion-mnist", 50), default_n("mnist", 51), default_n("mnist", None),
            default_n("toy:ring8", 10)) == (10000, 10000, 2000, 2000, 1000)


def _row(i, fid, lo, hi, rfid, rlo, rhi):
    return {"model": "difflab", "sampler": f"s{i}", "steps": 10, "nfe": 10, "n": 100, "quality": fid, "fid": fid,
            "fid_lo": lo, "fid_hi": hi, "fid_floor": 0.5, "fid_ratio": fid / 0.5, "res_fid": rfid, "res_fid_lo": rlo,
            "res_fid_hi": rhi, "res_fid_floor": 0.4, "res_fid_ratio": rfid / 0.4, "feature_space": "difflab-mnist",
            "res_feature_space": "difflab-mnist-res", "quality_name": "FID"}


def test_table_marks_rows_the_two_feature_spaces_order_oppositely_beyond_their_intervals(tmp_path):
    from difflab.metrics.tables import disagreements, write_tables

    rows = [_row(0, 2.0, 1.8, 2.2, 5.0, 4.5, 5.5),   # space 1: best; space 2: worst
            _row(1, 3.0, 2.8, 3.2, 3.0, 2.7, 3.3),   # clearly opposite to row 0 in both spaces
            _row(2, 2.1, 1.9, 2.9, 4.0, 3.2, 4.6)]   # overlaps row 0 in space 1: no finding
    assert disagreements(rows) == [(0, 1)]
    write_tables({"data": "mnist", "n_samples": 100, "seeds": 1, "machine": "test", "rows": rows}, tmp_path)
    table = (tmp_path / "table.md").read_text()
    line0 = next(l for l in table.splitlines() if l.startswith("| 0 |"))
    line2 = next(l for l in table.splitlines() if l.startswith("| 2 |"))
    assert "2 [1.8, 2.2]" in line0 and "5 [4.5, 5.5]" in line0 and line0.rstrip(" |").endswith("#1")
    assert line2.rstrip().endswith("|  |") and "difflab-mnist-res" in table and "4.00" in line0


def test_combining_seeds_gives_a_t_interval_of_the_per_seed_estimates():
    from difflab.metrics.bench import combine_seeds

    per = [{"fid": f, "fid_debiased": f - 0.1, "fid_lo": 0.0, "fid_hi": 9.0, "kid": 0.001} for f in (2.0, 2.2, 2.4)]
    m = combine_seeds(per)
    assert m["fid"] == pytest.approx(2.2) and m["seeds"] == 3 and m["kid"] == pytest.approx(0.001)
    half = 4.302652729911275 * 0.2 / 3 ** 0.5
    assert m["fid_lo"] == pytest.approx(2.1 - half) and m["fid_hi"] == pytest.approx(2.1 + half)


@needs_real_mnist
def test_eval_vs_compares_two_sample_files_paired_in_both_feature_spaces(mnist_eval, tmp_path, capsys):
    """`eval A.npz --vs B.npz`: the ratio is FID_a / FID_b of evaluate_images in each space; a set against
    itself is exactly 1 with the interval [1, 1] (every paired resample is the same set twice); blurred
    digits against sharp ones are worse beyond the interval."""
    from difflab.cli import main
    from difflab.metrics.evaluator import evaluate_images

    x = mnist_eval["test"].x[:600].float() / 127.5 - 1 if mnist_eval["test"].x.dtype == torch.uint8 \
        else mnist_eval["test"].x[:600].float()
    blurred = _blur(x, 1.2).clamp(-1, 1)
    np.savez(tmp_path / "a.npz", samples=blurred.numpy())
    np.savez(tmp_path / "b.npz", samples=x.numpy())
    out = tmp_path / "m.json"
    assert main(["eval", str(tmp_path / "a.npz"), "--data", "mnist", "--vs", str(tmp_path / "b.npz"), "--n-boot", "50",
                 "--out", str(out)]) == 0
    line = capsys.readouterr().out
    assert "FID ratio" in line and "paired" in line
    vs = json.loads(out.read_text())["vs"]
    want = evaluate_images(blurred, "mnist", n_boot=0)["fid"] / evaluate_images(x, "mnist", n_boot=0)["fid"]
    assert vs["paired"] and vs["ratio"] == pytest.approx(want, rel=1e-9) and vs["ratio_lo"] > 1.0
    assert "res_ratio" in vs and vs["res_ratio_lo"] > 1.0
    assert main(["eval", str(tmp_path / "b.npz"), "--data", "mnist", "--vs", str(tmp_path / "b.npz"), "--n-boot", "20",
                 "--out", str(out)]) == 0
    same = json.loads(out.read_text())["vs"]
    assert same["ratio"] == same["ratio_lo"] == same["ratio_hi"] == 1.0 and same["diff_lo"] == same["diff_hi"] == 0.0
    # the same two sets recorded as made from different seeds are compared unpaired, and the line says so
    from difflab.io.samples import save_samples

    save_samples(blurred, tmp_path / "a1.npz", meta={"seed": 1, "data": "mnist"})
    save_samples(x, tmp_path / "b0.npz", meta={"seed": 0, "data": "mnist"})
    assert main(["eval", str(tmp_path / "a1.npz"), "--data", "mnist", "--vs", str(tmp_path / "b0.npz"), "--n-boot",
                 "50", "--out", str(out)]) == 0
    assert "unpaired: seeds 1 and 0" in capsys.readouterr().out
    un = json.loads(out.read_text())["vs"]
    assert not un["paired"] and un["ratio"] == pytest.approx(vs["ratio"], rel=1e-9) and un["ratio_lo"] > 1.0


def test_pairing_needs_the_same_size_and_the_same_recorded_seed():
    from difflab.cli.evaluate import pairing

    assert pairing(10, 0, 10, 0) == (True, "paired: both seed 0")
    assert pairing(10, 0, 10, 3)[0] is False and "seeds 0 and 3" in pairing(10, 0, 10, 3)[1]
    assert pairing(10, 0, 12, 0)[0] is False and "10 and 12 samples" in pairing(10, 0, 12, 0)[1]
    assert pairing(10, None, 10, 5) == (True, "paired by position (no seed recorded for one set)")


def test_saved_samples_carry_what_made_them_and_are_written_whole(tmp_path):
    from difflab.io.samples import load_sample_arrays, load_sample_meta, save_samples

    x = torch.linspace(-1, 1, 2 * 784).reshape(2, 1, 28, 28)
    save_samples(x, tmp_path / "s.npz", meta={"sampler": "ddim", "steps": 10, "seed": 3, "grid": None})
    assert load_sample_meta(tmp_path / "s.npz") == {"sampler": "ddim", "steps": 10, "seed": 3, "grid": None}
    key, a = load_sample_arrays(tmp_path / "s.npz", ("samples",))
    assert np.array_equal(a, x.numpy()) and [p.name for p in tmp_path.iterdir()] == ["s.npz"]  # no .tmp left
    np.savez(tmp_path / "old.npz", samples=x.numpy())
    assert load_sample_meta(tmp_path / "old.npz") is None and load_sample_meta(tmp_path / "missing.npz") is None


def test_eval_vs_samples_of_other_data_is_one_line(tmp_path, capsys):
    from difflab.cli import main
    from difflab.io.samples import save_samples

    np.savez(tmp_path / "a.npz", samples=np.zeros((8, 2), np.float32))
    save_samples(torch.zeros(8, 1, 28, 28), tmp_path / "b.npz", meta={"data": "mnist", "seed": 0})
    assert main(["eval", str(tmp_path / "a.npz"), "--data", "toy:ring8", "--vs", str(tmp_path / "b.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "samples of 'mnist'" in err and "'toy:ring8'" in err


def test_eval_save_on_a_sample_file_is_one_line(tmp_path, capsys):
    from difflab.cli import main

    np.savez(tmp_path / "a.npz", samples=np.zeros((4, 2), np.float32))
    assert main(["eval", str(tmp_path / "a.npz"), "--data", "toy:ring8", "--save", str(tmp_path / "b.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "already a sample file" in err and not (tmp_path / "b.npz").exists()
