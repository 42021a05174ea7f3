"""Standard FID in the 2015-12-05 Inception feature space, for users who have the weights.

The network and its weights come from pytorch-fid (``pt_inception-2015-12-05-6726825d.pth``) or
torch-fidelity (``weights-inception-2015-12-05-6726825d.pth``); neither package is a difflab
dependency, both are imported only when needed. Without the weights this module raises a
DifflabError saying where it looked: it never falls back to other features, because a FID in
another feature space is not comparable with published numbers (difflab's own MNIST-family
feature space is difflab.metrics.evaluator, and says so in its results).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import torch

from difflab.errors import DataError, DifflabError

PYTORCH_FID_WEIGHTS = "pt_inception-2015-12-05-6726825d.pth"
TORCH_FIDELITY_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"
PYTORCH_FID_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{PYTORCH_FID_WEIGHTS}"
FEATURE_SPACE = "inception-v3-2015-12-05"


def candidate_weights(weights_path: str | os.PathLike | None = None) -> list[Path]:
    """Where the weights are looked for: ``weights_path`` alone if given, else the torch hub cache."""
    if weights_path is not None:
        return [Path(weights_path).expanduser()]
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    return [hub / PYTORCH_FID_WEIGHTS, hub / TORCH_FIDELITY_WEIGHTS]


def find_weights(weights_path: str | os.PathLike | None = None) -> Path:
    """The first existing candidate; DifflabError (one line: where it looked, how to get them) otherwise."""
    paths = candidate_weights(weights_path)
    for p in paths:
        if p.is_file():
            return p
    where = paths[0] if weights_path is not None else f"{paths[0].parent}{os.sep} ({PYTORCH_FID_WEIGHTS} or {TORCH_FIDELITY_WEIGHTS})"
    raise DifflabError(f"FID Inception weights not found at {where}: pip install pytorch-fid and download "
                       f"{PYTORCH_FID_URL} into {Path(torch.hub.get_dir()) / 'checkpoints'}{os.sep}, "
                       f"or pass --inception-weights PATH (weights_path=...)")


def _import(module: str, package: str, weights: Path):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as e:
        why = " ".join(str(e).split()) or type(e).__name__
        raise DifflabError(f"found Inception weights {weights} but {module} is not importable ({why}): pip install {package}") from None


@contextlib.contextmanager
def _state_dict_from(path: Path, module):
    """Make pytorch-fid read its weights from ``path`` instead of downloading them."""
    original = module.load_state_dict_from_url
    module.load_state_dict_from_url = lambda *a, **k: torch.load(path, map_location="cpu", weights_only=True)
    try:
        yield
    finally:
        module.load_state_dict_from_url = original


class InceptionFeatures(torch.nn.Module):
    """The FID Inception network as uint8 (N, 3, H, W) -> pool3 features (N, 2048).

    backend "pytorch-fid" resizes with bilinear interpolation to 299×299 (pytorch-fid's protocol),
    "torch-fidelity" with its TensorFlow-1-compatible resize; both use the same 2015 weights.
    """

    def __init__(self, net: torch.nn.Module, backend: str, weights: Path):
        super().__init__()
        self.net, self.backend, self.weights_path = net.eval().requires_grad_(False), backend, weights
        self.feature_space = f"{FEATURE_SPACE} ({backend})"

    @torch.no_grad()
    def forward(self, images_u8: torch.Tensor) -> torch.Tensor:
        if self.backend == "pytorch-fid":
            return self.net(images_u8.float() / 255.0)[0].flatten(1)
        return self.net(images_u8)[0].flatten(1)


def load_inception(weights_path: str | os.PathLike | None = None, device="cpu") -> InceptionFeatures:
    """The FID Inception network, from ``weights_path`` or the torch hub cache.

    A pytorch-fid weights file (any name but torch-fidelity's) is loaded with pytorch-fid, a
    ``weights-inception-…`` file with torch-fidelity. DifflabError when the weights or the package
    are missing.
    """
    path = find_weights(weights_path)
    if TORCH_FIDELITY_WEIGHTS.split("-2015")[0] in path.name:
        fe = _import("torch_fidelity.feature_extractor_inceptionv3", "torch-fidelity", path)
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
        return InceptionFeatures(net, "torch-fidelity", path).to(device)
    inception = _import("pytorch_fid.inception", "pytorch-fid", path)
    try:
        with _state_dict_from(path, inception):
            net = inception.InceptionV3([inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    except (RuntimeError, OSError, ValueError, KeyError) as e:  # a truncated or foreign file
        raise DifflabError(f"{path}: not loadable as the FID Inception weights ({' '.join(str(e).split())[:160]})") from None
    return InceptionFeatures(net, "pytorch-fid", path).to(device)


def to_uint8_rgb(images) -> torch.Tensor:
    """(N, C, H, W) uint8, or float in [-1, 1], with C = 1 or 3 -> uint8 (N, 3, H, W) (gray repeated)."""
    x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.asarray(images))
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise DataError(f"expected images of shape (N, 1 or 3, H, W), got {tuple(x.shape)}")
    if x.dtype != torch.uint8:
        if not x.is_floating_point():
            raise DataError(f"expected uint8 or float images, got dtype {x.dtype}")
        x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def inception_features(images, model: InceptionFeatures | None = None, batch_size: int = 100,
                       weights_path=None, device="cpu") -> np.ndarray:
    """Pool3 features (N, 2048) float64 of images (N, 3, H, W) uint8 (or (N, 1, H, W), or floats in [-1, 1])."""
    model = model if model is not None else load_inception(weights_path, device)
    x = to_uint8_rgb(images)
    dev = next(model.parameters()).device
    out = [model(x[i:i + batch_size].to(dev)).double().cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, 2048))


def inception_fid(fake, real, weights_path=None, device="cpu", batch_size: int = 100) -> dict:
    """Standard FID between two image sets in the 2015 Inception feature space."""
    from difflab.metrics.features import fid_from_features

    model = load_inception(weights_path, device)
    f1 = inception_features(fake, model, batch_size)
    f2 = inception_features(real, model, batch_size)
    return {"fid": fid_from_features(f1, f2), "n_fake": len(f1), "n_real": len(f2), "feature_space": model.feature_space}
