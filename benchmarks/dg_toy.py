"""Discriminator guidance on a known score error: the 2-D toy table (and MNIST FID rows when given models).

    python benchmarks/dg_toy.py [--wrong weights[,shift,both]] [--disc-steps 1000] [--plot DIR] [--json FILE]
    python benchmarks/dg_toy.py --quick                       # smaller sets, about a minute
    python benchmarks/dg_toy.py --ckpt runs/mnist --disc-ckpt runs/mnist-dg

The "pre-trained" score is the exact score of toy:ring8 with the wrong component weights (3:1
alternating; 'shift' moves the means out by 10%, 'both' does both). Rows: no guidance, DG with the
optimal discriminator in closed form (logit = log p_t - log q_t), DG with a trained MLPEncoder
discriminator, and the true score through the same sampler (the sampler's own floor), at high
NFE (ancestral 1000) and low NFE (DDIM 10). Metrics are exact (difflab.metrics.toy) against the
true mixture. Then the DG / no-DG ratio of each error metric beside the paper's CIFAR-10 FID
ratio (EDM-G++ 1.77 / EDM 2.03 = 0.87), and the metrics against the discriminator's epoch.

Image rows (FID in difflab's MNIST feature space, difflab.metrics.evaluator.evaluate_images) need
a trained MNIST diffusion model and discriminator: pass --ckpt and --disc-ckpt.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from difflab import viz
from difflab.data import toy_mixture
from difflab.methods.guidance import (EVAL_FILE, Discriminator, DiscriminatorGuidance, checkpoints_by_step,
                                      generate_bank, guided_model, load_bank, load_discriminator, train_discriminator)
from difflab.methods.guidance.oracle import MixtureLogRatio, wrong_mixture
from difflab.metrics.evaluator import evaluate_images
from difflab.metrics.toy import toy_metrics
from difflab.models import exact_mixture_model
from difflab.process import GaussianDiffusion, linear_betas
from difflab.samplers import sample
from difflab.samplers.batched import generate
from difflab.train.api import load_model
from difflab.metrics.references import PAPER_RATIOS

ERROR_METRICS = ("sliced_w2", "mmd2", "weight_tv")
PAPER_RATIO = PAPER_RATIOS["DG"]  # CIFAR-10 FID of EDM-G++ / EDM (Kim et al. 2023, Table 2)


# ------------------------------------------------------------------------------ the toy experiment
def _samples(model, n, sampler, steps, seed):
    g = torch.Generator().manual_seed(seed)
    return sample(model, (n, 2), sampler=sampler, steps=steps, generator=g, dtype=torch.float32).x


def toy_experiment(*, dataset: str = "toy:ring8", wrong: str = "weights", timesteps: int = 1000,
                   n_train: int = 20_000, n_eval: int = 2000, settings=(("ancestral", 1000), ("ddim", 10)),
                   bank_setting=("ancestral", 1000), curve_setting=("ddim", 50), disc_steps: int = 1000,
                   batch_size: int = 512, lr: float = 3e-3, hidden: int = 128, depth: int = 3, t_min: float = 1e-3,
                   t_sampling: str = "log_snr", weight: float = 1.0, run_dir=None, seed: int = 0,
                   progress: bool = False, figure=None) -> dict:
    """The 2-D toy experiment of discriminator guidance.

    A wrong exact score (:func:`wrong_mixture` of ``dataset``'s mixture, discrete linear process
    with ``timesteps`` steps) is sampled into a bank (``bank_setting``, n_train samples), a
    discriminator (MLPEncoder hidden x depth) is trained against n_train true samples for
    ``disc_steps`` steps, and at every (sampler, steps) in ``settings`` n_eval samples of four
    models are scored with :func:`difflab.metrics.toy.toy_metrics` against the true mixture:
    'wrong' (no guidance), 'dg_analytic' (the optimal discriminator, closed form), 'dg_trained',
    and 'true' (the exact true score through the same sampler: the floor of that sampler).
    All four start from the same noise. Each epoch's checkpoint is also scored at ``curve_setting``
    (the curve's step 0 is the unguided model there).

    Returns dict(rows, ratios, curve, config, timings); ``figure`` (a PNG path) gets the four
    sample sets of the first setting side by side.
    """
    timings = {}
    t0 = time.perf_counter()
    true = toy_mixture(dataset)
    bad = wrong_mixture(true, wrong)
    schedule = GaussianDiffusion(linear_betas(timesteps)).schedule
    wrong_model, true_model = exact_mixture_model(bad, schedule), exact_mixture_model(true, schedule)
    tmp = None
    if run_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="dg-toy-")
        run_dir = tmp.name
    run_dir = Path(run_dir)
    try:
        real = true.sample(n_train, torch.Generator().manual_seed(seed)).float()
        bank_dir = generate_bank(wrong_model, bank_setting[0], bank_setting[1], n_train, run_dir / "bank",
                                 shard_size=max(1, n_train // 4), seed=seed, shape=(2,), progress=progress,
                                 source=f"exact {wrong} {dataset}")
        bank = load_bank(bank_dir)
        timings["bank_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        disc_dir = run_dir / "disc"
        if (disc_dir / "checkpoints").exists():
            shutil.rmtree(disc_dir)  # a fresh discriminator every run
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            disc = Discriminator.build((2,), hidden=hidden, depth=depth)
        fit = train_discriminator(wrong_model, real, bank, disc_dir, discriminator=disc, steps=disc_steps,
                                  batch_size=batch_size, lr=lr, t_min=t_min, t_sampling=t_sampling, seed=seed,
                                  device="cpu", progress=progress, tensorboard=False)
        timings["train_s"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        trained = load_discriminator(disc_dir)
        analytic = MixtureLogRatio(true, bad, schedule)
        models = {"wrong": wrong_model,
                  "dg_analytic": DiscriminatorGuidance(wrong_model, analytic, weight=weight),
                  "dg_trained": DiscriminatorGuidance(wrong_model, trained, weight=weight),
                  "true": true_model}
        rows, panels = [], {}
        for i, (sampler, steps) in enumerate(settings):
            for name, m in models.items():
                x = _samples(m, n_eval, sampler, steps, seed + 1000)
                rows.append({"sampler": sampler, "steps": steps, "model": name,
                             **toy_metrics(x.double(), true, seed=seed + 7)})
                if i == 0:
                    panels[name] = x
        timings["eval_s"] = time.perf_counter() - t2
        t3 = time.perf_counter()
        table = json.loads(Path(fit["table"]).read_text()) if Path(fit["table"]).is_file() else []
        accs = {r["step"]: r for r in table}
        base = toy_metrics(_samples(wrong_model, n_eval, *curve_setting, seed + 1000).double(), true, seed=seed + 7)
        curve = [{"step": 0, "epoch": 0.0, "heldout_acc": None, "heldout_bce": None,  # step 0: no guidance
                  **{k: base[k] for k in (*ERROR_METRICS, "mean_log_density")}}]
        for step, path in checkpoints_by_step(disc_dir):
            m = DiscriminatorGuidance(wrong_model, load_discriminator(path), weight=weight)
            met = toy_metrics(_samples(m, n_eval, *curve_setting, seed + 1000).double(), true, seed=seed + 7)
            rec = accs.get(step, {})
            curve.append({"step": step, "epoch": step / fit["steps_per_epoch"], "heldout_acc": rec.get("acc"),
                          "heldout_bce": rec.get("loss"), **{k: met[k] for k in (*ERROR_METRICS, "mean_log_density")}})
        timings["curve_s"] = time.perf_counter() - t3
        if figure is not None:
            s, n = settings[0]
            titles = {"wrong": f"wrong score ({wrong})", "dg_analytic": "+ DG, analytic d*",
                      "dg_trained": "+ DG, trained d", "true": "true score"}
            tv = {r["model"]: r["weight_tv"] for r in rows if (r["sampler"], r["steps"]) == (s, n)}
            viz.save_scatter({f"{titles[k]}\n{s} {n}, weight TV {tv[k]:.3f}": v for k, v in panels.items()}, figure,
                             reference=true.sample(n_eval, torch.Generator().manual_seed(seed + 3)))
        timings["total_s"] = time.perf_counter() - t0
        return {"rows": rows, "ratios": ratios(rows), "curve": curve, "timings": timings,
                "training": {k: fit[k] for k in ("final_step", "last_loss", "steps_per_epoch", "last_eval")},
                "config": {"dataset": dataset, "wrong": wrong, "timesteps": timesteps, "n_train": n_train,
                           "n_eval": n_eval, "settings": [list(s) for s in settings], "bank": list(bank_setting),
                           "curve": list(curve_setting), "disc_steps": disc_steps, "batch_size": batch_size, "lr": lr,
                           "hidden": hidden, "depth": depth, "t_min": t_min, "t_sampling": t_sampling,
                           "weight": weight, "seed": seed, "bank_size": len(bank)}}
    finally:
        if tmp is not None:
            tmp.cleanup()


def ratios(rows: list[dict]) -> list[dict]:
    """Per setting and error metric: the DG / no-DG ratio (the paper's FID ratio is 0.87) and the
    fraction of the wrong-to-true gap that guidance closes, (m_wrong - m_dg) / (m_wrong - m_true)."""
    out = []
    for key in sorted({(r["sampler"], r["steps"]) for r in rows}, key=lambda k: -k[1]):
        by = {r["model"]: r for r in rows if (r["sampler"], r["steps"]) == key}
        for metric in ERROR_METRICS:
            w, tr = by["wrong"][metric], by["true"][metric]
            rec = {"sampler": key[0], "steps": key[1], "metric": metric, "wrong": w, "true": tr}
            for name in ("dg_analytic", "dg_trained"):
                m = by[name][metric]
                rec[f"{name}"] = m
                rec[f"{name}_ratio"] = m / w if w else float("nan")
                rec[f"{name}_gap_closed"] = (w - m) / (w - tr) if w != tr else float("nan")
            out.append(rec)
    return out


# ------------------------------------------------------------------------------ tables and image rows


def print_toy(res: dict) -> None:
    c = res["config"]
    print(f"\n## toy: {c['dataset']}, wrong score = '{c['wrong']}'; bank {c['bank_size']} samples ({c['bank'][0]} "
          f"{c['bank'][1]}); discriminator MLPEncoder {c['hidden']}x{c['depth']}, {c['disc_steps']} steps, batch "
          f"{c['batch_size']}, t {c['t_sampling']}; {c['n_eval']} samples per row\n")
    print("| sampler | steps | model | mean log-density | sliced W2 | MMD² | weight TV | modes |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for r in res["rows"]:
        print(f"| {r['sampler']} | {r['steps']} | {r['model']} | {r['mean_log_density']:.3f} | {r['sliced_w2']:.4f} "
              f"| {r['mmd2']:.4f} | {r['weight_tv']:.4f} | {r['coverage']:.2f} |")
    print(f"(true samples against fresh true samples: mean log-density {res['rows'][0]['ref_mean_log_density']:.3f})\n")
    print(f"| sampler | steps | metric | wrong | DG analytic (ratio, gap closed) | DG trained (ratio, gap closed) "
          f"| true score | paper FID ratio |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for q in res["ratios"]:
        print(f"| {q['sampler']} | {q['steps']} | {q['metric']} | {q['wrong']:.4f} | {q['dg_analytic']:.4f} "
              f"({q['dg_analytic_ratio']:.2f}, {q['dg_analytic_gap_closed']:.0%}) | {q['dg_trained']:.4f} "
              f"({q['dg_trained_ratio']:.2f}, {q['dg_trained_gap_closed']:.0%}) | {q['true']:.4f} "
              f"| {PAPER_RATIO:.2f} |")
    print(f"\nmetric against discriminator epoch ({c['curve'][0]} {c['curve'][1]} with DG, step 0 = no DG; held-out "
          "accuracy and BCE are balanced over real / generated and averaged over 10 bands of t):\n")
    print("| step | epoch | held-out acc | held-out BCE | " + " | ".join(ERROR_METRICS) + " |")
    print("|---:|---:|---:|---:|" + "---:|" * len(ERROR_METRICS))
    for r in res["curve"]:
        acc = "" if r["heldout_acc"] is None else f"{r['heldout_acc']:.4f}"
        bce = "" if r["heldout_bce"] is None else f"{r['heldout_bce']:.4f}"
        print(f"| {r['step']} | {r['epoch']:.1f} | {acc} | {bce} | "
              + " | ".join(f"{r[k]:.4f}" for k in ERROR_METRICS) + " |")
    ev = res["training"]["last_eval"]
    if ev:
        print("\nfinal discriminator, held-out accuracy by t band: "
              + ", ".join(f"[{b['t_lo']:.2f},{b['t_hi']:.2f}] {b['acc']:.3f}" for b in ev["bins"]))
    t = res["timings"]
    print(f"\ntime: bank {t['bank_s']:.0f} s, training {t['train_s']:.0f} s, table {t['eval_s']:.0f} s, "
          f"epoch curve {t['curve_s']:.0f} s, total {t['total_s']:.0f} s")


def image_rows(args) -> list[dict]:
    """FID etc. of the diffusion model with and without DG (and with CG + DG if a classifier is given)."""
    dev = args.device
    model, cfg, ckpt = load_model(args.ckpt, map_location=dev)
    shape = tuple((ckpt.state.get("extra") or {}).get("data_shape"))
    arms = {"no guidance": model, f"DG w={args.weight}": guided_model(model, disc=args.disc_ckpt, weight=args.weight,
                                                                        device=dev)}
    rows = []
    for name, m in arms.items():
        res = generate(m, shape, sampler=args.sampler, steps=args.steps, n=args.n_images, seed=0, clip=True,
                       batch=args.batch, device=dev, progress=True)
        met = evaluate_images(res["x"], name=args.dataset, data_dir=args.data_dir)
        rows.append({"model": name, "sampler": args.sampler, "steps": args.steps, "nfe": res["nfe"],
                     "seconds": res["seconds"], **met})
        print(f"| {name} | {args.sampler} {args.steps} | FID {met['fid']:.3f} | KID {met['kid']:.5f} | "
              f"precision {met['precision']:.3f} | recall {met['recall']:.3f} | {res['seconds']:.0f} s |")
    if rows:
        print(f"FID ratio DG / no DG: {rows[1]['fid'] / rows[0]['fid']:.3f} (paper, CIFAR-10: {PAPER_RATIO:.2f}); "
              f"feature space {rows[0]['feature_space']} (not Inception)")
    if args.epochs:
        rows += epoch_rows(args, model, shape, base_fid=rows[0]["fid"])
    return rows


def epoch_rows(args, model, shape, base_fid: float) -> list[dict]:
    """FID with DG from every saved discriminator checkpoint (one per epoch): which epoch to use."""
    evals = Path(args.disc_ckpt) / EVAL_FILE
    acc = {r["step"]: r for r in (json.loads(evals.read_text()) if evals.is_file() else [])}
    print(f"\nFID against the discriminator's epoch ({args.sampler} {args.steps}, DG w={args.weight}; "
          f"no DG: {base_fid:.3f})\n")
    print("| step | epoch | held-out acc | FID | ratio to no DG |\n|---:|---:|---:|---:|---:|")
    rows = []
    for step, path in checkpoints_by_step(args.disc_ckpt):
        m = guided_model(model, disc=path, weight=args.weight, device=args.device)
        res = generate(m, shape, sampler=args.sampler, steps=args.steps, n=args.n_images, seed=0, clip=True,
                       batch=args.batch, device=args.device)
        fid = evaluate_images(res["x"], name=args.dataset, data_dir=args.data_dir)["fid"]
        rec = acc.get(step, {})
        rows.append({"model": "DG by epoch", "step": step, "epoch": rec.get("epoch"), "acc": rec.get("acc"),
                     "fid": fid, "ratio": fid / base_fid})
        ep = f"{rec['epoch']:.1f}" if "epoch" in rec else "?"
        a = f"{rec['acc']:.3f}" if "acc" in rec else "?"
        print(f"| {step} | {ep} | {a} | {fid:.3f} | {fid / base_fid:.3f} |")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wrong", default="weights", help="comma list of wrong-score kinds: weights, shift, both")
    ap.add_argument("--disc-steps", type=int, default=1000)
    ap.add_argument("--n-train", type=int, default=20000, help="true samples and bank size")
    ap.add_argument("--n-eval", type=int, default=2000, help="samples per table row")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="n-train 10000, n-eval 1000, ancestral 250 instead of 1000")
    ap.add_argument("--plot", default=None, help="directory for the PNGs (samples side by side, metric vs epoch)")
    ap.add_argument("--json", default=None, help="write every number here")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ckpt", default=None, help="an image diffusion checkpoint (e.g. MNIST) for FID rows")
    ap.add_argument("--disc-ckpt", default=None, help="its discriminator (difflab dg-train)")
    ap.add_argument("--weight", type=float, default=1.0)
    ap.add_argument("--epochs", action="store_true", help="also FID with DG from every saved discriminator epoch")
    ap.add_argument("--dataset", default="mnist", help="evaluator feature space (mnist, fashion-mnist)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--n-images", type=int, default=10000)
    ap.add_argument("--sampler", default="pf_heun")
    ap.add_argument("--steps", type=int, default=18)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"# discriminator guidance, toy benchmark — {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    kw = dict(n_train=args.n_train, n_eval=args.n_eval, disc_steps=args.disc_steps, seed=args.seed)
    if args.quick:
        kw.update(n_train=10000, n_eval=1000, settings=(("ancestral", 250), ("ddim", 10)),
                  bank_setting=("ancestral", 250), curve_setting=("ddim", 25))
    out = {"toy": [], "images": None}
    t0 = time.perf_counter()
    for wrong in [w.strip() for w in args.wrong.split(",") if w.strip()]:
        fig = Path(args.plot) / f"dg_toy_{wrong}.png" if args.plot else None
        res = toy_experiment(wrong=wrong, figure=fig, **kw)
        print_toy(res)
        if args.plot:
            cv = res["curve"]
            series = {m: ([r["epoch"] for r in cv[1:]], [r[m] for r in cv[1:]]) for m in ERROR_METRICS}
            s, n = res["config"]["curve"]
            viz.save_curves(series, Path(args.plot) / f"dg_toy_{wrong}_epochs.png", xlabel="discriminator epoch",
                            ylabel="error vs true mixture", title=f"{s} {n} + DG-trained, wrong {wrong}",
                            hlines={f"no DG: {m}": cv[0][m] for m in ERROR_METRICS})
            print(f"figures: {fig}, {Path(args.plot) / f'dg_toy_{wrong}_epochs.png'}")
        out["toy"].append(res)
    if args.ckpt and args.disc_ckpt:
        print("\n## images\n")
        out["images"] = image_rows(args)
    else:
        print("\nMNIST FID rows: not run (no trained MNIST model yet); pass --ckpt and --disc-ckpt to add them.")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
