"""DSNO: the Fourier temporal block against explicit circular convolutions, operators that start as
their teacher, the readout's closed form, resumable trajectory banks, and the whole pipeline on the
toy world against trivial baselines."""
import json
import math

import pytest
import torch

from difflab.config import TrainConfig
from difflab.data import toy_mixture
from difflab.errors import ConfigError, DataError
from difflab.methods.dsno import (DSNOObjective, TrajectoryDataset, bank_meta, build_dsno, dsno_from_teacher, dsno_sample,
                                  fit_dsno, generate_trajectories, load_dsno, loss_weights, mode_energy_fraction,
                                  noise_from_seeds, noise_seeds, parameter_overhead, refine_grid, trajectory_error,
                                  teacher_grid, trajectory_spectrum, trajectory_times, read_heldout, heldout_error,
                                  x_T_baseline)
from difflab.models import DiffusionModel, exact_mixture_model
from difflab.nets import MLP, unet_from_preset
from difflab.nets.temporal import MLPOperator, TemporalConv, UNetOperator, circular_kernel
from difflab.process import GaussianDiffusion, VPLinear, linear_betas
from difflab.samplers import pf_heun

F64 = torch.float64


def explicit_circular_conv(kernel, u):
    """(K u)(t) = Σ_τ k(τ) u(t - τ mod M), computed in the time domain: kernel (M, C, C), u (B, M, C, S)."""
    M = u.shape[1]
    out = torch.zeros_like(u)
    for t in range(M):
        for tau in range(M):
            out[:, t] += torch.einsum("kl,bls->bks", kernel[tau], u[:, (t - tau) % M])
    return out


