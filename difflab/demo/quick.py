"""The quickstart `make demo` runs in a few minutes on a 2-core CPU: it trains a small toy model (so training is
seen working), then shows every sampler and method on the shipped zoo models through the one front door
(:func:`difflab.compose.build_stack`): samples of each sampler, TP, DG, TP + DG, DSNO, SDEdit, and the
quality-against-NFE curve on the exact toy world. The report opens with the pictures and one short table.
``difflab demo --full`` (``make demo-full``) is the long tour that trains every model and method itself."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from difflab import viz

TOY_SAMPLERS = ("ancestral", "ddim", "dpmpp_2m", "dpmpp_2m_sde", "unipc", "edm_heun")
TOY_NFE = (3, 5, 10, 20)
N_TOY = 4000
MNIST_SAMPLERS = ("ancestral", "ddim", "dpmpp_2m", "unipc")


def _train_toy(out: Path, steps: int, progress: bool):
    from difflab.config import load_config
    from difflab.train.api import load_model, train

    run = out / "toy"
    if (run / "checkpoints").exists():
        import shutil

        shutil.rmtree(run)  # the demo starts fresh
    cfg = load_config("toy-ddpm", [f"train.steps={steps}", "train.ckpt_every=0", "train.log_every=100"])
    t0 = time.perf_counter()
    res = train(cfg, run, progress=progress)
    return load_model(run)[0], res, time.perf_counter() - t0


def _toy_curve(out: Path, trained, N_TOY: int) -> tuple[list[str], dict]:
    """Sliced W2 to the true ring against NFE, for the zoo toy model and the exact score, every few-step
    sampler: the demo's quality-vs-NFE picture (exact metrics, no feature network)."""
    from difflab.compose import build_stack, stack_generate
    from difflab.data import toy_mixture
    from difflab.metrics.toy import toy_metrics

    zoo = build_stack("toy-ddpm")
    mix = toy_mixture("toy:ring8")
    curves, rows, panels = {}, {}, {}
    for name in TOY_SAMPLERS:
        ys = []
        for nfe in TOY_NFE:
            steps = max(1, nfe // 2) if name == "edm_heun" else nfe
            r = stack_generate(zoo, sampler=name, steps=steps, n=N_TOY, seed=0, batch=N_TOY)
            ys.append(toy_metrics(r["x"].double(), mix, seed=1)["sliced_w2"])
            if nfe == 10:
                panels[f"{name}, NFE {r['nfe']}"] = r["x"]
        curves[name] = (list(TOY_NFE), ys)
        rows[name] = ys
    with torch.no_grad():
        from difflab.samplers import sample

        mine = sample(trained, (N_TOY, 2), sampler="dpmpp_2m", steps=10, generator=torch.Generator().manual_seed(0)).x
    # the noise floor: true samples against fresh true samples, at the same n
    floor = toy_metrics(mix.sample(N_TOY, torch.Generator().manual_seed(5)).double(), mix, seed=1)["sliced_w2"]
    panels["your model (just trained), dpmpp_2m, NFE 10"] = mine
    viz.save_scatter(panels, out / "toy_samplers.png", reference=mix.sample(N_TOY, torch.Generator().manual_seed(2)))
    viz.save_curves(curves, out / "quality_vs_nfe.png", xlabel="NFE", ylabel="sliced W2 to the true ring (lower is better)",
                    title="toy-ddpm: quality against network evaluations", logx=True, logy=True,
                    hlines={"true vs true (noise floor)": floor})
    return [f"| {n} | " + " | ".join(f"{v:.3f}" for v in ys) + " |" for n, ys in rows.items()], {"floor": floor,
                                                                                                   "rows": rows}


def _mnist(out: Path, n: int) -> list[tuple[str, str, float]]:
    """Grids of the shipped MNIST models: each sampler, TP, DG, TP + DG, DSNO, SDEdit; (name, file, s/sample)."""
    from difflab import zoo as zoo_mod
    from difflab.compose import build_stack, stack_generate

    shipped = set(zoo_mod.zoo_names())
    if "mnist-ddpm" not in shipped:
        return []
    shown = []

    def grid(name, stack, file, **kw):
        r = stack_generate(stack, n=n, seed=0, batch=n, **kw)
        viz.save_grid(r["x"], out / file, scale=2)
        shown.append((name, file, r["seconds_per_sample"]))
        return r["x"]

    base = build_stack("mnist-ddpm")
    for s in MNIST_SAMPLERS:
        grid(f"mnist-ddpm, {s}, 10 NFE", base, f"mnist_{s}.png", sampler=s, steps=10, clip=True)
    if "mnist-ddpm-ext" in shipped:
        grid("mnist-ddpm-ext (the same network trained 2.6x longer), dpmpp_2m, 10 NFE", build_stack("mnist-ddpm-ext"),
             "mnist_ext_dpmpp_2m.png", sampler="dpmpp_2m", steps=10, clip=True)
        grid("mnist-ddpm-ext evaluated at t - 0.01 (the TP family's constant shift), ddim, 10 NFE — FID ratio 0.87 / "
             "0.88 to plain DDIM at n = 10,000 (recipes/mnist-tp-family.md)", build_stack("mnist-ddpm-ext", t_shift=-0.01),
             "mnist_ext_tshift.png", sampler="ddim", steps=10, clip=False)
    if "mnist-tp" in shipped:
        grid("+ TP (mnist-tp), dpmpp_2m, 10 NFE — the shipped TP hurts (g reads E[t | x]; issue #21)", build_stack("mnist-ddpm", tp="mnist-tp"), "mnist_tp.png",
             sampler="dpmpp_2m", steps=10, clip=True)
    if "mnist-dg" in shipped:
        grid("+ DG (mnist-dg, w = 1, the old from-scratch discriminator: near chance), dpmpp_2m, 10 NFE", build_stack("mnist-ddpm", dg="mnist-dg"), "mnist_dg.png",
             sampler="dpmpp_2m", steps=10, clip=True)
        if "mnist-tp" in shipped:
            grid("+ TP + DG, dpmpp_2m, 10 NFE", build_stack("mnist-ddpm", tp="mnist-tp", dg="mnist-dg"),
                 "mnist_tp_dg.png", sampler="dpmpp_2m", steps=10, clip=True)
    if "mnist-ext-dg" in shipped and "mnist-ddpm-ext" in shipped:
        grid("mnist-ddpm-ext + DG (mnist-ext-dg: a head on the frozen noisy classifier mnist-cls, w = 1), dpmpp_2m, "
             "10 NFE — FID ratio 0.81 / 0.73 at n = 10,000 (recipes/mnist-dg.md)",
             build_stack("mnist-ddpm-ext", dg="mnist-ext-dg"), "mnist_ext_dg.png", sampler="dpmpp_2m", steps=10,
             clip=True)
    if "mnist-dsno" in shipped:
        grid("DSNO (mnist-dsno), 1 NFE", build_stack("mnist-dsno"), "mnist_dsno.png")
    if "mnist-iddpm" in shipped:
        grid("mnist-iddpm (cosine, learned variance; [sample] clips), ancestral, 10 NFE", build_stack("mnist-iddpm"),
             "mnist_iddpm.png", sampler="ancestral", steps=10, clip=True)
    # SDEdit: half-noise a grid of the DDIM samples' mirror images and denoise them
    from difflab.analysis import sdedit

    src = torch.flip(grid("SDEdit input: DDIM samples, mirrored", base, "sdedit_in.png", sampler="ddim", steps=10,
                          clip=True), dims=[-1])
    viz.save_grid(src, out / "sdedit_in.png", scale=2)
    t0 = time.perf_counter()
    edited = sdedit(base.model, src, 0.5, sampler="ddim", steps=10, generator=torch.Generator().manual_seed(0))
    viz.save_grid(edited, out / "sdedit_out.png", scale=2)
    shown.append(("SDEdit (t0 = 0.5, DDIM 10): the mirrored digits made digit-like again", "sdedit_out.png",
                  (time.perf_counter() - t0) / len(src)))
    return shown


def run_quick(out: Path, *, toy_steps: int = 600, n: int = 36, n_toy: int = N_TOY, progress: bool = True) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small models: one thread per process, no oversubscription
    try:
        trained, res, train_s = _train_toy(out, toy_steps, progress)
        table, toy = _toy_curve(out, trained, n_toy)
        shown = _mnist(out, n)
    finally:
        torch.set_num_threads(threads)
    total = time.perf_counter() - t0
    lines = ["# difflab quickstart", "",
             "![quality against NFE](quality_vs_nfe.png)", "",
             "![every few-step sampler at 10 NFE on the toy ring](toy_samplers.png)", ""]
    for name, file, sps in shown:
        lines += [f"**{name}** ({sps * 1000:.0f} ms per sample)", "", f"![{name}]({file})", ""]
    N_TOY = n_toy
    lines += [f"## Toy world: sliced W2 to the true ring ({N_TOY} samples of the shipped toy-ddpm), by NFE", "",
              "| sampler | " + " | ".join(f"NFE {k}" for k in TOY_NFE) + " |",
              "|---|" + "---:|" * len(TOY_NFE), *table, "",
              f"Noise floor: {N_TOY} true samples against fresh true samples score {toy['floor']:.3f}; a difference "
              f"of that size between two rows is no difference.", "",
              f"Trained a toy DDPM for {res['final_step']} steps in {train_s:.0f} s (final loss {res['last_loss']:.3f}) "
              f"into `{out / 'toy'}`; the rest uses the shipped zoo models. MNIST grids: {n} samples each, seed 0, "
              f"the same noise for every row. These are pictures, not measurements: the measured tables "
              f"(FID with n, floor and interval) are in the README and `difflab bench`.", "",
              f"Total: {total:.0f} s, 1 torch thread. The long tour that trains every model and method: "
              f"`make demo-full` (`difflab demo --full`).", ""]
    (out / "quick.json").write_text(json.dumps({"toy": toy, "seconds": total, "train_seconds": train_s}, indent=2))
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report


__all__ = ["run_quick"]
