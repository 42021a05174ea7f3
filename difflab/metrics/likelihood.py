"""Likelihood on a test split: bits/dim through the variational bound (discrete DDPM / Improved
DDPM models) and through the probability-flow ODE (any model), with per-term output.

Image data are 8-bit: the VLB route scores them on the 256-level grid with the discretized decoder;
the ODE route bounds -log2 P(k) by uniform dequantization (see difflab.process.likelihood). Toy
(continuous) data get -log p(x) in nats per dimension from the ODE.
"""
from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from ..process import GaussianDiffusion, dequantized_bpd, ode_nll, vlb_bpd


def test_split_nll(model, process, data, *, method: str = "vlb", batch: int = 128, seed: int = 0,
                   rtol: float = 1e-5, atol: float = 1e-5, trace: str = "auto", num_probes: int = 1,
                   progress: bool = False) -> dict:
    """NLL of ``data`` (an ArrayDataset) under ``model``. Returns dict with the mean and per-sample
    figures; for 'vlb' also the mean of each term (prior, decoder, KL per step)."""
    p = next(model.parameters(), None) if hasattr(model, "parameters") else None
    dev = p.device if p is not None else torch.device("cpu")  # the model's device: data and noise go there
    g = torch.Generator(dev).manual_seed(seed)
    x_all = data.x.to(dev)
    image = x_all.dim() == 4
    if method == "vlb":
        if not isinstance(process, GaussianDiffusion):
            raise ConfigError("the VLB needs a discrete process (diffusion.process = 'discrete'); use --method ode")
        if not image:
            raise ConfigError("the VLB's discretized decoder is for 8-bit images; use --method ode for continuous data")
        totals, terms, priors = [], [], []
        for i in range(0, len(x_all), batch):
            r = vlb_bpd(model, process, x_all[i:i + batch], generator=g, progress=progress)
            totals.append(r["total"].cpu())
            terms.append(r["terms"].cpu())
            priors.append(r["prior"].cpu())
        total, terms, prior = torch.cat(totals), torch.cat(terms), torch.cat(priors)
        mean_terms = terms.mean(0)
        return {"method": "vlb", "unit": "bits/dim", "bpd": float(total.mean()), "bpd_std_err":
                float(total.std() / math.sqrt(len(total))), "prior": float(prior.mean()),
                "decoder": float(mean_terms[0]), "kl_sum": float(mean_terms[1:].sum()),
                "terms": mean_terms.tolist(), "n": len(total)}
    if method == "ode":
        # The exact divergence costs one backward pass per dimension: use it for low-dimensional data.
        tr = ("exact" if x_all[0].numel() <= 16 else "hutchinson") if trace == "auto" else trace

        def nll(x):
            return ode_nll(model, x, rtol=rtol, atol=atol, trace=tr, num_probes=num_probes, generator=g)["nll"]

        vals = []
        for i in range(0, len(x_all), batch):
            xb = x_all[i:i + batch]
            if image:
                k = torch.round((xb + 1) * 127.5)
                vals.append(dequantized_bpd(nll, k, generator=g).cpu())
            else:
                vals.append((nll(xb) / xb[0].numel()).cpu())
        v = torch.cat(vals)
        return {"method": "ode", "unit": "bits/dim (uniform dequantization)" if image else "nats/dim",
                "bpd" if image else "nll_per_dim": float(v.mean()), "std_err": float(v.std() / math.sqrt(len(v))),
                "trace": tr, "n": len(v)}
    raise ConfigError(f"unknown likelihood method {method!r}; expected 'vlb' or 'ode'")
