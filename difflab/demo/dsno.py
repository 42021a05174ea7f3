"""The quickstart's DSNO section: distil the demo's toy and digits teachers into one-step operators
(:mod:`difflab.methods.dsno`) with a small budget and compare them with their teachers."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from difflab import viz
from difflab.config import TrainConfig
from difflab.data import toy_mixture
from difflab.methods.dsno import (TrajectoryDataset, dsno_from_teacher, dsno_sample, fit_dsno, generate_trajectories,
                                  trajectory_error)
from difflab.metrics.toy import toy_metrics
from difflab.samplers import ddim, time_grid

# Budgets of the quickstart section (≲ 90 s on 2 CPU cores with the demo's default teachers).
DEMO_TOY = dict(n=2048, M=6, steps=30, modes=3, train_steps=600, batch=128, lr=2e-3)
DEMO_DIGITS = dict(n=512, M=4, steps=16, modes=3, train_steps=200, batch=16, lr=5e-4)


def demo_section(out: Path, toy_model, toy_cfg, digits_model, digits_cfg, progress: bool) -> list[str]:
    """The quickstart's DSNO section (Markdown lines; PNGs into ``out``): distil the toy and digits
    teachers into one-step operators with a small budget (``DEMO_TOY``, ``DEMO_DIGITS``) and compare them
    with the teachers on held-out noises."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return _demo_lines(out, toy_model, toy_cfg, digits_model, digits_cfg, progress)


