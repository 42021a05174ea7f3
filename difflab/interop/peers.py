"""diffusers' schedulers driving a difflab model: the external peers of ``difflab bench``.

The scheduler gets the model's betas (its trained ones for a discrete model, a 1000-step
discretisation of a continuous one); its integer timestep k is shown to the model as t = (k+1)/T.
"""
from __future__ import annotations

import torch

from difflab.errors import DifflabError
from difflab.process.schedules import F64

def discrete_betas(schedule, num_timesteps: int = 1000) -> torch.Tensor:
    """(T,) betas whose ᾱ equals the schedule's at t_i = (i+1)/T (the model's trained times for a
    discrete model; a 1000-step discretisation of a continuous one)."""
    t = (torch.arange(num_timesteps, dtype=F64) + 1) / num_timesteps
    ab = schedule.alpha_bar(t)
    prev = torch.cat([torch.ones(1, dtype=F64), ab[:-1]])
    return (1 - ab / prev).clamp(1e-12, 0.999)


PEERS = ("ddim", "dpmsolver++", "unipc", "deis")


def diffusers_sample(model, shape, scheduler: str, nfe: int, *, generator=None, device="cpu", num_timesteps=None,
                     timestep_spacing: str | None = None, x: torch.Tensor | None = None) -> torch.Tensor:
    """Sample with a diffusers scheduler (one of :data:`PEERS`: 'ddim', 'dpmsolver++' (2M), 'unipc' (bh2, order 2),
    'deis' (order 2)) driving the difflab model, each at its own defaults otherwise: the
    scheduler gets the model's betas; its integer timestep k is shown to the model as t = (k+1)/T.
    ``timestep_spacing`` None keeps each scheduler's own default (what a diffusers user gets: 'leading'
    for DDIM, 'linspace' for DPM-Solver++). ``x``: the initial noise (default: drawn from ``generator``), so a
    comparison can start every sampler from the same x_T."""
    try:
        from diffusers import DDIMScheduler, DEISMultistepScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler
    except ImportError:
        raise DifflabError("external peers need diffusers: pip install diffusers (or pip install -e .[bench])") from None
    T = num_timesteps or getattr(model.schedule, "num_timesteps", 1000)
    betas = discrete_betas(model.schedule, T).numpy()
    common = dict(num_train_timesteps=T, trained_betas=betas, prediction_type="epsilon")
    if timestep_spacing is not None:
        common["timestep_spacing"] = timestep_spacing
    if scheduler == "ddim":
        sch = DDIMScheduler(clip_sample=False, set_alpha_to_one=True, **common)
    elif scheduler == "dpmsolver++":
        sch = DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, lower_order_final=True, **common)
    elif scheduler == "unipc":
        sch = UniPCMultistepScheduler(solver_type="bh2", solver_order=2, **common)
    elif scheduler == "deis":
        sch = DEISMultistepScheduler(solver_order=2, **common)
    else:
        raise DifflabError(f"unknown diffusers peer {scheduler!r}; expected one of {', '.join(PEERS)}")
    sch.set_timesteps(nfe)
    x = (torch.randn(shape, generator=generator, device=device) if x is None else x.to(device)) * sch.init_noise_sigma
    with torch.no_grad():
        for k in sch.timesteps:
            t = torch.full((shape[0],), (int(k) + 1) / T, dtype=F64, device=device)
            eps = model(x, t).eps
            x = sch.step(eps, k, x).prev_sample
    return x


__all__ = ["PEERS", "diffusers_sample", "discrete_betas"]
