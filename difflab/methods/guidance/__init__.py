"""Discriminator guidance (Kim et al., ICML 2023) and classifier guidance (Dhariwal & Nichol 2021).

A trained score model s_θ whose error no further score training reduces is corrected with the
gradient of a density ratio. With p_t the diffused data and q_t the diffused model samples,

    ∇ log p_t = s_θ + ∇ log (p_t / q_t),     p_t / q_t = d*/(1 - d*),  d* = p_t / (p_t + q_t),

where d* is the optimal discriminator between diffused real data and diffused model samples.
A trained discriminator d_φ gives the correction c_φ = ∇_x logit d_φ(x_t, t), and in ε form

    ε' = ε - σ(t) w(t) ∇_x logit d_φ(x_t, t)        (score' = score + w ∇ logit).

Classifier guidance is the same construction with log p(y | x_t, t) of a noisy classifier in
place of the logit; the paper's joint sampler stacks both wrappers (the discriminator may be
class-conditional, d(x_t, t, y)). Both are model wrappers, so they work with every sampler and
stack with each other and with time-predictor sampling.

One layer per module: :mod:`.network` (the discriminator / classifier networks),
:mod:`.objective` (BCE and CE on diffused samples, training times), :mod:`.diagnostics`
(accuracy per band of t), :mod:`.training`, :mod:`.loading` (checkpoints, :func:`guided_model`),
:mod:`.wrapper` (the guidance wrappers), :mod:`.bank` (the resumable sample bank) and
:mod:`.oracle` (the toy world's exact discriminator and classifier). The CLI commands are in
:mod:`difflab.cli.guidance`, the quickstart section in :mod:`difflab.demo.guidance`::

    bank = load_bank(generate_bank(model, "ddim", 50, n, "bank", shape=(2,)))
    disc = Discriminator.build((2,))
    train_discriminator(model, real_x, bank, "runs/dg", discriminator=disc)   # BCE on (x_t, t)
    guided = DiscriminatorGuidance(model, load_discriminator("runs/dg"), weight=1.0)
    sample(guided, (n, 2), sampler="ancestral", steps=1000)
"""
from __future__ import annotations

from difflab.methods.guidance.bank import Bank, generate_bank, load_bank
from difflab.methods.guidance.diagnostics import evaluate_by_t
from difflab.methods.guidance.loading import (checkpoints_by_step, guided_model, load_classifier, load_discriminator,
                                              load_weights)
from difflab.methods.guidance.network import Discriminator, NoisyClassifier, make_encoder
from difflab.methods.guidance.objective import (T_SAMPLING, ClassifierObjective, DiscriminatorObjective, diffuse,
                                                discriminator_dataset, sample_times)
from difflab.methods.guidance.training import EVAL_FILE, train_classifier, train_discriminator
from difflab.methods.guidance.wrapper import ClassifierGuidance, DiscriminatorGuidance, GradientGuidance, takes_labels

__all__ = ["EVAL_FILE", "T_SAMPLING", "Bank", "ClassifierGuidance", "ClassifierObjective", "Discriminator",
           "DiscriminatorGuidance", "DiscriminatorObjective", "GradientGuidance", "NoisyClassifier",
           "checkpoints_by_step", "diffuse", "discriminator_dataset", "evaluate_by_t", "generate_bank",
           "guided_model", "load_bank", "load_classifier", "load_discriminator", "load_weights", "make_encoder",
           "sample_times", "takes_labels", "train_classifier", "train_discriminator"]
