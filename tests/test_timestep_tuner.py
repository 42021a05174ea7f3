"""The timestep tuner (issue #21): a per-step time table fitted so each step of a deterministic sampler
lands on the teacher ODE's state.

Closed form: for data N(0, s²) every DDIM step is a multiplication, so the time that makes a step exact
solves one scalar equation, found here by bisection, independently of the tuner's line search. Held-out
check: on the toy mixture with ε shrunk by 1.1, the tuned table brings other noises' samples closer
to the ODE's. No-op: a window of 0 is the plain sampler bit for bit.
"""
import math

import pytest
import torch

from difflab.errors import ConfigError
from difflab.methods.time_predictor import EpsilonScaling, StepTimeMap, teacher_states, tune_step_times, tuner_table
from difflab.models import exact_mixture_model
from difflab.process import GaussianMixture, VPLinear
from difflab.samplers import grid_for, sample

F64 = torch.float64
S = 0.8  # data std: ε*(x, τ) = c(τ) x with c = σ/(α² S² + σ²), increasing in τ when S > 1/√2


def _c(sched, tau: float) -> float:
    a, s = float(sched.alpha(torch.tensor(tau, dtype=F64))), float(sched.sigma(torch.tensor(tau, dtype=F64)))
    return s / (a * a * S * S + s * s)


def _exact_tau(sched, t: float, u: float, lo: float, hi: float) -> float:
    """The τ at which DDIM's step t -> u on N(0, S²) data is the ODE's: α_u (1 - σ_t c)/α_t + σ_u c equals
    the ratio of marginal stds v_u / v_t, v = √(α² S² + σ²) (bisection on c(τ), monotone here)."""
    a = lambda z: float(sched.alpha(torch.tensor(z, dtype=F64)))
    s = lambda z: float(sched.sigma(torch.tensor(z, dtype=F64)))
    v = lambda z: math.sqrt(a(z) ** 2 * S * S + s(z) ** 2)
    c_star = (v(u) / v(t) - a(u) / a(t)) / (s(u) - a(u) * s(t) / a(t))
    f = lambda z: _c(sched, z) - c_star
    assert f(lo) * f(hi) < 0, "the exact time must lie inside the window for the test to mean anything"
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if f(lo) * f(mid) > 0 else (lo, mid)
    return 0.5 * (lo + hi)


def test_tuned_times_make_each_ddim_step_exact_on_gaussian_data():
    sched = VPLinear()
    model = exact_mixture_model(GaussianMixture(torch.zeros(1, 1), stds=S), sched)
    mapping, report = tune_step_times(model, (1,), sampler="ddim", steps=4, window=0.2, candidates=21, n=64,
                                      teacher_steps=400, target="next")
    grid = grid_for("ddim", sched, 4)
    assert len(report) == 4 and [r["t"] for r in report] == grid[:-1].tolist()
    for k, r in enumerate(report):
        t, u = float(grid[k]), float(grid[k + 1])
        want = _exact_tau(sched, t, u, max(t - 0.2, 1e-4), min(t + 0.2, 1.0))
        assert abs(want - t) > 0.01  # DDIM's nominal time is not already exact: the test can tell
        assert abs(r["tau"] - want) < 2e-3, (t, r["tau"], want)
        assert r["err_tuned"] < 1e-3 * r["err_nominal"]
    assert "| t_k |" in tuner_table(report)


def test_teacher_states_follow_the_closed_form_ode():
    sched = VPLinear()
    model = exact_mixture_model(GaussianMixture(torch.zeros(1, 1), stds=S), sched)
    grid = grid_for("ddim", sched, 4)
    x_T = torch.randn(16, 1, generator=torch.Generator().manual_seed(0))
    ref = teacher_states(model, x_T, grid, teacher_steps=400)
    v = lambda z: math.sqrt(float(sched.alpha(torch.tensor(z))) ** 2 * S * S + float(sched.sigma(torch.tensor(z))) ** 2)
    for k, t in enumerate(grid.tolist()):  # second order inside; the last step into t = 0 is cut at t = 1e-3
        assert torch.allclose(ref[k], x_T * v(t) / v(1.0), atol=5e-5 if t > 0 else 5e-4), t


def test_a_tuned_table_carries_to_held_out_noises_for_a_multistep_solver():
    """ε shrunk by 1.1, dpmpp_3m on 8 steps: the table tuned on 128 pilot noises (two sweeps) brings 512 other
    noises' samples closer to the same model's converged ODE; tuned to each step's own landing ("next")
    instead, it does not (the greedy step-by-step fit over-corrects, which is why "final" is the default)."""
    means = torch.tensor([[math.cos(a), math.sin(a)] for a in torch.arange(8) * math.pi / 4], dtype=F64) * 2
    biased = EpsilonScaling(exact_mixture_model(GaussianMixture(means, stds=0.15), VPLinear()), 1.1)
    x_T = torch.randn(512, 2, generator=torch.Generator().manual_seed(99), dtype=torch.float32)
    ode = teacher_states(biased, x_T, grid_for("dpmpp_3m", biased.schedule, 8), teacher_steps=200)[-1]
    plain = sample(biased, x_T.shape, sampler="dpmpp_3m", steps=8, x=x_T.clone()).x
    e_plain = float(((plain - ode) ** 2).mean())
    errors = {}
    for target in ("final", "next"):
        mapping, report = tune_step_times(biased, (2,), sampler="dpmpp_3m", steps=8, window=0.15, n=128, seed=7,
                                          target=target, sweeps=2)
        assert len(mapping) >= 4 and all(r["err_tuned"] <= r["err_nominal"] for r in report)
        tuned = sample(StepTimeMap(biased, mapping), x_T.shape, sampler="dpmpp_3m", steps=8, x=x_T.clone()).x
        errors[target] = float(((tuned - ode) ** 2).mean())
    assert errors["final"] < 0.6 * e_plain and errors["next"] > e_plain, (errors, e_plain)


