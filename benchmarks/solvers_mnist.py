"""Few-step solvers against the diffusers peers on an MNIST-family model, paired (issue #16).

At each NFE every diffusers peer (its default settings) and every difflab solver x grid start from the
same per-sample x_T; each row prints its FID with interval, floor and ratio in every feature space,
and each difflab row its FID ratio to the best peer at that NFE (the peer lowest in the first space)
with a paired-bootstrap 95% interval per space. A ratio interval below 1 in every space is a lead;
one containing 1 is "no difference".

    python benchmarks/solvers_mnist.py mnist-ddpm-ext --nfe 5,10 --n 2000 --seed 1 \\
        --rows dpmpp_2m:auto,unipc:logsnr --out solvers.json --save-dir runs/solvers
    python benchmarks/solvers_mnist.py mnist-ddpm-ext --nfe '' --merge a.json --merge b.json --plot fid.png  # draw only

A row is ``SAMPLER:GRID`` (GRID one of the grid spacings, ``auto`` the sampler's own). Tune on one
seed and report on another (the README: tuned at --seed 1, reported at --seed 0).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DEFAULT_ROWS = ("dpmpp_2m:auto,dpmpp_2m:logsnr,dpmpp_2m:karras,dpmpp_2m:quadratic,dpmpp_3m:auto,dpmpp_3m:logsnr,"
                "dpmpp_3m:quadratic,unipc:auto,unipc:logsnr,unipc:karras,unipc:quadratic,dpmpp_2m_sde:auto,"
                "dpmpp_2m_sde:logsnr,dpmpp_2m_sde:quadratic,ipndm:auto,ipndm:quadratic")


def parse_rows(text: str) -> list[tuple[str, str]]:
    """``SAMPLER:GRID,...`` -> [(sampler, grid)], each checked against the registries (one clear line)."""
    from difflab.samplers.api import parse_spacing
    from difflab.samplers.registry import SPECS

    rows = []
    for item in (w.strip() for w in text.split(",") if w.strip()):
        sampler, _, grid = item.partition(":")
        grid = grid or "auto"
        if sampler not in SPECS:
            raise SystemExit(f"solvers_mnist: unknown sampler {sampler!r} in --rows; expected one of {', '.join(sorted(SPECS))}")
        try:
            parse_spacing(grid)
        except ValueError as e:
            raise SystemExit(f"solvers_mnist: --rows {item!r}: {e}") from None
        rows.append((sampler, grid))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--nfe", default="5,10", help="comma-separated NFE budgets")
    p.add_argument("--rows", default=DEFAULT_ROWS, help="difflab rows, SAMPLER:GRID comma-separated")
    p.add_argument("--peers", default="dpmsolver++,unipc,deis", help="diffusers peers at their defaults")
    p.add_argument("--kdiff", default="", help="k-diffusion peers on its usual Karras grid (e.g. dpmpp_2m,dpmpp_2m_sde)")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--n-boot", type=int, default=200)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--save-dir", default=None, help="keep every sample set as .npz (difflab eval X.npz --vs Y.npz)")
    p.add_argument("--out", default=None, help="write every row as JSON")
    p.add_argument("--plot", default=None, help="draw FID (first feature space) against NFE, one line per row (.png)")
    p.add_argument("--merge", action="append", default=[], metavar="JSON",
                   help="rows of earlier runs (--out files, same n and seed) to draw beside this run's (repeatable)")
    args = p.parse_args(argv)
    if not args.nfe.strip():  # draw earlier runs' rows only
        if not (args.plot and args.merge):
            raise SystemExit("solvers_mnist: --nfe '' runs nothing; give --plot FILE.png and --merge JSON to draw earlier rows")
        merged = [r for j in args.merge for r in json.loads(Path(j).read_text())["rows"]]
        print(f"wrote {plot_rows(merged, args.plot, args.checkpoint)}")
        return 0
    import torch

    from difflab.cli.common import parse_ints
    from difflab.interop.peers import KDIFF_PEERS, PEERS
    from difflab.io.samples import save_samples
    from difflab.loading import load_any
    from difflab.metrics.bench import SPACE_PREFIX, _draw, compare_samples, evaluate_samples, steps_for

    if args.threads:
        torch.set_num_threads(args.threads)
    rows_wanted = parse_rows(args.rows)
    peers = [w.strip() for w in args.peers.split(",") if w.strip()]
    for w in peers:
        if w not in PEERS:
            raise SystemExit(f"solvers_mnist: unknown peer {w!r} in --peers; expected one of {', '.join(PEERS)}")
    kpeers = [w.strip() for w in args.kdiff.split(",") if w.strip()]
    for w in kpeers:
        if w not in KDIFF_PEERS:
            raise SystemExit(f"solvers_mnist: unknown peer {w!r} in --kdiff; expected one of {', '.join(KDIFF_PEERS)}")
    loaded = load_any(args.checkpoint)
    data, shape, model = loaded.data_name(), tuple(loaded.data_shape), loaded.model
    models = {"difflab": (model, None)}
    save = Path(args.save_dir) if args.save_dir else None
    if save:
        save.mkdir(parents=True, exist_ok=True)
    first = next(iter(SPACE_PREFIX.values()))
    out = []

    def record(row, x, secs, tag):
        m = evaluate_samples(x, data, data_dir=args.data_dir, seed=args.seed, n_boot=args.n_boot)
        row.update({k: v for k, v in m.items() if isinstance(v, (int, float, str))})
        row["seconds_per_sample"] = secs / args.n
        out.append(row)
        if save:
            save_samples(x, save / f"{tag}-nfe{row['nfe']}-s{args.seed}.npz",
                         meta={k: v for k, v in row.items() if k in ("nfe", "row", "n", "seed", "sampler", "grid")}
                         | {"source": args.checkpoint, "data": data})

    for nfe in parse_ints(args.nfe, "--nfe"):
        best = None
        for lib, peer in [("diffusers", w) for w in peers] + [("k-diffusion", w) for w in kpeers]:
            if lib == "diffusers":
                r = _draw("diffusers", peer, nfe, {}, models, {}, shape, args.n, args.seed, args.batch, "cpu")
                if "error" in r:
                    raise SystemExit(f"solvers_mnist: {r['error']}")
            else:
                r = kdiffusion_rows(model, shape, peer, nfe, args.n, args.seed, args.batch)
            row = {"nfe": nfe, "row": f"{lib} {peer}", "n": args.n, "seed": args.seed}
            record(row, r["x"], r["seconds"], f"peer-{lib}-{peer}")
            print(_line(row, SPACE_PREFIX), flush=True)
            if best is None or row[first + "fid"] < best[0][first + "fid"]:
                best = (row, r["x"])
        for sampler, grid in rows_wanted:
            steps = steps_for(sampler, nfe)
            if not steps:
                continue
            opts = {} if grid == "auto" else {"spacing": grid}
            t0 = time.perf_counter()
            r = _draw("difflab", sampler, steps, opts, models, {}, shape, args.n, args.seed, args.batch, "cpu")
            secs = time.perf_counter() - t0
            row = {"nfe": nfe, "row": f"{sampler} {grid}", "n": args.n, "seed": args.seed}
            record(row, r["x"], secs, f"{sampler}-{grid.replace(':', '')}")
            if best is not None:  # with --peers '' the rows stand alone (pair them later: difflab eval X.npz --vs Y.npz)
                row["vs"] = best[0]["row"]
                c = compare_samples(r["x"], best[1], data, data_dir=args.data_dir, seed=args.seed, n_boot=args.n_boot)
                row.update({k: v for k, v in c.items() if isinstance(v, (int, float, str, bool)) and "ratio" in k})
            print(_line(row, SPACE_PREFIX), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps({"checkpoint": args.checkpoint, "rows": out}, indent=2))
    if args.plot:
        merged = [r for j in args.merge for r in json.loads(Path(j).read_text())["rows"]]
        print(f"wrote {plot_rows(merged + out, args.plot, args.checkpoint)}")
    return 0


def kdiffusion_rows(model, shape, sampler, nfe, n, seed, batch) -> dict:
    """k-diffusion's sampler from the per-sample x_T of difflab's generate() (sample i pairs with every row's),
    through :func:`difflab.metrics.bench.generate_one_step`; each batch seeds the SDE samplers' noise anew."""
    import itertools

    from difflab.interop.peers import kdiffusion_sample
    from difflab.metrics.bench import generate_one_step

    calls = itertools.count()
    return generate_one_step(lambda x: kdiffusion_sample(model, x.shape, sampler, nfe, x=x,
                                                         seed=seed * 100003 + next(calls)),
                             shape, n, seed, batch)


def plot_rows(rows: list[dict], path, title: str):
    """FID against NFE in the first feature space, one line per row name, the floor dashed."""
    from difflab.viz import save_curves

    series: dict = {}
    for r in sorted(rows, key=lambda r: r["nfe"]):
        xs, ys = series.setdefault(r["row"], ([], []))
        xs.append(r["nfe"])
        ys.append(r["fid"])
    floor = min(r["fid_floor"] for r in rows)
    n = {r["n"] for r in rows}
    return save_curves(series, path, "NFE", f"FID ({rows[0]['feature_space']}, n = {'/'.join(map(str, sorted(n)))})",
                       title=f"{title}: few-step solvers and diffusers peers", logx=True, logy=True,
                       hlines={f"real-data floor {floor:.2f}": floor})


def _line(row: dict, prefixes: dict) -> str:
    parts = []
    for pre in prefixes.values():
        if pre + "fid" not in row:
            continue
        text = (f"{row[pre + 'feature_space']}: FID {row[pre + 'fid']:.3f} [{row[pre + 'fid_lo']:.3f}, "
                f"{row[pre + 'fid_hi']:.3f}] floor {row[pre + 'fid_floor']:.3f}")
        if pre + "ratio" in row:
            flag = "*" if row[pre + "ratio_hi"] < 1 else ("+" if row[pre + "ratio_lo"] > 1 else " ")
            text += f" vs peer {row[pre + 'ratio']:.3f} [{row[pre + 'ratio_lo']:.3f}, {row[pre + 'ratio_hi']:.3f}]{flag}"
        parts.append(text)
    return (f"NFE {row['nfe']:>3d} {row['row']:<24s} {' | '.join(parts)}  "
            f"({row['seconds_per_sample'] * 1000:.1f} ms/sample)")


if __name__ == "__main__":
    sys.exit(main())
