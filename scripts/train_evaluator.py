"""Train difflab's MNIST-family evaluator (the feature network of the difflab-<dataset> FID).

    DIFFLAB_DATA=/path/to/data python scripts/train_evaluator.py --dataset mnist --epochs 5 \
        --out difflab/weights/evaluator-mnist.safetensors

A thin CLI over difflab.metrics.evaluator_train.train_evaluator; the recipe and the accuracies
reached are in recipes/evaluator.md.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from difflab.errors import DifflabError
from difflab.metrics.evaluator import EVALUATOR_KINDS, EVALUATOR_NAMES, evaluator_path
from difflab.metrics.evaluator_train import save_evaluator, train_evaluator


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=EVALUATOR_NAMES, default="mnist")
    p.add_argument("--kind", choices=sorted(EVALUATOR_KINDS), default="cnn",
                   help="cnn: the first feature space; res: the independent residual network (second space)")
    p.add_argument("--data-dir", default=None, help="data root (default: $DIFFLAB_DATA)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate of the one-cycle schedule")
    p.add_argument("--max-shift", type=int, default=2, help="random shift augmentation, in pixels")
    p.add_argument("--hflip", choices=("auto", "on", "off"), default="auto",
                   help="random horizontal flips (auto: on for fashion-mnist only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--out", default=None, help="weights file (default: difflab/weights/evaluator-<dataset>.safetensors)")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    start = time.time()
    try:
        model, meta = train_evaluator(args.dataset, args.data_dir, epochs=args.epochs, batch_size=args.batch_size,
                                      lr=args.lr, max_shift=args.max_shift,
                                      hflip={"auto": None, "on": True, "off": False}[args.hflip], seed=args.seed,
                                      kind=args.kind)
        out = save_evaluator(model, args.out or evaluator_path(args.dataset, args.kind), meta)
    except DifflabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.dataset}: test accuracy {float(meta['test_accuracy']):.4f} after {args.epochs} epochs, "
          f"{time.time() - start:.0f} s; saved {out} ({out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
