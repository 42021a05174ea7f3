"""Training: one loop over small objectives, checkpoints with exact resume, EMA, data parallelism.

    from difflab.train import train, load_model
    train(load_config("toy-ddpm"), "runs/toy")
    model, cfg, ckpt = load_model("runs/toy")
"""
from difflab.train.api import check_resume_config, load_model, saved_config, train
from difflab.train.checkpoint import (Checkpoint, capture_rng_state, check_state_dict_compatible, latest_checkpoint,
                                      load_checkpoint, restore_rng_state, save_checkpoint)
from difflab.train.distributed import DistContext, init_distributed
from difflab.train.ema import EMA
from difflab.train.loop import EpochSampler, Trainer, lr_factor
from difflab.train.objectives import DDPMObjective, DSMObjective, Objective

__all__ = [
    "Checkpoint", "DDPMObjective", "DSMObjective", "DistContext", "EMA", "EpochSampler", "Objective", "Trainer",
    "capture_rng_state", "check_resume_config", "check_state_dict_compatible", "init_distributed",
    "latest_checkpoint", "load_checkpoint", "load_model", "lr_factor", "restore_rng_state", "save_checkpoint",
    "saved_config", "train",
]
