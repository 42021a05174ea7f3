"""Discriminator and classifier guidance: exact corrections in the toy world, a trained
discriminator that fixes a wrong score, bit-identical unguided sampling at w = 0, stacking, and
the resumable sample bank."""
import json
import shutil

import numpy as np
import pytest
import torch

from difflab.data import toy_mixture
from difflab.errors import DataError
from difflab.methods.guidance import (ClassifierGuidance, Discriminator, DiscriminatorGuidance, NoisyClassifier,
                                      discriminator_dataset, generate_bank, load_bank, load_classifier,
                                      load_discriminator, train_classifier, train_discriminator)
from difflab.methods.guidance.bank import shard_name
from difflab.methods.guidance.oracle import MixtureClassifier, MixtureLogRatio, wrong_mixture
from difflab.metrics.toy import toy_metrics
from difflab.models import ModelWrapper, exact_mixture_model
from difflab.process import GaussianDiffusion, GaussianMixture, VPLinear, linear_betas, ring_mixture
from difflab.samplers import SAMPLERS, sample

F64 = torch.float64
TRUE = toy_mixture("toy:ring8")
DISCRETE = GaussianDiffusion(linear_betas(1000)).schedule


def _points(n=400, scale=1.5, seed=0):
    return scale * torch.randn(n, 2, dtype=F64, generator=torch.Generator().manual_seed(seed))


def _at(t, n):
    return torch.full((n,), t, dtype=F64)


# ------------------------------------------------------------------------------ the toy world, exactly
@pytest.mark.parametrize("schedule", [DISCRETE, VPLinear()], ids=["discrete", "vp"])
@pytest.mark.parametrize("kind", ["weights", "shift", "both"])
def test_analytic_discriminator_gives_the_true_score(schedule, kind):
    """With d* = p_t/(p_t + q_t), score_q + ∇ logit d* = score_p to float64 round-off at every t."""
    bad = wrong_mixture(TRUE, kind)
    wrong, true = exact_mixture_model(bad, schedule), exact_mixture_model(TRUE, schedule)
    guided = DiscriminatorGuidance(wrong, MixtureLogRatio(TRUE, bad, schedule))
    x = _points()
    for t in (1e-3, 0.01, 0.05, 0.2, 0.5, 1.0):
        tt = _at(t, len(x))
        err = (guided(x, tt).eps - true(x, tt).eps).abs().max().item()
        gap = (wrong(x, tt).eps - true(x, tt).eps).abs().max().item()
        assert err < 1e-8, (t, err)
        assert gap > 1e-6 or t == 1.0, (t, gap)  # the wrong score really is wrong (but for pure noise)


def test_classifier_guidance_with_the_exact_classifier_gives_the_component_score():
    """CG at w = 1 with p(k | x_t) = responsibilities turns the mixture's score into component k's:
    score + ∇ log p(k | x_t) = ∇ log N(x; α μ_k, (α² s² + σ²) I), closed form."""
    model = exact_mixture_model(TRUE, DISCRETE)
    guided = ClassifierGuidance(model, MixtureClassifier(TRUE, DISCRETE), weight=1.0)
    x = _points()
    y = torch.arange(len(x)) % TRUE.num_components
    std = float(TRUE.eigvals[0, 0].sqrt())
    for t in (1e-3, 0.05, 0.3, 0.9):
        tt = _at(t, len(x))
        a, s = DISCRETE.alpha(tt), DISCRETE.sigma(tt)
        score_k = -(x - a[:, None] * TRUE.means[y]) / (a**2 * std**2 + s**2)[:, None]
        err = (guided(x, tt, y).eps - (-s[:, None] * score_k)).abs().max().item()
        assert err < 1e-8, (t, err)


