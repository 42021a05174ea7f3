"""Any folder of images (png, jpg, jpeg, bmp, webp; searched recursively, hidden entries skipped).

Files are read in sorted order of their path under the folder. When every image sits in a
subfolder, the label is the index of its top-level subfolder among the sorted subfolder names;
otherwise there are no labels. With ``image_size`` each image is center-cropped to a square and
resized (bicubic, antialiased by Pillow); without it all images must share one size, kept as is.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from difflab.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def parse_channels(channels) -> str | None:
    """None (auto), "L"/1 (grayscale) or "RGB"/3."""
    if channels is None:
        return None
    mode = {"l": "L", "1": "L", "gray": "L", "grey": "L", "rgb": "RGB", "3": "RGB"}.get(str(channels).strip().lower())
    if mode is None:
        raise DataError(f"channels={channels!r}: expected 'RGB' (3), 'L' (1) or None (auto)")
    return mode


def list_images(root: Path) -> list[Path]:
    files = [p for p in root.rglob("*")
             if p.suffix.lower() in IMAGE_EXTENSIONS and not any(part.startswith(".") for part in p.relative_to(root).parts)
             and p.is_file()]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def load_folder(root: Path, image_size: int | None = None, channels=None):
    """uint8 images (N, C, H, W), int64 labels (N,) or None, class names or None.

    ``channels`` None picks "L" when every image is grayscale, else "RGB".
    """
    from PIL import Image, ImageOps  # lazy: only folders need Pillow

    mode = parse_channels(channels)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a directory")
    files = list_images(root)
    if not files:
        raise DataError(f"{root}: no images found; expected files ending in {', '.join(IMAGE_EXTENSIONS)}")

    arrays, gray, first = [], [], None
    for p in files:
        try:
            with Image.open(p) as img:
                img.load()
                is_gray = img.mode in _GRAY_MODES
                img = img.convert(mode or ("L" if is_gray else "RGB"))
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise DataError(f"{p}: not a readable image ({' '.join(str(e).split()) or type(e).__name__})") from None
        if image_size is not None:
            if img.size != (image_size, image_size):
                img = ImageOps.fit(img, (image_size, image_size), method=Image.Resampling.BICUBIC)
        elif first is None:
            first = (p, img.size)
        elif img.size != first[1]:
            (p0, (w0, h0)), (w, h) = first, img.size
            raise DataError(f"{p}: is {w}x{h} but {p0.name} is {w0}x{h0}; pass image_size to resize images of mixed sizes")
        arrays.append(np.asarray(img))
        gray.append(is_gray)

    if mode is None and not all(gray):  # auto: any colour image makes the whole set RGB
        arrays = [np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
    x = np.stack(arrays)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)

    rel = [p.relative_to(root).parts for p in files]
    if all(len(parts) >= 2 for parts in rel):
        classes = sorted({parts[0] for parts in rel})
        index = {c: i for i, c in enumerate(classes)}
        return np.ascontiguousarray(x), np.array([index[parts[0]] for parts in rel], dtype=np.int64), classes
    return np.ascontiguousarray(x), None, None