def _perturbed(net, scale=0.05):
    """A network with non-zero output (difflab zero-initialises the last layers)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return net.eval()


# ----------------------------------------------------------------------------- the temporal block
@pytest.mark.parametrize("M", [7, 8])
def test_temporal_conv_is_a_circular_convolution(M):
    """irfft(R · rfft(u)) with J < M//2+1 modes equals the time-domain circular convolution with the
    kernel built from R, and the block is u + LeakyReLU(that)."""
    torch.manual_seed(0)
    block = TemporalConv(3, modes=3, negative_slope=0.2, init_scale=1.0)
    u = torch.randn(2, M, 3, 5)
    conv = explicit_circular_conv(circular_kernel(block.complex_weight.detach(), M), u)
    assert torch.allclose(block.spectral(u), conv, atol=1e-5)
    assert torch.allclose(block(u), u + torch.nn.functional.leaky_relu(conv, 0.2), atol=1e-5)
    assert conv.abs().mean() > 0.1  # a real test: the convolution is far from zero


@pytest.mark.parametrize("M", [6, 9])
def test_all_modes_represent_any_circular_convolution(M):
    """With J = M//2 + 1, weights R = rfft(k) reproduce the circular convolution with ANY real kernel k."""
    torch.manual_seed(1)
    C = 4
    kernel = torch.randn(M, C, C)
    block = TemporalConv(C, modes=M // 2 + 1)
    with torch.no_grad():
        block.weight.copy_(torch.view_as_real(torch.fft.rfft(kernel, dim=0)))
    u = torch.randn(3, M, C, 2)
    assert torch.allclose(block.spectral(u), explicit_circular_conv(kernel, u), atol=1e-4)


def test_truncated_modes_cannot_represent_a_high_frequency_kernel():
    """The contrapositive: one kept mode (J = 1) only averages over time, so a kernel that is a delta at
    lag 1 (a pure shift) is out of reach — the best J = 1 block misses by a clear margin."""
    M, C = 8, 1
    u = torch.randn(4, M, C, 1)
    shifted = torch.roll(u, 1, dims=1)
    block = TemporalConv(C, modes=1)
    with torch.no_grad():  # best DC-only weight: the mean over time, which is what J = 1 keeps
        block.weight.copy_(torch.view_as_real(torch.fft.rfft(torch.eye(M)[1].reshape(M, 1, 1), dim=0))[:1])
    resid = (block.spectral(u) - shifted).pow(2).mean() / shifted.pow(2).mean()
    assert resid > 0.5


# ----------------------------------------------------------------------------- operators start as the teacher
def test_unet_operator_init_reproduces_the_teacher():
    """Zero temporal residual: the operator's raw output at t_m is the teacher U-Net at (x_T, t_m), both when
    built from a copy of the teacher and when the teacher's state dict is loaded into a fresh backbone."""
    teacher = DiffusionModel(_perturbed(unet_from_preset("8x8")), GaussianDiffusion(linear_betas(1000)).schedule)
    times = trajectory_times(5, "quadratic")
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        ref = torch.stack([teacher.net(x, torch.full((3,), float(t), dtype=torch.float32)) for t in times.float()], 1)
        dsno = dsno_from_teacher(teacher, times, modes=3)
        raw = dsno.operator(x)
        fresh = UNetOperator(unet_from_preset("8x8"), times, modes=2)
        fresh.backbone.load_state_dict(teacher.net.state_dict())
        raw2 = fresh.eval()(x)
    assert raw.shape == (3, 5, 1, 8, 8)
    assert ref.abs().mean() > 0.1
    assert torch.allclose(raw, ref, atol=1e-5) and torch.allclose(raw2, ref, atol=1e-5)
    o = parameter_overhead(dsno)
    assert o["temporal_params"] == 2 * 3 * 2 * (32**2 + 64**2)  # (down + up) x J x (re, im) x C² per level
    assert o["overhead_pct"] < 15


def test_mlp_operator_init_reproduces_the_teacher():
    mlp = _perturbed(MLP(2, 64, 3))
    times = trajectory_times(6, "uniform")
    x = torch.randn(5, 2)
    with torch.no_grad():
        ref = torch.stack([mlp(x, torch.full((5,), float(t))) for t in times.float()], 1)
        raw = MLPOperator(mlp, times, modes=3)(x)
        raw_last = MLPOperator(mlp, times, modes=3, temporal_layers=[2])(x)
    assert torch.allclose(raw, ref, atol=1e-6) and torch.allclose(raw_last, ref, atol=1e-6)


def test_x0_readout_is_the_ddim_jump():
    """With raw output x0, the "x0" readout gives x(t) = α_t x0 + σ_t ε for x_T = α_1 x0 + σ_1 ε exactly:
    the straight DDIM path through x_T; at t = 1 it returns x_T whatever the network says."""
    sched = VPLinear()
    times = trajectory_times(5, "quadratic")
    dsno = build_dsno(MLP(2, 16, 1), sched, times)
    x0, eps = torch.randn(4, 2, dtype=F64), torch.randn(4, 2, dtype=F64)
    a, s = sched.alpha(times), sched.sigma(times)
    x_T = a[0] * x0 + s[0] * eps
    read = dsno.coef_x.double()[None, :, None] * x_T[:, None] + dsno.coef_out.double()[None, :, None] * x0[:, None]
    exact = a[None, :, None] * x0[:, None] + s[None, :, None] * eps[:, None]
    assert torch.allclose(read, exact, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(dsno(x_T.float())[:, 0], x_T.float())


# ----------------------------------------------------------------------------- grids, seeds, weights, spectrum
def test_refined_grid_hits_the_recorded_times():
    times = trajectory_times(6, "quadratic")
    grid, idx = refine_grid(times, 23)
    assert torch.equal(grid[idx], times) and len(grid) == 5 * 5 + 1
    assert bool((grid[1:] < grid[:-1]).all()) and grid[0] == 1 and grid[-1] == 0
    assert torch.allclose(trajectory_times(5, "uniform"), torch.linspace(1, 0, 5, dtype=F64))


def test_logsnr_refinement_is_uniform_in_log_snr_between_recorded_times():
    sched = VPLinear()
    times = trajectory_times(4, "quadratic")
    grid, idx = refine_grid(times, 12, "logsnr", sched)
    assert torch.equal(grid[idx], times) and len(grid) == 13 and bool((grid[1:] < grid[:-1]).all())
    lam = sched.log_snr(grid)
    for m in range(2):  # intervals that end above 0: equal steps in λ
        d = lam[idx[m] + 1: idx[m + 1] + 1] - lam[idx[m]: idx[m + 1]]
        assert torch.allclose(d, d.mean().expand_as(d), rtol=1e-6)
    d = lam[idx[2] + 1: idx[3]] - lam[idx[2]: idx[3] - 1]  # the last interval: uniform in λ down to t = 1e-3, then 0
    assert torch.allclose(d, d.mean().expand_as(d), rtol=1e-6) and float(grid[-2]) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="refine = 'sigma'"):  # the samplers layer's error, as time_grid's
        refine_grid(times, 12, "sigma", sched)


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "dpmpp_3m", "unipc"])
def test_bank_with_a_multistep_teacher_is_that_solver_on_the_refined_grid(tmp_path, sampler):
    from difflab.samplers import SAMPLERS

    model = exact_mixture_model(toy_mixture("toy:ring8"), VPLinear())
    generate_trajectories(model, tmp_path, n=6, M=4, sampler=sampler, refine="logsnr", steps=9, shard_size=6,
                          seed=2, shape=(2,), progress=False)
    ds = TrajectoryDataset(tmp_path)
    grid, idx = refine_grid(ds.times, 9, "logsnr", model.schedule)
    r = SAMPLERS[sampler](model, ds.x, grid, return_trajectory=True)
    assert torch.allclose(ds.y, r.trajectory[idx].transpose(0, 1).float(), atol=1e-6)
    assert torch.equal(ds.y[:, 0], ds.x) and ds.meta["refine"] == "logsnr" and ds.meta["sampler"] == sampler
    assert torch.equal(teacher_grid(bank_meta(tmp_path), model.schedule), grid)  # what bench's teacher row runs