def test_window_zero_is_the_plain_sampler_bit_for_bit():
    model = exact_mixture_model(GaussianMixture(torch.zeros(1, 2), stds=0.5), VPLinear())
    mapping, report = tune_step_times(model, (2,), sampler="unipc", steps=5, window=0.0, n=8)
    assert mapping == {} and all(r["tau"] == r["t"] for r in report)
    x_T = torch.randn(32, 2, generator=torch.Generator().manual_seed(3))
    a = sample(model, x_T.shape, sampler="unipc", steps=5, x=x_T.clone()).x
    b = sample(StepTimeMap(model, mapping), x_T.shape, sampler="unipc", steps=5, x=x_T.clone()).x
    assert torch.equal(a, b)


@pytest.mark.parametrize("kw", [dict(sampler="ancestral"), dict(window=-0.1), dict(window=1.0), dict(candidates=1),
                                dict(teacher="euler_maruyama"), dict(target="x0"), dict(sweeps=0)])
def test_bad_settings_are_one_line_errors(kw):
    model = exact_mixture_model(GaussianMixture(torch.zeros(1, 2), stds=0.5), VPLinear())
    with pytest.raises(ConfigError):
        tune_step_times(model, (2,), **{"steps": 3, "n": 4, **kw})


def test_cli_tunes_a_table_and_sample_uses_it_only_on_its_own_grid(tmp_path, capsys):
    """tp-tune writes the table; sample --step-times reproduces the library's StepTimeMap bit for bit on the
    same noise; a run takes the table's clipping by default; another T, another grid, a contradicting --no-clip,
    bench, and a second time layer are one-line errors."""
    from difflab.cli import main
    from difflab.io.samples import load_sample_arrays
    from difflab.loading import load_any
    from difflab.methods.time_predictor import load_step_times

    table = tmp_path / "times.json"
    assert main(["tp-tune", "toy-ddpm", "--sampler", "dpmpp_2m", "--steps", "4", "--n", "32", "--teacher-steps",
                 "40", "--out", str(table), "--no-progress"]) == 0
    mapping, meta = load_step_times(table)
    assert meta["sampler"] == "dpmpp_2m" and meta["steps"] == 4 and meta["n"] == 32 and len(mapping) >= 1
    clipped = tmp_path / "clipped.json"  # tuned with x̂0 clipped: a run clips by default, --no-clip is refused
    assert main(["tp-tune", "toy-ddpm", "--sampler", "dpmpp_2m", "--steps", "4", "--n", "8", "--teacher-steps",
                 "20", "--clip", "--out", str(clipped), "--no-progress"]) == 0
    assert load_step_times(clipped)[1]["clip_denoised"] is True
    assert main(["sample", "toy-ddpm", "--sampler", "dpmpp_2m", "--steps", "4", "--n", "4", "--step-times",
                 str(clipped), "--out", str(tmp_path / "c.npz"), "--no-progress"]) == 0
    assert "| t_k |" in capsys.readouterr().out
    out = tmp_path / "s.npz"
    assert main(["sample", "toy-ddpm", "--sampler", "dpmpp_2m", "--steps", "4", "--n", "16", "--seed", "5",
                 "--step-times", str(table), "--out", str(out), "--no-progress"]) == 0
    got = load_sample_arrays(out, keys=("samples",))[1]
    from difflab.compose import stack_generate, stack_on

    loaded = load_any("toy-ddpm")
    plain = stack_on(loaded)
    want = stack_generate(plain.__class__(**{**plain.__dict__, "model": StepTimeMap(loaded.model, mapping)}),
                          sampler="dpmpp_2m", steps=4, n=16, seed=5)["x"]
    assert torch.equal(torch.as_tensor(got).float(), want.float())
    for argv in (["sample", "toy-ddpm", "--sampler", "dpmpp_2m", "--steps", "5", "--step-times", str(table)],
                 ["sample", "toy-ddpm", "--sampler", "dpmpp_2m", "--steps", "4", "--grid", "uniform", "--step-times",
                  str(table)],
                 ["sample", "toy-ddpm", "--sampler", "dpmpp_2m", "--steps", "4", "--step-times", str(table),
                  "--t-shift", "0.01"],
                 ["bench", "toy-ddpm", "--step-times", str(table)],
                 ["sample", "toy-ddpm", "--sampler", "dpmpp_2m", "--steps", "4", "--no-clip", "--step-times",
                  str(clipped)]):
        try:
            code = main([*argv, "--n", "8", "--out", str(tmp_path / "x.md" if argv[0] == "bench" else tmp_path / "x.npz")])
        except SystemExit as e:
            code = e.code
        assert code not in (0, None)
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "step-times" in err, err
