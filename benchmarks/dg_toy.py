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
import sys
import time
from pathlib import Path

import torch

from difflab.methods.guidance_toy import ERROR_METRICS, PAPER_RATIO, toy_experiment


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
    from difflab.methods.guidance_cli import guided_model
    from difflab.metrics.evaluator import evaluate_images
    from difflab.samplers.batched import generate
    from difflab.train.api import load_model

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
    import json as _json

    from difflab.methods.guidance import EVAL_FILE, checkpoints_by_step
    from difflab.methods.guidance_cli import guided_model
    from difflab.metrics.evaluator import evaluate_images
    from difflab.samplers.batched import generate

    evals = Path(args.disc_ckpt) / EVAL_FILE
    acc = {r["step"]: r for r in (_json.loads(evals.read_text()) if evals.is_file() else [])}
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
            from difflab import viz

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