def test_loss_weights_uniform_and_floor():
    sched = VPLinear()
    times = torch.tensor([1.0, 0.5, 0.1, 0.0], dtype=F64)
    assert torch.allclose(loss_weights(sched, times, weighting="uniform"), torch.full((4,), 0.25, dtype=F64))
    w = loss_weights(sched, times, max_weight=10.0, min_weight=1.0)
    lam = torch.tensor([1.0, 1.0, float(sched.alpha(times[2]) / sched.sigma(times[2])), 10.0], dtype=F64)
    assert float(sched.alpha(times[1]) / sched.sigma(times[1])) < 1  # so the floor binds at t = 0.5
    assert torch.allclose(w, lam / lam.sum())
    with pytest.raises(ConfigError, match="weighting = 'sigma'"):
        loss_weights(sched, times, weighting="sigma")
    with pytest.raises(ConfigError, match="min_weight = 20"):
        loss_weights(sched, times, max_weight=10.0, min_weight=20.0)


def test_exact_bank_drives_the_error_below_x_T_at_every_time(tmp_path):
    """A bank of exact trajectories (the closed-form score of toy:ring8, PF-Heun 60 steps, M = 4) and a fresh MLP
    operator trained on it with the "relative" weighting (each time's error against how far the trajectory has
    moved from x_T, clamped at 10): the held-out RMS error is below the x_T predictor's at every recorded time
    t_m < 1 (at t = 1 both are 0), and the logged curve equals a second route (the samples). Measured: 0.0009,
    0.014, 0.19 against 0.0040, 0.245, 0.484; the paper's α/σ weighting leaves t = 0.44 at 0.0145 (above x_T)."""
    sched = VPLinear()
    teacher = exact_mixture_model(toy_mixture("toy:ring8"), sched)
    kw = dict(M=4, spacing="quadratic", steps=60, shape=(2,), progress=False)
    generate_trajectories(teacher, tmp_path / "train", n=3000, shard_size=3000, seed=0, **kw)
    generate_trajectories(teacher, tmp_path / "test", n=500, shard_size=500, seed=1, **kw)
    bank, test = TrajectoryDataset(tmp_path / "train"), TrajectoryDataset(tmp_path / "test")
    tcfg = TrainConfig(steps=400, batch_size=256, lr=2e-3, warmup_steps=20, ema_rate=0.99, ckpt_every=0,
                       log_every=100, sample_every=200, lr_schedule="cosine", device="cpu")
    torch.manual_seed(0)
    dsno = build_dsno(MLP(2, 64, 3), sched, bank.times, modes=3)
    with pytest.raises(DataError, match="shares noise seeds"):
        fit_dsno(dsno, bank, tmp_path / "bad", tcfg, schedule=sched, heldout=bank, progress=False, tensorboard=False)
    ema, res = fit_dsno(dsno, bank, tmp_path / "run", tcfg, schedule=sched, weighting="relative", max_weight=10.0,
                        heldout=test, progress=False, tensorboard=False)
    rows = read_heldout(tmp_path / "run")
    assert [r["step"] for r in rows] == [200, 400] and rows[-1]["n"] == 500
    err, base = torch.tensor(rows[-1]["rms"], dtype=F64), torch.tensor(rows[-1]["x_T_rms"], dtype=F64)
    print("DSNO", err.tolist(), "x_T", base.tolist())
    assert float(err[0]) < 1e-6 and float(base[0]) == 0.0
    assert bool((err[1:] < base[1:]).all()), (err.tolist(), base.tolist())
    direct = (test.y - test.x[:, None]).double().flatten(2).pow(2).mean((0, 2)).sqrt()  # how far each time moved
    assert torch.allclose(base, direct)
    r = dsno_sample(ema, test.x, return_trajectory=True)
    assert torch.allclose(trajectory_error(r.trajectory.transpose(0, 1), test.y), err, rtol=1e-5, atol=1e-7)
    assert torch.allclose(heldout_error(ema, test, batch=7), err, rtol=1e-5, atol=1e-7)  # batching changes nothing
    # the weights used are the bank's relative ones, recorded in the checkpoint's config
    b = x_T_baseline(bank.x, bank.y)
    lam = (b.max() / b.clamp_min(1e-300)).clamp(max=10.0)
    _, cfg, _ = load_dsno(tmp_path / "run")
    assert torch.allclose(torch.tensor(cfg["objective"]["weights"], dtype=F64), lam / lam.sum())


