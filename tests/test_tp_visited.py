"""g trained on the states a sampler visits (issue #21): the states are the sampler's own, their labels read
the noise level the exact score's marginals give them, and a g trained on them learns the sampler's drift."""
from __future__ import annotations

import pytest
import torch

from difflab.errors import ConfigError
from difflab.methods.time_predictor import (EpsilonScaling, StateTimeObjective, TimePredictorConfig,
                                            build_time_predictor, fit_time_predictor, label_states, sampler_states)
from difflab.models import exact_mixture_model
from difflab.samplers import grid_for

from test_time_shift import DISCRETE, D, MIX, _closed_form_m

F64 = torch.float64


def test_states_are_the_samplers_own_at_every_grid_time():
    """K = steps states per run, at the grid times above 0; the t = 1 rows are the batch's x_T and the
    others what the sampler reaches there (the same sampler stopped at t_k from the same x_T)."""
    model = exact_mixture_model(MIX, DISCRETE)
    xs, nominal = sampler_states(model, (D,), sampler="ddim", steps=5, n=6, seed=3, batch=4)
    grid = grid_for("ddim", DISCRETE, 5)
    assert xs.shape == (30, D) and sorted(set(nominal.tolist())) == sorted(float(t) for t in grid if t > 0)
    x_T = torch.cat([torch.randn((4, D), generator=torch.Generator().manual_seed(3)),
                     torch.randn((2, D), generator=torch.Generator().manual_seed(4))])
    assert torch.equal(xs[nominal == 1.0], x_T)
    from difflab.samplers import SAMPLERS

    k = 3  # stop the plain sampler at grid[3] and compare with the recorded state there
    stopped = SAMPLERS["ddim"](model, x_T[:4], grid[: k + 1], generator=torch.Generator().manual_seed(3)).x
    assert torch.allclose(xs[:20][nominal[:20] == float(grid[k])], stopped.float(), atol=1e-5)


def test_labels_read_the_noise_level_and_find_the_drift():
    """With the exact score and 50 ancestral steps the states follow the marginals: each step's label is
    its nominal time (to ±0.015, the sampling error of 512 states where v(τ) is steep); with ε shrunk by 1.1
    the states keep too much noise and every label moves later. Per-sample labels scatter about the
    step's (one image of 256 pixels reads its own noise level to about ±0.06); window 0 is the nominal time exactly."""
    m = _closed_form_m(MIX)
    model = exact_mixture_model(MIX, DISCRETE)
    xs, nominal = sampler_states(model, (D,), sampler="ancestral", steps=50, n=512)
    mid = (nominal > 0.1) & (nominal < 0.45)
    step = label_states(model, xs, nominal, m, window=0.2, per="step")
    assert (step[mid] - nominal[mid]).abs().max() <= 0.015
    each = label_states(model, xs, nominal, m, window=0.2, per="sample")
    for t in nominal[mid].unique()[::4]:  # v(τ) is curved, so the mean reading is near, not at, the mean's
        assert abs(float(each[nominal == t].mean()) - float(step[nominal == t][0])) <= 0.025
    assert torch.equal(label_states(model, xs, nominal, m, window=0.0), nominal)
    assert torch.equal(label_states(model, xs, nominal, m, window=0.2, cutoff=0.0), nominal)
    cut = label_states(model, xs, nominal, m, window=0.2, per="step", cutoff=0.3)
    assert torch.equal(cut[nominal > 0.3], nominal[nominal > 0.3]) and torch.equal(cut[nominal <= 0.3], step[nominal <= 0.3])
    bx, bn = sampler_states(EpsilonScaling(model, 1.1), (D,), sampler="ancestral", steps=50, n=512)
    biased = label_states(model, bx, bn, m, window=0.2, per="step")
    bmid = (bn > 0.1) & (bn < 0.45)
    assert bool((biased[bmid] > bn[bmid] + 0.025).all())
    with pytest.raises(ConfigError, match="'pixel'; expected one of sample, step"):
        label_states(model, xs, nominal, m, per="pixel")


