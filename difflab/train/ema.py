"""Exponential moving average of a module's weights (what sampling uses).

shadow ← d · shadow + (1 - d) · param after every optimizer step, with
d = min(rate, (1 + n) / (10 + n)) during warm-up (n = updates so far): early on the average
forgets the random init quickly instead of dragging it along for ~1 / (1 - rate) steps.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """EMA of ``module``'s parameters; buffers are copied as they are.

    Args:
        module: the module being trained (unwrapped: not the DDP wrapper).
        rate: the decay d once warmed up, e.g. 0.999.
        warmup: use d = min(rate, (1 + n) / (10 + n)).
    """

    def __init__(self, module: nn.Module, rate: float = 0.999, warmup: bool = True):
        self.module = module
        self.rate = float(rate)
        self.warmup = warmup
        self.num_updates = 0
        self._names = [n for n, _ in module.named_parameters()]
        self.shadow = [p.detach().clone() for _, p in module.named_parameters()]

    def decay(self) -> float:
        """The decay the next update will use."""
        if not self.warmup:
            return self.rate
        n = self.num_updates
        return min(self.rate, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self) -> None:
        """shadow ← shadow + (1 - d) (param - shadow), for every parameter at once."""
        params = [p.detach() for p in self.module.parameters()]
        torch._foreach_lerp_(self.shadow, params, 1.0 - self.decay())
        self.num_updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The module's state dict with the averaged parameters: it loads into the same module."""
        state = self.module.state_dict()
        for name, s in zip(self._names, self.shadow):
            state[name] = s
        return state

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor], num_updates: int | None = None) -> None:
        for name, s in zip(self._names, self.shadow):
            s.copy_(state[name])
        if num_updates is not None:
            self.num_updates = int(num_updates)

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Load the averaged parameters (and the current buffers) into ``module``."""
        module.load_state_dict(self.state_dict())

    def ema_model(self) -> nn.Module:
        """A deep copy of the module holding the averaged weights, in eval mode, without gradients."""
        model = copy.deepcopy(self.module)
        self.copy_to(model)
        return model.eval().requires_grad_(False)


__all__ = ["EMA"]
