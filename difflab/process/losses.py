"""Training losses as pure functions of (model, process, data) -> per-sample loss (B,).

* :func:`ddpm_losses`: L_simple (Ho et al.), L_vlb and L_hybrid = L_simple + λ·L_vlb (Nichol &
  Dhariwal) for a discrete :class:`~difflab.process.gaussian.GaussianDiffusion`. In the hybrid, the
  bound's gradient reaches only the variance head: the mean (ε) enters the bound detached.
* :func:`dsm_loss`: continuous-time denoising score matching for a VP schedule (Song et al. 2021).
"""
from __future__ import annotations

import torch

from .gaussian import GaussianDiffusion, mean_flat

LOSS_TYPES = ("simple", "hybrid", "vlb")


def ddpm_losses(model, diffusion: GaussianDiffusion, x0, i, *, loss: str = "simple", hybrid_lambda: float = 0.001,
                noise=None, y=None) -> dict:
    """Per-sample losses at step indices ``i`` (B,) for data ``x0`` (B, ...).

    Returns dict with ``loss`` (B,) and its parts ``mse`` and ``vb`` (bits/dim, when computed).
    The bound term is scaled by T (``vb * T``) so that it estimates the whole L_vlb from one
    uniformly drawn step; with λ = 0.001 this is Improved DDPM's L_hybrid (their ``vb * T/1000``).
    """
    if loss not in LOSS_TYPES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {LOSS_TYPES}")
    noise = torch.randn_like(x0) if noise is None else noise
    x_t = diffusion.q_sample(x0, i, noise)
    out = model(x_t, diffusion.model_time(i), y)
    terms = {}
    if loss in ("simple", "hybrid"):
        terms["mse"] = mean_flat((out.eps - noise) ** 2)
    if loss in ("hybrid", "vlb"):
        vb_out = out.detach_mean() if loss == "hybrid" else out
        vb, _ = diffusion.vb_terms_bpd(vb_out, x0, x_t, i, clip_denoised=False, var_type=model.var_type)
        terms["vb"] = vb * diffusion.num_timesteps
    if loss == "simple":
        terms["loss"] = terms["mse"]
    elif loss == "hybrid":
        terms["loss"] = terms["mse"] + hybrid_lambda * terms["vb"]
    else:
        terms["loss"] = terms["vb"]
    return terms


def dsm_loss(model, schedule, x0, t, *, noise=None, y=None, likelihood_weighting: bool = False) -> dict:
    """Denoising score matching at continuous times ``t`` (B,).

    With the model's score s = -ε̂/σ, the objective λ(t)‖s + z/σ‖² becomes ‖ε̂ - z‖² for λ = σ²
    (the default, equal to L_simple in continuous time) and (β(t)/σ²)‖ε̂ - z‖² for the likelihood
    weighting λ = g² = β(t) (Song et al. 2021, "maximum likelihood training").
    """
    noise = torch.randn_like(x0) if noise is None else noise
    x_t = schedule.perturb(x0, t, noise)
    out = model(x_t, t, y)
    mse = mean_flat((out.eps - noise) ** 2)
    if likelihood_weighting:
        tc = t.detach().to("cpu", torch.float64)
        w = (schedule.beta(tc) / schedule.sigma(tc) ** 2).to(device=x0.device, dtype=x0.dtype)
        return {"loss": w * mse, "mse": mse}
    return {"loss": mse, "mse": mse}
