"""Time-predictor (TP) sampling: a network g(x_t) -> t, and samplers that show the model g(x).

With few sampling steps the state x at grid time t drifts away from the marginal p_t that t
assumes. TP sampling (the COSE474-2022F project "Dynamic Timestep Sampling for Diffusion Models";
difflab issue 5) trains g to read the noise level from x alone and, at every step, evaluates the
model at g(x) instead of the nominal time; the step grid stays the same. One layer per module::

    network      predictor = build_time_predictor(data_shape, schedule, TimePredictorConfig())  # g: (B, ...) -> (B,)
    objective    objective = TimePredictorObjective(schedule, predictor.scale)                  # for train.Trainer
    training     tp_configs(...), fit_time_predictor(...), train_time_predictor(...), load_time_predictor(...)
    wrapper      tp_model = TimePredictorSampling(model, predictor)                             # every sampler
    shift        TimeShiftSampling(model, m, window, cutoff), ConstantShift(model, ξ), EpsilonScaling(model, λ)
    sampling     tp_sample(tp_model, shape, ...), TP_SAMPLERS: α, σ, β at g(x) too (Algorithm 3)
    oracle       oracle = OracleTimePredictor(mixture, schedule)                                # E[t | x], toy world
    diagnostics  accuracy_by_t(...), drift_diagnostics(...), their Markdown tables: how good g is, and why
    visited      sampler_states(...), label_states(...), StateTimeObjective: g on the sampler's own states
    tuner        tune_step_times(...): a per-step time table fitted to the teacher ODE (a timestep tuner)
    toy          toy_sampling_rows(...): TP against the original samplers, exact toy metrics
    runs         tp_report(...), compare_samples(...): what tp-report / tp-sample compute from checkpoints

Shapes: x (B, ...) any data shape; times (B,) float64 in [0, 1] (t = 0 data, t = 1 noise).
The CLI commands ``tp-train``, ``tp-report`` and ``tp-sample`` live in :mod:`difflab.cli.tp`, the
quickstart's section in :mod:`difflab.demo.tp`, the plots in :mod:`difflab.viz`.
"""
from .diagnostics import (accuracy_by_t, accuracy_table, drift_diagnostics, drift_table, predict_in_batches,
                          time_shift_readings)
from .network import (KIND, NETS, PARAMETERIZATIONS, TORCHVISION_NETS, TimePredictor, TimePredictorConfig, TimeScale,
                      TorchvisionBackbone, build_time_predictor)
from .objective import TimePredictorObjective
from .oracle import OracleTimePredictor, mixture_of
from .runs import compare_samples, tp_report
from .shift import (ConstantShift, EpsilonScaling, StepTimeMap, TimeShiftSampling, calibrate_step_times, data_pixel_variance, marginal_pixel_variance,
                    mixture_pixel_variance, pixel_variance)
from .sampling import (TP_SAMPLERS, sampler_for, tp_ancestral, tp_ddim, tp_euler_maruyama, tp_pf_adaptive, tp_pf_euler,
                       tp_pf_heun, tp_sample)
from .toy import REFERENCE_FID, REFERENCE_RATIO, toy_sampling_rows, toy_sampling_table
from .visited import LABELS, StateTimeObjective, label_states, sampler_states
from .tuner import load_step_times, save_step_times, teacher_states, tune_step_times, tuner_table
from .training import (STATE_DEFAULTS, TP_TRAIN_DEFAULTS, LoadedTimePredictor, fit_time_predictor, load_time_predictor, tp_configs,
                       train_time_predictor)
from .wrapper import PredictedTimeOutput, TimePredictorSampling, wants_per_sample_coefficients

__all__ = ["load_step_times", "save_step_times", "teacher_states", "tune_step_times", "tuner_table", "LABELS", "STATE_DEFAULTS", "StateTimeObjective", "label_states", "sampler_states", "ConstantShift", "EpsilonScaling", "StepTimeMap", "TimeShiftSampling", "calibrate_step_times", "data_pixel_variance", "marginal_pixel_variance",
           "mixture_pixel_variance", "pixel_variance", "time_shift_readings", "KIND", "NETS", "PARAMETERIZATIONS", "REFERENCE_FID", "REFERENCE_RATIO", "TORCHVISION_NETS", "TP_SAMPLERS",
           "TP_TRAIN_DEFAULTS", "LoadedTimePredictor", "OracleTimePredictor", "PredictedTimeOutput", "TimePredictor",
           "TimePredictorConfig", "TimePredictorObjective", "TimePredictorSampling", "TimeScale", "TorchvisionBackbone",
           "accuracy_by_t", "accuracy_table", "build_time_predictor", "compare_samples", "drift_diagnostics",
           "drift_table", "fit_time_predictor", "load_time_predictor", "mixture_of", "predict_in_batches",
           "sampler_for", "toy_sampling_rows", "toy_sampling_table", "tp_ancestral", "tp_configs", "tp_ddim",
           "tp_euler_maruyama", "tp_pf_adaptive", "tp_pf_euler", "tp_pf_heun", "tp_report", "tp_sample",
           "train_time_predictor", "wants_per_sample_coefficients"]
