"""What ``tp-report`` and ``tp-sample`` compute from checkpoints: numbers and arrays (the CLI writes the files)."""
from __future__ import annotations

import os
from typing import Sequence

import torch

from difflab.data import load_dataset
from difflab.errors import CheckpointError, DataError
from difflab.train.api import load_model

from .diagnostics import accuracy_by_t, drift_diagnostics
from .oracle import OracleTimePredictor, mixture_of
from .sampling import tp_sample
from .training import load_time_predictor
from .wrapper import TimePredictorSampling


def tp_report(tp_ckpt: str | os.PathLike, *, diffusion_ckpt: str | None = None, n: int = 4000, bins: int = 10,
              drift_steps: Sequence[int] = (5, 10, 20, 50, 1000), drift_sampler: str = "euler_maruyama",
              drift_n: int = 256, drift: bool = True, data_dir=None, seed: int = 0) -> dict:
    """Accuracy of a trained time predictor per t and, when the diffusion model loads, the drift of
    its sampler's states (the numbers of the CLI's ``tp-report``).

    On the toy mixtures the exact posterior E[t | x] (the Bayes-optimal g) is measured beside g
    (as predictor "exact"). Returns {"checkpoint", "step", "data", "split", "schedule", "net",
    "parameterization", "n", "exact" (bool), "accuracy" (:func:`accuracy_by_t`'s dict),
    "diffusion_checkpoint", "drift_sampler", "drift_n", "drift" (:func:`drift_diagnostics`' dict, or
    None), "drift_error" (why the drift was skipped, or None)}.
    """
    lt = load_time_predictor(tp_ckpt)
    g, dcfg = lt.predictor, lt.diffusion_config
    if dcfg is None:
        raise CheckpointError(f"time predictor {lt.checkpoint.path} records no diffusion run (its data); "
                              "train it with tp-train, or use accuracy_by_t from Python")
    split = "test"
    try:
        ds = load_dataset(dcfg.data.name, data_dir or dcfg.data.data_dir or None, split="test",
                          image_size=dcfg.data.image_size or None, num_samples=min(n, 10000))
    except DataError:  # e.g. a folder dataset has no test split
        split = "train"
        ds = load_dataset(dcfg.data.name, data_dir or dcfg.data.data_dir or None,
                          image_size=dcfg.data.image_size or None, num_samples=min(n, 10000))
    predictors: dict = {"g": g}
    mix = mixture_of(dcfg.data.name)
    if mix is not None:
        predictors["exact"] = OracleTimePredictor(mix, g.schedule, t_min=g.scale.t_min)
    acc = accuracy_by_t(predictors, ds.x, g.schedule, n=n, bins=bins, t_min=g.scale.t_min, seed=seed)
    ckpt = diffusion_ckpt or lt.diffusion_checkpoint
    rep = {"checkpoint": str(lt.checkpoint.path), "step": lt.checkpoint.step, "data": dcfg.data.name, "split": split,
           "schedule": repr(g.schedule), "net": type(g.net).__name__, "parameterization": g.scale.parameterization,
           "n": n, "exact": mix is not None, "accuracy": acc, "diffusion_checkpoint": ckpt,
           "drift_sampler": drift_sampler, "drift_n": drift_n, "drift": None, "drift_error": None}
    if drift:
        try:
            model, _, _ = load_model(ckpt)
        except Exception as e:  # noqa: BLE001
            if diffusion_ckpt:
                raise
            rep["drift_error"] = f"the diffusion checkpoint {ckpt!r} did not load ({e})"
        else:
            opts = {"clip_denoised": True} if len(lt.data_shape) == 3 and drift_sampler in ("ancestral", "ddim") else {}
            rep["drift"] = drift_diagnostics(model, predictors, lt.data_shape, sampler=drift_sampler, steps=drift_steps,
                                             n=drift_n, seed=seed, **opts)
    return rep


def compare_samples(tp_ckpt: str | os.PathLike, *, diffusion_ckpt: str | None = None,
                    sampler: str = "euler_maruyama", steps: int = 10, n: int = 64, seed: int = 0,
                    use_in_coefficients: bool = False, clamp: tuple[float, float] | None = None, compare: bool = True,
                    device: str = "cpu", progress: bool = False) -> dict[str, torch.Tensor]:
    """Samples of a diffusion checkpoint with TP sampling (the CLI's ``tp-sample``) and, with
    ``compare``, of the original sampler from the same noise: {"tp": (n, ...), "original": (n, ...)}
    on CPU (``use_in_coefficients``: Algorithm 3, through :data:`TP_SAMPLERS`)."""
    lt = load_time_predictor(tp_ckpt, map_location=device)
    model, _, _ = load_model(diffusion_ckpt or lt.diffusion_checkpoint, map_location=device)
    tp = TimePredictorSampling(model, lt.predictor, clamp=clamp, use_in_coefficients=use_in_coefficients)
    opts = {"clip_denoised": True} if len(lt.data_shape) == 3 and sampler in ("ancestral", "ddim") else {}
    runs = {"tp": tp, **({"original": model} if compare else {})}
    xs = {}
    for k, m in runs.items():
        with torch.no_grad():
            xs[k] = tp_sample(m, (n, *lt.data_shape), sampler=sampler, steps=steps, progress=progress, device=device,
                              generator=torch.Generator(device).manual_seed(seed), **opts).x.cpu()
    return xs
