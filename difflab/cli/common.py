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


__all__ = ["add_external_args", "parse_ints"]
