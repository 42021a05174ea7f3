"""One function that builds what a sampler runs, from names: :func:`build_stack`.

A diffusion checkpoint (any reference: run dir, checkpoint, .safetensors, zoo name, ``diffusers:``,
``improved-diffusion:``) with, from the inside out, a time predictor (TP), discriminator guidance (DG)
and classifier guidance (CG) stacked on it, exactly as ``ClassifierGuidance(DiscriminatorGuidance(
TimePredictorSampling(model, g), d), c)`` by hand; or a DSNO operator (one evaluation per sample).
:func:`stack_generate` draws samples from either with the per-sample noise of
:func:`difflab.samplers.generate`, so the CLI's ``sample``, ``eval`` and ``bench`` and the Python API
give the same samples for the same names and seed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from difflab.errors import CheckpointError, ConfigError
from difflab.loading import LoadedModel, is_external, load_any


@dataclass
class SamplingStack:
    """What :func:`build_stack` made. ``model`` is what the sampler calls (None for a DSNO);
    ``parts`` names each layer, innermost first; ``defaults`` is the checkpoint's ``[sample]`` table."""

    model: Any
    data_shape: tuple[int, ...]
    loaded: LoadedModel | None = None
    dsno: Any = None
    parts: tuple[str, ...] = ()
    defaults: dict = field(default_factory=dict)
    num_classes: int | None = None
    tp_coefficients: bool = False
    tuned_for: tuple | None = None  # (sampler, steps, grid, clip) of a --step-times table: the only run it applies to
    data_name: str = ""  # a DSNO's teacher's data (a diffusion model's is ``loaded.data_name()``)

    @property
    def tuned_clip(self) -> bool:
        """Whether a --step-times table was tuned with x̂0 clipped (the run's default clipping then); False without one."""
        return bool(self.tuned_for[3]) if self.tuned_for is not None else False

    @property
    def is_image(self) -> bool:
        return len(self.data_shape) == 3


def checkpoint_kind(ref) -> str:
    """The kind recorded with a checkpoint reference ('diffusion', 'dsno', 'time_predictor', ...),
    read from the weights file's metadata only (no tensor is loaded); imported models are 'diffusion'."""
    from safetensors import safe_open

    from difflab import zoo
    from difflab.train.checkpoint import latest_checkpoint

    ref = str(ref)
    if is_external(ref):
        return "diffusion"
    p = Path(zoo.resolve_reference(ref))
    if p.is_dir():
        d = p if (p / "model.safetensors").is_file() else latest_checkpoint(p)
        if d is None:
            raise CheckpointError(f"{p}: no checkpoint in this directory; expected a run dir, a checkpoint dir, a "
                                  f".safetensors file or a zoo name")
        p = Path(d) / "model.safetensors"
    if not p.is_file():
        raise CheckpointError(f"{ref}: no such file or directory; expected a run dir, a checkpoint dir, a "
                              f".safetensors file or a zoo name")
    try:
        with safe_open(str(p), "pt") as f:
            return (f.metadata() or {}).get("kind", "diffusion")
    except Exception as e:  # noqa: BLE001 - any unreadable file is one line
        raise CheckpointError(f"{p}: unreadable safetensors ({' '.join(str(e).split())[:120]})") from None


def _check_shape(what: str, shape, model_shape) -> None:
    if shape and tuple(shape) != tuple(model_shape):
        raise ConfigError(f"{what} was trained on data of shape {tuple(shape)}, the diffusion model makes "
                          f"{tuple(model_shape)}; expected one trained for this model's data")


def _recorded_shape(ref) -> tuple[int, ...] | None:
    from difflab.loading import open_checkpoint

    shape = ((open_checkpoint(ref).state or {}).get("extra") or {}).get("data_shape")
    return tuple(shape) if shape else None


