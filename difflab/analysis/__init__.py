"""The papers' analyses as tools: start from a given x_t (SDEdit, and its realism-vs-faithfulness curve
with and without discriminator guidance), samples of p(x0 | x_t) from one shared x_t, rate–distortion
from the variational bound, coarse-to-fine interpolation, the power spectrum over time of
probability-flow trajectories (DSNO's premise) and density-ratio paths of a discriminator.

Images are (N, C, H, W) in [-1, 1]; every CLI command writes its figure and a JSON of its numbers.
"""
from __future__ import annotations

import math

import torch

from difflab.process.gaussian import GaussianDiffusion
from difflab.process.likelihood import vlb_bpd
from difflab.samplers import SAMPLERS, SampleResult, interpolate, sample, time_grid


def noise_to(model, x0: torch.Tensor, t0: float, generator=None) -> torch.Tensor:
    """x_t0 = α(t0) x0 + σ(t0) ε: the forward process run to t0 in one jump."""
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    return model.schedule.perturb(x0, torch.full((x0.shape[0],), float(t0), dtype=torch.float64), eps)


def sample_from(model, x_t: torch.Tensor, t0: float, *, sampler: str = "ancestral", steps: int = 100, generator=None,
                y=None, **options) -> SampleResult:
    """Run ``sampler`` from a given state x_t at time t0 down to the data (the shared entry point
    :func:`difflab.samplers.sample` with ``x`` at ``t_max``). t0 = 0 returns x_t unchanged."""
    if t0 <= 0:
        return SampleResult(x=x_t, nfe=0, times=torch.zeros(1, dtype=torch.float64))
    return sample(model, x_t.shape, sampler=sampler, steps=steps, x=x_t, t_max=float(t0), y=y, generator=generator,
                  **options)


def sdedit(model, x0: torch.Tensor, t0: float, *, sampler: str = "ancestral", steps: int = 100, generator=None,
           **options) -> torch.Tensor:
    """SDEdit (Meng et al. 2022): noise the input to t0 with the forward process, then denoise it with
    the model, which pulls it towards the model's data while t0 controls how much of the input survives."""
    if t0 <= 0:
        return x0
    return sample_from(model, noise_to(model, x0, t0, generator), t0, sampler=sampler, steps=steps,
                       generator=generator, **options).x


def shared_xt_samples(model, x0: torch.Tensor, t0: float, k: int, *, steps: int = 100, generator=None,
                      sampler: str = "ancestral", **options) -> tuple[torch.Tensor, torch.Tensor]:
    """DDPM's experiment: one x_t0 per input (N, ...), then ``k`` reverse samples of p(x0 | x_t0) each.
    Returns (x_t0 (N, ...), samples (N, k, ...))."""
    xt = noise_to(model, x0, t0, generator)
    rep = xt.repeat_interleave(k, 0)
    out = sample_from(model, rep, t0, sampler=sampler, steps=steps, generator=generator, **options).x
    return xt, out.reshape(x0.shape[0], k, *x0.shape[1:])


@torch.no_grad()
def rate_distortion(model, diffusion: GaussianDiffusion, x0: torch.Tensor, *, clip_denoised: bool = False,
                    generator=None) -> dict:
    """DDPM's progressive lossy compression curve (their Fig. 5 / Table): over the reverse steps
    i = T-1 .. 0, the rate is the bits sent so far, prior + Σ_{j≥i} KL_j (bits/dim), and the
    distortion is the RMSE of x̂0 at step i on the [0, 255] scale. ``clip_denoised`` clips x̂0 to
    [-1, 1] (as improved-diffusion's NLL script does): early steps' x̂0 then stays in the data range."""
    r = vlb_bpd(model, diffusion, x0, clip_denoised=clip_denoised, generator=generator)
    kl = r["terms"][:, 1:].mean(0)  # (T-1,) KL at indices 1..T-1
    prior = float(r["prior"].mean())
    rate = prior + torch.flip(torch.cumsum(torch.flip(kl, [0]), 0), [0])  # rate[i-1]: bits after sending step i
    rmse = (r["x0_mse"].mean(0).sqrt() * 127.5)[1:]  # x̂0 error at indices 1..T-1, [0,255] scale
    idx = torch.arange(1, diffusion.num_timesteps)
    order = torch.argsort(idx, descending=True)  # reverse process order: T-1 first
    return {"step": idx[order].tolist(), "rate_bpd": rate[order].tolist(), "rmse_255": rmse[order].tolist(),
            "total_bpd": float(r["total"].mean()), "decoder_bpd": float(r["decoder"].mean()), "prior_bpd": prior,
            "n": x0.shape[0]}


def coarse_to_fine(model, x_a, x_b, t0s=(0.1, 0.25, 0.5, 0.75, 1.0), num: int = 8, *, steps: int = 100,
                   generator_seed: int = 0, sampler: str = "ancestral") -> torch.Tensor:
    """Rows of interpolations between two images (1, ...) after diffusing to each t0 (DDPM's
    coarse-to-fine figure: small t0 keeps the sources' details, large t0 only their coarse traits).
    Returns (len(t0s) * num, ...)."""
    lam = torch.linspace(0, 1, num).tolist()
    rows = [interpolate(model, x_a, x_b, lam, t0=min(t0, 1.0 - 1e-3), steps=steps, sampler=sampler,
                        generator=torch.Generator().manual_seed(generator_seed)) for t0 in t0s]
    return torch.cat(rows)


