"""Few-step solvers on the exact toy world: every sampler x time grid by NFE, against the true mixture.

    python benchmarks/solvers_toy.py [--world ring8|mix16] [--nfe 3,4,5,6,8,10,15,20] [--n 4000] [--json out.json]

The model is the exact score of a Gaussian mixture (no training), on DDPM's discrete linear schedule
(the trained times of a T = 1000 model), so the table isolates the solvers' discretisation error. Every
row starts from the same x_T. Sliced W2 (not squared) against fresh true samples; beside it the noise
floor (two independent true samples of this size) and the exact-score ancestral sampler at 1000 steps
(the converged reference). diffusers' DDIM, DPM-Solver++(2M), UniPC and DEIS drive the same model at
their own default spacing, and k-diffusion's samplers (where it is installed) on its usual Karras grid. The
issue's target: the best new solver at NFE 10 within the floor.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from difflab.errors import DifflabError
from difflab.interop.peers import KDIFF_PEERS, PEERS, diffusers_sample, kdiffusion_sample
from difflab.metrics.bench import SOLVER_GRIDS, SOLVERS, steps_for
from difflab.samplers.api import parse_spacing
from difflab.metrics.toy import sliced_wasserstein2
from difflab.models import exact_mixture_model
from difflab.process import GaussianDiffusion, GaussianMixture, linear_betas, ring_mixture
from difflab.samplers import sample

F64 = torch.float64


def world(name: str):
    if name == "ring8":
        return ring_mixture(8, radius=2.0, std=0.3)
    g = torch.Generator().manual_seed(0)
    return GaussianMixture(torch.randn(8, 16, generator=g, dtype=F64), stds=torch.full((8,), 0.1, dtype=F64))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", default="ring8", choices=["ring8", "mix16"])
    ap.add_argument("--nfe", default="3,4,5,6,8,10,15,20")
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--grids", default=",".join(SOLVER_GRIDS),
                    help="comma-separated grid spacings of the difflab rows, e.g. auto,power:1.5,logsnr")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    mix = world(args.world)
    d = GaussianDiffusion(linear_betas(1000))
    model = exact_mixture_model(mix, d.schedule)
    dim = mix.dim
    g = torch.Generator().manual_seed(args.seed + 1)
    ref = mix.sample(args.n, g)
    floor = sliced_wasserstein2(mix.sample(args.n, g), mix.sample(args.n, g), seed=args.seed)
    x_T = torch.randn(args.n, dim, dtype=F64, generator=torch.Generator().manual_seed(args.seed))

    def sw(x):
        return sliced_wasserstein2(x.double(), ref, seed=args.seed)

    conv = sw(sample(model, (args.n, dim), sampler="ancestral", steps=1000, x=x_T.clone(), dtype=F64,
                     generator=torch.Generator().manual_seed(args.seed + 2)).x)
    rows = []
    nfes = [int(v) for v in args.nfe.split(",")]
    grids = [w.strip() for w in args.grids.split(",") if w.strip()]
    for w in grids:
        try:
            parse_spacing(w)
        except ValueError as e:
            raise SystemExit(f"solvers_toy: --grids {w!r}: {e}") from None
    t0 = time.perf_counter()
    for nfe in nfes:
        for name in ("ddim",) + SOLVERS:
            steps = steps_for(name, nfe)
            if not steps:
                continue
            for grid in grids if name != "ddim" else ("auto",):
                r = sample(model, (args.n, dim), sampler=name, steps=steps, x=x_T.clone(), spacing=grid, dtype=F64,
                           generator=torch.Generator().manual_seed(args.seed + 2))
                rows.append({"sampler": name, "grid": grid, "nfe": r.nfe, "sliced_w2": sw(r.x)})
        if not args.no_peers:
            for p in PEERS:
                x = diffusers_sample(model, (args.n, dim), p, nfe, x=x_T.clone())
                rows.append({"sampler": f"diffusers {p}", "grid": "own default", "nfe": nfe, "sliced_w2": sw(x),
                             "peer": True})
            for p in KDIFF_PEERS:
                try:
                    x = kdiffusion_sample(model, (args.n, dim), p, nfe, x=x_T.clone(), seed=args.seed + 2)
                except DifflabError as e:
                    print(f"(no k-diffusion rows: {e})")
                    break
                rows.append({"sampler": f"k-diffusion {p}", "grid": "karras (its usual)", "nfe": nfe,
                             "sliced_w2": sw(x), "peer": True})
    secs = time.perf_counter() - t0
    print(f"toy:{args.world} (exact score, DDPM linear schedule T=1000), sliced W2, n = {args.n}; noise floor "
          f"(true vs true) {floor:.4f}; exact ancestral@1000 {conv:.4f}; {platform.machine()}, 1 thread, {secs:.0f} s")
    print()
    grids = ["auto", "logsnr", "karras"]
    print("| sampler | grid | " + " | ".join(f"NFE {k}" for k in nfes) + " |")
    print("|---|---|" + "---:|" * len(nfes))
    keys = sorted({(r["sampler"], r["grid"]) for r in rows},
                  key=lambda k: (" " in k[0], k[0], grids.index(k[1]) if k[1] in grids else 9))
    for s, gname in keys:
        vals = {r["nfe"]: r["sliced_w2"] for r in rows if (r["sampler"], r["grid"]) == (s, gname)}
        cells = [f"{vals[k]:.4f}" if k in vals else "" for k in nfes]
        print(f"| {s} | {gname} | " + " | ".join(cells) + " |")
    best = {}
    for r in rows:
        if not r.get("peer") and (r["nfe"] not in best or r["sliced_w2"] < best[r["nfe"]][0]):
            best[r["nfe"]] = (r["sliced_w2"], f"{r['sampler']} ({r['grid']})")
    peer = {}
    for r in rows:
        if r.get("peer") and (r["nfe"] not in peer or r["sliced_w2"] < peer[r["nfe"]][0]):
            peer[r["nfe"]] = (r["sliced_w2"], r["sampler"])
    print()
    for k in nfes:
        if k in best:
            print(f"NFE {k}: best difflab {best[k][1]} {best[k][0]:.4f}"
                  + (f"; best peer {peer[k][1]} {peer[k][0]:.4f}" if k in peer else "")
                  + f"; floor {floor:.4f} ({'within' if best[k][0] <= floor else 'above'})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"world": args.world, "n": args.n, "floor": floor, "ancestral_1000": conv, "rows": rows,
                       "seconds": secs}, f, indent=2)


if __name__ == "__main__":
    main()
