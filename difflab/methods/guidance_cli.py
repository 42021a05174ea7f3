"""Command-line commands and the quickstart section of discriminator / classifier guidance.

    difflab dg-bank   DIFFUSION_CKPT --out DIR --n N [--sampler ddim --steps 50 --shard-size 1000]
    difflab dg-train  DIFFUSION_CKPT --bank DIR --out DIR [--steps 2000 --features CLASSIFIER_CKPT]
    difflab dg-sample DIFFUSION_CKPT --disc DIR [--weight 1 --cg CLASSIFIER_CKPT --label 3] --out FILE
    difflab cg-train  DIFFUSION_CKPT --out DIR [--steps 2000]

Each is a thin layer over :mod:`difflab.methods.guidance`; the real data of dg-train and cg-train
come from the diffusion checkpoint's own data config.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from difflab.errors import DataError, DifflabError
from difflab.train.distributed import auto_device

EXAMPLES = {
    "dg-bank": """examples:
  difflab dg-bank runs/toy --out runs/toy-bank --n 20000 --sampler ancestral --steps 1000
  difflab dg-bank runs/mnist --out runs/mnist-bank --n 50000 --sampler pf_heun --steps 18 --batch 1000
  (run it again with the same arguments to complete an interrupted bank; finished shards are kept)""",
    "dg-train": """examples:
  difflab dg-train runs/toy --bank runs/toy-bank --out runs/toy-dg --steps 1500
  difflab dg-train runs/mnist --bank runs/mnist-bank --out runs/mnist-dg --steps 5000 --batch-size 128
  difflab dg-train runs/mnist --bank runs/mnist-bank --out runs/mnist-dg2 --features runs/mnist-cls
  (held-out accuracy and BCE per band of t after every epoch: OUT/t_bins.json; one checkpoint per epoch)""",
    "dg-sample": """examples:
  difflab dg-sample runs/toy --disc runs/toy-dg --sampler ancestral --steps 1000 --n 2000 --out toy-dg.png
  difflab dg-sample runs/mnist --disc runs/mnist-dg/checkpoints/step-00001720 --weight 2 --t-window 0 0.8 --out m.npz
  difflab dg-sample runs/mnist --disc runs/mnist-dg --cg runs/mnist-cls --cg-weight 1 --label 7 --out sevens.png
  difflab dg-sample runs/mnist --disc runs/mnist-dg --weight 0 --out unguided.png   # = difflab sample, bit for bit""",
    "cg-train": """examples:
  difflab cg-train runs/digits --out runs/digits-cls --steps 2000
  difflab cg-train runs/mnist --out runs/mnist-cls --steps 5000 --t-sampling uniform""",
}


def _parser(sub, name, help_):
    return sub.add_parser(name, help=help_, epilog=EXAMPLES[name], formatter_class=argparse.RawDescriptionHelpFormatter)


