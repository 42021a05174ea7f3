"""Timestep respacing (Improved DDPM): keep a subset of a process's steps.

Respacing changes no sampler: the kept ᾱ define a new, shorter process whose betas are re-derived
(β'_k = 1 - ᾱ_{s_k} / ᾱ_{s_{k-1}}), while the model keeps seeing the original times of the kept steps.
"""
from __future__ import annotations

from .gaussian import GaussianDiffusion


def respace(num_timesteps: int, section_counts) -> list[int]:
    """The sorted original indices kept when ``num_timesteps`` steps are respaced.

    ``section_counts`` is a list of ints or a string: ``"10,15,20"`` splits the steps into equal
    sections (the first ``T % n`` sections one step longer) and strides each to its count, first
    and last step of each section included; ``"ddimN"`` takes ``range(0, T, stride)`` with the
    integer stride that yields exactly N steps (DDIM's spacing).
    """
    if isinstance(section_counts, str):
        spec = section_counts.strip()
        if spec.startswith("ddim"):
            try:
                desired = int(spec[4:])
            except ValueError:
                raise ValueError(f"bad respacing {spec!r}: expected 'ddimN' with an integer N") from None
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired:
                    return list(range(0, num_timesteps, stride))
            raise ValueError(f"cannot respace {num_timesteps} steps to exactly {desired} ('{spec}') with an integer stride")
        try:
            counts = [int(c) for c in spec.split(",")]
        except ValueError:
            raise ValueError(f"bad respacing {spec!r}: expected comma-separated step counts like '10,15,20' or 'ddimN'") from None
    else:
        counts = [int(c) for c in section_counts]
    if not counts or any(c < 1 for c in counts):
        raise ValueError(f"bad respacing {section_counts!r}: every section needs at least 1 step")
    base, extra = divmod(num_timesteps, len(counts))
    kept, start = [], 0
    for n, count in enumerate(counts):
        size = base + (1 if n < extra else 0)
        if count > size:
            raise ValueError(f"cannot divide a section of {size} steps into {count} steps (respacing {section_counts!r} of {num_timesteps})")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        pos = 0.0
        for _ in range(count):
            kept.append(start + round(pos))  # Python's round (half to even), as Improved DDPM
            pos += stride
        start += size
    return sorted(set(kept))


def spaced_diffusion(diffusion: GaussianDiffusion, section_counts) -> GaussianDiffusion:
    """A process over the kept steps of ``diffusion`` (``section_counts`` as in :func:`respace`, or an
    explicit list of indices). Its betas are re-derived from the kept ᾱ, and ``times`` map each
    kept step back to the original time, so a model trained on ``diffusion`` works unchanged."""
    if isinstance(section_counts, str):
        kept = respace(diffusion.num_timesteps, section_counts)
    else:
        kept = sorted(set(int(k) for k in section_counts))
    spaced = GaussianDiffusion.from_alphas_cumprod(
        diffusion.alphas_cumprod[kept], var_type=diffusion.var_type, times=diffusion.times[kept], schedule=diffusion.schedule)
    spaced.timestep_map = kept
    return spaced