def test_loss_weights_are_clamped_root_snr():
    sched = VPLinear()
    times = torch.tensor([1.0, 0.5, 0.1, 0.0], dtype=F64)
    w = loss_weights(sched, times, max_weight=3.0)
    lam = torch.stack([sched.alpha(t) / sched.sigma(t) for t in times[:3]] + [torch.tensor(3.0, dtype=F64)])
    lam = lam.clamp(max=3.0)
    assert torch.allclose(w, lam / lam.sum()) and float(w[-1]) == pytest.approx(3.0 / float(lam.sum()))


def test_spectrum_parseval_and_pure_modes():
    """Fractions sum to 1; a constant trajectory is all DC, a cosine at frequency 2 is all mode 2, and the
    energies obey Parseval (total = M · mean square)."""
    M = 8
    t = torch.arange(M, dtype=F64)
    const = torch.ones(3, M, 2)
    cos2 = torch.cos(2 * math.pi * 2 * t / M)[None, :, None].expand(3, M, 2)
    assert mode_energy_fraction(const, 1) == pytest.approx(1.0)
    assert trajectory_spectrum(cos2)[2] == pytest.approx(1.0)
    x = torch.randn(50, M, 3, dtype=F64)
    X = torch.fft.rfft(x, dim=1)
    mult = torch.tensor([1, 2, 2, 2, 1], dtype=F64)
    assert float((X.abs() ** 2 * mult[None, :, None]).sum()) == pytest.approx(M * float((x**2).sum()))
    assert float(trajectory_spectrum(x).sum()) == pytest.approx(1.0)


def test_noise_seeds_regenerate_each_sample():
    seeds = noise_seeds(7, 0, 10)
    assert len(set(seeds.tolist())) == 10
    assert torch.equal(noise_from_seeds(seeds[3:5], (2,)), noise_from_seeds(noise_seeds(7, 3, 2), (2,)))
    assert not torch.equal(noise_from_seeds(seeds[:2], (2,)), noise_from_seeds(noise_seeds(8, 0, 2), (2,)))


# ----------------------------------------------------------------------------- the trajectory bank
class _Counting(torch.nn.Module):
    """Counts network evaluations; raises after ``fail_after`` of them (a kill mid-run)."""

    def __init__(self, inner, fail_after=None):
        super().__init__()
        self.inner, self.calls, self.fail_after = inner, 0, fail_after
        self.schedule, self.var_type = inner.schedule, inner.var_type

    def forward(self, x, t, y=None):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("killed")
        return self.inner(x, t, y)