def sdedit_curve(models: dict, source: torch.Tensor, t0s, evaluate, *, sampler: str = "ancestral", steps: int = 100,
                 seed: int = 0) -> dict:
    """SDEdit's realism-vs-faithfulness trade-off over t0 for several models (e.g. plain and with DG).

    ``source`` (N, ...) are the images to translate; ``evaluate(x) -> float`` scores realism against the
    target data (lower is better, e.g. FID); faithfulness is the PSNR (dB, peak-to-peak 2 as for images
    in [-1, 1], which are clamped there) and RMSE
    of the output to its source. Every model sees the same noise (one seed per t0), so the curves differ
    only by the models. Returns {label: [{t0, realism, psnr, rmse}, ...]} plus ``source_realism``.
    """
    out = {"source_realism": float(evaluate(source))}
    for label, model in models.items():
        rows = []
        for i, t0 in enumerate(t0s):
            g = torch.Generator().manual_seed(seed + 1000 * i)
            x = sdedit(model, source, float(t0), sampler=sampler, steps=steps, generator=g)
            x = x.clamp(-1, 1) if x.dim() == 4 else x  # images live in [-1, 1]
            mse = ((x - source) ** 2).reshape(len(x), -1).mean(1)
            psnr = float((10 * torch.log10(4.0 / mse.clamp_min(1e-12))).mean())  # peak-to-peak range 2
            rows.append({"t0": float(t0), "realism": float(evaluate(x)), "psnr": psnr,
                         "rmse": float(mse.sqrt().mean())})
        out[label] = rows
    return out


@torch.no_grad()
def trajectory_spectra(model, shape, Ms=(4, 6, 8, 12, 16), *, n: int = 256, spacing: str = "quadratic",
                       sampler: str = "ddim", steps: int = 64, threshold: float = 0.99, generator=None) -> dict:
    """The power spectrum over time of probability-flow trajectories (DSNO's observation that it is
    compact): one deterministic solve per sample on a fine grid through every M's recorded times, then
    for each M the fraction of energy per Fourier mode and the smallest J keeping ``threshold`` of it."""
    from difflab.methods.dsno import refine_grid, trajectory_spectrum, trajectory_times

    if sampler not in ("ddim", "pf_euler", "pf_heun"):
        from difflab.errors import ConfigError

        raise ConfigError(f"sampler = {sampler!r}; trajectory spectra need a deterministic one: ddim, pf_euler, pf_heun")
    times = {int(M): trajectory_times(int(M), spacing) for M in Ms}
    key = lambda v: round(float(v), 9)  # noqa: E731  (the same time from two M's)
    union = sorted({key(v) for t in times.values() for v in t}, reverse=True)
    grid, idx = refine_grid(torch.tensor(union, dtype=torch.float64), steps)  # passes through every recorded time
    where = dict(zip(union, idx.tolist()))
    x = torch.randn((n, *shape), generator=generator)
    traj = SAMPLERS[sampler](model, x, grid, return_trajectory=True).trajectory  # (S, n, ...)
    result = {"n": n, "sampler": sampler, "grid_steps": len(grid) - 1, "spacing": spacing, "threshold": threshold,
              "M": {}}
    for M, t in times.items():
        spec = trajectory_spectrum(traj[[where[key(v)] for v in t]].transpose(0, 1))  # (N, M, ...) -> (M//2+1,)
        cum = torch.cumsum(spec, 0)
        J = int((cum < threshold).sum()) + 1
        result["M"][str(M)] = {"times": t.tolist(), "spectrum": spec.tolist(), "cumulative": cum.tolist(),
                               "modes_for_threshold": min(J, len(spec))}
    return result


def discriminator_logits(disc, x: torch.Tensor, t: float, batch: int = 1000) -> torch.Tensor:
    """log(d/(1-d)) of (N, ...) states at time t."""
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb = x[i:i + batch]
            out.append(disc(xb, torch.full((len(xb),), float(t), dtype=xb.dtype, device=xb.device)).float().cpu())
    return torch.cat(out)


def density_ratio_paths(model, disc, real: torch.Tensor, *, guided=None, sampler: str = "ancestral",
                        steps: int = 50, t_min: float = 1e-3, seed: int = 0) -> dict:
    """log(d/(1-d)) of a discriminator along three kinds of path, per time of the sampler's grid:
    real data diffused by the forward process, the plain sampler's trajectories and (``guided``) the
    guided sampler's. A discriminator that separates real from generated data keeps the real path above
    the generated one; DG should lift the generated path towards the real one. Returns mean/std per t."""
    grid = time_grid(model.schedule, steps)
    keep = [i for i, t in enumerate(grid.tolist()) if t >= t_min]
    n = len(real)
    g = torch.Generator().manual_seed(seed)
    paths = {}
    real_logits = [discriminator_logits(disc, noise_to(model, real, float(grid[i]), g), float(grid[i])) for i in keep]
    paths["real (forward-diffused)"] = real_logits
    for label, m in (("plain sampler", model), ("DG sampler", guided)):
        if m is None:
            continue
        gm = torch.Generator().manual_seed(seed + 1)
        x = torch.randn((n, *real.shape[1:]), generator=gm)
        traj = SAMPLERS[sampler](m, x, grid, generator=gm, return_trajectory=True).trajectory
        paths[label] = [discriminator_logits(disc, traj[i], float(grid[i])) for i in keep]
    t = [float(grid[i]) for i in keep]
    return {"t": t, "sampler": sampler, "steps": steps, "n": n,
            "paths": {k: {"mean": [float(v.mean()) for v in vs], "std": [float(v.std()) for v in vs]}
                      for k, vs in paths.items()}}