def _demo_lines(out: Path, toy_model, toy_cfg, digits_model, digits_cfg, progress: bool) -> list[str]:
    t_start = time.perf_counter()
    lines = ["## DSNO: one network evaluation for the whole ODE trajectory", ""]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # ---- toy: PF-Heun teacher, MLP operator with one temporal block (after the last hidden layer)
        c = DEMO_TOY
        kw = dict(M=c["M"], spacing="quadratic", steps=c["steps"], progress=False)
        generate_trajectories(toy_model, tmp / "toy-bank", n=c["n"], shard_size=c["n"], seed=0, **kw)
        generate_trajectories(toy_model, tmp / "toy-test", n=2000, shard_size=2000, seed=1, **kw)  # held out
        bank, ref = TrajectoryDataset(tmp / "toy-bank"), TrajectoryDataset(tmp / "toy-test")
        last = len(toy_model.net.hidden_layers)
        dsno = dsno_from_teacher(toy_model, bank.times, modes=c["modes"], temporal_layers=[last])
        tcfg = TrainConfig(steps=c["train_steps"], batch_size=c["batch"], lr=c["lr"], warmup_steps=50, ema_rate=0.99,
                           ckpt_every=0, log_every=100, lr_schedule="cosine", device="cpu")
        ema, res = fit_dsno(dsno, bank, tmp / "toy-run", tcfg, schedule=toy_model.schedule, progress=progress,
                            tensorboard=False)
        mix = toy_mixture(toy_cfg.data.name)
        r = dsno_sample(ema, ref.x, return_trajectory=True)
        err = trajectory_error(r.trajectory.transpose(0, 1), ref.y)
        base = trajectory_error(ref.x[:, None].expand_as(ref.y), ref.y)
        rows = [("teacher PF-Heun", 2 * ref.meta["steps"] - 1, ref.y[:, -1]), ("DSNO", 1, r.x)]
        for nfe in (1, 2, 4):
            ts = time_grid(toy_model.schedule, nfe, spacing="uniform")
            rows.append((f"DDIM {nfe} step{'s' * (nfe > 1)}", nfe, ddim(toy_model, ref.x, ts).x))
        M = c["M"]
        lines += [f"Toy ({toy_cfg.data.name}): {len(bank)} teacher trajectories (PF-Heun, {bank.meta['steps']} steps) "
                  f"at M = {M} quadratic times; MLP operator initialised from the teacher with one temporal block "
                  f"(J = {c['modes']}, +{res['param_overhead']['overhead_pct']:.0f}% parameters on this MLP), "
                  f"{res['final_step']} training steps.", "",
                  "RMS error against the teacher's trajectory from the same x_T (2000 held-out noises), per time:", "",
                  "| t | " + " | ".join(f"{float(t):.3f}" for t in bank.times) + " |",
                  "|---|" + "---:|" * M,
                  "| DSNO (1 NFE) | " + " | ".join(f"{float(e):.3f}" for e in err) + " |",
                  "| x_T (trivial) | " + " | ".join(f"{float(e):.3f}" for e in base) + " |", "",
                  "| sampler | NFE | mean log-density | sliced W2 | modes covered |", "|---|---:|---:|---:|---:|"]
        panels = {}
        for name, nfe, xs in rows:
            m = toy_metrics(xs.double(), mix, seed=1)
            lines.append(f"| {name} | {nfe} | {m['mean_log_density']:.3f} | {m['sliced_w2']:.3f} | {m['coverage']:.2f} |")
            if name != "DDIM 2 steps":
                panels[f"{name} (NFE {nfe})"] = xs
        viz.save_scatter(panels, out / "dsno_toy.png", reference=mix.sample(2000, torch.Generator().manual_seed(2)),
                         lim=2.2)  # fixed limits: one DDIM step scatters far off the ring
        lines += ["", "![DSNO toy](dsno_toy.png)", ""]

        # ---- digits: DDIM teacher (x̂0 clipped, as image samplers do), U-Net operator from the teacher
        c = DEMO_DIGITS
        kw = dict(M=c["M"], spacing="quadratic", sampler="ddim", steps=c["steps"], clip_denoised=True, progress=False)
        generate_trajectories(digits_model, tmp / "dig-bank", n=c["n"], shard_size=c["n"], seed=0, **kw)
        generate_trajectories(digits_model, tmp / "dig-test", n=8, shard_size=8, seed=1, **kw)
        bank, test = TrajectoryDataset(tmp / "dig-bank"), TrajectoryDataset(tmp / "dig-test")
        dsno = dsno_from_teacher(digits_model, bank.times, modes=c["modes"])
        tcfg = TrainConfig(steps=c["train_steps"], batch_size=c["batch"], lr=c["lr"], warmup_steps=20, ema_rate=0.95,
                           ckpt_every=0, log_every=50, device="cpu")
        ema, res = fit_dsno(dsno, bank, tmp / "dig-run", tcfg, schedule=digits_model.schedule, progress=progress,
                            tensorboard=False)
        r = dsno_sample(ema, test.x, return_trajectory=True)
        M = c["M"]
        viz.save_trajectory_strip(test.y.transpose(0, 1), out / "dsno_digits_teacher.png", num_frames=M, scale=4)
        viz.save_trajectory_strip(r.trajectory.clamp(-1, 1), out / "dsno_digits_dsno.png", num_frames=M, scale=4)
        err = trajectory_error(r.trajectory.transpose(0, 1), test.y)
        x0 = ddim(digits_model, test.x, time_grid(digits_model.schedule, 1, spacing="uniform"), clip_denoised=True).x
        lines += [f"Digits: {len(bank)} DDIM trajectories ({bank.meta['steps']} steps) at M = {M} times; U-Net operator "
                  f"initialised from the teacher (temporal blocks +{res['param_overhead']['overhead_pct']:.1f}% "
                  f"parameters), {res['final_step']} steps only: a smoke run, not a converged model. RMS error of the "
                  f"one-step sample against the teacher's on held-out noises: {float(err[-1]):.3f} "
                  f"(one clipped DDIM step: {float((x0 - test.y[:, -1]).pow(2).mean().sqrt()):.3f}).", "",
                  "Teacher trajectories (rows: samples, columns: t = 1 → 0):", "", "![teacher](dsno_digits_teacher.png)",
                  "", "DSNO, all columns decoded in one evaluation:", "", "![dsno](dsno_digits_dsno.png)", "",
                  f"(DSNO section: {time.perf_counter() - t_start:.0f} s.)", ""]
    return lines