def test_bank_records_the_solver_trajectory(tmp_path):
    """Shards hold x_T from the stored seeds and the solver's own trajectory at the recorded times: the
    first point is x_T and the last is the solver's sample."""
    mix = toy_mixture("toy:ring8")
    model = exact_mixture_model(mix, VPLinear())
    generate_trajectories(model, tmp_path, n=10, M=4, steps=9, shard_size=4, seed=5, shape=(2,), progress=False)
    ds = TrajectoryDataset(tmp_path)
    assert ds.x.shape == (10, 2) and ds.y.shape == (10, 4, 2) and len(ds) == 10
    assert torch.equal(ds.x, noise_from_seeds(noise_seeds(5, 0, 10), (2,)))
    grid, _ = refine_grid(ds.times, 9)
    direct = pf_heun(model, ds.x, grid).x
    assert torch.equal(ds.y[:, 0], ds.x) and torch.allclose(ds.y[:, -1], direct, atol=1e-6)


def test_bank_resumes_without_redoing_finished_shards(tmp_path):
    mix = toy_mixture("toy:ring8")
    exact = exact_mixture_model(mix, VPLinear())
    kw = dict(n=10, M=4, steps=6, shard_size=4, seed=0, shape=(2,), progress=False)  # 3 shards: 4, 4, 2
    steps = len(refine_grid(trajectory_times(4), 6)[0]) - 1
    nfe_per_shard = 2 * steps - 1  # one batch per shard, Heun with a final Euler step
    killed = _Counting(exact, fail_after=nfe_per_shard + 3)  # dies inside the second shard
    with pytest.raises(KeyboardInterrupt):
        generate_trajectories(killed, tmp_path / "bank", **kw)
    assert sorted(p.name for p in (tmp_path / "bank").glob("shard-*")) == ["shard-00000.npz"]
    first = (tmp_path / "bank" / "shard-00000.npz").stat().st_mtime_ns
    resumed = _Counting(exact)
    generate_trajectories(resumed, tmp_path / "bank", **kw)
    assert resumed.calls == 2 * nfe_per_shard  # only shards 1 and 2
    assert (tmp_path / "bank" / "shard-00000.npz").stat().st_mtime_ns == first
    again = _Counting(exact)
    generate_trajectories(again, tmp_path / "bank", **kw)
    assert again.calls == 0
    generate_trajectories(exact, tmp_path / "fresh", **kw)
    a, b = TrajectoryDataset(tmp_path / "bank"), TrajectoryDataset(tmp_path / "fresh")
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    from difflab.errors import DataError
    with pytest.raises(DataError, match="M|times"):
        generate_trajectories(exact, tmp_path / "bank", **{**kw, "M": 5})


def test_bank_shards_and_settings_on_disk(tmp_path):
    """The bank is the shared .npz bank: shards of shard_size rows, the settings (here the DDIM sampler) in
    bank.json, and the teacher's description beside them."""
    model = exact_mixture_model(toy_mixture("toy:ring8"), VPLinear())
    generate_trajectories(model, tmp_path, n=6, M=3, steps=4, shard_size=4, shape=(2,), sampler="ddim",
                          teacher={"name": "exact"}, progress=False)
    ds = TrajectoryDataset(tmp_path)
    assert sorted(p.name for p in tmp_path.glob("shard-*")) == ["shard-00000.npz", "shard-00001.npz"]
    assert ds.y.shape == (6, 3, 2) and json.loads((tmp_path / "bank.json").read_text())["settings"]["sampler"] == "ddim"
    assert ds.meta["sampler"] == "ddim" and ds.meta["num_shards"] == 2 and ds.meta["teacher"] == {"name": "exact"}
    assert len(TrajectoryDataset(tmp_path, limit=5)) == 5