def build_stack(ref, *, device="cpu", use_ema: bool = True, flags: str | None = None, overrides=(),
                **methods) -> SamplingStack:
    """The model a sampler runs, from names (see the module docstring); ``methods`` are
    :func:`stack_on`'s (``tp``, ``dg``, ``cg``: runs or checkpoints of a time predictor, discriminator
    and noisy classifier, each checked to have been trained on data of the model's shape; ``label``:
    the class of every sample; the time wrappers ``time_shift``, ``t_shift``, ``eps_scale``)."""
    if checkpoint_kind(ref) == "dsno":
        if any(methods.get(k) for k in ("tp", "dg", "cg", "time_shift", "t_shift", "step_times", "eps_scale")):
            raise ConfigError(f"{ref} is a DSNO operator (one evaluation, no sampler): --tp, --dg and --cg apply to "
                              f"a diffusion model; guide or time-shift its teacher instead")
        from difflab.methods.dsno.training import load_dsno

        dsno, config, ckpt = load_dsno(ref, use_ema=use_ema, map_location=device)
        shape = tuple((ckpt.state.get("extra") or {}).get("data_shape") or ())
        if not shape:
            raise CheckpointError(f"checkpoint {ckpt.path} records no data shape; expected one written by dsno-train")
        data = ((config.get("teacher") or {}).get("data") or {}).get("name", "")
        return SamplingStack(model=None, data_shape=shape, dsno=dsno, parts=(f"DSNO {ckpt.path}",), data_name=data)
    loaded = load_any(ref, flags=flags, use_ema=use_ema, device=device, overrides=overrides)
    return stack_on(loaded, device=device, **methods)


TIME_READOUTS = ("input", "x0", "coefficients")