def test_joint_dg_and_cg_give_the_true_class_conditional_score():
    """The paper's joint sampler: CG stacked on DG. On a wrong score with the analytic d* and the
    true mixture's exact classifier, the result is the true component score."""
    bad = wrong_mixture(TRUE, "both")
    dg = DiscriminatorGuidance(exact_mixture_model(bad, DISCRETE), MixtureLogRatio(TRUE, bad, DISCRETE))
    joint = ClassifierGuidance(dg, MixtureClassifier(TRUE, DISCRETE))
    x = _points(200)
    y = (torch.arange(len(x)) * 3) % 8
    for t in (0.01, 0.2, 0.7):
        tt = _at(t, len(x))
        a, s = DISCRETE.alpha(tt), DISCRETE.sigma(tt)
        comp = GaussianMixture(TRUE.means[y], stds=float(TRUE.eigvals[0, 0].sqrt()))  # one component per row
        score_k = -(x - a[:, None] * comp.means) / (a**2 * comp.eigvals[:, 0] + s**2)[:, None]
        assert (joint(x, tt, y).eps + s[:, None] * score_k).abs().max().item() < 1e-8


def test_classifier_guidance_target_without_sampler_labels():
    """A fixed target stands in for the sampler's y; an unconditional network never sees labels."""
    model = exact_mixture_model(TRUE, DISCRETE)
    clf = MixtureClassifier(TRUE, DISCRETE)
    x, tt = _points(50), _at(0.2, 50)
    by_target = ClassifierGuidance(model, clf, target=3)(x, tt).eps
    by_label = ClassifierGuidance(model, clf)(x, tt, torch.full((50,), 3)).eps
    assert torch.equal(by_target, by_label)
    with pytest.raises(Exception, match="target class"):
        ClassifierGuidance(model, clf)(x, tt)


# ------------------------------------------------------------------------------ w = 0, windows, stacking
class _CountingDiscriminator(torch.nn.Module):
    """A tiny real discriminator that records the times it is asked about."""

    num_classes = None

    def __init__(self):
        super().__init__()
        self.net = Discriminator.build((2,), hidden=16, depth=1)
        self.seen = []

    def forward(self, x, t, y=None):
        self.seen.append(t.detach().clone())
        return self.net(x, t, y)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_zero_weight_is_the_unguided_sampler_bit_for_bit(name):
    """w = 0 (a number or a function of t) never calls the discriminator and returns the unguided
    samples exactly; w = 1 changes them (so the comparison can fail)."""
    model = exact_mixture_model(wrong_mixture(TRUE, "weights"), DISCRETE)
    steps = 0 if name == "pf_adaptive" else 8

    def run(m):
        return sample(m, (64, 2), sampler=name, steps=steps or 1, generator=torch.Generator().manual_seed(3)).x

    base = run(model)
    for w in (0.0, lambda t: torch.zeros_like(t)):
        d = _CountingDiscriminator()
        assert torch.equal(run(DiscriminatorGuidance(model, d, weight=w)), base)
        assert d.seen == []
    d = _CountingDiscriminator()
    assert not torch.equal(run(DiscriminatorGuidance(model, d, weight=1.0)), base) and d.seen


def test_time_window_switches_guidance_off_outside():
    model = exact_mixture_model(wrong_mixture(TRUE, "weights"), DISCRETE)
    d = _CountingDiscriminator()
    guided = DiscriminatorGuidance(model, d, t_window=(0.3, 0.6), weight=5.0)
    x = _points(32).float()
    for t, inside in ((0.2, False), (0.3, True), (0.45, True), (0.6, True), (0.8, False)):
        same = torch.equal(guided(x, _at(t, 32)).eps, model(x, _at(t, 32)).eps)
        assert same != inside, t
    ts = torch.cat(d.seen)
    assert ts.min() >= 0.3 and ts.max() <= 0.6
    # per-sample times (e.g. a time predictor below): only the rows inside the window change
    tt = torch.tensor([0.1, 0.5] * 16, dtype=F64)
    diff = (guided(x, tt).eps != model(x, tt).eps).any(1)
    assert torch.equal(diff, tt == 0.5)
    # a whole sampler run with no grid time in the window is the unguided run
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    off = DiscriminatorGuidance(model, d, t_window=(0.501, 0.509))
    ts_grid = torch.linspace(1, 0, 11, dtype=F64)
    ddim = SAMPLERS["ddim"]
    assert torch.equal(ddim(off, x, ts_grid, generator=g()).x, ddim(model, x, ts_grid, generator=g()).x)


class _ShiftTime(ModelWrapper):
    """A stand-in for time-predictor sampling: evaluates the inner model at t' = 0.9 t and says so in out.t."""

    def forward(self, x, t, y=None):
        return self.inner(x, 0.9 * t, y)


