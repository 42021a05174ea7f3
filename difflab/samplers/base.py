"""What every sampler shares: the result, the grid check, the noise source, and the per-step
callback on which trajectories and progress are built (k-diffusion's pattern)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from difflab.process.param import denoise
from difflab.process.schedules import F64


@dataclass
class SampleResult:
    """x (B, ...) the samples; nfe network evaluations per sample; times (N+1,) the grid; on request
    trajectory (N+1, B, ...) the states at the grid times and x0_preds (N, B, ...) the x̂0 of each step."""

    x: torch.Tensor
    nfe: int
    times: torch.Tensor
    trajectory: torch.Tensor | None = None
    x0_preds: torch.Tensor | None = None


def check_grid(ts) -> torch.Tensor:
    """(N+1,) float64 strictly decreasing times in [0, 1], or ValueError."""
    ts = torch.as_tensor(ts, dtype=F64).reshape(-1)
    if ts.numel() < 2 or not bool((ts[1:] < ts[:-1]).all()) or ts[-1] < 0 or ts[0] > 1:
        raise ValueError(f"time grid must be strictly decreasing in [0, 1] with at least 2 points, got {ts.tolist()[:6]}...")
    return ts


def noise_fn(noise_sampler, generator):
    """``noise(n, like)``: the fresh noise of step n (``noise_sampler`` if given, else randn from ``generator``)."""
    if noise_sampler is not None:
        return noise_sampler
    return lambda n, like: torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)


class Run:
    """One sampler run over a grid: evaluates the model (counting evaluations), reports every step
    to ``callback(i, t, x, x0_pred)`` and, when asked, keeps the trajectory; ``result(x)`` ends it."""

    def __init__(self, model, x, ts, y, *, callback: Callable | None, return_trajectory: bool, progress: bool,
                 desc: str, clip: bool = False):
        self.model, self.ts, self.y, self.clip, self.nfe = model, ts, y, clip, 0
        self.callback = callback
        self.xs = [x] if return_trajectory else None
        self.x0s = [] if return_trajectory else None
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=len(ts) - 1, desc=desc, leave=False)

    def eps(self, x, t: float):
        """The model's output at the grid time t for the whole batch."""
        self.nfe += 1
        return self.model(x, torch.full((x.shape[0],), t, dtype=F64, device=x.device), self.y)

    def denoised(self, x, t: float, alpha: float, sigma: float):
        """(x̂0, ε, output) at grid time t: one evaluation, x̂0 clipped to [-1, 1] when the run clips."""
        out = self.eps(x, t)
        x0, eps = denoise(out.eps, x, alpha, sigma, self.clip)
        return x0, eps, out

    def step(self, i: int, x, x0=None):
        """Step i is done: x is the state at ts[i + 1], x0 the x̂0 it was built from."""
        if self.xs is not None:
            self.xs.append(x)
            if x0 is not None:
                self.x0s.append(x0)
        if self.callback is not None:
            self.callback(i, float(self.ts[i + 1]), x, x0)
        if self.bar is not None:
            self.bar.update(1)

    def result(self, x) -> SampleResult:
        if self.bar is not None:
            self.bar.close()
        traj = torch.stack(self.xs) if self.xs is not None else None
        x0s = torch.stack(self.x0s) if self.x0s else None
        return SampleResult(x=x, nfe=self.nfe, times=self.ts, trajectory=traj, x0_preds=x0s)


@dataclass(frozen=True)
class SamplerSpec:
    """Facts about a sampler.

    stochastic: draws fresh noise (so the seed matters after x_T).
    evals_per_step: network evaluations per grid interval (None: adaptive, the solver chooses).
    last_step_evals: evaluations of a last interval that ends at t = 0 (Heun: 1, Euler there).
    clip: takes ``clip_denoised`` (x̂0 clamped to [-1, 1] wherever a step forms it).
    ends_at_zero: the grid must end at t = 0 (a discrete reverse chain down to the data).
    default_t_min: where the default grid stops (the adaptive ODE solver cannot reach 0).
    respaces: steps from ᾱ at the grid times alone, so a grid of a discrete model's trained times is
        exactly the respaced process over them (ancestral, DDIM); samplers that use β(t) integrate the
        continuous-time view instead.
    default_grid: the grid spacing :func:`difflab.samplers.sample` uses when none is asked for ("auto":
        trailing trained steps for a discrete model, uniform in t otherwise).
    options: the sampler's own keyword options beyond the shared signature.
    """

    name: str
    fn: Callable
    stochastic: bool
    evals_per_step: int | None = 1
    last_step_evals: int | None = None
    clip: bool = True
    ends_at_zero: bool = False
    default_t_min: float = 0.0
    respaces: bool = False
    default_grid: str = "auto"
    options: tuple[str, ...] = field(default_factory=tuple)

    def nfe(self, steps: int, t_min: float = 0.0) -> int | None:
        """Evaluations of a run over ``steps`` intervals (None for an adaptive sampler)."""
        if self.evals_per_step is None:
            return None
        last = self.evals_per_step if self.last_step_evals is None or t_min > 0 else self.last_step_evals
        return self.evals_per_step * (steps - 1) + last

    def steps_for(self, nfe: int) -> int | None:
        """The most grid intervals (to t = 0) whose evaluations fit in a budget of ``nfe``; None for an
        adaptive sampler, or when no run of a multi-evaluation sampler fits with two intervals or more
        (one Heun interval to 0 is just Euler)."""
        if self.evals_per_step is None or nfe < 1:
            return None
        steps = max((s for s in range(1, nfe + 1) if self.nfe(s) <= nfe), default=None)
        if steps is None or (self.evals_per_step > 1 and steps < 2):
            return None
        return steps


__all__ = ["Run", "SampleResult", "SamplerSpec", "check_grid", "noise_fn"]