def stack_on(loaded: LoadedModel, *, tp=None, tp_coefficients: bool = False, tp_clamp=None, tp_window=None, dg=None,
             dg_weight: float = 1.0, dg_window=(0.0, 1.0), dg_max_norm=None, cg=None, cg_scale: float = 1.0,
             label: int | None = None, time_shift: float | None = None, ts_cutoff: float = 0.0,
             ts_data_var: float | None = None, t_shift: float | None = None, eps_scale=None,
             step_times=None, time_readout: str = "input", data_dir=None, device="cpu") -> SamplingStack:
    """:func:`build_stack` on a diffusion model already loaded (so several stacks can share one base, as
    ``bench`` does for its side-by-side TP, DG and TP + DG rows).

    The time layer (at most one of ``tp``, ``time_shift``, ``t_shift``) sits on the model, with ε
    scaling (``eps_scale`` = b or (b, k): ε / (b + k t)) below it: ``time_shift`` is Time-Shift's
    window half-width (``ts_cutoff`` its cutoff; ``ts_data_var`` the data's mean pixel variance,
    default measured on 10,000 training images of the model's data), ``t_shift`` a constant ξ.
    ``tp_window``: g(x) clamped to within ±W of the nominal time. ``step_times``: a per-step table written
    by ``difflab tp-tune`` (the timestep tuner), for its own sampler and T only. ``time_readout``: 'input' (only the
    model sees the chosen time), 'x0' (x̂0 read at it, every
    sampler) or 'coefficients' (the per-sample samplers; ``tp_coefficients`` is the same for TP)."""
    model, shape, parts = loaded.model, tuple(loaded.data_shape), [loaded.describe()]
    if time_readout not in TIME_READOUTS:
        raise ConfigError(f"time readout {time_readout!r}; expected one of {', '.join(TIME_READOUTS)}")
    chosen = [f for f, v in (("--tp", tp), ("--time-shift", time_shift), ("--t-shift", t_shift),
                             ("--step-times", step_times)) if v is not None]
    if len(chosen) > 1:
        raise ConfigError(f"{' and '.join(chosen)} each choose the time the model is evaluated at; pass one of them")
    coefficients = tp_coefficients or time_readout == "coefficients"
    how = dict(use_in_coefficients=coefficients, x0_readout=time_readout == "x0")
    readout = {"input": "", "x0": ", x̂0 at the chosen time", "coefficients": ", coefficients at the chosen time"}
    if eps_scale is not None:
        from difflab.methods.time_predictor import EpsilonScaling

        b, k = (float(eps_scale), 0.0) if isinstance(eps_scale, (int, float)) else (float(v) for v in eps_scale)
        model = EpsilonScaling(model, b, k)
        parts.append(f"ε scaling / ({b:g} + {k:g} t)")
    if tp is not None:
        from difflab.methods.time_predictor import TimePredictorSampling, load_time_predictor

        lt = load_time_predictor(tp, map_location=device)
        _check_shape(f"time predictor {tp}", lt.data_shape, shape)
        model = TimePredictorSampling(model, lt.predictor, clamp=tp_clamp, window=tp_window, **how)
        parts.append(f"TP {tp}" + (f" (within ±{tp_window:g})" if tp_window is not None else "")
                     + (" (coefficients at g(x))" if coefficients else readout[time_readout]))
    if time_shift is not None:
        from difflab.methods.time_predictor import TimeShiftSampling

        m = ts_data_var if ts_data_var is not None else training_pixel_variance(loaded, data_dir)
        model = TimeShiftSampling(model, m, window=time_shift, cutoff=ts_cutoff, **how)
        parts.append(f"Time-Shift (window ±{time_shift:g}, cutoff {ts_cutoff:g}, m = {m:.4f}"
                     f"{readout[time_readout if not tp_coefficients else 'coefficients']})")
    if t_shift is not None:
        from difflab.methods.time_predictor import ConstantShift

        model = ConstantShift(model, t_shift, clamp=tp_clamp, **how)
        parts.append(f"t + {t_shift:g}{readout[time_readout if not tp_coefficients else 'coefficients']}")
    tuned_for = None
    if step_times is not None:
        from difflab.methods.time_predictor import StepTimeMap, load_step_times

        mapping, meta = load_step_times(step_times)
        model = StepTimeMap(model, mapping, **how)
        tuned_for = (meta.get("sampler"), meta.get("steps"), meta.get("spacing") or "auto",
                     bool(meta.get("clip_denoised", False)))
        parts.append(f"tuned times for {tuned_for[0]}@{tuned_for[1]} ({step_times}){readout[time_readout]}")
    if dg is not None or cg is not None:
        from difflab.methods.guidance import guided_model

        for what, r in (("discriminator", dg), ("classifier", cg)):
            if r is not None:
                _check_shape(f"{what} {r}", _recorded_shape(r), shape)
        if cg is not None and label is None:
            raise ConfigError("classifier guidance needs a target class: pass --label K")
        model = guided_model(model, disc=dg, weight=dg_weight, t_window=dg_window, max_norm=dg_max_norm, cg=cg,
                             cg_weight=cg_scale, label=label, device=device)
        if dg is not None:
            parts.append(f"DG {dg} (w = {dg_weight:g})")
        if cg is not None:
            parts.append(f"CG {cg} (scale {cg_scale:g}, class {label})")
    defaults = dict((loaded.cfg.to_dict().get("sample") or {}) if loaded.cfg is not None else {})
    return SamplingStack(model=model, data_shape=shape, loaded=loaded, parts=tuple(parts), defaults=defaults,
                         num_classes=loaded.num_classes, tp_coefficients=coefficients, tuned_for=tuned_for)


def training_pixel_variance(loaded: LoadedModel, data_dir=None, data: str | None = None) -> float:
    """Time-Shift's m on the model's own training data (``data`` for an imported model; 10,000 images,
    a fixed shuffle)."""
    from difflab.data import load_dataset
    from difflab.methods.time_predictor import data_pixel_variance

    name = loaded.data_name(data, flag="--ts-data-var M (the data's mean per-sample pixel variance)")
    ds = load_dataset(name, data_dir=data_dir, num_samples=10000, image_size=loaded.train_image_size)
    return data_pixel_variance(ds.x)