def test_guidance_stacks_on_a_time_changing_wrapper():
    """DG uses the time the inner output belongs to (out.t) and σ of it: DG(shift(wrong)) with the
    analytic d* is the true ε at t' exactly. TimePredictorSampling is the same case."""
    bad = wrong_mixture(TRUE, "both")
    guided = DiscriminatorGuidance(_ShiftTime(exact_mixture_model(bad, DISCRETE)), MixtureLogRatio(TRUE, bad, DISCRETE))
    true = exact_mixture_model(TRUE, DISCRETE)
    x = _points(100)
    out = guided(x, _at(0.4, 100))
    assert torch.allclose(out.t, _at(0.36, 100))
    assert (out.eps - true(x, _at(0.36, 100)).eps).abs().max() < 1e-8
    # and a sampler runs through the stack
    r = sample(guided, (50, 2), sampler="pf_heun", steps=5, dtype=F64, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(r.x).all()


def test_stacks_with_time_predictor_sampling_in_either_order():
    """With the time-predictor wrapper (a constant predictor g(x) = 0.36 here), DG over TP and TP
    over DG both give the true ε at the predicted time, and keep TP's output fields."""
    tp = pytest.importorskip("difflab.methods.time_predictor")
    bad = wrong_mixture(TRUE, "both")
    wrong, d = exact_mixture_model(bad, DISCRETE), MixtureLogRatio(TRUE, bad, DISCRETE)
    g = lambda x: torch.full((x.shape[0],), 0.36, dtype=F64)  # noqa: E731
    x = _points(100)
    want = exact_mixture_model(TRUE, DISCRETE)(x, _at(0.36, 100)).eps
    for m in (DiscriminatorGuidance(tp.TimePredictorSampling(wrong, g), d),
              tp.TimePredictorSampling(DiscriminatorGuidance(wrong, d), g)):
        out = m(x, _at(0.8, 100))
        assert (out.eps - want).abs().max() < 1e-8 and torch.equal(out.nominal_t, _at(0.8, 100))
        assert torch.isfinite(sample(m, (20, 2), sampler="ddim", steps=4, dtype=F64).x).all()


def test_max_norm_clips_the_correction_per_sample():
    bad = wrong_mixture(TRUE, "both")
    model = exact_mixture_model(bad, DISCRETE)
    d = MixtureLogRatio(TRUE, bad, DISCRETE)
    x, tt = _points(200), _at(0.02, 200)
    full = DiscriminatorGuidance(model, d)
    grad = full.correction(x, tt)
    cap = float(grad.norm(dim=1).median())
    clipped = DiscriminatorGuidance(model, d, max_norm=cap, weight=2.0)
    c = (model(x, tt).eps - clipped(x, tt).eps) / (2.0 * DISCRETE.sigma(tt)[:, None])
    norms = grad.norm(dim=1)
    assert torch.allclose(c.norm(dim=1), norms.clamp(max=cap), rtol=1e-10)
    assert torch.allclose(c[norms <= cap], grad[norms <= cap], rtol=1e-10)


# ------------------------------------------------------------------------------ a trained discriminator
def test_trained_discriminator_fixes_most_of_a_wrong_score(tmp_path):
    """A simpler toy than ring8, so a few hundred steps suffice: 4 Gaussians (radius 1.5, std 0.2)
    and a wrong score with the weights 3:1 alternating. A small MLPEncoder (128 x 3) trained 400
    steps on 10k true vs 10k wrong samples (t uniform in log-SNR), then ancestral sampling with
    100 steps, 2000 samples, the same noise for all. Measured: weight TV 0.246 -> 0.087 (true
    score 0.015), MMD² 0.094 -> 0.010 (true 0.001), sliced W2 0.299 -> 0.181 (true 0.098): 69%,
    90% and 59% of the gaps closed. Required: more than half of each, and held-out accuracy
    near the optimum at small t (0.62 there; 0.5 is chance)."""
    mix = ring_mixture(4, radius=1.5, std=0.2)
    bad = wrong_mixture(mix, "weights")
    wrong = exact_mixture_model(bad, DISCRETE)
    g = torch.Generator().manual_seed(0)
    real, fake = mix.sample(10000, g).float(), bad.sample(10000, g).float()
    torch.manual_seed(0)
    res = train_discriminator(wrong, real, fake, tmp_path / "d", discriminator=Discriminator.build((2,)), steps=400,
                              batch_size=512, lr=3e-3, every=400, device="cpu", progress=False, tensorboard=False)
    assert res["last_eval"]["bins"][0]["acc"] > 0.59
    d = load_discriminator(tmp_path / "d")

    def metrics(m):
        x = sample(m, (2000, 2), sampler="ancestral", steps=100, generator=torch.Generator().manual_seed(1)).x
        return toy_metrics(x.double(), mix, seed=2)

    w, dg, tr = metrics(wrong), metrics(DiscriminatorGuidance(wrong, d)), metrics(exact_mixture_model(mix, DISCRETE))
    for key in ("weight_tv", "mmd2", "sliced_w2"):
        closed = (w[key] - dg[key]) / (w[key] - tr[key])
        assert closed > 0.5, (key, w[key], dg[key], tr[key])


def test_discriminator_training_writes_tables_and_checkpoints(tmp_path):
    """Per-epoch held-out tables and checkpoints; the loaded discriminator is the trained EMA module;
    a class-conditional discriminator and a frozen-feature one train through the same path."""
    g = torch.Generator().manual_seed(0)
    real, yr = TRUE.sample(600, g, return_labels=True)
    fake, yf = wrong_mixture(TRUE).sample(600, g, return_labels=True)
    ds = discriminator_dataset(real.float(), fake.float(), yr, yf)
    assert torch.equal(ds.y % 2, torch.cat([torch.ones(600), torch.zeros(600)]).long())
    assert torch.equal(ds.y // 2, torch.cat([yr, yf]))

    disc = Discriminator.build((2,), num_classes=8, hidden=32, depth=2)
    res = train_discriminator(DISCRETE, real.float(), fake.float(), tmp_path / "cond", discriminator=disc,
                              real_labels=yr, fake_labels=yf, steps=12, batch_size=200, t_bins=4, device="cpu",
                              progress=False, tensorboard=False)
    table = json.loads((tmp_path / "cond" / "t_bins.json").read_text())
    assert res["steps_per_epoch"] == 6 and [r["step"] for r in table] == [6, 12]
    assert len(table[-1]["bins"]) == 4 and all(0 <= b["acc"] <= 1 for b in table[-1]["bins"])
    steps = sorted(p.name for p in (tmp_path / "cond" / "checkpoints").glob("step-*"))
    assert steps == ["step-00000006", "step-00000012"]
    loaded = load_discriminator(tmp_path / "cond")
    x, tt, y = _points(10).float(), _at(0.3, 10).float(), torch.arange(10) % 8
    assert loaded.num_classes == 8 and loaded(x, tt, y).shape == (10,)

    # frozen features of a noisy classifier + a trainable head
    clf_res = train_classifier(DISCRETE, real.float(), tmp_path / "clf", labels=yr, steps=6, batch_size=100,
                               device="cpu", progress=False, tensorboard=False,
                               classifier=NoisyClassifier.build((2,), 8, hidden=32, depth=2))
    assert clf_res["final_step"] == 6
    clf = load_classifier(tmp_path / "clf")
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    fdisc = Discriminator.build((2,), extractor=clf)
    train_discriminator(DISCRETE, real.float(), fake.float(), tmp_path / "feat", discriminator=fdisc, steps=5,
                        batch_size=200, device="cpu", progress=False, tensorboard=False)
    assert all(torch.equal(before[k], v) for k, v in clf.state_dict().items())
    again = load_discriminator(tmp_path / "feat", use_ema=False)
    assert torch.allclose(again(x, tt), fdisc(x, tt))


def test_image_discriminator_with_frozen_encoder_features():
    """Images: an Encoder discriminator guides a U-Net model (w = 0 bit for bit, w = 1 changes it);
    a head on a frozen Encoder's features rebuilds from its spec with the same outputs."""
    from difflab.methods.guidance import Discriminator as D
    from difflab.models import DiffusionModel
    from difflab.nets import Encoder, unet_from_preset

    torch.manual_seed(0)
    model = DiffusionModel(unet_from_preset("8x8", in_channels=1, image_size=8, base_channels=8), DISCRETE).eval()
    disc = D.build((1, 8, 8), base_channels=8)

    def run(m):
        return sample(m, (4, 1, 8, 8), sampler="ddim", steps=3, generator=torch.Generator().manual_seed(0)).x

    assert torch.equal(run(DiscriminatorGuidance(model, disc, weight=0.0)), run(model))
    assert not torch.equal(run(DiscriminatorGuidance(model, disc, weight=1.0)), run(model))
    enc = Encoder(1, base_channels=8, channel_mult=(1, 2), image_size=8, out_dim=10)
    fd = D.build((1, 8, 8), extractor=enc)
    assert not any(p.requires_grad for p in fd.extractor.parameters())
    again = D.from_spec(fd.spec())
    again.load_state_dict(fd.state_dict())
    x, t = torch.randn(3, 1, 8, 8), torch.full((3,), 0.4)
    assert torch.equal(again.eval()(x, t), fd.eval()(x, t))
    assert DiscriminatorGuidance(model, fd).correction(x, t.double()).shape == x.shape


class _LogRatioFeature(torch.nn.Module):
    """A "perfect" frozen extractor: its one feature is the toy world's analytic log-ratio."""

    feature_dim = 1

    def __init__(self, log_ratio):
        super().__init__()
        self.log_ratio = log_ratio

    def features(self, x, t):
        return self.log_ratio(x, t).unsqueeze(-1)


def test_head_on_the_analytic_log_ratio_recovers_the_analytic_discriminator():
    from difflab.methods.guidance.objective import DiscriminatorObjective

    """A head trained by BCE on a feature that is already log p_t/q_t learns the identity: its logit
    matches the analytic one (correlation, and mean BCE within 2% of the optimum's) on fresh points."""
    import torch.nn.functional as F

    bad = wrong_mixture(TRUE, "both")
    oracle = MixtureLogRatio(TRUE, bad, DISCRETE)
    g = torch.Generator().manual_seed(1)
    real, fake = TRUE.sample(4000, g).float(), bad.sample(4000, g).float()
    torch.manual_seed(0)
    disc = Discriminator.build((2,), extractor=_LogRatioFeature(oracle), hidden=32)
    objective = DiscriminatorObjective(DISCRETE, t_sampling="log_snr")  # the loss train_discriminator minimises
    ds = discriminator_dataset(real, fake)
    opt = torch.optim.Adam(disc.net.parameters(), lr=3e-3)
    for _ in range(400):
        i = torch.randint(len(ds.x), (256,), generator=g)
        loss, _ = objective.loss(disc, ds.x[i], ds.y[i], objective.draw(ds.x[i], ds.y[i], g))
        opt.zero_grad()
        loss.mean().backward()
        opt.step()
    gen = torch.Generator().manual_seed(7)
    x0 = torch.cat([TRUE.sample(3000, gen), bad.sample(3000, gen)]).float()
    target = torch.cat([torch.ones(3000), torch.zeros(3000)])
    t = 1e-3 + 0.05 * torch.rand(6000, generator=gen, dtype=F64)
    xt = DISCRETE.perturb(x0.double(), t, torch.randn(6000, 2, generator=gen, dtype=F64)).float()
    with torch.no_grad():
        got, want = disc(xt, t.float()), oracle(xt, t)
    assert torch.corrcoef(torch.stack([got, want]))[0, 1] > 0.98
    bce_got = F.binary_cross_entropy_with_logits(got, target).item()
    bce_opt = F.binary_cross_entropy_with_logits(want, target).item()
    assert bce_opt < 0.62 and bce_got < 1.02 * bce_opt, (bce_got, bce_opt)


def test_map_head_on_a_frozen_image_encoder_trains_only_the_head(tmp_path):
    """The paper's head: a small convolutional head on the frozen extractor's feature map (before
    pooling). Training changes the head and never the extractor; the run reloads to the same module."""
    from difflab.nets import Encoder

    torch.manual_seed(0)
    enc = Encoder(1, base_channels=8, channel_mult=(1, 2), image_size=8, out_dim=10)
    disc = Discriminator.build((1, 8, 8), extractor=enc, head_input="map", base_channels=8)
    assert disc.spec()["head_input"] == "map" and disc.net.config["in_channels"] == 16
    frozen = {k: v.clone() for k, v in disc.extractor.state_dict().items()}
    head = {k: v.clone() for k, v in disc.net.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    real, fake = torch.rand(64, 1, 8, 8, generator=g) * 2 - 1, torch.randn(64, 1, 8, 8, generator=g) * 0.3
    train_discriminator(DISCRETE, real, fake, tmp_path / "m", discriminator=disc, steps=4, batch_size=32,
                        holdout=0.0, device="cpu", progress=False, tensorboard=False)
    assert all(torch.equal(frozen[k], v) for k, v in disc.extractor.state_dict().items())
    assert any(not torch.equal(head[k], v) for k, v in disc.net.state_dict().items())
    again = load_discriminator(tmp_path / "m", use_ema=False)
    x, t = torch.randn(3, 1, 8, 8), torch.full((3,), 0.4)
    assert again.head_input == "map" and torch.equal(again.eval()(x, t), disc.eval()(x, t))
    with pytest.raises(Exception, match="head input 'nope'"):
        Discriminator(disc.net, enc, "nope")


# ------------------------------------------------------------------------------ the sample bank
class _Counting(ModelWrapper):
    def __init__(self, inner):
        super().__init__(inner)
        self.calls = 0

    def forward(self, x, t, y=None):
        self.calls += 1
        return self.inner(x, t, y)


def test_sample_bank_resumes_without_redoing_finished_shards(tmp_path):
    model = exact_mixture_model(TRUE, DISCRETE)
    kw = dict(sampler="ddim", steps=4, n=50, shard_size=16, seed=5, shape=(2,), progress=False)
    generate_bank(model, out_dir=tmp_path / "once", **kw)
    once = load_bank(tmp_path / "once")
    assert once.x.shape == (50, 2) and once.y is None

    # a bank cut short: two finished shards, a third cut mid-write, the fourth never started
    part = tmp_path / "part"
    part.mkdir()
    for f in ("bank.json", shard_name(0), shard_name(1)):
        shutil.copy(tmp_path / "once" / f, part / f)
    (part / shard_name(2)).write_bytes((tmp_path / "once" / shard_name(2)).read_bytes()[:200])
    with pytest.raises(DataError, match="shard-00002.npz is corrupt"):
        load_bank(part)
    mtimes = [(part / shard_name(k)).stat().st_mtime_ns for k in (0, 1)]
    counting = _Counting(model)
    generate_bank(counting, out_dir=part, **kw)
    assert counting.calls == 2 * 4  # shards 2 and 3 only, 4 DDIM steps each
    assert [(part / shard_name(k)).stat().st_mtime_ns for k in (0, 1)] == mtimes
    assert torch.equal(load_bank(part).x, once.x)

    # growing the bank keeps its full shards (the partial last one is redrawn at full size)
    generate_bank(model, out_dir=part, **{**kw, "n": 70})
    assert torch.equal(load_bank(part).x[:48], once.x[:48]) and len(load_bank(part)) == 70
    # other settings are refused
    with pytest.raises(DataError, match="other settings"):
        generate_bank(model, out_dir=part, **{**kw, "steps": 5})


def test_labelled_bank_of_a_class_conditional_model(tmp_path):
    model = exact_mixture_model(TRUE, DISCRETE)  # a function model takes (and here ignores) labels
    generate_bank(model, "ddim", 3, 20, tmp_path, shard_size=8, num_classes=8, shape=(2,), progress=False)
    bank = load_bank(tmp_path)
    assert bank.y.shape == (20,) and int(bank.y.max()) < 8
    assert np.array_equal(load_bank(tmp_path, n=10).y.numpy(), bank.y[:10].numpy())


# ------------------------------------------------------------------------------ the command line
def test_cli_bank_train_sample(tmp_path, capsys):
    """dg-bank, dg-train, cg-train and dg-sample on a tiny toy run; dg-sample at w = 0 writes the
    same samples as `difflab sample`; bad input ends in one line and exit status 2."""
    from difflab.cli import main

    run = tmp_path / "toy"
    assert main(["train", "toy-ddpm", "--out", str(run), "--set", "train.steps=20", "--set", "train.batch_size=64",
                 "--set", "model.hidden=32", "--set", "model.depth=2", "--set", "data.num_samples=1000",
                 "--no-progress"]) == 0
    quiet = ["--no-progress"]
    assert main(["dg-bank", str(run), "--out", str(tmp_path / "bank"), "--n", "300", "--steps", "5",
                 "--shard-size", "100", *quiet]) == 0
    assert main(["cg-train", str(run), "--out", str(tmp_path / "cg"), "--steps", "3", "--batch-size", "100",
                 "--device", "cpu", *quiet]) == 0
    capsys.readouterr()
    assert main(["dg-train", str(run), "--bank", str(tmp_path / "bank"), "--out", str(tmp_path / "dg"),
                 "--steps", "4", "--batch-size", "100", "--max-real", "300", "--device", "cpu", *quiet]) == 0
    assert (tmp_path / "dg" / "t_bins.json").exists()
    assert "lowest held-out BCE at t < 0.2: step 4" in capsys.readouterr().out  # its one epoch
    assert main(["dg-train", str(run), "--bank", str(tmp_path / "bank"), "--out", str(tmp_path / "dgf"), "--steps", "2",
                 "--batch-size", "100", "--max-real", "300", "--features", str(tmp_path / "cg"), "--head", "pooled",
                 "--device", "cpu", *quiet]) == 0
    assert load_discriminator(tmp_path / "dgf").head_input == "pooled"
    common = ["--sampler", "ancestral", "--steps", "6", "--n", "40", "--seed", "3", "--device", "cpu", *quiet]
    assert main(["sample", str(run), "--out", str(tmp_path / "plain.npz"), *common]) == 0
    assert main(["dg-sample", str(run), "--disc", str(tmp_path / "dg"), "--weight", "0",
                 "--out", str(tmp_path / "w0.npz"), *common]) == 0
    assert main(["dg-sample", str(run), "--disc", str(tmp_path / "dg"), "--cg", str(tmp_path / "cg"), "--label", "2",
                 "--out", str(tmp_path / "joint.npz"), *common]) == 0
    plain = np.load(tmp_path / "plain.npz")["samples"]
    assert np.array_equal(np.load(tmp_path / "w0.npz")["samples"], plain)
    joint = np.load(tmp_path / "joint.npz")["samples"]
    assert joint.shape == plain.shape and np.isfinite(joint).all() and not np.array_equal(joint, plain)

    capsys.readouterr()
    assert main(["dg-train", str(run), "--bank", str(tmp_path / "nope"), "--out", str(tmp_path / "x"), *quiet]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("difflab: error: argument --bank") and "no such file" in err
    assert main(["dg-sample", str(run), "--disc", str(tmp_path / "cg"), "--out", str(tmp_path / "y.npz"), *quiet]) == 2
    assert "holds a 'classifier', expected a 'discriminator'" in capsys.readouterr().err


@pytest.mark.parametrize("cmd", ["dg-bank", "dg-train", "dg-sample", "cg-train"])
def test_cli_help_has_examples(cmd, capsys):
    from difflab.cli import main

    with pytest.raises(SystemExit):
        main([cmd, "--help"])
    assert "examples:" in capsys.readouterr().out


def test_pick_epoch_takes_the_lowest_held_out_bce_below_t_max():
    from difflab.methods.guidance.diagnostics import pick_epoch

    def rec(step, low, high):
        return {"step": step, "epoch": step / 10, "bins": [{"t_lo": 0.0, "t_hi": 0.1, "acc": 0.7, "loss": low},
                                                           {"t_lo": 0.1, "t_hi": 0.2, "acc": 0.6, "loss": low},
                                                           {"t_lo": 0.2, "t_hi": 1.0, "acc": 0.5, "loss": high}]}

    table = [rec(10, 0.60, 0.69), rec(20, 0.55, 0.70), rec(30, 0.58, 0.60)]  # step 30 best overall, 20 below 0.2
    best = pick_epoch(table)
    assert best["step"] == 20 and best["loss"] == pytest.approx(0.55) and best["acc"] == pytest.approx(0.65)
    assert pick_epoch(table, t_max=1.0)["step"] == 30
    with pytest.raises(ValueError, match="empty"):
        pick_epoch([])
