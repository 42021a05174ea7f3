"""The wrapper contract: every model wrapper (a model made from a model) gets these checks by having
an entry in CASES, and a new ModelWrapper subclass without one fails the completeness test.

A no-op instance (zero weight, zero window) changes nothing bit for bit under every sampler; two
wrappers stack in either order to the same model (except two that both choose the time); and a stack spends exactly one inner-model
evaluation per sampler evaluation (NFE is counted once).
"""
import itertools

import pytest
import torch
from torch import nn

from difflab.methods.guidance import ClassifierGuidance, DiscriminatorGuidance, GradientGuidance
from difflab.methods.time_predictor import (ConstantShift, EpsilonScaling, StepTimeMap, TimePredictorSampling,
                                            TimeShiftSampling)
from difflab.models import ModelWrapper, exact_mixture_model
from difflab.process import GaussianDiffusion, VPLinear, linear_betas, ring_mixture
from difflab.samplers import SAMPLERS, time_grid

from conftest import Counting

F64 = torch.float64
MIX = ring_mixture(8, radius=2.0, std=0.3)


class Logit(nn.Module):
    """A smooth stand-in discriminator: logit d(x, t) = -0.3 |x - c|² (1 - t)."""

    def forward(self, x, t, y=None):
        c = torch.tensor([1.0, -0.5], dtype=x.dtype, device=x.device)
        return -0.3 * ((x - c) ** 2).sum(1) * (1 - t.to(x.dtype))


class Linear3(nn.Module):
    """A stand-in noisy classifier over 3 classes: logits W x + b t."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.w = nn.Parameter(torch.randn(3, 2, generator=g, dtype=F64))
        self.b = nn.Parameter(torch.randn(3, generator=g, dtype=F64))

    def forward(self, x, t):
        return x.to(F64) @ self.w.T + t.to(F64)[:, None] * self.b


def _g(x):
    """A stand-in time predictor: a time read from the norm of x."""
    return (x.double().pow(2).mean(1).sqrt() / 2.5).clamp(0.02, 1.0)


# wrapper class -> (no-op instance, example instance), each a function of the model
CASES = {
    TimePredictorSampling: (lambda m: TimePredictorSampling(m, _g, window=0.0),
                            lambda m: TimePredictorSampling(m, _g, window=0.1)),
    TimeShiftSampling: (lambda m: TimeShiftSampling(m, 1.0, window=0.0, cutoff=0.1),
                        lambda m: TimeShiftSampling(m, 1.0, window=0.1, cutoff=0.1)),
    StepTimeMap: (lambda m: StepTimeMap(m, {0.5: 0.5}), lambda m: StepTimeMap(m, {0.4: 0.43, 0.6: 0.62, 1.0: 0.97})),
    ConstantShift: (lambda m: ConstantShift(m, 0.0), lambda m: ConstantShift(m, 0.02)),
    EpsilonScaling: (lambda m: EpsilonScaling(m, 1.0, 0.0), lambda m: EpsilonScaling(m, 1.01, 0.02)),
    DiscriminatorGuidance: (lambda m: DiscriminatorGuidance(m, Logit(), weight=0.0),
                            lambda m: DiscriminatorGuidance(m, Logit(), weight=1.5)),
    ClassifierGuidance: (lambda m: ClassifierGuidance(m, Linear3(), weight=0.0, target=1),
                         lambda m: ClassifierGuidance(m, Linear3(), weight=2.0, target=1)),
}
ABSTRACT = {GradientGuidance}


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_every_wrapper_is_under_contract():
    import difflab.methods.dsno  # noqa: F401  (import every method package, so each wrapper class exists)

    missing = {c.__name__ for c in _subclasses(ModelWrapper) if c not in CASES and c not in ABSTRACT
               and c.__module__.startswith("difflab")}
    assert missing == set(), f"add these wrappers to CASES: {sorted(missing)}"


@pytest.fixture(params=["discrete", "vp"])
def model(request):
    schedule = GaussianDiffusion(linear_betas(1000)).schedule if request.param == "discrete" else VPLinear()
    return exact_mixture_model(MIX, schedule)


def _x():
    return torch.randn(12, 2, dtype=F64, generator=torch.Generator().manual_seed(3))


def _sample(model, name, steps=6):
    return SAMPLERS[name](model, _x(), time_grid(model.schedule, steps), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("wrapper", list(CASES), ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", ["ancestral", "ddim", "euler_maruyama", "pf_heun"])
def test_a_no_op_wrapper_changes_nothing_bit_for_bit(wrapper, name, model):
    plain, wrapped = _sample(model, name), _sample(CASES[wrapper][0](model), name)
    assert torch.equal(plain.x, wrapped.x) and plain.nfe == wrapped.nfe
    example = _sample(CASES[wrapper][1](model), name)          # and the contract has power: a real one differs
    assert not torch.equal(plain.x, example.x)


@pytest.mark.parametrize("a, b", list(itertools.combinations(CASES, 2)), ids=lambda c: c.__name__)
def test_wrappers_stack_in_either_order(a, b, model):
    if issubclass(a, TimePredictorSampling) and issubclass(b, TimePredictorSampling):
        pytest.skip("two time choices do not commute: the outer one's time is the inner one's nominal time")
    if EpsilonScaling in (a, b) and {a, b} & {DiscriminatorGuidance, ClassifierGuidance}:
        pytest.skip("ε scaling divides what it is given (the network's ε: innermost), guidance adds a term")
    x, t = _x(), torch.full((12,), 0.4, dtype=F64)
    ab = CASES[a][1](CASES[b][1](model))(x, t)
    ba = CASES[b][1](CASES[a][1](model))(x, t)
    torch.testing.assert_close(ab.eps, ba.eps, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ab.t.double(), ba.t.double(), rtol=0, atol=0)
    assert not torch.allclose(ab.eps, model(x, t).eps)


@pytest.mark.parametrize("stack", [list(CASES)[:k] for k in range(1, len(CASES) + 1)], ids=len)
def test_nfe_is_counted_once_through_a_stack(stack, model):
    base = Counting(model)
    m = base
    for w in stack:
        m = CASES[w][1](m)
    r = _sample(m, "pf_heun", 5)
    assert r.nfe == base.calls == 9