def check_label(num_classes: int | None, label: int | None, *, guided: bool = False) -> None:
    """A one-line ConfigError for a label the model cannot take: one on an unconditional model (unless
    classifier guidance is its target), one out of range, or none for a class-conditional model."""
    k = num_classes
    if k is None:
        if label is not None and not guided:
            raise ConfigError(f"--label {label}: this model is unconditional; drop --label (or add --cg for "
                              f"classifier guidance toward a class)")
        return
    if label is None:
        raise ConfigError(f"this model is class-conditional ({k} classes); pass --label K with K in 0 .. {k - 1}")
    if not 0 <= label < k:
        raise ConfigError(f"--label {label}; expected a class in 0 .. {k - 1}")


def stack_generate(stack: SamplingStack, *, sampler: str = "ddim", steps: int = 50, n: int = 64, seed: int = 0,
                   batch: int | None = None, device="cpu", progress: bool = False, trajectory: bool = False, **options) -> dict:
    """(n, ...) samples of ``stack``: :func:`difflab.samplers.generate` over its model (TP with
    coefficients through its own samplers), or the DSNO operator's one evaluation per sample on the
    same per-sample noise. Same result dict as ``generate``."""
    from difflab.samplers import generate

    if stack.tuned_for is not None:
        from difflab.samplers import get_spec

        def grid_name(name, spacing):  # "auto" is the sampler's own grid
            return get_spec(name).default_grid if spacing == "auto" else spacing

        (t_sampler, t_steps, t_grid, t_clip), grid = stack.tuned_for, options.get("spacing", "auto")
        if (t_sampler, t_steps) != (sampler, steps) or grid_name(t_sampler, t_grid) != grid_name(sampler, grid):
            raise ConfigError(f"the step-times table was tuned for {t_sampler} with {t_steps} steps on the "
                              f"{grid_name(t_sampler, t_grid)} grid, not {sampler} with {steps} on the "
                              f"{grid_name(sampler, grid)} grid; tune one for this grid with `difflab tp-tune`")
        if t_clip != bool(options.get("clip", False)):
            tuned, run, flag = ("clipped", "does not clip", "--no-clip") if t_clip else ("unclipped", "clips", "--clip")
            raise ConfigError(f"the step-times table was tuned with x̂0 {tuned} and this run {run}; drop {flag} (the "
                              f"table's clipping is the default), or tune with `difflab tp-tune ... {flag}`")
    if stack.dsno is None:
        sample_fn = None
        if stack.tp_coefficients:
            from difflab.methods.time_predictor import tp_sample as sample_fn
        return generate(stack.model, stack.data_shape, sampler=sampler, steps=steps, n=n, seed=seed, batch=batch,
                        device=device, progress=progress, trajectory=trajectory, sample_fn=sample_fn, **options)
    from difflab.methods.dsno.sampler import dsno_sample
    from difflab.samplers.noise import PerSampleNoise, sample_seeds

    batch = batch or 64
    for name, v in (("n", n), ("batch", batch)):
        if v < 1:
            raise ValueError(f"{name} = {v!r}; expected a positive integer")
    xs, traj, done, t0 = [], None, 0, time.perf_counter()
    while done < n:
        b = min(batch, n - done)
        x_T = PerSampleNoise(sample_seeds(seed, done, b), device).randn((b, *stack.data_shape))
        r = dsno_sample(stack.dsno, x_T, return_trajectory=trajectory and done == 0, y=options.get("y"))
        xs.append(r.x.cpu())
        if r.trajectory is not None:
            traj = r.trajectory[:, :16].cpu()
        done += b
    secs = time.perf_counter() - t0
    return {"x": torch.cat(xs), "trajectory": traj, "nfe": 1, "seconds": secs, "seconds_per_sample": secs / n}


__all__ = ["SamplingStack", "build_stack", "check_label", "checkpoint_kind", "stack_generate", "stack_on",
           "training_pixel_variance"]
