"""`difflab dg-bank`, `dg-train`, `dg-sample`, `cg-train`: discriminator and classifier guidance.

    difflab dg-bank   DIFFUSION_CKPT --out DIR --n N [--sampler ddim --steps 50 --shard-size 1000]
    difflab dg-train  DIFFUSION_CKPT --bank DIR --out DIR [--steps 2000 --features CLASSIFIER_CKPT]
    difflab dg-sample DIFFUSION_CKPT --disc DIR [--weight 1 --cg CLASSIFIER_CKPT --label 3] --out FILE
    difflab cg-train  DIFFUSION_CKPT --out DIR [--steps 2000]

Each is a thin layer over :mod:`difflab.methods.guidance`; the real data of dg-train and cg-train
come from the diffusion checkpoint's own data config.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from difflab.cli.options import input_path, output_dir, output_file
from difflab.train.api import final_loss
from difflab.data import load_dataset
from difflab.errors import DataError, DifflabError
from difflab.io.samples import save_samples
from difflab.methods.guidance import (Discriminator, NoisyClassifier, generate_bank, load_bank,
                                      load_classifier, train_classifier, train_discriminator)
from difflab.samplers import SAMPLERS
from difflab.loading import load_any
from difflab.train.distributed import auto_device

EXAMPLES = {
    "dg-bank": """examples:
  difflab dg-bank runs/toy --out runs/toy-bank --n 20000 --sampler ancestral --steps 1000
  difflab dg-bank runs/mnist --out runs/mnist-bank --n 50000 --sampler pf_heun --steps 18 --batch 1000
  (run it again with the same arguments to complete an interrupted bank; finished shards are kept)""",
    "dg-train": """examples:
  difflab dg-train runs/toy --bank runs/toy-bank --out runs/toy-dg --steps 1500
  difflab dg-train runs/mnist --bank runs/mnist-bank --out runs/mnist-dg --steps 5000 --batch-size 128
  difflab dg-train runs/mnist --bank runs/mnist-bank --out runs/mnist-dg2 --features runs/mnist-cls [--head pooled]
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
    p.add_argument("--out", required=True, type=output_dir, help="run directory (checkpoints/, log.jsonl, t_bins.json)")
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
    p.add_argument("--out", required=True, type=output_dir, help="bank directory")
    p.add_argument("--n", type=int, required=True, help="number of samples")
    p.add_argument("--sampler", default="ddim", choices=sorted(SAMPLERS))
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
    p.add_argument("--bank", required=True, type=input_path, help="bank directory written by dg-bank")
    _common_train(p, 2000)
    p.add_argument("--features", default=None,
                   help="a noisy classifier run (cg-train): its frozen features feed a small trained head")
    p.add_argument("--head", choices=("map", "pooled"), default="map",
                   help="with --features: a convolutional head on the extractor's feature map (default; the paper's) "
                        "or an MLP head on its pooled features")
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
    p.add_argument("--sampler", default="ddim", choices=sorted(SAMPLERS))
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--clip", action="store_true", help="clip x̂0 to [-1, 1] (images)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, type=output_file(".png", ".npz"), help="FILE.png or FILE.npz")
    p.add_argument("--no-progress", action="store_true")

    p = _parser(sub, "cg-train", "train a noisy classifier p(y | x_t, t) (classifier guidance)")
    p.add_argument("checkpoint", help="the diffusion model (its data config gives the labelled data)")
    _common_train(p, 2000)
    return {"dg-bank": cmd_bank, "dg-train": cmd_train, "dg-sample": cmd_sample, "cg-train": cmd_cg_train}


def _model(path, device="cpu"):
    """The diffusion model (any reference) with its data shape and class count."""
    lm = load_any(path, device=device)
    return lm.model, lm, lm.data_shape, lm.num_classes


def _real_data(lm, data_dir):
    """The training data of the model (its config says which and how it was sized)."""
    n = (lm.cfg.data.num_samples or None) if lm.cfg is not None else None
    return load_dataset(lm.data_name(), data_dir or lm.data_dir, image_size=lm.train_image_size, num_samples=n)


def cmd_bank(args) -> int:
    from difflab.compose import check_label

    device = auto_device(args.device)
    model, lm, shape, num_classes = _model(args.checkpoint, device)
    check_label(num_classes, args.label)
    opts = {"eta": args.eta} if args.eta is not None else {}
    out = generate_bank(model, args.sampler, args.steps, args.n, args.out, shard_size=args.shard_size, seed=args.seed,
                        shape=shape, num_classes=num_classes, label=args.label, batch_size=args.batch, device=device,
                        source=lm.describe(), progress=not args.no_progress, **opts)
    print(f"bank of {args.n} samples ({args.sampler}, {args.steps} steps) in {out}")
    return 0


