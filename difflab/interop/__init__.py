"""Pre-trained models from other codebases as difflab models.

A model trained elsewhere becomes a :class:`difflab.models.DiffusionModel` — its network kept (or
renamed onto difflab's), its process rebuilt from its own config — so difflab's samplers, the
time-predictor / guidance / DSNO wrappers and the metrics apply to it unchanged::

    from difflab.interop import load_diffusers, load_improved_diffusion
    from difflab.samplers import sample

    model = load_diffusers("ddpm-cifar10-32")                    # a save_pretrained folder
    x = sample(model, (16, *model.data_shape), sampler="ddim", steps=50).x

    model = load_improved_diffusion("cifar10_uncond_50M_500K.pt",
                                    "--image_size 32 --num_channels 128 --num_res_blocks 3 "
                                    "--learn_sigma True --dropout 0.3 --diffusion_steps 4000 --noise_schedule cosine")
    x = sample(model, (16, *model.data_shape), **model.import_info["sample_options"]).x

Both keep the foreign timestep convention inside an adapter: the network is shown difflab's
``t = (k + 1) / T`` as the integer step ``k`` it was trained on (fractional between steps, e.g.
for a time predictor's times). Each loaded model carries ``model.diffusion`` (its T-step
:class:`~difflab.process.gaussian.GaussianDiffusion`), ``model.data_shape`` and
``model.import_info`` (source, config, recommended ``sample_options``).
"""
from difflab.interop.common import TimestepAdapter, respacing_grid, time_to_timestep, timesteps_to_grid
from difflab.interop.diffusers import (DiffusersUNetAdapter, diffusers_alphas_cumprod, diffusers_process,
                                       from_diffusers, load_diffusers)
from difflab.interop.improved import (ImprovedDiffusionAdapter, convert_state_dict, improved_diffusion_key_map,
                                      improved_diffusion_unet, load_improved_diffusion, parse_flags)

__all__ = [
    "DiffusersUNetAdapter", "ImprovedDiffusionAdapter", "TimestepAdapter", "convert_state_dict",
    "diffusers_alphas_cumprod", "diffusers_process", "from_diffusers", "improved_diffusion_key_map",
    "improved_diffusion_unet", "load_diffusers", "load_improved_diffusion", "parse_flags", "respacing_grid",
    "time_to_timestep", "timesteps_to_grid",
]
