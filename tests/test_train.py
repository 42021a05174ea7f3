"""Training: the loss goes down, a SIGKILLed run resumes bit-exactly, accumulation and 2-process DDP
match one process, divergence stops or rolls back without saving the bad state, every preset
builds, checkpoints round-trip, and the importance-weighted DDPM loss is unbiased."""
from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from difflab.train.build import build_model, build_objective, build_process, data_shape_of
from difflab.config import Config, apply_overrides, list_presets, load_config
from difflab.data import ArrayDataset, load_dataset
from difflab.errors import CheckpointError, ConfigError, DivergenceError
from difflab.process import GaussianDiffusion, LossAwareSampler, VPLinear, ddpm_losses, dsm_loss, linear_betas
from difflab.train import (EMA, DDPMObjective, DSMObjective, Objective, Trainer, latest_checkpoint, load_checkpoint,
                           load_model, lr_factor, save_checkpoint, train)

REPO = Path(__file__).resolve().parents[1]

# A tiny toy run: 2-D ring, a 2x32 MLP, 100 steps of diffusion; each step takes about a millisecond.
TINY = ["model.hidden=32", "model.depth=2", "diffusion.timesteps=100", "data.num_samples=512",
        "train.batch_size=32", "train.warmup_steps=2", "train.log_every=5", "train.device=cpu"]


def tiny_cfg(*overrides: str, base: str = "toy-ddpm") -> Config:
    return apply_overrides(load_config(base), [*TINY, *overrides])


def toy_data(n: int = 512) -> ArrayDataset:
    ds = load_dataset("toy:ring8", num_samples=n)
    return ArrayDataset(ds.x, None, name=ds.name)


def make_trainer(cfg: Config, run_dir, *, objective=None, seed: int = 0, **kw) -> Trainer:
    ds = toy_data(cfg.data.num_samples or 512)
    process = build_process(cfg.diffusion)
    torch.manual_seed(seed)
    model = build_model(cfg, ds.shape, process=process)
    objective = objective or build_objective(cfg, process)
    kw.setdefault("tensorboard", False)
    return Trainer(model, objective, ds, cfg.train, run_dir, cfg.to_dict(), progress=False, **kw)


def one_line_error(exc_type, fn, *args, **kwargs) -> str:
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert msg and "\n" not in msg, f"not one line: {msg!r}"
    return msg


