"""Time grids by noise level: uniform in log-SNR and EDM's ρ-spacing of σ/α, for continuous and discrete
models (a discrete model's points are its trained times), and every sampler runs on every grid."""
import math

import pytest
import torch

from difflab.models import exact_mixture_model
from difflab.process import GaussianDiffusion, VPLinear, linear_betas, ring_mixture
from difflab.samplers import GRID_SPACINGS, SPECS, sample, time_grid

F64 = torch.float64


def test_logsnr_grid_is_uniform_in_log_snr():
    s = VPLinear()
    ts = time_grid(s, 8, spacing="logsnr", t_min=1e-3)
    lam = s.log_snr(ts)
    assert len(ts) == 9 and float(ts[0]) == 1.0 and float(ts[-1]) == 1e-3
    torch.testing.assert_close(lam.diff(), torch.full((8,), float(lam.diff().mean()), dtype=F64), rtol=1e-6, atol=1e-6)
    to_zero = time_grid(s, 8, spacing="logsnr")  # 8 points down to 1e-3, then the jump to the data
    assert len(to_zero) == 9 and float(to_zero[-1]) == 0.0 and float(to_zero[-2]) == pytest.approx(1e-3)


def test_karras_grid_is_rho_spaced_in_sigma_over_alpha():
    s, rho = VPLinear(), 7.0
    ts = time_grid(s, 6, spacing="karras", t_min=2e-3, rho=rho)
    sig = (s.sigma(ts) / s.alpha(ts)) ** (1 / rho)     # σ̃^{1/ρ} is linear in the step index (σ̃ from σ and α)
    torch.testing.assert_close(sig.diff(), torch.full((6,), float(sig.diff().mean()), dtype=F64), rtol=1e-6, atol=1e-6)
    assert float(s.sigma(ts[0]) / s.alpha(ts[0])) == pytest.approx(float(s.sigma(1.0) / s.alpha(1.0)))
    rho3 = time_grid(s, 6, spacing="karras", t_min=2e-3, rho=3.0)
    assert float(rho3[1]) > float(ts[1])                # a larger ρ spends more of the grid at low noise levels


@pytest.mark.parametrize("spacing", ["logsnr", "karras"])
def test_discrete_models_get_their_trained_times(spacing):
    d = GaussianDiffusion(linear_betas(1000))
    ts = time_grid(d.schedule, 10, spacing=spacing)
    inner = ts[:-1] * 1000
    assert float(ts[-1]) == 0.0 and bool((ts.diff() < 0).all()) and len(ts) == 11
    torch.testing.assert_close(inner, inner.round(), rtol=0, atol=1e-9)
    assert float(ts[0]) == 1.0 and float(ts[-2]) == 0.001


@pytest.mark.parametrize("spacing", [s for s in GRID_SPACINGS if s not in ("trailing", "respace")])
@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_sampler_runs_on_every_grid(name, spacing):
    if SPECS[name].evals_per_step is None:
        pytest.skip("the adaptive solver picks its own steps")
    model = exact_mixture_model(ring_mixture(8, radius=2.0, std=0.3), VPLinear())
    r = sample(model, (64, 2), sampler=name, steps=12, spacing=spacing, dtype=F64,
               generator=torch.Generator().manual_seed(0))
    # runs, and lands near the ring (radius 2); how well each sampler x grid does is the benchmark's question
    # (at 12 steps the Karras grid of this VP schedule, σ/α from 157 down, is poor for UniPC and the SDE)
    assert bool(torch.isfinite(r.x).all()) and float(r.x.norm(dim=1).mean()) == pytest.approx(2.0, abs=1.0)
    assert math.isclose(float(r.times[0]), 1.0) and float(r.times[-1]) >= 0.0


def test_power_grid_is_t_to_the_rho_and_contains_trailing_and_quadratic():
    d = GaussianDiffusion(linear_betas(1000))
    for n in (3, 5, 10, 17):  # ρ = 1 on a discrete model is the trailing grid, point for point
        torch.testing.assert_close(time_grid(d.schedule, n, spacing="power:1"), time_grid(d.schedule, n, spacing="trailing"),
                                   rtol=0, atol=0)
    ts = time_grid(d.schedule, 10, spacing="power")  # default ρ = 0.8: t_i = round(T (i/N)^0.8) / T, then 0
    want = [round(1000 * (i / 10) ** 0.8) / 1000 for i in range(10, 0, -1)] + [0.0]
    assert ts.tolist() == pytest.approx(want, abs=1e-12)
    assert float(ts[-2]) == pytest.approx(0.158)       # the last step into the data starts later than trailing's 0.1
    s = VPLinear()  # continuous: t_min + (t_max - t_min) (i/N)^ρ; ρ = 2 is 'quadratic', ρ = 1 'uniform'
    torch.testing.assert_close(time_grid(s, 7, spacing="power:2", t_min=1e-3), time_grid(s, 7, spacing="quadratic", t_min=1e-3))
    torch.testing.assert_close(time_grid(s, 7, spacing="power:1"), time_grid(s, 7, spacing="uniform"))
    assert time_grid(s, 4, spacing="power", rho=0.5).tolist() == pytest.approx([1.0, 0.75 ** 0.5, 0.5 ** 0.5, 0.5, 0.0])


@pytest.mark.parametrize("bad, says", [("power:-1", "positive"), ("power:x", "positive"), ("uniform:2", "takes no parameter"),
                                       ("powr", "unknown grid spacing"), ("karras:nan", "positive")])
def test_bad_grid_specs_get_one_clear_line(bad, says):
    s = VPLinear()
    with pytest.raises(ValueError, match=says):
        time_grid(s, 5, spacing=bad)


def test_grid_spec_reaches_the_cli_and_config_checks():
    import argparse

    from difflab.cli.common import grid_spec
    from difflab.config import Config, ConfigError, apply_overrides

    assert grid_spec("karras:5") == "karras:5"
    with pytest.raises(argparse.ArgumentTypeError, match="power:0"):
        grid_spec("power:0")
    assert apply_overrides(Config(), ["sample.grid=power:0.7"]).sample.grid == "power:0.7"
    with pytest.raises(ConfigError, match="sample.grid.*positive"):
        apply_overrides(Config(), ["sample.grid=power:-2"])
