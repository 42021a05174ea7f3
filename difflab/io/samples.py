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


def load_sample_meta(path) -> dict | None:
    """What made the samples in the .npz ``path`` (the ``meta`` that :func:`save_samples` recorded: source,
    sampler, steps, seed, ...), or None for a file without that record (older files, other tools)."""
    import json

    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            return json.loads(str(z["meta_json"])) if "meta_json" in z.files else None
    except (OSError, ValueError, EOFError):
        return None


def save_samples(x, path: Path, npz: bool = False, meta: dict | None = None) -> list[Path]:
    """Write ``x`` as a PNG (grid or scatter) and/or .npz; ValueError (nothing written) when any value is
    not finite: a black or empty picture from a diverged model must not pass for samples. ``meta`` (what
    made them: sampler, seed, ...) is stored in the .npz as JSON, read back by :func:`load_sample_meta`."""
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
        if meta is not None:
            import json

            arrays["meta_json"] = np.array(json.dumps(meta, sort_keys=True, default=str))
        p = path.with_suffix(".npz")
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        with open(tmp, "wb") as f:  # whole or not at all: an interrupted write leaves the old file
            np.savez_compressed(f, **arrays)
        tmp.replace(p)
        written.append(p)
    if path.suffix != ".npz":
        if x.dim() == 4:
            written.append(viz.save_grid(x[:256], path, scale=viz.auto_scale(x.shape[-1])))
        else:
            written.append(viz.save_scatter({f"{x.shape[0]} samples": x[:, :2]}, path))
    return written
