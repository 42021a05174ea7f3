"""Writing samples: a PNG grid (images) or scatter plot (2-D), and/or an .npz of the arrays."""
from __future__ import annotations

from pathlib import Path


def save_samples(x, path: Path, npz: bool = False) -> list[Path]:
    from difflab import viz

    written = []
    path = Path(path)
    if path.suffix == ".npz" or npz:
        import numpy as np

        arrays = {"samples": x.numpy()}
        if x.dim() == 4:
            arrays["images_uint8"] = viz.to_uint8(x).numpy()
        p = path.with_suffix(".npz")
        p.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(p, **arrays)
        written.append(p)
    if path.suffix != ".npz":
        if x.dim() == 4:
            written.append(viz.save_grid(x[:256], path, scale=viz.auto_scale(x.shape[-1])))
        else:
            written.append(viz.save_scatter({f"{x.shape[0]} samples": x[:, :2]}, path))
    return written
