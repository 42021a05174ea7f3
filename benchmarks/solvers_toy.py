"""Few-step solvers on the exact toy world: every sampler x time grid by NFE, against the true mixture.

    python benchmarks/solvers_toy.py [--world ring8|mix16] [--nfe 3,4,5,6,8,10,15,20] [--n 4000] [--seeds K]
                                     [--json out.json]

The model is the exact score of a Gaussian mixture (no training), on DDPM's discrete linear schedule
(the trained times of a T = 1000 model), so the table isolates the solvers' discretisation error. Every
row starts from the same x_T. Sliced W2 (not squared) against fresh true samples; beside it the noise
floor (two independent true samples of this size) and the exact-score ancestral sampler at 1000 steps
(the converged reference), and the deterministic ODE solved finely from the same x_T (each row's RMS distance
to it is its discretisation error alone). One draw of n = 4,000 moves sliced W2 by about +-0.02, as much as the
rows differ, so a verdict needs --seeds K: the mean over K independent x_T and reference draws, a Student-t
interval, and the paired difference to that draw's floor. diffusers' DDIM, DPM-Solver++(2M), UniPC and DEIS drive the same model at
their own default spacing, and k-diffusion's samplers (where it is installed) on its usual Karras grid. The
issue's target: the best new solver at NFE 10 within the floor.
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from tqdm import tqdm

from difflab.errors import DifflabError
from difflab.interop.peers import KDIFF_PEERS, PEERS, diffusers_sample, kdiffusion_sample
from difflab.metrics.bench import SOLVER_GRIDS, SOLVERS, steps_for
from difflab.metrics.features import interval_over_seeds
from difflab.samplers.api import parse_spacing
from difflab.metrics.toy import sliced_wasserstein2
from difflab.models import exact_mixture_model
from difflab.process import GaussianDiffusion, GaussianMixture, linear_betas, ring_mixture
from difflab.samplers import sample

F64 = torch.float64
ODE_STEPS = 200  # the converged deterministic reference (on ring8, seed 0: 1000 steps are 0.0005 RMS away, same SW2 to 4 digits)


def world(name: str):
    if name == "ring8":
        return ring_mixture(8, radius=2.0, std=0.3)
    g = torch.Generator().manual_seed(0)
    return GaussianMixture(torch.randn(8, 16, generator=g, dtype=F64), stds=torch.full((8,), 0.1, dtype=F64))


def one_seed(args, mix, model, nfes, grids, seed):
    """Every row from one x_T draw (seed): the floor, the converged references and each solver x grid."""
    dim = mix.dim
    g = torch.Generator().manual_seed(seed + 1)
    ref = mix.sample(args.n, g)
    floor = sliced_wasserstein2(mix.sample(args.n, g), mix.sample(args.n, g), seed=seed)
    x_T = torch.randn(args.n, dim, dtype=F64, generator=torch.Generator().manual_seed(seed))

    def sw(x):
        return sliced_wasserstein2(x.double(), ref, seed=seed)

    conv = sw(sample(model, (args.n, dim), sampler="ancestral", steps=1000, x=x_T.clone(), dtype=F64,
                     generator=torch.Generator().manual_seed(seed + 2)).x)
    ode = sample(model, (args.n, dim), sampler="dpmpp_2m", steps=ODE_STEPS, x=x_T.clone(), dtype=F64).x
    rows = [{"kind": "ref", "sampler": name, "grid": "", "budget": 0, "sliced_w2": v, "seed": seed}
            for name, v in (("floor", floor), ("ancestral@1000", conv), (f"ODE (dpmpp_2m@{ODE_STEPS})", sw(ode)))]
    for nfe in nfes:
        for name in ("ddim",) + SOLVERS:
            steps = steps_for(name, nfe)
            if not steps:
                continue
            for grid in grids if name != "ddim" else ("auto",):
                r = sample(model, (args.n, dim), sampler=name, steps=steps, x=x_T.clone(), spacing=grid, dtype=F64,
                           generator=torch.Generator().manual_seed(seed + 2))
                rows.append({"kind": "difflab", "sampler": name, "grid": grid, "budget": nfe, "nfe": r.nfe,
                             "sliced_w2": sw(r.x), "seed": seed,
                             "to_ode": float((r.x.double() - ode).pow(2).sum(1).mean().sqrt())})
        if not args.no_peers:
            for p in PEERS:
                x = diffusers_sample(model, (args.n, dim), p, nfe, x=x_T.clone())
                rows.append({"kind": "peer", "sampler": f"diffusers {p}", "grid": "own default", "budget": nfe,
                             "nfe": nfe, "sliced_w2": sw(x), "seed": seed})
            for p in KDIFF_PEERS:
                try:
                    x = kdiffusion_sample(model, (args.n, dim), p, nfe, x=x_T.clone(), seed=seed + 2)
                except DifflabError as e:
                    print(f"(no k-diffusion rows: {e})")
                    break
                rows.append({"kind": "peer", "sampler": f"k-diffusion {p}", "grid": "karras (its usual)",
                             "budget": nfe, "nfe": nfe, "sliced_w2": sw(x), "seed": seed})
    return rows


def summarise(rows, seeds):
    """Per (sampler, grid, NFE budget): the mean over seeds, and with K >= 2 the Student-t interval of the mean
    and of the paired difference to the floor (same seed: same reference set). ``nfe`` is the most evaluations a
    seed's row ran (a grid can round two times onto one trained step and run fewer than its budget)."""
    floor = {r["seed"]: r["sliced_w2"] for r in rows if r["sampler"] == "floor"}
    out = {}
    for key in dict.fromkeys((r["sampler"], r["grid"], r["budget"]) for r in rows):
        rs = [r for r in rows if (r["sampler"], r["grid"], r["budget"]) == key]
        v = [r["sliced_w2"] for r in rs]
        d = [r["sliced_w2"] - floor[r["seed"]] for r in rs]
        s = {"kind": rs[0]["kind"], "budget": key[2], "mean": sum(v) / len(v), "k": len(v), "minus_floor": sum(d) / len(d),
             "nfe": max(r.get("nfe", 0) for r in rs)}
        if "to_ode" in rs[0]:
            s["to_ode"] = sum(r["to_ode"] for r in rs) / len(rs)
        if seeds >= 2:
            _, s["lo"], s["hi"] = interval_over_seeds(v)
            _, s["d_lo"], s["d_hi"] = interval_over_seeds(d)
        out[key] = s
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", default="ring8", choices=["ring8", "mix16"])
    ap.add_argument("--nfe", default="3,4,5,6,8,10,15,20")
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=1,
                    help="independent x_T and reference draws (seed, seed+1, ...); K >= 2 prints the mean and a "
                         "Student-t 95%% interval over them, and the paired difference to the floor")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--grids", default=",".join(SOLVER_GRIDS),
                    help="comma-separated grid spacings of the difflab rows, e.g. auto,power:1.5,logsnr")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.seeds < 1:
        raise SystemExit(f"solvers_toy: --seeds {args.seeds}: needs at least 1")
    torch.set_num_threads(1)
    mix = world(args.world)
    d = GaussianDiffusion(linear_betas(1000))
    model = exact_mixture_model(mix, d.schedule)
    nfes = [int(v) for v in args.nfe.split(",")]
    grids = [w.strip() for w in args.grids.split(",") if w.strip()]
    for w in grids:
        try:
            parse_spacing(w)
        except ValueError as e:
            raise SystemExit(f"solvers_toy: --grids {w!r}: {e}") from None
    t0 = time.perf_counter()
    rows = []
    for seed in tqdm(range(args.seed, args.seed + args.seeds), desc="seeds", disable=args.seeds < 2):
        rows += one_seed(args, mix, model, nfes, grids, seed)
    secs = time.perf_counter() - t0
    summ = summarise(rows, args.seeds)
    k = args.seeds

    def cell(s):
        ran = f" ({s['nfe']} NFE)" if s["kind"] != "ref" and s["nfe"] < s["budget"] else ""
        return f"{s['mean']:.4f}" + (f" [{s['lo']:.4f}, {s['hi']:.4f}]" if k >= 2 else "") + ran

    refs = {key[0]: s for key, s in summ.items() if s["kind"] == "ref"}
    print(f"toy:{args.world} (exact score, DDPM linear schedule T=1000), sliced W2, n = {args.n}, "
          f"{k} seed{'s' if k > 1 else ''} from {args.seed}" + (" (mean [95% over seeds])" if k > 1 else "")
          + "; " + "; ".join(f"{name} {cell(s)}" for name, s in refs.items())
          + f"; {platform.machine()}, 1 thread, {secs:.0f} s")
    print()
    order = ["auto", "logsnr", "karras"]
    print("| sampler | grid | " + " | ".join(f"NFE {n}" for n in nfes) + " |")
    print("|---|---|" + "---:|" * len(nfes))
    keys = sorted({(s, gname) for (s, gname, n), v in summ.items() if v["kind"] != "ref"},
                  key=lambda kk: (" " in kk[0], kk[0], order.index(kk[1]) if kk[1] in order else 9, kk[1]))
    for s, gname in keys:
        cells = [cell(summ[(s, gname, n)]) if (s, gname, n) in summ else "" for n in nfes]
        print(f"| {s} | {gname} | " + " | ".join(cells) + " |")
    print()
    for n in nfes:
        mine = [(v["mean"], key) for key, v in summ.items() if key[2] == n and v["kind"] == "difflab"]
        peers = [(v["mean"], key) for key, v in summ.items() if key[2] == n and v["kind"] == "peer"]
        if not mine:
            continue
        m, key = min(mine)
        s = summ[key]
        line = f"NFE {n}: best difflab {key[0]} ({key[1]}) {cell(s)}, {s['to_ode']:.4f} RMS from the converged ODE"
        if peers:
            pm, pk = min(peers)
            line += f"; best peer {pk[0]} {cell(summ[pk])}"
        if k >= 2:
            within = s["d_lo"] <= 0.0
            line += (f"; minus the floor {s['minus_floor']:+.4f} [{s['d_lo']:+.4f}, {s['d_hi']:+.4f}] "
                     f"({'within the floor' if within else 'above the floor'})")
        else:
            line += f"; floor {summ[('floor', 'true vs true', 0)]['mean']:.4f} (one seed: use --seeds K for a verdict)"
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"world": args.world, "n": args.n, "seeds": k, "rows": rows, "seconds": secs,
                       "summary": [{"sampler": a, "grid": b, **v} for (a, b, _), v in summ.items()]},
                      f, indent=2)


if __name__ == "__main__":
    main()