def test_bank_corrupt_shard_is_named_then_redrawn_alone(tmp_path):
    """A truncated shard makes loading fail with one line naming it and saying how to finish the bank; the
    same command redraws that shard only, to the same content."""
    from difflab.errors import DataError

    exact = exact_mixture_model(toy_mixture("toy:ring8"), VPLinear())
    kw = dict(n=10, M=4, steps=6, shard_size=4, seed=0, shape=(2,), progress=False)
    generate_trajectories(exact, tmp_path, **kw)
    before = TrajectoryDataset(tmp_path)
    shard = tmp_path / "shard-00001.npz"
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(DataError) as e:
        TrajectoryDataset(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "shard-00001.npz" in msg and msg.endswith("rerun the same dsno-data command to finish the bank")
    counting = _Counting(exact)
    generate_trajectories(counting, tmp_path, **kw)
    steps = len(refine_grid(trajectory_times(4), 6)[0]) - 1
    assert counting.calls == 2 * steps - 1  # one shard redrawn
    after = TrajectoryDataset(tmp_path)
    assert torch.equal(after.x, before.x) and torch.equal(after.y, before.y)


# ----------------------------------------------------------------------------- the whole pipeline
def test_toy_pipeline_beats_trivial_baselines(tmp_path):
    """Exact-score teacher on toy:ring8 -> 3000 PF-Heun trajectories at M = 6 -> 400 training steps of a small MLP
    operator -> one-step samples on 500 held-out noises. The RMS error at the final time must be far below
    predicting x_T (0.48) or the mean trajectory (1.00); measured 0.119, and 0.054 vs 0.216 averaged over t < 1."""
    sched = GaussianDiffusion(linear_betas(1000)).schedule
    mix = toy_mixture("toy:ring8")
    teacher = exact_mixture_model(mix, sched)
    kw = dict(M=6, spacing="quadratic", steps=30, shape=(2,), progress=False)
    generate_trajectories(teacher, tmp_path / "train", n=3000, shard_size=3000, seed=0, **kw)
    generate_trajectories(teacher, tmp_path / "test", n=500, shard_size=500, seed=1, **kw)
    bank, test = TrajectoryDataset(tmp_path / "train"), TrajectoryDataset(tmp_path / "test")
    torch.manual_seed(0)
    dsno = build_dsno(MLP(2, 64, 3), sched, bank.times, modes=3)
    tcfg = TrainConfig(steps=400, batch_size=256, lr=2e-3, warmup_steps=20, ema_rate=0.99, ckpt_every=0,
                       log_every=100, lr_schedule="cosine", device="cpu")
    # max_weight 10 (not the default 100) so the middle of the trajectory counts too: it is asserted below
    ema, res = fit_dsno(dsno, bank, tmp_path / "run", tcfg, schedule=sched, max_weight=10.0, progress=False,
                        tensorboard=False)
    r = dsno_sample(ema, test.x, return_trajectory=True)
    assert r.nfe == 1 and r.trajectory.shape == (6, 500, 2) and torch.equal(r.x, r.trajectory[-1])
    err = trajectory_error(r.trajectory.transpose(0, 1), test.y)
    trivial = trajectory_error(test.x[:, None].expand_as(test.y), test.y)
    mean_traj = trajectory_error(bank.y.mean(0, keepdim=True).expand_as(test.y), test.y)
    print("DSNO", err.tolist(), "x_T", trivial.tolist(), "mean", mean_traj.tolist())
    assert float(err[0]) < 1e-6                               # the start is x_T by construction
    assert float(err[-1]) < 0.35 * float(trivial[-1]) and float(err[-1]) < 0.2 * float(mean_traj[-1])
    assert float(err[1:].mean()) < 0.5 * float(trivial[1:].mean())
    # the checkpoint rebuilds the same module
    loaded, cfg, ckpt = load_dsno(tmp_path / "run")
    assert ckpt.kind == "dsno" and cfg["dsno"]["modes"] == 3
    with torch.no_grad():
        assert torch.allclose(loaded(test.x[:8]), ema(test.x[:8]), atol=1e-6)


def test_objective_weights_the_l1_error_per_time():
    sched = VPLinear()
    times = trajectory_times(4)
    obj = DSNOObjective(sched, times, loss="l1", max_weight=5.0)
    target = torch.randn(3, 4, 2)
    pred = target + torch.tensor([0.0, 1.0, 2.0, 3.0])[None, :, None]
    loss, logs = obj.loss(lambda x: pred, torch.zeros(3, 2), target, {})
    w = loss_weights(sched, times, 5.0).float()
    assert torch.allclose(loss, torch.full((3,), float((w * torch.arange(4.0)).sum())), atol=1e-6)
    assert float(logs["err_final"]) == pytest.approx(3.0)
    l2, _ = DSNOObjective(sched, times, loss="l2", max_weight=5.0).loss(lambda x: pred, None, target, {})
    assert torch.allclose(l2, torch.full((3,), float((w * torch.arange(4.0) ** 2).sum())), atol=1e-5)


# ----------------------------------------------------------------------------- CLI
def test_cli_data_train_sample(tmp_path, capsys):
    from difflab.cli import main
    from difflab.config import load_config
    from difflab.train.api import train

    cfg = load_config("toy-ddpm", ["train.steps=5", "train.batch_size=32", "model.hidden=32", "train.ckpt_every=0"])
    train(cfg, tmp_path / "teacher", progress=False)
    bank, run = tmp_path / "bank", tmp_path / "dsno"
    assert main(["dsno-data", str(tmp_path / "teacher"), "--out", str(bank), "--n", "64", "--M", "4",
                 "--steps", "6", "--shard-size", "32", "--no-progress"]) == 0
    assert main(["dsno-train", str(tmp_path / "teacher"), "--data", str(bank), "--out", str(run), "--steps", "3",
                 "--batch-size", "16", "--no-progress", "--set", "train.warmup_steps=1"]) == 0
    info = json.loads((run / "dsno.json").read_text())
    assert info["final_step"] == 3 and info["param_overhead"]["temporal_params"] == 3 * 3 * 2 * 32 * 32
    # a multistep teacher on a log-SNR grid, a held-out bank of other seeds, the relative weighting
    assert main(["dsno-data", str(tmp_path / "teacher"), "--out", str(tmp_path / "bank2"), "--n", "32", "--M", "4",
                 "--steps", "6", "--sampler", "dpmpp_2m", "--refine", "logsnr", "--no-progress"]) == 0
    assert main(["dsno-data", str(tmp_path / "teacher"), "--out", str(tmp_path / "held"), "--n", "16", "--M", "4",
                 "--steps", "6", "--sampler", "dpmpp_2m", "--refine", "logsnr", "--seed", "1", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["dsno-train", str(tmp_path / "teacher"), "--data", str(tmp_path / "bank2"), "--out",
                 str(tmp_path / "dsno2"), "--steps", "4", "--batch-size", "8", "--heldout", str(tmp_path / "held"),
                 "--eval-every", "2", "--weighting", "relative", "--max-weight", "10", "--no-progress",
                 "--set", "train.warmup_steps=1"]) == 0
    assert "held-out RMS error per time: 0.0000, " in capsys.readouterr().out
    assert (tmp_path / "dsno2" / "heldout.png").is_file()
    assert [r["step"] for r in read_heldout(tmp_path / "dsno2")] == [2, 4]
    assert json.loads((tmp_path / "dsno2" / "dsno.json").read_text())["heldout_error"][0] == 0.0
    # a fine-tune: start from the trained DSNO (its times match the bank's), recorded in the run's config
    assert main(["dsno-train", str(tmp_path / "teacher"), "--data", str(bank), "--out", str(tmp_path / "ft"), "--steps",
                 "2", "--batch-size", "16", "--init-dsno", str(run), "--no-progress", "--set", "train.warmup_steps=1"]) == 0
    assert load_dsno(tmp_path / "ft")[1]["init_dsno"] == str(run)
    assert main(["dsno-sample", str(run), "--n", "50", "--out", str(tmp_path / "s.png"), "--trajectory"]) == 0
    assert (tmp_path / "s.png").is_file() and (tmp_path / "s-trajectory.png").is_file()
    capsys.readouterr()
    # bad input: one line, exit 2
    (tmp_path / "nothing").mkdir()  # exists, holds no bank (a missing path is refused by the parser)
    assert main(["dsno-train", str(tmp_path / "teacher"), "--data", str(tmp_path / "nothing"), "--out",
                 str(tmp_path / "x"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no DSNO trajectory bank" in err[0]
    assert main(["dsno-train", str(tmp_path / "teacher"), "--data", str(bank), "--out", str(tmp_path / "y"),
                 "--adv-weight", "0.5", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "adversarial weight 0.5 without a discriminator" in err[0]
    assert main(["dsno-sample", str(tmp_path / "teacher"), "--n", "4", "--out", str(tmp_path / "t.png")]) == 2
    assert "expected a DSNO operator" in capsys.readouterr().err
