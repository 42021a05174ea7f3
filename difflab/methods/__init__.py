"""Methods built on a trained diffusion model: each module has its objective, its model wrapper or
sampler, its diagnostics and its CLI commands (time_predictor, guidance, dsno)."""