def cmd_train(args) -> int:
    model, lm, shape, _ = _model(args.checkpoint)
    bank = load_bank(args.bank)
    if tuple(bank.settings["shape"]) != tuple(shape):
        raise DataError(f"bank {args.bank} holds samples of shape {tuple(bank.settings['shape'])}, "
                        f"the model {args.checkpoint} makes {tuple(shape)}")
    real = _real_data(lm, args.data_dir)
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
        disc = Discriminator.build(shape, num_classes=num_classes, extractor=extractor,
                                   **({"head_input": args.head} if extractor is not None else {}))
    res = train_discriminator(model, real, bank, args.out, discriminator=disc, steps=args.steps,
                              batch_size=args.batch_size, lr=args.lr, t_min=args.t_min,
                              t_sampling=args.t_sampling or "log_snr", seed=args.seed, device=args.device,
                              progress=not args.no_progress, resume=args.resume,
                              source=f"{lm.describe()}; bank {args.bank}")
    ev = res["last_eval"]
    acc = f"; held-out accuracy {ev['acc']:.3f}, BCE {ev['loss']:.4f}" if ev else ""
    print(f"trained to step {res['final_step']} ({final_loss(res, 'BCE')}{acc}); checkpoint {res['checkpoint']}; "
          f"per-epoch table {res['table']}")
    if ev:
        import json

        from difflab.methods.guidance.diagnostics import pick_epoch
        from difflab.train.checkpoint import step_dir_name

        table = json.loads(Path(res["table"]).read_text())
        print(epoch_table(table))
        best = pick_epoch(table)
        print(f"lowest held-out BCE at t < 0.2: step {best['step']} (accuracy {best['acc']:.3f}, BCE "
              f"{best['loss']:.4f}); guide with {Path(args.out) / 'checkpoints' / step_dir_name(best['step'])}")
    return 0


def epoch_table(table: list[dict]) -> str:
    """The per-epoch, per-band held-out accuracy of a dg-train run as a markdown table."""
    bands = [f"t {b['t_lo']:.2f}-{b['t_hi']:.2f}" for b in table[0]["bins"]]
    lines = ["| step | epoch | " + " | ".join(bands) + " | mean acc | mean BCE |", "|" + "---|" * (len(bands) + 4)]
    for r in table:
        cells = [str(r["step"]), f"{r.get('epoch', 0):.2f}"] + [f"{b['acc']:.3f}" for b in r["bins"]]
        lines.append("| " + " | ".join(cells + [f"{r['acc']:.3f}", f"{r['loss']:.4f}"]) + " |")
    return "held-out accuracy per band of t (balanced real / generated):\n" + "\n".join(lines)


def cmd_cg_train(args) -> int:
    model, lm, shape, _ = _model(args.checkpoint)
    real = _real_data(lm, args.data_dir)
    if real.y is None:
        raise DataError(f"data {lm.data_name()!r} has no labels; a noisy classifier needs them")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        clf = NoisyClassifier.build(shape, real.num_classes)
    res = train_classifier(model, real, args.out, classifier=clf, steps=args.steps, batch_size=args.batch_size,
                           lr=args.lr, t_min=args.t_min, t_sampling=args.t_sampling or "uniform", seed=args.seed,
                           device=args.device, progress=not args.no_progress, resume=args.resume)
    ev = res["last_eval"]
    acc = f"; held-out accuracy {ev['acc']:.3f}" if ev else ""
    print(f"trained to step {res['final_step']} ({final_loss(res, 'CE')}{acc}); checkpoint {res['checkpoint']}")
    return 0


def cmd_sample(args) -> int:
    from difflab.compose import build_stack, check_label, stack_generate

    if args.disc is None and args.cg is None:
        raise DifflabError("dg-sample needs --disc (discriminator guidance) and/or --cg (classifier guidance)")
    device = auto_device(args.device)
    stack = build_stack(args.checkpoint, dg=args.disc, dg_weight=args.weight, dg_window=tuple(args.t_window),
                        dg_max_norm=args.max_norm, cg=args.cg, cg_scale=args.cg_weight, label=args.label,
                        device=device)
    check_label(stack.num_classes, args.label, guided=args.cg is not None)
    res = stack_generate(stack, sampler=args.sampler, steps=args.steps, n=args.n, seed=args.seed, clip=args.clip,
                         label=args.label if stack.num_classes is not None else None, batch=args.batch,
                         device=device, progress=not args.no_progress)
    written = save_samples(res["x"], Path(args.out))
    print(f"{args.n} guided samples, {args.sampler}, {res['nfe']} network evaluations per batch -> "
          f"{', '.join(map(str, written))}")
    return 0


__all__ = ["register"]
