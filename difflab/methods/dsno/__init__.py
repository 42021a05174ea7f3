"""DSNO: one-step sampling by learning the solution operator of the probability-flow ODE
(Zheng et al. 2022, "Fast Sampling of Diffusion Models via Operator Learning").

A teacher ODE solver maps the initial noise x_T to a whole trajectory; DSNO learns that map with a
neural operator (:mod:`difflab.nets.temporal`) and decodes all M recorded time points in parallel,
in one network evaluation. The pieces, in the order they are used::

    times = trajectory_times(8, "quadratic")                    # (M,) from t = 1 down to t = 0
    generate_trajectories(teacher, "bank/", n=20000, M=8)        # sharded, resumable (x_T, x(t_m)) pairs
    data = TrajectoryDataset("bank/")                            # .x (N, ...) = x_T, .y (N, M, ...) = trajectory
    dsno = dsno_from_teacher(teacher, data.times, modes=3)       # backbone = the teacher's network
    fit_dsno(dsno, data, "runs/dsno", tcfg, schedule=teacher.schedule)
    r = dsno_sample(dsno, x_T, return_trajectory=True)           # r.x (B, ...), r.trajectory (M, B, ...), r.nfe == 1

Modules, one layer each: :mod:`.times` (time grids), :mod:`.bank` (the trajectory bank),
:mod:`.spectrum`, :mod:`.model` (operator + readout), :mod:`.objective`, :mod:`.sampler` (one-shot),
:mod:`.training`. The commands are in :mod:`difflab.cli.dsno`, the quickstart section in :mod:`difflab.demo.dsno`.
"""
from .bank import (ODE_SAMPLERS, TrajectoryDataset, bank_meta, generate_trajectories, noise_from_seeds, noise_seeds,
                   teacher_grid)
from .model import DSNO, READOUTS, build_dsno, build_dsno_from_config, dsno_from_teacher, parameter_overhead
from .objective import (DEFAULT_MAX_WEIGHT, KIND, LOSSES, WEIGHTINGS, DSNOObjective, loss_weights, trajectory_error,
                        x_T_baseline)
from .sampler import dsno_sample
from .spectrum import mode_energy_fraction, trajectory_spectrum
from .times import REFINES, SPACINGS, refine_grid, trajectory_times
from .training import HELDOUT_LOG, fit_dsno, heldout_error, load_dsno, read_heldout, train_dsno

__all__ = [
    "DEFAULT_MAX_WEIGHT", "DSNO", "DSNOObjective", "HELDOUT_LOG", "KIND", "LOSSES", "ODE_SAMPLERS", "READOUTS",
    "REFINES", "SPACINGS", "TrajectoryDataset", "WEIGHTINGS", "bank_meta", "build_dsno", "build_dsno_from_config",
    "dsno_from_teacher", "dsno_sample", "fit_dsno", "generate_trajectories", "heldout_error", "load_dsno",
    "loss_weights", "mode_energy_fraction", "noise_from_seeds", "noise_seeds", "parameter_overhead", "read_heldout", "teacher_grid",
    "refine_grid", "train_dsno", "trajectory_error", "trajectory_spectrum", "trajectory_times", "x_T_baseline",
]
