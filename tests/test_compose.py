"""One front door: `difflab sample` with --tp/--dg/--cg (and a DSNO checkpoint) writes exactly the samples of
the wrappers stacked by hand in Python, for every combination; a checkpoint's [sample] defaults apply."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from difflab.cli import main
from difflab.methods.guidance import ClassifierGuidance, DiscriminatorGuidance, load_classifier, load_discriminator
from difflab.methods.time_predictor import (ConstantShift, EpsilonScaling, TimePredictorSampling, TimeShiftSampling,
                                            load_time_predictor, tp_sample)
from difflab.samplers import generate
from difflab.train.api import load_model

Q = ["--no-progress"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("compose")
    run = d / "toy"
    assert main(["train", "toy-ddpm", "--out", str(run), "--set", "train.steps=20", "--set", "train.batch_size=64",
                 "--set", "model.hidden=32", "--set", "model.depth=2", "--set", "data.num_samples=1000", *Q]) == 0
    assert main(["tp-train", str(run), "--out", str(d / "tp"), "--steps", "10", "--set", "tp.hidden=32", *Q]) == 0
    assert main(["dg-bank", str(run), "--out", str(d / "bank"), "--n", "200", "--steps", "4", *Q]) == 0
    assert main(["dg-train", str(run), "--bank", str(d / "bank"), "--out", str(d / "dg"), "--steps", "4",
                 "--batch-size", "100", "--max-real", "200", "--device", "cpu", *Q]) == 0
    assert main(["cg-train", str(run), "--out", str(d / "cg"), "--steps", "3", "--batch-size", "100", "--device",
                 "cpu", *Q]) == 0
    return d


def _by_hand(d, tp: bool, dg: bool, cg: bool, coefficients: bool, sampler: str, steps: int, n: int, seed: int):
    model, _, _ = load_model(d / "toy")
    if tp:
        model = TimePredictorSampling(model, load_time_predictor(d / "tp").predictor, use_in_coefficients=coefficients)
    if dg:
        model = DiscriminatorGuidance(model, load_discriminator(d / "dg"), weight=1.5, t_window=(0.0, 1.0))
    if cg:
        model = ClassifierGuidance(model, load_classifier(d / "cg"), weight=0.1, t_window=(0.0, 1.0), target=2)
    fn = tp_sample if coefficients else None
    return generate(model, (2,), sampler=sampler, steps=steps, n=n, seed=seed, batch=7, sample_fn=fn)["x"]


COMBOS = [c for c in itertools.product([False, True], repeat=3)]


@pytest.mark.parametrize("tp, dg, cg", COMBOS, ids=[f"tp{int(a)}-dg{int(b)}-cg{int(c)}" for a, b, c in COMBOS])
def test_sample_equals_the_stack_by_hand(runs, tmp_path, tp, dg, cg):
    sampler = "dpmpp_2m" if not tp else "ddim"
    args = ["sample", str(runs / "toy"), "--sampler", sampler, "--steps", "5", "--n", "16", "--seed", "4",
            "--batch", "7", "--device", "cpu", "--no-clip", "--out", str(tmp_path / "x.npz"), *Q]
    if tp:
        args += ["--tp", str(runs / "tp")]
    if dg:
        args += ["--dg", str(runs / "dg"), "--dg-weight", "1.5"]
    if cg:
        args += ["--cg", str(runs / "cg"), "--cg-scale", "0.1", "--label", "2"]
    assert main(args) == 0
    got = torch.from_numpy(np.load(tmp_path / "x.npz")["samples"])
    want = _by_hand(runs, tp, dg, cg, False, sampler, 5, 16, 4)
    assert torch.equal(got, want)
    if tp or dg or cg:
        plain = _by_hand(runs, False, False, False, False, sampler, 5, 16, 4)
        assert not torch.allclose(got, plain, atol=1e-4)  # each method changes the samples


def test_tp_with_coefficients_equals_algorithm_3_by_hand(runs, tmp_path):
    assert main(["sample", str(runs / "toy"), "--sampler", "ancestral", "--steps", "5", "--n", "16", "--batch", "7",
                 "--tp", str(runs / "tp"), "--tp-coefficients", "--dg", str(runs / "dg"), "--dg-weight", "1.5",
                 "--no-clip", "--device", "cpu", "--out", str(tmp_path / "x.npz"), *Q]) == 0
    got = torch.from_numpy(np.load(tmp_path / "x.npz")["samples"])
    assert torch.equal(got, _by_hand(runs, True, True, False, True, "ancestral", 5, 16, 0))


TIME_LAYERS = [
    (["--time-shift", "0.05", "--ts-cutoff", "0.2", "--ts-data-var", "0.4"],
     lambda m: TimeShiftSampling(m, 0.4, window=0.05, cutoff=0.2), "dpmpp_2m"),
    (["--time-shift", "0.05", "--ts-data-var", "0.4", "--time-readout", "x0", "--eps-scale", "1.01,0.02"],
     lambda m: TimeShiftSampling(EpsilonScaling(m, 1.01, 0.02), 0.4, window=0.05, x0_readout=True), "dpmpp_2m"),
    (["--time-shift", "0.05", "--ts-data-var", "0.4", "--time-readout", "coefficients"],
     lambda m: TimeShiftSampling(m, 0.4, window=0.05, use_in_coefficients=True), "ancestral"),
    (["--t-shift", "0.02"], lambda m: ConstantShift(m, 0.02), "ddim"),
    (["--tp", "TP", "--tp-window", "0.03"], "tp-window", "ddim"),
]


@pytest.mark.parametrize("flags, make, sampler", TIME_LAYERS, ids=lambda v: "_".join(v) if isinstance(v, list) else "")
def test_time_layers_equal_the_stack_by_hand(runs, tmp_path, flags, make, sampler):
    flags = [str(runs / "tp") if f == "TP" else f for f in flags]
    if make == "tp-window":
        g = load_time_predictor(runs / "tp").predictor
        make = lambda m: TimePredictorSampling(m, g, window=0.03)  # noqa: E731
    assert main(["sample", str(runs / "toy"), "--sampler", sampler, "--steps", "5", "--n", "16", "--batch", "7",
                 "--no-clip", "--device", "cpu", "--out", str(tmp_path / "x.npz"), *flags, *Q]) == 0
    got = torch.from_numpy(np.load(tmp_path / "x.npz")["samples"])
    model = make(load_model(runs / "toy")[0])
    want = generate(model, (2,), sampler=sampler, steps=5, n=16, seed=0, batch=7, sample_fn=tp_sample)["x"]
    assert torch.equal(got, want)
    plain = generate(load_model(runs / "toy")[0], (2,), sampler=sampler, steps=5, n=16, seed=0, batch=7)["x"]
    assert not torch.allclose(got, plain, atol=1e-5)


def test_two_time_layers_are_one_line(runs, tmp_path, capsys):
    assert main(["sample", str(runs / "toy"), "--t-shift", "0.01", "--time-shift", "0.05", "--ts-data-var", "0.4",
                 "--out", str(tmp_path / "x.npz"), *Q]) != 0
    assert "--time-shift and --t-shift each choose the time" in capsys.readouterr().err


def test_dg_weight_zero_is_the_plain_sampler_bit_for_bit(runs, tmp_path):
    for name, extra in (("plain", []), ("w0", ["--dg", str(runs / "dg"), "--dg-weight", "0"])):
        assert main(["sample", str(runs / "toy"), "--sampler", "ancestral", "--steps", "6", "--n", "12", "--batch", "12",
                     "--device", "cpu", "--out", str(tmp_path / f"{name}.npz"), *extra, *Q]) == 0
    assert np.array_equal(np.load(tmp_path / "plain.npz")["samples"], np.load(tmp_path / "w0.npz")["samples"])


def test_dsno_samples_through_sample_with_one_evaluation(tmp_path, capsys):
    from difflab.methods.dsno import load_dsno
    from difflab.methods.dsno.bank import noise_from_seeds, noise_seeds
    from difflab.methods.dsno.sampler import dsno_sample

    assert main(["sample", "mnist-dsno", "--n", "6", "--batch", "4", "--out", str(tmp_path / "d.npz"), *Q]) == 0
    assert "1 network evaluations per sample" in capsys.readouterr().out
    dsno, _, _ = load_dsno("mnist-dsno")
    want = dsno_sample(dsno, noise_from_seeds(noise_seeds(0, 0, 6), (1, 28, 28))).x
    got = torch.from_numpy(np.load(tmp_path / "d.npz")["samples"])
    assert torch.allclose(got, want, atol=1e-5, rtol=0)


def test_checkpoint_sample_defaults_apply_unless_overridden(tmp_path, capsys):
    """mnist-iddpm records clip_denoised = true: `sample` clips by default (the cosine model's unclipped
    first step explodes), --no-clip turns it off, and `info` prints the defaults."""
    common = ["--sampler", "ddim", "--steps", "4", "--n", "4", "--batch", "4", "--device", "cpu", *Q]
    assert main(["sample", "mnist-iddpm", "--out", str(tmp_path / "c.npz"), *common]) == 0
    assert main(["sample", "mnist-iddpm", "--no-clip", "--out", str(tmp_path / "u.npz"), *common]) == 0
    clipped, raw = (np.load(tmp_path / f"{k}.npz")["samples"] for k in "cu")
    assert np.abs(clipped).max() <= 1.0 + 1e-6 < 50 < np.abs(raw).max()
    capsys.readouterr()
    assert main(["sample", "mnist-iddpm", "--n", "3", "--steps", "2", "--out", str(tmp_path / "d.npz"), *Q]) == 0
    out = capsys.readouterr().out
    assert "ddim, x̂0 clipped, 2 network evaluations" in out  # the recorded sampler and clipping; --steps overrides 50
    assert np.load(tmp_path / "d.npz")["samples"].shape == (3, 1, 28, 28)
    assert main(["info", "mnist-iddpm"]) == 0
    assert '"clip_denoised": true' in capsys.readouterr().out


def test_bench_stack_and_side_by_side_rows_score_the_stack_by_hand(runs, tmp_path):
    """`bench --tp --dg --stack` runs every row on the stack `sample` builds; without --stack the TP+DG
    row is that same model beside the plain rows: both score exactly the samples stacked by hand."""
    import json

    from difflab.metrics.bench import evaluate_samples
    from difflab.train.api import load_model

    _, cfg, _ = load_model(runs / "toy")
    common = [str(runs / "toy"), "--nfe", "5", "--method-nfe", "5", "--samplers", "ddim", "--n", "40", "--batch",
              "7", "--no-peers", "--no-adaptive", "--n-boot", "0", "--device", "cpu", "--tp", str(runs / "tp"),
              "--dg", str(runs / "dg"), "--dg-weight", "1.5", *Q]
    assert main(["bench", *common, "--stack", "--out", str(tmp_path / "s")]) == 0
    assert main(["bench", *common, "--out", str(tmp_path / "b")]) == 0
    want = evaluate_samples(_by_hand(runs, True, True, False, False, "ddim", 5, 40, 0), cfg.data.name, n_boot=0)
    plain = evaluate_samples(_by_hand(runs, False, False, False, False, "ddim", 5, 40, 0), cfg.data.name, n_boot=0)
    stacked = json.loads((tmp_path / "s" / "results.json").read_text())
    assert {(r["model"], r["sampler"]) for r in stacked["rows"]} == {("difflab", "ddim")}
    assert stacked["rows"][0]["quality"] == want["quality"] and "TP" in " ".join(stacked["stack"])
    rows = {(r["model"], r["sampler"], r["nfe"]): r for r in json.loads((tmp_path / "b" / "results.json").read_text())["rows"]}
    assert rows[("TP+DG", "ddim", 5)]["quality"] == want["quality"]
    assert rows[("difflab", "ddim", 5)]["quality"] == plain["quality"] != want["quality"]
    assert rows[("TP+DG", "ddim", 5)]["ratio"] == want["quality"] / plain["quality"]
    bare = [a for a in common if a not in {str(runs / "tp"), str(runs / "dg"), "--tp", "--dg"}]
    assert main(["bench", *bare, "--stack", "--out", str(tmp_path / "e")]) == 2  # --stack without a method
    assert main(["bench", *common, "--cg", str(runs / "cg"), "--label", "1", "--out", str(tmp_path / "c")]) == 2


def test_bench_puts_a_time_shift_row_beside_the_plain_one(runs, tmp_path):
    """`bench --time-shift W` without --stack adds the Time-Shift row (named for it) with its ratio to
    the plain sampler; its samples are the wrapper's by hand."""
    import json

    from difflab.metrics.bench import evaluate_samples

    model, cfg, _ = load_model(runs / "toy")
    assert main(["bench", str(runs / "toy"), "--nfe", "5", "--method-nfe", "5", "--samplers", "ddim", "--n", "40",
                 "--batch", "7", "--no-peers", "--no-adaptive", "--n-boot", "0", "--device", "cpu", "--time-shift",
                 "0.1", "--ts-data-var", "0.4", "--eps-scale", "1.02", "--out", str(tmp_path / "b"), *Q]) == 0
    rows = {(r["model"], r["sampler"], r["nfe"]): r for r in json.loads((tmp_path / "b" / "results.json").read_text())["rows"]}
    x = generate(TimeShiftSampling(EpsilonScaling(model, 1.02), 0.4, window=0.1), (2,), sampler="ddim", steps=5, n=40,
                 seed=0, batch=7)["x"]
    want = evaluate_samples(x, cfg.data.name, n_boot=0)["quality"]
    assert rows[("TS ±0.1+ε/1.02", "ddim", 5)]["quality"] == want != rows[("difflab", "ddim", 5)]["quality"]
