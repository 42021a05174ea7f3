"""Evaluation metrics.

- features: FID / KID / IS / precision-recall on feature matrices (pure math).
- toy: exact metrics against a known GaussianMixture (log-density, sliced W2, MMD, modes).
- evaluator: difflab's MNIST-family feature space (feature_space "difflab-<dataset>", NOT Inception).
- inception: standard Inception FID for users who have the 2015 weights and pytorch-fid/torch-fidelity.
"""
from difflab.metrics.evaluator import (
    MnistEvaluator,
    evaluate_images,
    extract,
    load_evaluator,
    reference_stats,
)
from difflab.metrics.features import (
    feature_stats,
    fid_from_features,
    frechet_distance,
    inception_score,
    kid,
    precision_recall,
)
from difflab.metrics.inception import inception_features, inception_fid, load_inception
from difflab.metrics.toy import (
    mean_log_density,
    mmd_permutation_test,
    mmd_rbf,
    mode_stats,
    sliced_wasserstein2,
    toy_metrics,
)

__all__ = [
    "MnistEvaluator",
    "evaluate_images",
    "extract",
    "feature_stats",
    "fid_from_features",
    "frechet_distance",
    "inception_features",
    "inception_fid",
    "inception_score",
    "kid",
    "load_evaluator",
    "load_inception",
    "mean_log_density",
    "mmd_permutation_test",
    "mmd_rbf",
    "mode_stats",
    "precision_recall",
    "reference_stats",
    "sliced_wasserstein2",
    "toy_metrics",
]
