"""g trained on the states a sampler actually visits (issue #21), not on q(x_t | x0).

A T-step sampler's state at grid time t_k is off the marginal p_{t_k} the grid assumes; the seed's g,
trained on the true marginals, reads such a state as best it can. This variant labels each visited
state with the time whose marginal it best matches (the Time-Shift criterion: the marginal pixel
variance closest to the state's, within a window around t_k) and trains g on those pairs, so g learns
the sampler's own drift::

    states, nominal = sampler_states(model, shape, sampler="ddim", steps=10, n=4096)
    labels = label_states(model, states, nominal, data_var, window=0.1, per="sample")
    objective = StateTimeObjective(predictor.scale, labels)   # the dataset's y is the row index

Shapes: states (N, ...), nominal and labels (N,) float64 in (0, 1].
"""
from __future__ import annotations

import torch

from difflab.errors import ConfigError
from difflab.process.schedules import F64
from difflab.train.objectives import Objective

from .network import KIND, TimeScale
from .shift import TimeShiftSampling, pixel_variance

LABELS = ("sample", "step")


@torch.no_grad()
def sampler_states(model, shape, *, sampler: str = "ddim", steps: int = 10, n: int = 1024, seed: int = 0,
                   batch: int = 256, spacing: str = "auto", **options) -> tuple[torch.Tensor, torch.Tensor]:
    """(states (n·K, ...), nominal (n·K,) float64): the state of ``n`` runs of the plain ``steps``-step
    ``sampler`` at each of its K grid times t_k > 0 (x_T at t = 1 included, the output at t = 0 not).
    Batch ``b`` of ``batch`` runs draws its x_T and its sampler noise from seed ``seed`` + b."""
    from difflab.samplers import SAMPLERS, grid_for

    if n < 1:
        raise ConfigError(f"sampler states n = {n}; expected at least 1")
    grid = grid_for(sampler, model.schedule, steps, spacing=spacing)
    xs, ts = [], []
    for b, lo in enumerate(range(0, n, batch)):
        gen = torch.Generator().manual_seed(seed + b)
        x = torch.randn((min(batch, n - lo), *shape), generator=gen)
        seen = {float(grid[0]): x}
        SAMPLERS[sampler](model, x, grid, generator=gen,
                          callback=lambda i, t, s, x0: seen.__setitem__(float(grid[i + 1]), s), **options)
        for t, s in seen.items():
            if t > 0:
                xs.append(s.detach().cpu().float())
                ts.append(torch.full((s.shape[0],), t, dtype=F64))
    return torch.cat(xs), torch.cat(ts)


def label_states(model, states: torch.Tensor, nominal: torch.Tensor, data_var: float, *, window: float = 0.1,
                 per: str = "sample", cutoff: float = 1.0) -> torch.Tensor:
    """(N,) float64: the time within ±``window`` of each state's nominal time whose marginal pixel variance
    (:func:`~difflab.methods.time_predictor.shift.marginal_pixel_variance`) is closest to the state's own
    (``per="sample"``) or to the mean over all states at that nominal time (``per="step"``: one label per
    grid time, the reading for data with few coordinates). States at nominal times above ``cutoff`` keep
    their nominal time (where v(τ) is flat, near pure noise, the reading is noise pinned to the window's
    edge). ``window=0`` or ``cutoff=0`` labels every state with its nominal time."""
    if per not in LABELS:
        raise ConfigError(f"state labels per {per!r}; expected one of {', '.join(LABELS)}")
    if not 0 <= cutoff <= 1:
        raise ConfigError(f"state-label cutoff {cutoff}; expected a time in [0, 1]")
    probe = TimeShiftSampling(model, data_var, window=window)
    nominal = nominal.to(F64)
    s2 = pixel_variance(states)
    if per == "step":
        keys, inv = torch.unique(nominal, return_inverse=True)
        mean = torch.zeros(len(keys), dtype=F64).index_add_(0, inv, s2) / torch.bincount(inv, minlength=len(keys))
        s2 = mean[inv]
    return torch.where(nominal > cutoff, nominal, probe.match(s2, nominal, states[0].numel()))


class StateTimeObjective(Objective):
    """MSE between g's unit and its label's on given (state, label) pairs: the dataset holds the states
    and, as its y, each state's row index into ``labels`` (ArrayDataset's labels are indices)."""

    kind = KIND

    def __init__(self, scale: TimeScale, labels: torch.Tensor):
        self.scale, self.labels = scale, labels.to(F64).cpu()

    def loss(self, module, x, y, draws):
        pred = module(x, raw=True)
        target = self.scale.to_unit(self.labels[y.cpu()]).to(device=pred.device, dtype=pred.dtype)
        err = pred - target
        return err**2, {"mse": (err.detach() ** 2).mean(), "bias": err.detach().mean()}
