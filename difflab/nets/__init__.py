"""Networks: tensors in, tensors out. They know nothing of schedules or diffusion.

Every network is called as ``net(x, t, y=None)`` with x (B, C, H, W) or (B, D), t a (B,) float
continuous time (embedded as a sinusoid of ``t * time_scale``) and y optional (B,) int64 labels,
where label ``num_classes`` means "unconditional". Encoders take ``t=None`` when built with
``time_conditional=False``.
"""
from .encoder import Encoder, MLPEncoder
from .layers import (AttentionBlock, ConditionEmbedding, Downsample, EmbedBlock, EmbedSequential,
                     GroupNorm32, ResBlock, Upsample, count_parameters, normalization,
                     timestep_embedding, zero_module)
from .mlp import MLP
from .unet import UNET_PRESETS, DownPath, UNet, unet_from_preset

__all__ = [
    "UNet", "UNET_PRESETS", "unet_from_preset", "MLP", "Encoder", "MLPEncoder", "count_parameters",
    "timestep_embedding", "zero_module", "GroupNorm32", "normalization", "ConditionEmbedding",
    "EmbedBlock", "EmbedSequential", "ResBlock", "AttentionBlock", "Downsample", "Upsample", "DownPath",
]
