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


# k-diffusion's samplers (Crowson's k-diffusion, the EDM σ-space ODE/SDE samplers) by the names it gives them.
KDIFF_PEERS = ("euler", "heun", "lms", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde")


def load_kdiffusion_sampling():
    """``k_diffusion.sampling``. The package's ``__init__`` imports its training stack too (CLIP, wandb,
    clean-fid, kornia, scikit-image); where those are missing the sampling module is loaded alone, with
    the package's own ``utils`` (it needs only torch, scipy, torchdiffeq, torchsde and tqdm)."""
    import importlib
    import importlib.util
    import sys
    import types

    try:
        return importlib.import_module("k_diffusion.sampling")
    except ImportError:
        pass
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        raise DifflabError("k-diffusion peers need k-diffusion: pip install --no-deps k-diffusion torchsde trampoline")
    for name in [n for n in sys.modules if n == "k_diffusion" or n.startswith("k_diffusion.")]:
        del sys.modules[name]  # a half-imported package from the failed import above
    pkg = types.ModuleType("k_diffusion")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["k_diffusion"] = pkg
    try:
        for sub in ("utils", "sampling"):
            sub_spec = importlib.util.spec_from_file_location(f"k_diffusion.{sub}", f"{pkg.__path__[0]}/{sub}.py")
            mod = importlib.util.module_from_spec(sub_spec)
            sys.modules[f"k_diffusion.{sub}"] = mod
            sub_spec.loader.exec_module(mod)
            setattr(pkg, sub, mod)
    except ImportError as e:
        del sys.modules["k_diffusion"]
        raise DifflabError(f"k-diffusion's sampling module needs {e.name}: pip install --no-deps k-diffusion "
                           "torchsde trampoline") from None
    return pkg.sampling


def kdiffusion_sigmas(schedule, steps: int, *, rho: float = 7.0) -> torch.Tensor:
    """k-diffusion's usual grid for a VP model: ``get_sigmas_karras(steps, σ_min, σ_max, ρ)`` between the
    noise levels σ = σ(t)/α(t) of the model's smallest and largest times (1/T and 1 for a discrete model,
    as its CompVisDenoiser), then 0."""
    from difflab.samplers.api import SMALLEST_T

    sampling = load_kdiffusion_sampling()
    lo = 1.0 / schedule.num_timesteps if hasattr(schedule, "num_timesteps") else SMALLEST_T
    smin, smax = (float(torch.exp(-0.5 * schedule.log_snr(torch.tensor(t, dtype=F64)))) for t in (lo, 1.0))
    return sampling.get_sigmas_karras(steps, smin, smax, rho=rho).to(F64)


class KDiffusionDenoiser(torch.nn.Module):
    """A difflab ε-model as k-diffusion's denoiser D(x, σ) of x = x0 + σ n: the model sees α x at the time
    whose σ(t)/α(t) is σ (its own continuous view of a discrete schedule, unquantised, as k-diffusion's
    CompVisDenoiser default), and D = x - σ ε̂."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, sigma, **kw):
        sig = sigma.detach().to("cpu", F64)
        t = self.model.schedule.t_from_log_snr(-2 * torch.log(sig)).clamp(1e-6, 1.0)
        alpha = (1 + sig ** 2).rsqrt().to(x.device, x.dtype).view(-1, *([1] * (x.ndim - 1)))
        eps = self.model(x * alpha, t.to(x.device), **kw).eps
        return x - sigma.to(x.dtype).view(-1, *([1] * (x.ndim - 1))) * eps


def kdiffusion_sample(model, shape, sampler: str, nfe: int, *, x: torch.Tensor, seed: int = 0, device="cpu"
                      ) -> torch.Tensor:
    """Sample with k-diffusion's ``sample_<sampler>`` (one of :data:`KDIFF_PEERS`) driving the difflab model on
    k-diffusion's usual Karras grid (:func:`kdiffusion_sigmas`) with ``nfe`` evaluations (Heun: ⌈nfe/2⌉
    noise levels, 2⌈nfe/2⌉ - 1 evaluations: its last step is Euler's). ``x``: the unit-variance initial noise (scaled to σ_max here);
    ``seed`` seeds the SDE samplers' noise (torch's global generator, as k-diffusion draws it)."""
    if sampler not in KDIFF_PEERS:
        raise DifflabError(f"unknown k-diffusion peer {sampler!r}; expected one of {', '.join(KDIFF_PEERS)}")
    sampling = load_kdiffusion_sampling()
    steps = (nfe + 1) // 2 if sampler == "heun" else nfe
    sigmas = kdiffusion_sigmas(model.schedule, steps).to(device=device, dtype=torch.float32)
    fn = getattr(sampling, f"sample_{sampler}")
    torch.manual_seed(seed)
    with torch.no_grad():
        return fn(KDiffusionDenoiser(model), x.to(device) * sigmas[0], sigmas, disable=True)


__all__ = ["KDIFF_PEERS", "KDiffusionDenoiser", "PEERS", "diffusers_sample", "discrete_betas", "kdiffusion_sample",
           "kdiffusion_sigmas", "load_kdiffusion_sampling"]
