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


def grid_spec(text: str) -> str:
    """A time grid spacing, ``NAME`` or ``NAME:RHO`` (power, karras), checked (argparse type)."""
    import argparse

    from difflab.samplers.api import parse_spacing

    try:
        parse_spacing(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


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


def _scale_pair(text: str) -> tuple[float, float]:
    """``B`` or ``B,K``: ε scaling's λ(t) = B + K t."""
    import argparse

    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) not in (1, 2):
        raise argparse.ArgumentTypeError(f"{text!r}; expected B or B,K (λ(t) = B + K t), e.g. 1.005")
    return (vals[0], vals[1] if len(vals) == 2 else 0.0)


def add_stack_args(p) -> None:
    """The methods every sampling command stacks on the model (innermost first): ε scaling, one time
    layer (--tp, --time-shift or --t-shift), --dg, --cg."""
    m = p.add_argument_group("methods stacked on the model (ε scaling innermost, then the time layer, DG, CG)")
    m.add_argument("--tp", default=None, metavar="RUN", help="a time predictor (tp-train run, checkpoint or zoo name): "
                   "the model is evaluated at g(x) instead of the nominal t")
    m.add_argument("--tp-coefficients", action="store_true",
                   help="TP: also take the sampler's coefficients at g(x) (the seed's Algorithm 3); the same as "
                   "--time-readout coefficients")
    m.add_argument("--tp-clamp", type=float_pair, default=None, metavar="LO,HI", help="TP: bounds on g(x)")
    m.add_argument("--tp-window", type=float, default=None, metavar="W", help="TP: g(x) clamped to within ±W of the "
                   "nominal time (0: the plain sampler, bit for bit)")
    m.add_argument("--time-shift", type=float, default=None, metavar="W", help="the Time-Shift Sampler (Li et al. "
                   "2024): evaluate at the time within ±W of the nominal one whose marginal pixel variance best "
                   "matches the state's")
    m.add_argument("--ts-cutoff", type=float, default=0.0, metavar="T_C", help="Time-Shift: no shift at t <= T_C")
    m.add_argument("--ts-data-var", type=float, default=None, metavar="M", help="Time-Shift: the data's mean "
                   "per-sample pixel variance (default: measured on 10,000 of the model's training images)")
    m.add_argument("--t-shift", type=float, default=None, metavar="XI", help="evaluate the model at t + XI")
    m.add_argument("--step-times", default=None, metavar="FILE", help="a per-step time table from `difflab tp-tune` "
                   "(the timestep tuner), for the sampler and T it was tuned for")
    m.add_argument("--time-readout", choices=("input", "x0", "coefficients"), default="input",
                   help="how a time layer's chosen time enters the step: the model's input only (default), x̂0 "
                   "read at it (any sampler), or every coefficient (the per-sample samplers)")
    m.add_argument("--eps-scale", type=_scale_pair, default=None, metavar="B[,K]",
                   help="epsilon scaling (Ning et al. 2023): the model's ε divided by B + K t")
    m.add_argument("--dg", default=None, metavar="RUN", help="a discriminator (dg-train): discriminator guidance")
    m.add_argument("--dg-weight", type=float, default=1.0, help="DG's weight w (0: the plain sampler, bit for bit)")
    m.add_argument("--dg-window", type=float_pair, default=(0.0, 1.0), metavar="T_LO,T_HI",
                   help="apply DG (and CG) only for t in this window")
    m.add_argument("--cg", default=None, metavar="RUN", help="a noisy classifier (cg-train): classifier guidance "
                   "toward --label")
    m.add_argument("--cg-scale", type=float, default=1.0, help="CG's scale")


TIME_OPTIONS = ("tp", "time_shift", "t_shift", "step_times", "eps_scale")


def stack_options(args, *, cg: bool = True) -> dict:
    """:func:`difflab.compose.stack_on`'s method keywords from the options of :func:`add_stack_args`
    (without CG and the label when ``cg`` is False: bench's side-by-side rows)."""
    opts = dict(tp=args.tp, tp_coefficients=args.tp_coefficients, tp_clamp=args.tp_clamp, tp_window=args.tp_window,
                time_shift=args.time_shift,
                ts_cutoff=args.ts_cutoff, ts_data_var=args.ts_data_var, t_shift=args.t_shift,
                step_times=getattr(args, "step_times", None),
                time_readout=args.time_readout, eps_scale=args.eps_scale, dg=args.dg, dg_weight=args.dg_weight,
                dg_window=args.dg_window, data_dir=getattr(args, "data_dir", None))
    if cg:
        opts.update(cg=args.cg, cg_scale=args.cg_scale, label=getattr(args, "label", None))
    return opts


def stack_from_args(args, device, ref=None):
    """:func:`difflab.compose.build_stack` of ``ref`` (default ``args.checkpoint``) from the options of
    :func:`add_stack_args`."""
    from difflab.compose import build_stack

    return build_stack(args.checkpoint if ref is None else ref, device=device,
                       use_ema=not getattr(args, "no_ema", False), flags=getattr(args, "flags", None),
                       overrides=getattr(args, "overrides", ()) or (), **stack_options(args))


__all__ = ["TIME_OPTIONS", "add_external_args", "add_stack_args", "float_pair", "parse_ints", "stack_from_args",
           "stack_options"]