def _common_train(p, steps):
    p.add_argument("--out", required=True, help="run directory (checkpoints/, log.jsonl, t_bins.json)")
    p.add_argument("--steps", type=int, default=steps, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--t-min", type=float, default=1e-3, help="smallest training time")
    p.add_argument("--t-sampling", choices=("uniform", "log_snr"), default=None,
                   help="t uniform, or uniform in log-SNR (importance sampling; the dg-train default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None, help="data directory for the real data (default: $DIFFLAB_DATA)")
    p.add_argument("--device", default="auto")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its newest checkpoint")
    p.add_argument("--no-progress", action="store_true")


def register(sub) -> dict:
    p = _parser(sub, "dg-bank", "draw a resumable bank of a model's samples (discriminator guidance)")
    p.add_argument("checkpoint", help="the diffusion model: run dir, checkpoint dir or .safetensors")
    p.add_argument("--out", required=True, help="bank directory")
    p.add_argument("--n", type=int, required=True, help="number of samples")
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--batch", type=int, default=None, help="samples per sampler call (default: a shard)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eta", type=float, default=None, help="DDIM's η")
    p.add_argument("--label", type=int, default=None,
                   help="fixed label for a class-conditional model (default: uniform)")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")

    p = _parser(sub, "dg-train", "train a discriminator d(x_t, t): diffused real data vs the bank")
    p.add_argument("checkpoint", help="the diffusion model whose samples are in the bank")
    p.add_argument("--bank", required=True, help="bank directory written by dg-bank")
    _common_train(p, 2000)
    p.add_argument("--features", default=None,
                   help="a noisy classifier run (cg-train): its frozen features feed a small trained head")
    p.add_argument("--class-cond", action="store_true", help="class-conditional d(x_t, t, y) (needs a labelled bank)")
    p.add_argument("--max-real", type=int, default=None, help="use at most this many real samples")

    p = _parser(sub, "dg-sample", "sample with discriminator (and classifier) guidance")
    p.add_argument("checkpoint", help="the diffusion model")
    p.add_argument("--disc", default=None, help="discriminator run dir or checkpoint dir")
    p.add_argument("--weight", type=float, default=1.0, help="w_DG (0: the unguided sampler, bit for bit)")
    p.add_argument("--t-window", type=float, nargs=2, default=(0.0, 1.0), metavar=("T_LO", "T_HI"))
    p.add_argument("--max-norm", type=float, default=None, help="clip the correction per sample to this norm")
    p.add_argument("--cg", default=None, help="noisy classifier run dir (classifier guidance)")
    p.add_argument("--cg-weight", type=float, default=1.0)
    p.add_argument("--label", type=int, default=None, help="class of every sample (classifier guidance target)")
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--clip", action="store_true", help="clip x̂0 to [-1, 1] (images)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="FILE.png or FILE.npz")
    p.add_argument("--no-progress", action="store_true")

    p = _parser(sub, "cg-train", "train a noisy classifier p(y | x_t, t) (classifier guidance)")
    p.add_argument("checkpoint", help="the diffusion model (its data config gives the labelled data)")
    _common_train(p, 2000)
    return {"dg-bank": cmd_bank, "dg-train": cmd_train, "dg-sample": cmd_sample, "cg-train": cmd_cg_train}


def _model(path, device="cpu"):
    from difflab.build import data_shape_of
    from difflab.train.api import load_model

    model, cfg, ckpt = load_model(path, map_location=device)
    shape = tuple((ckpt.state.get("extra") or {}).get("data_shape") or data_shape_of(cfg))
    num_classes = (ckpt.state.get("extra") or {}).get("num_classes") if cfg.data.class_cond else None
    return model, cfg, ckpt, shape, num_classes


def _real_data(cfg, data_dir):
    from difflab.data import load_dataset

    return load_dataset(cfg.data.name, data_dir or cfg.data.data_dir or None, image_size=cfg.data.image_size or None,
                        num_samples=cfg.data.num_samples or None)


def cmd_bank(args) -> int:
    from difflab.methods.guidance_bank import generate_bank

    device = auto_device(args.device)
    model, cfg, ckpt, shape, num_classes = _model(args.checkpoint, device)
    opts = {"eta": args.eta} if args.eta is not None else {}
    out = generate_bank(model, args.sampler, args.steps, args.n, args.out, shard_size=args.shard_size, seed=args.seed,
                        shape=shape, num_classes=num_classes, label=args.label, batch_size=args.batch, device=device,
                        source=f"{ckpt.path} step {ckpt.step}", progress=not args.no_progress, **opts)
    print(f"bank of {args.n} samples ({args.sampler}, {args.steps} steps) in {out}")
    return 0


def cmd_train(args) -> int:
    from difflab.methods.guidance import Discriminator, load_bank, load_classifier, train_discriminator

    model, cfg, ckpt, shape, _ = _model(args.checkpoint)
    bank = load_bank(args.bank)
    if tuple(bank.meta["shape"]) != tuple(shape):
        raise DataError(f"bank {args.bank} holds samples of shape {tuple(bank.meta['shape'])}, "
                        f"the model {args.checkpoint} makes {tuple(shape)}")
    real = _real_data(cfg, args.data_dir)
    if args.max_real:
        real.x, real.y = real.x[:args.max_real], (real.y[:args.max_real] if real.y is not None else None)
    num_classes = None
    if args.class_cond:
        if real.y is None or bank.y is None:
            raise DataError("--class-cond needs labelled real data and a bank of a class-conditional model")
        num_classes = real.num_classes
    extractor = load_classifier(args.features) if args.features else None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        disc = Discriminator.build(shape, num_classes=num_classes, extractor=extractor)
    res = train_discriminator(model, real, bank, args.out, discriminator=disc, steps=args.steps,
                              batch_size=args.batch_size, lr=args.lr, t_min=args.t_min,
                              t_sampling=args.t_sampling or "log_snr", seed=args.seed, device=args.device,
                              progress=not args.no_progress, resume=args.resume,
                              source=f"{ckpt.path} step {ckpt.step}; bank {args.bank}")
    ev = res["last_eval"]
    acc = f"; held-out accuracy {ev['acc']:.3f}, BCE {ev['loss']:.4f}" if ev else ""
    print(f"trained to step {res['final_step']} (BCE {res['last_loss']:.4f}{acc}); checkpoint {res['checkpoint']}; "
          f"per-epoch table {res['table']}")
    return 0


def cmd_cg_train(args) -> int:
    from difflab.methods.guidance import NoisyClassifier, train_classifier

    model, cfg, ckpt, shape, _ = _model(args.checkpoint)
    real = _real_data(cfg, args.data_dir)
    if real.y is None:
        raise DataError(f"data {cfg.data.name!r} has no labels; a noisy classifier needs them")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        clf = NoisyClassifier.build(shape, real.num_classes)
    res = train_classifier(model, real, args.out, classifier=clf, steps=args.steps, batch_size=args.batch_size,
                           lr=args.lr, t_min=args.t_min, t_sampling=args.t_sampling or "uniform", seed=args.seed,
                           device=args.device, progress=not args.no_progress, resume=args.resume)
    ev = res["last_eval"]
    acc = f"; held-out accuracy {ev['acc']:.3f}" if ev else ""
    print(f"trained to step {res['final_step']} (CE {res['last_loss']:.4f}{acc}); checkpoint {res['checkpoint']}")
    return 0


def guided_model(model, *, disc=None, weight=1.0, t_window=(0.0, 1.0), max_norm=None, cg=None, cg_weight=1.0,
                 label=None, device="cpu"):
    """The model with discriminator guidance and/or classifier guidance stacked on it (CG outermost,
    as in the paper's joint sampler), from run or checkpoint paths."""
    from difflab.methods.guidance import (ClassifierGuidance, DiscriminatorGuidance, load_classifier,
                                          load_discriminator)

    if disc is not None:
        model = DiscriminatorGuidance(model, load_discriminator(disc, map_location=device), weight=weight,
                                      t_window=tuple(t_window), max_norm=max_norm)
    if cg is not None:
        model = ClassifierGuidance(model, load_classifier(cg, map_location=device), weight=cg_weight,
                                   t_window=tuple(t_window), max_norm=max_norm, target=label)
    return model


def cmd_sample(args) -> int:
    from difflab.cli import save_samples
    from difflab.samplers.batched import generate

    if args.disc is None and args.cg is None:
        raise DifflabError("dg-sample needs --disc (discriminator guidance) and/or --cg (classifier guidance)")
    device = auto_device(args.device)
    model, cfg, ckpt, shape, num_classes = _model(args.checkpoint, device)
    guided = guided_model(model, disc=args.disc, weight=args.weight, t_window=args.t_window, max_norm=args.max_norm,
                          cg=args.cg, cg_weight=args.cg_weight, label=args.label, device=device)
    res = generate(guided, shape, sampler=args.sampler, steps=args.steps, n=args.n, seed=args.seed, clip=args.clip,
                   label=args.label, batch=args.batch, device=device, progress=not args.no_progress)
    written = save_samples(res["x"], Path(args.out))
    print(f"{args.n} guided samples, {args.sampler}, {res['nfe']} network evaluations per batch -> "
          f"{', '.join(map(str, written))}")
    return 0


# ----------------------------------------------------------------------------------- quickstart
def demo_section(out, toy_model, toy_cfg, digits_model, digits_cfg, progress: bool = False) -> list[str]:
    """Discriminator guidance in the quickstart: (1) the exact correction of a deliberately wrong
    toy score (closed-form optimal discriminator), (2) a discriminator trained on a bank of the
    trained toy model's samples, (3) in the time left, the same on the digits model. Markdown
    lines; PNGs and JSON go into ``out``. About 35 s on a shared 2-core CPU."""
    return _demo_section(out, toy_model, toy_cfg, digits_model, digits_cfg, progress)


def _demo_section(out, toy_model, toy_cfg, digits_model, digits_cfg, progress: bool) -> list[str]:
    from difflab import viz
    from difflab.data import load_dataset, toy_mixture
    from difflab.methods.guidance import (Discriminator, DiscriminatorGuidance, generate_bank, load_bank,
                                          load_discriminator, train_discriminator)
    from difflab.methods.guidance_toy import MixtureLogRatio, wrong_mixture
    from difflab.metrics.toy import toy_metrics
    from difflab.models import exact_mixture_model
    from difflab.samplers import sample

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    mix = toy_mixture(toy_cfg.data.name)
    sched = toy_model.schedule
    rows, panels = [], {}

    def run(label, m, key=None):
        x = sample(m, (2000, 2), sampler="ddim", steps=50, generator=torch.Generator().manual_seed(5)).x
        rows.append({"model": label, **toy_metrics(x.double(), mix, seed=1)})
        if key:
            panels[f"{key}\nweight TV {rows[-1]['weight_tv']:.3f}"] = x

    # (1) a known score error and its exact correction
    bad = wrong_mixture(mix, "weights")
    wrong = exact_mixture_model(bad, sched)
    run("exact score of a wrong mixture (weights 3:1)", wrong, "wrong score")
    run("  + DG with the optimal d* (closed form)", DiscriminatorGuidance(wrong, MixtureLogRatio(mix, bad, sched)),
        "wrong + DG (optimal d*)")
    run("exact true score", exact_mixture_model(mix, sched), "true score")

    # (2) the trained toy model with a trained discriminator
    work = out / "dg"
    bank = load_bank(generate_bank(toy_model, "ddim", 50, 8000, work / "toy-bank", shard_size=2000, seed=0, shape=(2,),
                                   progress=progress, source="demo toy model"))
    real = load_dataset(toy_cfg.data.name, num_samples=8000, seed=1)
    if (work / "toy-disc" / "checkpoints").exists():
        import shutil

        shutil.rmtree(work / "toy-disc")  # the demo always starts fresh
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        disc = Discriminator.build((2,), hidden=128, depth=3)
    fit = train_discriminator(toy_model, real.x, bank, work / "toy-disc", discriminator=disc, steps=400,
                              batch_size=512, lr=3e-3, device="cpu", progress=progress, tensorboard=False)
    run("trained model", toy_model, "trained model")
    run("  + DG with a trained d", DiscriminatorGuidance(toy_model, load_discriminator(work / "toy-disc")),
        "trained model + DG")
    viz.save_scatter(panels, out / "dg_toy_samples.png", reference=mix.sample(2000, torch.Generator().manual_seed(2)))
    (out / "dg_toy_metrics.json").write_text(json.dumps({"rows": rows, "training": fit["last_eval"]}, indent=1))
    ev = fit["last_eval"] or {"acc": float("nan"), "loss": float("nan")}
    lines = ["## Discriminator guidance (Kim et al. 2023)",
             "ε' = ε - σ(t) ∇ logit d(x_t, t): a discriminator between diffused data and diffused model samples "
             "corrects the model's score. DDIM 50, 2000 samples per row, the same noise, exact metrics against the "
             "true mixture. First a known error: the exact score of the ring with the wrong weights, corrected by the "
             "optimal discriminator in closed form (its rows match the true score's). Then the trained toy model with "
             f"a discriminator MLP trained {fit['final_step']} steps on a bank of 8000 of its samples (DDIM 50) vs "
             f"8000 data points: held-out accuracy {ev['acc']:.3f}, BCE {ev['loss']:.4f} — near chance, since the "
             "model is already close to the data, so DG has little to correct there.", "",
             "| model | mean log-density | sliced W2 | MMD² | weight TV |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['mean_log_density']:.3f} | {r['sliced_w2']:.3f} | {r['mmd2']:.4f} | "
                     f"{r['weight_tv']:.3f} |")
    lines += ["", "![DG toy samples](dg_toy_samples.png)", ""]
    if digits_model is not None and time.perf_counter() - t0 < 40:
        lines += _digits_demo(out, work, digits_model, digits_cfg, progress)
    lines += [f"(Discriminator-guidance section: {time.perf_counter() - t0:.0f} s. A trained discriminator on a known "
              "score error, with an epoch curve: `python benchmarks/dg_toy.py`.)", ""]
    return lines


def _digits_demo(out, work, model, cfg, progress) -> list[str]:
    from difflab import viz
    from difflab.data import load_dataset
    from difflab.methods.guidance import (Discriminator, DiscriminatorGuidance, generate_bank, load_bank,
                                          load_discriminator, train_discriminator)
    from difflab.samplers import sample

    shape = (1, 8, 8)
    bank = load_bank(generate_bank(model, "ddim", 20, 1000, work / "digits-bank", shard_size=500, seed=0, shape=shape,
                                   progress=progress, clip_denoised=True, source="demo digits model"))
    real = load_dataset(cfg.data.name)
    if (work / "digits-disc" / "checkpoints").exists():
        import shutil

        shutil.rmtree(work / "digits-disc")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        disc = Discriminator.build(shape, base_channels=16)
    fit = train_discriminator(model, real.x, bank, work / "digits-disc", discriminator=disc, steps=200, batch_size=64,
                              lr=1e-3, device="cpu", progress=progress, tensorboard=False, max_eval=300, t_bins=5)
    d = load_discriminator(work / "digits-disc")
    grids = []
    for m in (model, DiscriminatorGuidance(model, d)):
        g = torch.Generator().manual_seed(0)
        grids.append(sample(m, (32, *shape), sampler="ddim", steps=20, generator=g, clip_denoised=True).x)
    viz.save_grid(torch.cat(grids), out / "dg_digits.png", nrow=8, scale=viz.auto_scale(8))
    ev = fit["last_eval"] or {"acc": float("nan")}
    return [f"Digits model: a bank of 1000 samples (DDIM 20) and an Encoder discriminator trained {fit['final_step']} "
            f"steps (held-out accuracy {ev['acc']:.3f} averaged over t; near chance means it finds little to "
            "correct). Top 4 rows: DDIM 20; bottom 4: the same noise with DG. Qualitative only: difflab has no "
            "feature space for 8×8 digits to compute an FID in.", "", "![DG digits](dg_digits.png)", ""]


__all__ = ["demo_section", "guided_model", "register"]