def test_objective_is_the_mse_on_the_labels_units():
    predictor = build_time_predictor((D,), DISCRETE, TimePredictorConfig(hidden=16, depth=1))
    labels = torch.tensor([0.2, 0.5, 0.9, 0.4], dtype=F64)
    obj = StateTimeObjective(predictor.scale, labels)
    x, y = torch.randn(3, D), torch.tensor([2, 0, 3])
    loss, logs = obj.loss(predictor, x, y, obj.draw(x, y, torch.Generator()))
    want = ((predictor(x, raw=True) - predictor.scale.to_unit(labels[y]).float()) ** 2).detach()
    assert torch.allclose(loss, want) and abs(float(logs["mse"]) - float(want.mean())) < 1e-6


def test_g_trained_on_a_drifting_samplers_states_learns_its_drift(tmp_path):
    """States of ancestral@20 with ε/1.1 (noisier than the grid says), labelled per step: on fresh states of
    the same sampler, where the noise level is readable and the labels are inside their window
    (0.22 < t < 0.38, labels 0.08–0.2 later than nominal), g's mean reading per step is within a third of
    the drift of its label, and its error is below the nominal time's. (Near t = 0.1 g is pulled towards
    its neighbours' labels, the E[t | x] effect, and above 0.4 nothing in x tells the steps apart.)"""
    m = _closed_form_m(MIX)
    model = EpsilonScaling(exact_mixture_model(MIX, DISCRETE), 1.1)
    xs, nominal = sampler_states(model, (D,), sampler="ancestral", steps=20, n=600, seed=0)
    labels = label_states(model, xs, nominal, m, window=0.2, per="step")
    torch.manual_seed(0)
    predictor = build_time_predictor((D,), DISCRETE, TimePredictorConfig(hidden=64, depth=2))
    from difflab.config import TrainConfig

    tcfg = TrainConfig(steps=800, batch_size=256, lr=2e-3, warmup_steps=20, lr_schedule="cosine", grad_clip=1.0,
                       ema_rate=0.99, ckpt_every=0, log_every=100)
    fit_time_predictor(predictor, xs, tcfg, tmp_path / "g", labels=labels)
    fx, fn = sampler_states(model, (D,), sampler="ancestral", steps=20, n=200, seed=99)
    flab = label_states(model, fx, fn, m, window=0.2, per="step")
    with torch.no_grad():
        pred = predictor.eval()(fx).to(F64)
    keep = (fn > 0.22) & (fn < 0.38)
    for t in fn[keep].unique():
        k = fn == t
        drift = float(flab[k][0] - t)
        assert drift > 0.05 and abs(float(pred[k].mean() - flab[k][0])) < drift / 3, (float(t), drift)
    err_g = float(((pred[keep] - flab[keep]) ** 2).mean().sqrt())
    err_nominal = float(((fn[keep] - flab[keep]) ** 2).mean().sqrt())
    assert err_g < 0.75 * err_nominal, (err_g, err_nominal)
    with pytest.raises(ConfigError, match=r"expected \(12000,\), one per state"):
        fit_time_predictor(predictor, xs, tcfg, tmp_path / "h", labels=labels[:5])


def test_cli_trains_g_on_the_samplers_states(tmp_path):
    """tp-train --on-states: g trained on the toy model's own DDIM@4 states, the settings in its checkpoint."""
    from difflab.cli import main
    from difflab.methods.time_predictor import load_time_predictor

    diff, tp = tmp_path / "toy", tmp_path / "tp"
    assert main(["train", "toy-ddpm", "--out", str(diff), "--set", "train.steps=10", "--set", "train.ckpt_every=0",
                 "--no-progress"]) == 0
    assert main(["tp-train", str(diff), "--out", str(tp), "--steps", "10", "--set", "tp.hidden=16", "--on-states",
                 "ddim:4", "--states-n", "64", "--states-label", "step", "--no-progress"]) == 0
    lt = load_time_predictor(tp)
    spec = lt.checkpoint.state["extra"]["sampler_states"]
    assert spec == {"sampler": "ddim", "steps": 4, "n": 64, "window": 0.1, "per": "step", "seed": 0, "cutoff": 1.0}
    assert lt.checkpoint.step == 10
