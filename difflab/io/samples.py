"""Writing samples: a PNG grid (images) or scatter plot (2-D), and/or an .npz of the arrays."""
from __future__ import annotations

from pathlib import Path


def load_sample_arrays(path, keys=("images_uint8", "samples")) -> tuple:
    """The first of ``keys`` in the .npz ``path`` (key, array), or one DataError naming the file and what
    it should hold: a missing, corrupt or non-npz file, or one without those arrays."""
    import zipfile

    import numpy as np

    from difflab.errors import DataError

    try:
        with np.load(path, allow_pickle=False) as z:
            key = next((k for k in keys if k in z.files), None)
            if key is None:
                raise DataError(f"{path}: expected an array {' or '.join(map(repr, keys))}, found {z.files}")
            return key, z[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a readable .npz ({' '.join(str(e).split())[:100]}); expected an .npz with "
                        f"{' or '.join(map(repr, keys))}") from None


def save_samples(x, path: Path, npz: bool = False) -> list[Path]:
    """Write ``x`` as a PNG (grid or scatter) and/or .npz; ValueError (nothing written) when any value is
    not finite: a black or empty picture from a diverged model must not pass for samples."""
    import torch

    from difflab import viz

    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{int((~torch.isfinite(x)).sum())} non-finite values in the {len(x)} samples; nothing "
                         f"written to {path} (a diverged model, corrupt weights or an unstable sampler setting)")

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
