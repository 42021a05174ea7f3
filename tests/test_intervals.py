"""Intervals on the figures: the bootstrap FID interval covers the closed-form Fréchet distance of
Gaussian features about 95% of the time at known n, the real-data floor shrinks as n grows, KID's
block standard error matches the spread it claims, and the over-seeds interval is Student's t."""
import numpy as np
import pytest

from difflab.metrics.features import fid_interval, frechet_distance, interval_over_seeds, kid_blocks

D = 5


def _gaussians(seed=0):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(D, D)), rng.normal(size=(D, D))
    return rng.normal(size=D) * 0.3, a @ a.T / D + 0.5 * np.eye(D), np.zeros(D), b @ b.T / D + 0.5 * np.eye(D)


@pytest.mark.parametrize("n", [300, 1500])
def test_fid_interval_covers_the_closed_form_distance_about_95_percent(n):
    mu1, s1, mu2, s2 = _gaussians()
    true = frechet_distance(mu1, s1, mu2, s2)
    chol, rng = np.linalg.cholesky(s1), np.random.default_rng(n)
    repeats, hits, debiased = 80, 0, []
    for r in range(repeats):
        f = mu1 + rng.normal(size=(n, D)) @ chol.T
        res = fid_interval(f, mu2, s2, n_boot=150, seed=r)
        hits += res["lo"] <= true <= res["hi"]
        debiased.append(res["debiased"])
        assert res["lo"] <= res["fid"] + 3 * res["se"] and res["lo"] <= res["hi"]
    assert 0.87 <= hits / repeats <= 1.0, hits / repeats       # nominal 0.95; binomial sd at 80 repeats: 0.024
    assert abs(np.mean(debiased) - true) < 3 * np.std(debiased) / np.sqrt(repeats)


def test_the_floor_shrinks_as_n_grows():
    """What n samples of the reference distribution itself score: the bias a perfect sampler pays."""
    _, _, mu2, s2 = _gaussians()
    chol, rng = np.linalg.cholesky(s2), np.random.default_rng(0)
    floors = []
    for n in (100, 400, 1600, 6400):
        floors.append(np.mean([fid_interval(mu2 + rng.normal(size=(n, D)) @ chol.T, mu2, s2, n_boot=2)["fid"]
                               for _ in range(20)]))
    assert all(a > 1.8 * b for a, b in zip(floors, floors[1:])), floors   # ~1/n: 4x the samples, ~1/4 the floor
    assert floors[0] < 2 * (np.trace(s2) / 100) * 2                        # of the order tr(Σ)/n


def test_kid_block_standard_error_matches_the_spread_of_repeats():
    rng = np.random.default_rng(0)
    means, ses = [], []
    for r in range(30):
        x, y = rng.normal(size=(2000, 8)) + 0.15, rng.normal(size=(2000, 8))
        m, se, k = kid_blocks(x, y, block=250, seed=r)
        means.append(m)
        ses.append(se)
        assert k == 8
    spread = float(np.std(means, ddof=1))
    assert 0.6 < np.mean(ses) / spread < 1.6, (np.mean(ses), spread)
    same = kid_blocks(rng.normal(size=(2000, 8)), rng.normal(size=(2000, 8)), block=250)
    assert abs(same[0]) < 3 * same[1]                             # unbiased: zero within its error


def test_interval_over_seeds_is_students_t():
    mean, lo, hi = interval_over_seeds([1.0, 2.0, 3.0])
    assert mean == 2.0 and hi - mean == pytest.approx(4.302652729911275 / np.sqrt(3), rel=1e-9) and lo < mean


def test_paired_comparison_covers_the_closed_form_difference_and_is_narrower_than_unpaired():
    """b_i = c a_i + δ + ε_i (a method applied to the same starting noise): both sets are Gaussian in
    closed form, so FID_a − FID_b and FID_a / FID_b are known. The paired intervals cover them about
    95% of the time, and are several times narrower than resampling the two sets independently."""
    from difflab.metrics.features import paired_fid_comparison

    mu1, s1, mu2, s2 = _gaussians(1)
    c, delta, s = 0.9, np.full(D, 0.05), 0.2
    mu_b, s_b = c * mu1 + delta, c * c * s1 + s * s * np.eye(D)
    fa_true, fb_true = frechet_distance(mu1, s1, mu2, s2), frechet_distance(mu_b, s_b, mu2, s2)
    chol, rng, n = np.linalg.cholesky(s1), np.random.default_rng(3), 1500
    repeats, hit_d, hit_r, width_p, width_u = 60, 0, 0, [], []
    for r in range(repeats):
        fa = mu1 + rng.normal(size=(n, D)) @ chol.T
        fb = c * fa + delta + s * rng.normal(size=(n, D))
        p = paired_fid_comparison(fa, fb, mu2, s2, n_boot=150, seed=r)
        hit_d += p["diff_lo"] <= fa_true - fb_true <= p["diff_hi"]
        hit_r += p["ratio_lo"] <= fa_true / fb_true <= p["ratio_hi"]
        width_p.append(p["diff_hi"] - p["diff_lo"])
        if r < 10:
            u = paired_fid_comparison(fa, fb, mu2, s2, n_boot=150, seed=r, paired=False)
            assert not u["paired"] and u["diff"] == p["diff"]
            width_u.append(u["diff_hi"] - u["diff_lo"])
    assert 0.85 <= hit_d / repeats <= 1.0 and 0.85 <= hit_r / repeats <= 1.0, (hit_d, hit_r)
    assert np.mean(width_u) > 2.5 * np.mean(width_p[:10]), (np.mean(width_u), np.mean(width_p[:10]))