def run_python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def params_of(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# the loss goes down


def test_training_lowers_the_loss(tmp_path):
    """300 steps of L_simple on the ring: the loss on a fixed evaluation batch (2048 points, fixed
    t and noise) falls from about 1.0 (an untrained ε-net predicts ~0) to about 0.3."""
    cfg = tiny_cfg("model.hidden=64", "train.steps=300", "train.batch_size=128", "train.lr=2e-3",
                   "train.warmup_steps=20", "train.ckpt_every=0", "data.num_samples=4096")
    trainer = make_trainer(cfg, tmp_path)
    x_eval = load_dataset("toy:ring8", split="test", num_samples=2048).x
    objective = trainer.objective

    def eval_loss(module):
        with torch.no_grad():
            loss, _ = objective(module, x_eval, None, torch.Generator().manual_seed(123))
        return float(loss.mean())

    before = eval_loss(trainer.module)
    out = trainer.fit()
    after = eval_loss(trainer.module)
    ema_after = eval_loss(trainer.ema.ema_model())
    assert out["final_step"] == 300 and out["checkpoint"]
    assert before > 0.8, before
    assert after < 0.45 and ema_after < 0.45, (before, after, ema_after)
    lines = [json.loads(l) for l in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == list(range(5, 301, 5))
    assert {"loss", "lr", "grad_norm", "steps_per_s", "mse"} <= set(lines[-1])
    assert lines[-1]["loss"] < lines[0]["loss"] / 2
    # the figure `train` prints is the log's last line (a 5-step mean), not one batch's loss
    assert out["recent_loss"] == pytest.approx(lines[-1]["loss"]) and out["recent_steps"] == 5
    from difflab.train.api import final_loss

    assert final_loss(out) == f"loss {lines[-1]['loss']:.4f}, the mean of the last 5 steps"


# ---------------------------------------------------------------------------------------------
# resume


RESUME_SCRIPT = textwrap.dedent("""
    import sys, time, torch
    torch.set_num_threads(1)
    from difflab.config import apply_overrides, load_config
    from difflab.train import train
    run_dir, resume, delay = sys.argv[1], sys.argv[2] == "1", float(sys.argv[3])
    # A small U-Net with dropout (global RNG), loss-aware t (sampler state), L_hybrid with learned
    # variances, 48 digits at batch 8 (epochs wrap every 6 steps), an EMA and LR warm-up.
    cfg = apply_overrides(load_config("digits-iddpm"), [
        "model.base_channels=8", "model.channel_mult=[1, 2]", "model.num_res_blocks=1",
        "model.attention_resolutions=[4]", "model.num_heads=1", "model.dropout=0.1",
        "diffusion.timesteps=10", "data.num_samples=48", "train.batch_size=8", "train.steps=40",
        "train.warmup_steps=5", "train.ckpt_every=10", "train.keep_ckpts=0", "train.sample_every=1",
        "train.log_every=5", "train.device=cpu"])
    # sleeping in the sampling hook slows the run down enough to kill it mid-way; it touches no RNG
    train(cfg, run_dir, resume=resume, progress=False, sample_fn=lambda model, step, d: time.sleep(delay))
""")


def _latest_step(run_dir: Path) -> int:
    try:
        return int((run_dir / "checkpoints" / "latest").read_text().strip().split("-")[1])
    except (OSError, IndexError, ValueError):
        return -1


def test_sigkill_and_resume_is_bit_exact(tmp_path):
    """A run killed with SIGKILL after its step-20 (or later) checkpoint and resumed ends with
    model and EMA weights torch.equal to an uninterrupted run, and the same sampler state."""
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    cmd = [sys.executable, "-c", RESUME_SCRIPT]
    ref = subprocess.Popen([*cmd, str(straight), "0", "0"], cwd=REPO, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen([*cmd, str(killed), "0", "0.05"], cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while _latest_step(killed) < 20:
        assert victim.poll() is None, victim.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "no step-20 checkpoint within 90 s"
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    killed_at = _latest_step(killed)
    assert 20 <= killed_at < 40
    resumed = subprocess.run([*cmd, str(killed), "1", "0"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert ref.wait(timeout=120) == 0, ref.stderr.read()[-3000:]

    a, b = load_checkpoint(straight), load_checkpoint(killed)
    assert a.step == b.step == 40
    for name in ("model_state", "ema_state"):
        sa, sb = getattr(a, name), getattr(b, name)
        assert sa.keys() == sb.keys()
        unequal = [k for k in sa if not torch.equal(sa[k], sb[k])]
        assert not unequal, f"{name} differs after resuming from step {killed_at}: {unequal[:3]}"
    sampler_a, sampler_b = a.state["sampler"]["timestep_sampler"], b.state["sampler"]["timestep_sampler"]
    assert torch.equal(sampler_a["losses"], sampler_b["losses"]) and int(sampler_a["counts"].min()) > 0
    # the resumed run's log has no duplicate steps from the killed run
    steps = [json.loads(l).get("step") for l in (killed / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(5, 41, 5))


def test_resume_refuses_a_different_config_but_extends_steps(tmp_path):
    cfg = tiny_cfg("train.steps=3", "train.ckpt_every=0")
    assert train(cfg, tmp_path, progress=False)["final_step"] == 3
    msg = one_line_error(ConfigError, train, apply_overrides(cfg, ["train.lr=1e-2"]), tmp_path, resume=True,
                         progress=False)
    assert "train.lr" in msg and "0.01" in msg and str(cfg.train.lr) in msg
    out = train(apply_overrides(cfg, ["train.steps=5"]), tmp_path, resume=True, progress=False)
    assert out["final_step"] == 5 and out["checkpoint"].endswith("step-00000005")
    assert load_config(tmp_path / "config.toml").train.steps == 5
    again = train(apply_overrides(cfg, ["train.steps=5"]), tmp_path, resume=True, progress=False)
    assert again == out  # nothing left to do: same step, loss and checkpoint
    # a fresh run into a dir that holds one is refused rather than mixed with it
    assert "already holds checkpoints" in one_line_error(ConfigError, train, cfg, tmp_path, progress=False)


def test_init_starts_a_new_run_from_another_runs_weights(tmp_path):
    """train.init: step 0 of the new run holds the source's EMA weights (model and EMA alike), the new
    run trains on from there; a source of another architecture is refused with one line."""
    src = tiny_cfg("train.steps=4", "train.ckpt_every=0")
    train(src, tmp_path / "a", progress=False)
    source, _, _ = load_model(tmp_path / "a")
    cfg = tiny_cfg("train.steps=1", "train.lr=0", "train.ckpt_every=0", f"train.init={str(tmp_path / 'a')!r}", "train.seed=7")
    train(cfg, tmp_path / "b", progress=False)
    started, _, _ = load_model(tmp_path / "b")
    raw, _, _ = load_model(tmp_path / "b", use_ema=False)
    for (k, v), w, r in zip(source.state_dict().items(), started.state_dict().values(), raw.state_dict().values()):
        assert torch.equal(v, w) and torch.equal(v, r), k
    fresh = tiny_cfg("train.steps=1", "train.ckpt_every=0", "train.seed=7")
    train(fresh, tmp_path / "c", progress=False)
    other, _, _ = load_model(tmp_path / "c")
    assert not all(torch.equal(v, w) for v, w in zip(source.state_dict().values(), other.state_dict().values()))
    wide = apply_overrides(cfg, ["model.hidden=24"])
    msg = one_line_error(CheckpointError, train, wide, tmp_path / "d", progress=False)
    assert "train.init" in msg


# ---------------------------------------------------------------------------------------------
# divergence


class NanAt(Objective):
    """Wraps an objective; the loss of the listed calls (1-based) is NaN."""

    def __init__(self, inner: Objective, calls):
        self.inner, self.calls, self.n = inner, set(calls), 0

    def draw(self, x, y, gen):
        return self.inner.draw(x, y, gen)

    def loss(self, module, x, y, draws):
        self.n += 1
        loss, logs = self.inner.loss(module, x, y, draws)
        return (loss * math.nan if self.n in self.calls else loss), logs

    def observe(self, draws, losses):
        self.inner.observe(draws, losses)


def test_nan_loss_stops_naming_the_last_good_checkpoint(tmp_path):
    cfg = tiny_cfg("train.steps=20", "train.ckpt_every=4")
    base = build_objective(cfg)
    trainer = make_trainer(cfg, tmp_path, objective=NanAt(base, {8}))
    msg = one_line_error(DivergenceError, trainer.fit)
    good = tmp_path / "checkpoints" / "step-00000004"
    assert msg.startswith("step 8: loss is nan (non-finite); last good checkpoint: ")
    assert str(good) in msg and "train.on_divergence=rollback" in msg
    # step 8 would have been saved; the bad state never is
    assert latest_checkpoint(tmp_path) == good
    assert not (tmp_path / "checkpoints" / "step-00000008").exists()


def test_rollback_lowers_the_lr_and_continues(tmp_path):
    cfg = tiny_cfg("train.steps=12", "train.ckpt_every=5", "train.on_divergence=rollback",
                   "train.rollback_lr_factor=0.5", "train.lr=1e-3")
    trainer = make_trainer(cfg, tmp_path, objective=NanAt(build_objective(cfg), {8}))
    out = trainer.fit()
    assert out["final_step"] == 12 and math.isfinite(out["last_loss"])
    assert trainer.rollbacks == 1 and trainer.lr_scale == 0.5
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.5e-3)
    events = [json.loads(l) for l in (tmp_path / "log.jsonl").read_text().splitlines() if "event" in l]
    assert [(e["event"], e["step"], e["to_step"], e["lr_scale"]) for e in events] == [("rollback", 8, 5, 0.5)]
    assert load_checkpoint(tmp_path).state["extra"]["trainer"]["lr_scale"] == 0.5


def test_rollback_gives_up_after_three(tmp_path):
    """Before any checkpoint the rollback target is the initial state; the 4th divergence stops."""
    cfg = tiny_cfg("train.steps=10", "train.ckpt_every=0", "train.on_divergence=rollback")
    trainer = make_trainer(cfg, tmp_path, objective=NanAt(build_objective(cfg), {2, 3, 4, 5}))
    msg = one_line_error(DivergenceError, trainer.fit)
    assert msg.startswith("step 1: loss is nan") and "after 3 rollbacks" in msg and "LR x0.125" in msg
    assert latest_checkpoint(tmp_path) is None


def test_exploding_gradient_counts_as_divergence(tmp_path):
    cfg = tiny_cfg("train.steps=5", "train.max_grad_norm=1e-6")
    msg = one_line_error(DivergenceError, make_trainer(cfg, tmp_path).fit)
    assert msg.startswith("step 1: gradient norm ") and "exceeds train.max_grad_norm = 1e-06" in msg
    assert "last good checkpoint: none" in msg


# ---------------------------------------------------------------------------------------------
# accumulation and data parallelism


class RecordSizes(Objective):
    def __init__(self, inner):
        self.inner, self.sizes = inner, []

    def draw(self, x, y, gen):
        return self.inner.draw(x, y, gen)

    def loss(self, module, x, y, draws):
        self.sizes.append(x.shape[0])
        return self.inner.loss(module, x, y, draws)


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    """accumulate=2 at batch 32 (two micro-batches of 16) makes the same updates as accumulate=1."""
    results = {}
    for acc in (1, 2):
        cfg = tiny_cfg("train.steps=3", f"train.accumulate={acc}", "train.ckpt_every=0", "train.lr=1e-2")
        objective = RecordSizes(build_objective(cfg))
        trainer = make_trainer(cfg, tmp_path / str(acc), objective=objective)
        init = params_of(trainer.module)
        trainer.fit()
        results[acc] = (init, params_of(trainer.module), params_of(trainer.ema.ema_model()), objective.sizes)
    (i1, p1, e1, s1), (i2, p2, e2, s2) = results[1], results[2]
    assert s1 == [32] * 3 and s2 == [16] * 6
    for k in p1:
        assert torch.equal(i1[k], i2[k])
        assert not torch.equal(p1[k], i1[k])  # it trained
        torch.testing.assert_close(p2[k], p1[k], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(e2[k], e1[k], atol=1e-5, rtol=1e-5)


DDP_SCRIPT = textwrap.dedent("""
    import os, sys, torch
    import torch.multiprocessing as mp
    from difflab.train.build import build_model, build_objective, build_process
    from difflab.config import apply_overrides, load_config
    from difflab.data import ArrayDataset, load_dataset
    from difflab.train import Trainer, init_distributed

    def run(run_dir, accumulate):
        torch.set_num_threads(1)
        # loss-aware t over 10 steps: it warms up after ~2 steps, so the all-gathered losses matter
        cfg = apply_overrides(load_config("toy-ddpm"), [
            "model.hidden=32", "model.depth=2", "diffusion.schedule=cosine", "diffusion.timesteps=10",
            "diffusion.timestep_sampler=loss-aware",
            "train.batch_size=64", "train.steps=5", "train.warmup_steps=1", "train.lr=1e-2",
            f"train.accumulate={accumulate}", "train.device=cpu"])
        ds = load_dataset("toy:ring8", num_samples=200)
        ds = ArrayDataset(ds.x, None, name=ds.name)
        process = build_process(cfg.diffusion)
        torch.manual_seed(0)
        model = build_model(cfg, ds.shape, process=process)
        t = Trainer(model, build_objective(cfg, process), ds, cfg.train, run_dir, cfg.to_dict(),
                    progress=False, tensorboard=False)
        t.fit()
        torch.save({k: v.clone() for k, v in t.module.state_dict().items()},
                   os.path.join(run_dir, f"final-rank{t.ctx.rank}.pt"))

    def worker(rank, world, port, run_dir):
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                          WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
        ctx = init_distributed("cpu")
        assert (ctx.rank, ctx.world_size) == (rank, world)
        run(run_dir, accumulate=2)
        torch.distributed.destroy_process_group()

    if __name__ == "__main__":
        port, ddp_dir, single_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
        mp.spawn(worker, args=(2, port, ddp_dir), nprocs=2, join=True)
        run(single_dir, accumulate=1)
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_match_one(tmp_path):
    """2 gloo processes (32 samples each, 2 micro-batches of 16) at global batch 64 end where one
    process at batch 64 ends, including the loss-aware sampler fed with all-gathered losses."""
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    proc = subprocess.run([sys.executable, str(script), str(_free_port()), str(ddp), str(single)], cwd=REPO,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = torch.load(ddp / "final-rank0.pt"), torch.load(ddp / "final-rank1.pt")
    one = torch.load(single / "final-rank0.pt")
    assert not (ddp / "final-rank1.pt").samefile(ddp / "final-rank0.pt")
    for k in one:
        assert torch.equal(r0[k], r1[k]), k  # DDP keeps the ranks identical
        torch.testing.assert_close(r0[k], one[k], atol=1e-5, rtol=1e-5)
    a, b = load_checkpoint(ddp), load_checkpoint(single)
    assert a.step == b.step == 5
    la, lb = a.state["sampler"]["timestep_sampler"], b.state["sampler"]["timestep_sampler"]
    assert torch.equal(la["counts"], lb["counts"]) and int(la["counts"].min()) == 10  # warmed up
    torch.testing.assert_close(la["losses"], lb["losses"], atol=1e-5, rtol=1e-5)
    # only rank 0 writes: one log, one checkpoint set
    assert sorted(p.name for p in (ddp / "checkpoints").iterdir()) == ["latest", "step-00000005"]


# ---------------------------------------------------------------------------------------------
# building and loading models


@pytest.mark.parametrize("preset", list_presets())
def test_every_preset_builds_a_model_of_the_right_shape(preset):
    cfg = load_config(preset)
    shape = data_shape_of(cfg)
    torch.manual_seed(0)
    model = build_model(cfg, shape)
    x = torch.randn(2, *shape)
    out = model(x, torch.rand(2))
    assert out.eps.shape == x.shape
    learned = cfg.diffusion.var_type in ("learned", "learned_range")
    assert model.learn_sigma == learned == preset.endswith("iddpm")
    net_out = model.net(x, torch.rand(2))
    assert net_out.shape[1] == (2 if learned else 1) * shape[0]
    assert (out.var_out is not None) == learned
    assert type(build_objective(cfg)).__name__ == ("DSMObjective" if preset.endswith("vpsde") else "DDPMObjective")


def test_build_refuses_bad_combinations():
    assert "model.kind = 'mlp' needs vector data" in one_line_error(
        ConfigError, build_model, load_config("toy-ddpm"), (1, 8, 8))
    assert "loss-aware" in one_line_error(
        ConfigError, build_objective, apply_overrides(load_config("toy-vpsde"), ["diffusion.timestep_sampler=loss-aware"]))
    assert "learned_range" in one_line_error(
        ConfigError, build_model, apply_overrides(load_config("toy-vpsde"), ["diffusion.var_type=learned_range"]), (2,))
    assert "use more timesteps" in one_line_error(
        ConfigError, build_process, apply_overrides(load_config("toy-ddpm"), ["diffusion.timesteps=10"]).diffusion)
    bad_attn = apply_overrides(load_config("mnist-ddpm"), ["data.image_size=32"])
    assert "attention_resolutions" in one_line_error(ConfigError, build_model, bad_attn, data_shape_of(bad_attn))


def test_load_model_round_trips_and_refuses_mismatches(tmp_path):
    cfg = tiny_cfg("train.steps=4", "train.ckpt_every=0", base="toy-iddpm")
    train(cfg, tmp_path, progress=False)
    ckpt_dir = latest_checkpoint(tmp_path)
    model, cfg2, ckpt = load_model(tmp_path)
    assert cfg2.to_dict() == cfg.to_dict() and ckpt.step == 4 and not model.training
    assert model.learn_sigma

    # second route: build from the config by hand and load the EMA weights
    ref = build_model(cfg, (2,))
    ref.load_state_dict(load_checkpoint(ckpt_dir).ema_state)
    x, t = torch.randn(16, 2), torch.rand(16)
    with torch.no_grad():
        out, want = model(x, t), ref(x, t)
        raw = load_model(ckpt_dir, use_ema=False)[0](x, t)
        lone = load_model(ckpt_dir / "model.safetensors")[0](x, t)  # a lone weights file
    assert torch.equal(out.eps, want.eps) and torch.equal(out.var_out, want.var_out)
    assert not torch.equal(raw.eps, out.eps) and torch.equal(lone.eps, raw.eps)

    msg = one_line_error(CheckpointError, load_model, tmp_path, overrides=["model.hidden=64"])
    assert "does not fit DiffusionModel" in msg and "shape" in msg
    other = save_checkpoint(tmp_path / "tp", 1, model_state=ref.state_dict(), config=cfg.to_dict(),
                            kind="time_predictor")
    assert "expected a 'diffusion' model" in one_line_error(CheckpointError, load_model, other)


# ---------------------------------------------------------------------------------------------
# objectives, EMA, LR schedule


def test_loss_aware_weights_make_the_ddpm_loss_unbiased():
    """After warm-up on a fixed per-step loss L_i, the sampler is far from uniform, yet
    E[w L_i] over its draws equals the uniform mean of L, exactly in closed form and within
    Monte Carlo error over 200k draws."""
    T = 50
    L = 0.1 + (torch.arange(T, dtype=torch.float64) / T) ** 3  # a fixed fake loss per step
    sampler = LossAwareSampler(T)
    objective = DDPMObjective(GaussianDiffusion(linear_betas(T)), timestep_sampler=sampler)
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(256, 2)
    while not sampler.warmed_up():
        draws = objective.draw(x, None, gen)
        objective.observe(draws, draws["w"].double() * L[draws["i"]])  # the trainer hands over w·L
    torch.testing.assert_close(sampler.losses, L[:, None].expand(T, sampler.history))  # observe un-weights
    p = sampler.probs()
    assert p.max() / p.min() > 10
    w = 1 / (T * p)
    torch.testing.assert_close((p * w * L).sum(), L.mean())
    draws = objective.draw(torch.zeros(200_000, 2), None, gen)
    est = draws["w"].double() * L[draws["i"]]
    assert abs(float(est.mean() - L.mean())) < 4 * float(est.std()) / math.sqrt(len(est))
    assert abs(float(L[draws["i"]].mean() - L.mean())) > 0.05  # the unweighted mean is biased


def test_ddpm_and_dsm_objectives_are_reproducible_and_weighted():
    torch.manual_seed(0)
    cfg = load_config("toy-ddpm")
    diffusion = build_process(cfg.diffusion)
    model = build_model(cfg, (2,), process=diffusion)
    x = torch.randn(64, 2)
    sampler = LossAwareSampler(diffusion.num_timesteps)
    obj = DDPMObjective(diffusion, timestep_sampler=sampler)
    d1, d2 = obj.draw(x, None, torch.Generator().manual_seed(5)), obj.draw(x, None, torch.Generator().manual_seed(5))
    assert all(torch.equal(d1[k], d2[k]) for k in d1)
    d1["w"] = torch.rand(64) + 0.5  # arbitrary weights: the loss must apply them
    loss, logs = obj.loss(model, x, None, d1)
    plain = ddpm_losses(model, diffusion, x, d1["i"], noise=d1["noise"])["loss"].detach()
    torch.testing.assert_close(loss.detach(), d1["w"] * plain)
    assert float(logs["mse"]) == pytest.approx(float(plain.mean()), rel=1e-6)

    vp = VPLinear()
    dsm = DSMObjective(vp, t_min=0.25)
    d = dsm.draw(x, None, torch.Generator().manual_seed(1))
    assert float(d["t"].min()) >= 0.25 and float(d["t"].max()) <= 1.0
    loss, _ = dsm(model, x, None, torch.Generator().manual_seed(1))
    torch.testing.assert_close(loss.detach(), dsm_loss(model, vp, x, d["t"], noise=d["noise"])["loss"].detach())


def test_ema_follows_the_warmup_formula():
    net = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(net.weight)
    ema = EMA(net, rate=0.9, warmup=True)
    shadow, n = 0.0, 0
    for value in (1.0, 2.0, -1.0, 4.0, 3.0) * 20:
        net.weight.data.fill_(value)
        d = min(0.9, (1 + n) / (10 + n))
        shadow = d * shadow + (1 - d) * value
        ema.update()
        n += 1
    assert ema.decay() == 0.9
    assert float(ema.state_dict()["weight"]) == pytest.approx(shadow, rel=1e-6)
    copy = ema.ema_model()
    assert not copy.training and not copy.weight.requires_grad
    assert float(copy.weight) == pytest.approx(shadow, rel=1e-6) and float(net.weight.detach()) == 3.0
    no_warmup = EMA(net, rate=0.5, warmup=False)
    assert no_warmup.decay() == 0.5


def test_lr_schedule_warms_up_then_decays():
    cfg = Config().train
    cfg.warmup_steps, cfg.steps, cfg.lr_schedule = 10, 110, "constant"
    assert [lr_factor(s, cfg) for s in (0, 4, 9, 50)] == [0.1, 0.5, 1.0, 1.0]
    cfg.lr_schedule = "cosine"
    assert lr_factor(10, cfg) == 1.0 and lr_factor(60, cfg) == pytest.approx(0.5) and lr_factor(109, cfg) < 1e-3
