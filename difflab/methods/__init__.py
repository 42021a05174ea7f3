"""Methods built on a trained diffusion model, one package each (time_predictor, guidance, dsno).

Each package splits its network, objective, training, model wrapper or sampler, and diagnostics
(numbers only) into modules; its commands live in :mod:`difflab.cli`, its quickstart section in
:mod:`difflab.demo`, its figures in :mod:`difflab.viz`. A method never imports the CLI, the demo,
argparse or matplotlib (``tests/test_layout.py``)."""
