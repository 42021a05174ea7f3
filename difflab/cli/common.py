"""What several command groups share: parsing comma-separated lists, the options of an imported model."""
from __future__ import annotations

from difflab.errors import ConfigError


def parse_ints(text: str, flag: str) -> tuple[int, ...]:
    """Comma-separated positive integers of option ``flag``, or a one-line ConfigError."""
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        vals = ()
    if not vals or min(vals) < 1:
        raise ConfigError(f"{flag} {text!r}; expected comma-separated positive integers, e.g. 50,20,10,5")
    return vals


def add_external_args(p, data: bool = True) -> None:
    """--flags (an improved-diffusion checkpoint's own flags) and, where the command needs the data,
    --data (an imported model records none; a difflab checkpoint's config names it)."""
    p.add_argument("--flags", default=None, help="for improved-diffusion:MODEL.pt, their model/diffusion flags")
    if data:
        p.add_argument("--data", default=None, help="the data the model was trained on (default: the checkpoint's; "
                       "needed for diffusers: / improved-diffusion: models)")


def float_pair(text: str) -> tuple[float, float]:
    """``LO,HI``: two finite numbers with LO <= HI (a clamp or a time window)."""
    import argparse
    import math

    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}; expected LO,HI, e.g. 0.001,1") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise argparse.ArgumentTypeError(f"{text!r}; expected finite LO <= HI, e.g. 0.001,1")
    return lo, hi


def add_stack_args(p) -> None:
    """The methods every sampling command stacks on the model (innermost first): --tp, --dg, --cg."""
    m = p.add_argument_group("methods stacked on the model (TP innermost, then DG, then CG)")
    m.add_argument("--tp", default=None, metavar="RUN", help="a time predictor (tp-train run, checkpoint or zoo name): "
                   "the model is evaluated at g(x) instead of the nominal t")
    m.add_argument("--tp-coefficients", action="store_true",
                   help="TP: also take the sampler's coefficients at g(x) (the seed's Algorithm 3)")
    m.add_argument("--tp-clamp", type=float_pair, default=None, metavar="LO,HI", help="TP: bounds on g(x)")
    m.add_argument("--dg", default=None, metavar="RUN", help="a discriminator (dg-train): discriminator guidance")
    m.add_argument("--dg-weight", type=float, default=1.0, help="DG's weight w (0: the plain sampler, bit for bit)")
    m.add_argument("--dg-window", type=float_pair, default=(0.0, 1.0), metavar="T_LO,T_HI",
                   help="apply DG (and CG) only for t in this window")
    m.add_argument("--cg", default=None, metavar="RUN", help="a noisy classifier (cg-train): classifier guidance "
                   "toward --label")
    m.add_argument("--cg-scale", type=float, default=1.0, help="CG's scale")


def stack_from_args(args, device):
    """:func:`difflab.compose.build_stack` from the options of :func:`add_stack_args`."""
    from difflab.compose import build_stack

    return build_stack(args.checkpoint, tp=args.tp, tp_coefficients=args.tp_coefficients, tp_clamp=args.tp_clamp,
                       dg=args.dg, dg_weight=args.dg_weight, dg_window=args.dg_window, cg=args.cg,
                       cg_scale=args.cg_scale, label=getattr(args, "label", None), device=device,
                       use_ema=not getattr(args, "no_ema", False), flags=getattr(args, "flags", None),
                       overrides=getattr(args, "overrides", ()) or ())


__all__ = ["add_external_args", "add_stack_args", "float_pair", "parse_ints", "stack_from_args"]
