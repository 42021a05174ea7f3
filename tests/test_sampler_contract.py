"""The sampler contract (diffusers' common-test pattern): every entry of the sampler registry, in
difflab or registered beside a method, gets these checks by registering.

Shape and dtype kept; same seed, same samples (and a deterministic sampler ignores the generator);
the model is called exactly ``nfe`` times, as the spec's evaluation count says; the trajectory, the
callback and the final state agree; and for samplers that step from ᾱ at the grid times alone, a grid
of trained times is exactly the respaced process (a second route through the respaced model).
"""
import pytest
import torch

from difflab.methods.time_predictor import TP_SAMPLERS, TimePredictorSampling
from difflab.models import exact_mixture_model
from difflab.process import (DiscreteSchedule, GaussianDiffusion, VPLinear, linear_betas, ring_mixture,
                             spaced_diffusion)
from difflab.samplers import SPECS, time_grid

from conftest import Counting

F64 = torch.float64
MIX = ring_mixture(8, radius=2.0, std=0.3)
DISCRETE = GaussianDiffusion(linear_betas(1000))


def _g(x):
    """A stand-in time predictor (a time read from the norm of x)."""
    return (x.double().pow(2).mean(1).sqrt() / 2.5).clamp(0.02, 1.0)


# Every registered sampler with the plain model, and every method-side step rule (the time predictor's
# per-sample-coefficient samplers, which carry the facts of the shared sampler of the same name) with
# the model it is for: (case id, spec, function, model -> the model it samples).
CASES = [(n, SPECS[n], SPECS[n].fn, lambda m: m) for n in sorted(SPECS)] + [
    (f"tp_{n}", SPECS[n], fn, lambda m: TimePredictorSampling(m, _g, use_in_coefficients=True))
    for n, fn in sorted(TP_SAMPLERS.items())]


def _grid(spec, schedule, steps):
    return time_grid(schedule, steps, t_min=spec.default_t_min)


def _run(case, model, x, ts, seed=0, **kw):
    _, _, fn, wrap = case
    return fn(wrap(model), x, ts, generator=torch.Generator().manual_seed(seed), **kw)


@pytest.fixture(params=["discrete", "vp"])
def model(request):
    schedule = DISCRETE.schedule if request.param == "discrete" else VPLinear()
    return exact_mixture_model(MIX, schedule)


def _x(n=16, seed=1):
    return torch.randn(n, 2, dtype=F64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
class TestSamplerContract:
    def test_shape_dtype_and_finite(self, case, model):
        spec = case[1]
        r = _run(case, model, _x(), _grid(spec, model.schedule, 6))
        assert r.x.shape == (16, 2) and r.x.dtype == F64 and bool(torch.isfinite(r.x).all())
        assert r.times.shape[0] == len(_grid(spec, model.schedule, 6))

    def test_same_seed_same_samples(self, case, model):
        spec = case[1]
        ts = _grid(spec, model.schedule, 6)
        a, b, c = (_run(case, model, _x(), ts, seed=s).x for s in (0, 0, 1))
        assert torch.equal(a, b)
        assert torch.equal(a, c) != spec.stochastic  # only a stochastic sampler depends on the generator

    @pytest.mark.parametrize("steps", [1, 2, 5])
    def test_nfe_is_counted_once_per_model_call(self, case, model, steps):
        spec = case[1]
        counting = Counting(model)
        ts = _grid(spec, model.schedule, steps)
        r = _run(case, counting, _x(), ts)
        assert r.nfe == counting.calls > 0
        if spec.evals_per_step is not None:
            assert r.nfe == spec.nfe(len(ts) - 1, float(ts[-1])) + (1 if float(ts[-1]) > 0 and "denoise" in spec.options else 0)

    def test_trajectory_and_callback_agree(self, case, model):
        spec = case[1]
        ts = _grid(spec, model.schedule, 5)
        seen = []
        r = _run(case, model, _x(), ts, return_trajectory=True,
                 callback=lambda i, t, x, x0: seen.append((i, t, x.clone(), x0)))
        plain = _run(case, model, _x(), ts)
        assert torch.equal(r.x, plain.x)                                   # watching changes nothing
        assert [s[0] for s in seen] == list(range(len(ts) - 1))
        assert [s[1] for s in seen] == ts[1:].tolist()
        assert torch.equal(r.trajectory[0], _x()) and r.trajectory.shape[0] == len(ts)
        for (i, t, x, x0), xt in zip(seen, r.trajectory[1:]):
            torch.testing.assert_close(x, xt, rtol=1e-6, atol=1e-6)
        if r.x0_preds is not None:
            assert all(torch.equal(s[3], p) for s, p in zip(seen, r.x0_preds))
        if float(ts[-1]) == 0.0:
            assert torch.equal(r.trajectory[-1], r.x)

    def test_a_grid_of_trained_times_is_the_respaced_process(self, case):
        name, spec, fn, _ = case
        if not spec.respaces or fn is not spec.fn:
            pytest.skip(f"{name} steps with β(t) between grid times, or at per-sample times: not a respaced chain")
        model = exact_mixture_model(MIX, DISCRETE.schedule)
        kept = [99, 349, 599, 999]
        ts = torch.cat([(torch.tensor(kept, dtype=F64).flip(0) + 1) / 1000, torch.zeros(1, dtype=F64)])
        spaced = spaced_diffusion(DISCRETE, kept)
        respaced = Respaced(model, spaced, kept)
        zs = [torch.randn(16, 2, dtype=F64, generator=torch.Generator().manual_seed(k)) for k in range(4)]
        noise = lambda n, like: zs[n]  # noqa: E731
        got = fn(model, _x(), ts, noise_sampler=noise).x
        ref = fn(respaced, _x(), time_grid(respaced.schedule, len(kept)), noise_sampler=noise).x
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)


class Respaced(torch.nn.Module):
    """The model on the respaced process: its own times (i+1)/T' shown to the network as the original
    trained times of the kept steps (improved-diffusion's SpacedDiffusion, as a model)."""

    def __init__(self, model, spaced, kept):
        super().__init__()
        self.model, self.var_type = model, model.var_type
        self.schedule = DiscreteSchedule(spaced.alphas_cumprod)  # its own T' steps at (i+1)/T'
        self.kept = torch.tensor(kept, dtype=F64)

    def forward(self, x, t, y=None):
        i = (t.double() * len(self.kept)).round().long() - 1
        return self.model(x, (self.kept[i] + 1) / 1000, y)
