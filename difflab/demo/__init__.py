"""The quickstart (``make demo`` / ``difflab demo``): train a toy model and a digits model on the
embedded data, sample them with every sampler, measure, and write a report with pictures.

Runs on 2 CPU cores in a few minutes; everything it shows comes from this run.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from difflab import viz
from difflab.config import load_config
from difflab.samplers import SAMPLERS, SPECS, sample
from difflab.train.api import final_loss

# (sampler, grid intervals): a few-step and a many-step setting of each sampler.
TOY_GRID = [("ancestral", 1000), ("ancestral", 20), ("ddim", 10), ("ddim", 50), ("euler_maruyama", 20),
            ("euler_maruyama", 200), ("pf_euler", 10), ("pf_euler", 50), ("pf_heun", 5), ("pf_heun", 25),
            ("pf_adaptive", 0)]
DIGITS_GRID = [("ancestral", 1000), ("ddim", 10), ("ddim", 50), ("euler_maruyama", 100), ("pf_heun", 10)]


def _train(preset: str, run_dir: Path, steps: int, data_dir, progress: bool, extra=()):
    from difflab.train.api import load_model, train

    cfg = load_config(preset, [f"train.steps={steps}", *extra])
    if (run_dir / "checkpoints").exists():
        import shutil

        shutil.rmtree(run_dir)  # the demo always starts fresh
    t0 = time.perf_counter()
    res = train(cfg, run_dir, data_dir=data_dir, progress=progress)
    secs = time.perf_counter() - t0
    model, cfg, _ = load_model(run_dir)
    return model, cfg, res, secs


def _toy_section(out: Path, steps: int, progress: bool) -> list[str]:
    from difflab.data import toy_mixture
    from difflab.metrics.toy import toy_metrics
    from difflab.models import exact_mixture_model

    model, cfg, res, secs = _train("toy-ddpm", out / "toy", steps, None, progress)
    mix = toy_mixture(cfg.data.name)
    exact = exact_mixture_model(mix, model.schedule)
    rows, panels = [], {}
    for name, n in TOY_GRID:
        for label, m in (("trained", model), ("exact score", exact)):
            g = torch.Generator().manual_seed(0)
            t0 = time.perf_counter()
            with torch.no_grad():
                r = sample(m, (2000, 2), sampler=name, steps=max(n, 1), generator=g)
            dt = time.perf_counter() - t0
            met = toy_metrics(r.x.double(), mix, seed=1)
            rows.append({"model": label, "sampler": name, "steps": n, "nfe": r.nfe, "seconds": dt, **met})
            if label == "trained" and (name, n) in {("ancestral", 1000), ("ddim", 10), ("pf_heun", 5), ("pf_heun", 25)}:
                panels[f"{name}, NFE {r.nfe}"] = r.x
    viz.save_scatter(panels, out / "toy_samples.png", reference=mix.sample(2000, torch.Generator().manual_seed(2)))
    (out / "toy_metrics.json").write_text(json.dumps(rows, indent=2))
    lines = [f"## Toy: {cfg.data.name} (8 Gaussians), MLP, DDPM linear schedule, L_simple",
             f"Trained {res['final_step']} steps in {secs:.0f} s ({final_loss(res, digits=3)}).",
             "Exact metrics against the true mixture, 2000 samples each (sliced W2 and MMD² against fresh true samples;"
             " `exact score` = the same sampler on the closed-form score, so the gap between the two rows is the"
             " network's error and the exact row is the sampler's own discretisation error).", "",
             "| sampler | NFE | model | mean log-density | sliced W2 | MMD² | modes covered | weight TV |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['sampler']} | {r['nfe']} | {r['model']} | {r['mean_log_density']:.3f} | {r['sliced_w2']:.3f} "
                     f"| {r['mmd2']:.4f} | {r['coverage']:.2f} | {r['weight_tv']:.3f} |")
    lines += [f"(true samples: mean log-density {rows[0]['ref_mean_log_density']:.3f})", "",
              "![toy samples](toy_samples.png)", ""]
    return lines, model, cfg


def _digits_section(out: Path, steps: int, data_dir, progress: bool) -> list[str]:
    from difflab.samplers import interpolate

    model, cfg, res, secs = _train("digits-ddpm", out / "digits", steps, data_dir, progress)
    lines = [f"## Digits (sklearn 8×8), U-Net preset {cfg.model.preset}, DDPM linear schedule, L_simple",
             f"Trained {res['final_step']} steps in {secs:.0f} s ({final_loss(res, digits=3)}).", "",
             "| sampler | NFE | seconds for 64 | grid |", "|---|---:|---:|---|"]
    scale = viz.auto_scale(8)
    for name, n in DIGITS_GRID:
        g = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        r = sample(model, (64, 1, 8, 8), sampler=name, steps=n, generator=g, return_trajectory=name == "ancestral",
                   **({"clip_denoised": True} if SPECS[name].clip else {}))
        dt = time.perf_counter() - t0
        fname = f"digits_{name}_{n}.png"
        viz.save_grid(r.x, out / fname, nrow=8, scale=scale)
        lines.append(f"| {name} | {r.nfe} | {dt:.1f} | ![{name}]({fname}) |")
        if r.trajectory is not None:
            viz.save_trajectory_strip(r.x0_preds[:, :8], out / "digits_progressive_x0.png", num_frames=10, scale=scale)
    from difflab.data import load_dataset

    real = load_dataset("digits", split="test").x
    inter = interpolate(model, real[:1], real[1:2], torch.linspace(0, 1, 8).tolist(), t0=0.5, steps=250,
                        sampler="ancestral", generator=torch.Generator().manual_seed(0))
    viz.save_grid(inter, out / "digits_interpolation.png", nrow=8, scale=scale)
    lines += ["", "Progressive generation (x̂0 predicted along ancestral sampling, left = t=1):", "",
              "![progressive](digits_progressive_x0.png)", "",
              "Interpolation of two test digits through the latent at t = 0.5:", "",
              "![interpolation](digits_interpolation.png)", ""]
    return lines, model, cfg


def _bench_section(out: Path, model, cfg, n: int, progress: bool) -> list[str]:
    """`difflab bench` on a quickstart model: every sampler at NFE 20/10/5 plus diffusers peers."""
    from difflab.train.build import data_shape_of
    from difflab.metrics.bench import default_grid, run_bench

    name = cfg.data.name.replace(":", "_")
    try:
        import diffusers  # noqa: F401

        peers = True
    except ImportError:
        peers = False
    res = run_bench(model, cfg.data.name, data_shape_of(cfg), out / f"bench_{name}", grid=default_grid((20, 10, 5)),
                    n=n, peers=peers, progress=progress)
    table = (out / f"bench_{name}" / "table.md").read_text()
    return [f"### Benchmark: {cfg.data.name}, every sampler by NFE (`difflab bench`)", "", table,
            f"![quality vs NFE](bench_{name}/quality_vs_nfe.png)", ""] + ([] if peers else
            ["(diffusers not installed: no external peers.)", ""]) + [f"({len(res['rows'])} rows; JSON in bench_{name}/results.json)", ""]


MNIST_ZOO = ("mnist-ddpm", "mnist-tp", "mnist-dg")
# Shown too when shipped: the other base models at 10 steps, and DSNO at one evaluation.
MNIST_ZOO_EXTRA = ("mnist-iddpm", "mnist-vpsde", "mnist-dsno")


def _mnist_arms(shipped: set) -> list[tuple]:
    """(model name, method, model callable or DSNO, sampler[, generate options]) for every row of the MNIST
    section."""
    from difflab.methods.guidance import DiscriminatorGuidance, load_discriminator
    from difflab.methods.time_predictor import TimePredictorSampling, load_time_predictor
    from difflab.train.api import load_model

    model, _, _ = load_model("mnist-ddpm")
    g = load_time_predictor("mnist-tp", schedule=model.schedule).predictor
    disc = load_discriminator("mnist-dg")
    tp, dg = TimePredictorSampling(model, g), DiscriminatorGuidance(model, disc)
    arms = [("mnist-ddpm", "plain", model, "ddim"), ("mnist-ddpm", "plain", model, "ancestral"),
            ("mnist-ddpm", "TP", tp, "ddim"), ("mnist-ddpm", "TP", tp, "ancestral"),
            ("mnist-ddpm", "DG", dg, "ddim"), ("mnist-ddpm", "DG", dg, "ancestral"),
            ("mnist-ddpm", "TP+DG", DiscriminatorGuidance(tp, disc), "ddim")]
    if "mnist-iddpm" in shipped:  # learned variance: the ancestral sampler uses the interpolated Σ
        # The cosine schedule's ᾱ(1) is 2e-9: without clipping x̂0 the first step amplifies ε̂'s error ~10⁴ times.
        m = load_model("mnist-iddpm")[0]
        arms += [("mnist-iddpm", "clip", m, "ddim", {"clip": True}), ("mnist-iddpm", "clip", m, "ancestral", {"clip": True})]
    if "mnist-vpsde" in shipped:
        m = load_model("mnist-vpsde")[0]
        arms += [("mnist-vpsde", "plain", m, "euler_maruyama"), ("mnist-vpsde", "plain", m, "pf_heun")]
    if "mnist-dsno" in shipped:
        from difflab.methods.dsno import load_dsno

        arms.append(("mnist-ddpm-ext", "DSNO", load_dsno("mnist-dsno")[0], "dsno"))  # its teacher
    return arms


def _mnist_zoo_section(out: Path, data_dir, n: int = 256) -> list[str]:
    """The shipped MNIST models (no training): plain, TP, DG and TP+DG samplers at 10 NFE side by side, the
    other shipped base models and one-evaluation DSNO, with FID in difflab-mnist features when the MNIST files
    are at hand (grids only otherwise)."""
    from difflab import zoo
    from difflab.data import resolve_data_dir
    from difflab.errors import DataError
    from difflab.methods.dsno import dsno_sample
    from difflab.metrics.bench import evaluate_samples, generate_one_step
    from difflab.samplers.batched import generate

    shipped = set(zoo.zoo_names())
    missing = [m for m in MNIST_ZOO if m not in shipped]
    if missing:
        return ["## MNIST (zoo models)", "", f"(not shipped in this copy: {', '.join(missing)})", ""]
    arms = _mnist_arms(shipped)
    try:
        have_data = (resolve_data_dir(data_dir) / "mnist").is_dir()
    except DataError:  # no data directory: pictures only
        have_data = False
    names = [m for m in MNIST_ZOO + MNIST_ZOO_EXTRA if m in shipped]
    lines = [f"## MNIST (zoo models {', '.join(f'`{m}`' for m in names)}; nothing trained here)", "",
             f"{n} samples per row at 10 steps (DSNO: one evaluation), the same seed for every row" + (
                 "; FID in difflab-mnist features (not Inception)." if have_data else
                 " (no MNIST files found: set DIFFLAB_DATA for FID)."), "",
             "| model | method | sampler | NFE | FID | s/sample | samples |", "|---|---|---|---:|---:|---:|---|"]
    floor = None
    count = n if have_data else min(n, 64)
    for base, label, m, sampler, *opts in arms:
        if sampler == "dsno":
            res = generate_one_step(lambda x_T, m=m: dsno_sample(m, x_T).x, (1, 28, 28), count, seed=0, batch=64)
        else:
            res = generate(m, (1, 28, 28), sampler=sampler, steps=10, n=count, seed=0, batch=64, **(opts[0] if opts else {}))
        tag = base.removeprefix("mnist-")
        fname = f"mnist_{tag}_{label.replace('+', '_')}_{sampler}.png".lower()
        viz.save_grid(res["x"][:64], out / fname, nrow=8)
        fid = ""
        if have_data:
            met = evaluate_samples(res["x"], "mnist", data_dir=data_dir)
            fid, floor = f"{met['quality']:.2f}", met.get("quality_floor")
        lines.append(f"| {base} | {label} | {sampler} | {res['nfe']} | {fid} | "
                     f"{res['seconds'] / count * 1e3:.1f} ms | ![{label} {sampler}]({fname}) |")
    if floor is not None:
        lines += ["", f"{n} real test images score FID {floor:.2f} against the same statistics: the floor at this size."]
    return lines + [""]


# The method sections, in the order the report shows them: (title, module under difflab.demo).
SECTIONS = (("time-predictor sampling", "tp"), ("discriminator guidance", "guidance"), ("DSNO", "dsno"),
            ("analyses", "analysis"))


def _method_sections(out: Path, toy, digits, progress: bool) -> list[str]:
    """Each method's section (``difflab.demo.<module>.demo_section``) on the two quickstart models. A
    section whose optional dependency is missing says so in the report instead of vanishing."""
    import importlib

    lines = []
    for title, name in SECTIONS:
        try:
            section = importlib.import_module(f"difflab.demo.{name}").demo_section
            lines += section(out, toy[0], toy[1], digits[0], digits[1], progress)
        except ModuleNotFoundError as e:
            lines += [f"## {title}", "", f"Skipped: this section needs the package `{e.name}`, which is not installed.", ""]
    return lines


def run_demo(out: Path, *, toy_steps: int = 3000, digits_steps: int = 1500, data_dir=None, progress: bool = True) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    lines = ["# difflab quickstart report", "",
             f"Samplers: {', '.join(SAMPLERS)}. Machine: CPU, 1 torch thread"
             f"{' + CUDA' if torch.cuda.is_available() else ''}.", ""]
    # One intra-op thread: these models are small, and on a 2-core machine that is doing anything else
    # torch's threads oversubscribe the cores (measured here: 0.75 vs 6 training steps/s for the digits U-Net).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        toy_lines, toy_model, toy_cfg = _toy_section(out, toy_steps, progress)
        digits_lines, digits_model, digits_cfg = _digits_section(out, digits_steps, data_dir, progress)
        lines += toy_lines + _bench_section(out, toy_model, toy_cfg, 1000, progress)
        lines += digits_lines + _bench_section(out, digits_model, digits_cfg, 500, progress)
        lines += _method_sections(out, (toy_model, toy_cfg), (digits_model, digits_cfg), progress)
        lines += _mnist_zoo_section(out, data_dir)
    finally:
        torch.set_num_threads(threads)
    lines += [f"Total demo time: {time.perf_counter() - t0:.0f} s."]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
