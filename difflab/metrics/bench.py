"""`difflab eval` and `difflab bench`: sample quality per network evaluation, every sampler side by side.

The metric depends on the data, and every result names its feature space:
  * toy mixtures: exact metrics against the true distribution ("exact (true mixture)"),
  * other toy sets: sliced W2 / MMD against fresh data samples ("data samples"),
  * MNIST / Fashion-MNIST: FID/KID/IS/PR in difflab's evaluator features ("difflab-mnist"), NOT Inception,
  * digits 8×8: Fréchet distance on raw pixels ("pixels (digits 8x8)"): no classifier exists for them,
  * anything else: Inception FID when its weights are available (a clear error otherwise).
External peers: diffusers' DDIM and DPM-Solver++ schedulers driven by the same difflab model.
"""
from __future__ import annotations

import csv
import functools
import json
import math
import platform
from pathlib import Path

import torch

from ..errors import DifflabError
from ..interop.peers import diffusers_sample
from ..samplers.batched import generate
from ..samplers.registry import SPECS, get_spec
from .references import PAPER_FIDS, reference_line

# NFE budgets and the grid intervals each sampler needs for them.
NFE_LEVELS = (1000, 100, 50, 20, 10, 5)
QUICK_NFE_LEVELS = (100, 20, 10, 5)


def steps_for(sampler: str, nfe: int) -> int | None:
    """Grid intervals that spend at most ``nfe`` evaluations (Heun: 2 per step, Euler on the last)."""
    return get_spec(sampler).steps_for(nfe)


# The plain samplers of the table at each budget: every fixed-step sampler; only ancestral at >= 1000
# NFE (the converged reference); the adaptive ODE solver once, at its own NFE.
BENCH_SAMPLERS = ("ancestral", "ddim", "euler_maruyama", "pf_euler", "pf_heun")


def default_grid(nfe_levels=NFE_LEVELS) -> list[tuple[str, int]]:
    grid = []
    for nfe in nfe_levels:
        names = ["ancestral"] if nfe >= 1000 else list(BENCH_SAMPLERS)
        grid += [(s, steps_for(s, nfe)) for s in names if steps_for(s, nfe)]
    return grid + [(n, 0) for n, spec in SPECS.items() if spec.evals_per_step is None]


# ---------------------------------------------------------------------------- metrics by data
def evaluate_samples(x: torch.Tensor, data_name: str, *, data_dir=None, seed: int = 0) -> dict:
    """Metrics of samples ``x`` (N, ...) in [-1, 1] for data ``data_name``; keys include ``quality``
    (lower is better: FID or sliced W2) and ``feature_space``."""
    from ..data import load_dataset

    name = data_name.strip().lower()
    if name.startswith("toy:"):
        from .toy import sliced_wasserstein2, toy_metrics

        try:
            from ..data import toy_mixture

            mix = toy_mixture(name)
        except DifflabError:
            mix = None
        if mix is not None:
            m = toy_metrics(x.double(), mix, seed=seed)
            # What two independent true samples of this size score: differences below it are noise
            # (for narrow modes W2 is dominated by the sampling noise of the mode weights).
            g = torch.Generator().manual_seed(seed + 7919)
            floor = sliced_wasserstein2(mix.sample(len(x), g), mix.sample(len(x), g), seed=seed)
            return {**m, "quality": m["sliced_w2"], "quality_name": "sliced W2", "quality_floor": floor,
                    "feature_space": "exact (true mixture)"}
        ref = load_dataset(name, num_samples=min(len(x), 10000), seed=seed + 1).x.double()
        from .toy import mmd_rbf

        n = min(len(x), len(ref))
        sw = sliced_wasserstein2(x[:n].double(), ref[:n], seed=seed)
        return {"sliced_w2": sw, "mmd2": mmd_rbf(x[:1000].double(), ref[:1000]), "quality": sw,
                "quality_name": "sliced W2", "feature_space": "data samples"}
    if name in ("mnist", "fashion-mnist"):
        from .evaluator import evaluate_images

        if tuple(x.shape[1:]) != (1, 28, 28):
            raise DifflabError(f"difflab's {name} evaluator takes (N, 1, 28, 28) images, got {tuple(x.shape[1:])}")
        m = evaluate_images(x, name, data_dir=data_dir, seed=seed)
        floor = _real_fid_floor(name, None if data_dir is None else str(data_dir), len(x), seed)
        return {**m, "quality": m["fid"], "quality_floor": floor,
                "quality_name": f"FID, {m['feature_space']} features"}
    if name == "digits":
        from .features import fid_from_features

        real = load_dataset("digits", split="train").x
        if tuple(x.shape[1:]) != tuple(real.shape[1:]):
            raise DifflabError(f"digits samples must be {tuple(real.shape[1:])}, got {tuple(x.shape[1:])}")
        fid = fid_from_features(x.reshape(len(x), -1).double().numpy(), real.reshape(len(real), -1).double().numpy())
        return {"fid_pixels": fid, "quality": fid, "quality_name": "FD, pixels (digits 8x8)",
                "feature_space": "pixels (digits 8x8)"}
    from .inception import inception_fid

    real = load_dataset(data_name, data_dir=data_dir, split="train", num_samples=min(50000, 10 * len(x))).x
    m = inception_fid(x, real)
    return {**m, "quality": m["fid"], "quality_name": "FID, Inception", "feature_space": "inception-2015-12-05"}


@functools.lru_cache(maxsize=8)
def _real_fid_floor(name: str, data_dir: str | None, n: int, seed: int) -> float:
    """FID is biased upwards at small N: what n real test images score against the training statistics
    is the floor a perfect sampler reaches at this N (computed once per data, n and seed)."""
    from ..data import load_dataset
    from .evaluator import evaluate_images

    test = load_dataset(name, data_dir=data_dir, split="test").x
    pick = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed + 7919))[:n]
    return evaluate_images(test[pick], name, data_dir=data_dir, seed=seed)["fid"]


# ---------------------------------------------------------------------------- the benchmark


def run_bench(model, data_name: str, data_shape, out_dir, *, grid=None, n: int = 1000, seed: int = 0, data_dir=None,
              peers: bool = True, extra_models: dict | None = None, one_step: dict | None = None,
              peer_nfe: tuple[int, ...] = (), batch: int = 500, device="cpu", progress: bool = True) -> dict:
    """Every (sampler, steps) of ``grid`` on ``model`` (and diffusers peers at the same NFE), side by side with
    methods built on it; writes results.json, table.md, table.csv and quality_vs_nfe.png into ``out_dir``.

    ``extra_models`` {label: model or (model, grid)}: wrapped models (TP, DG, ...) run on ``grid`` or their
    own grid; their rows get ``ratio`` = quality / the unwrapped model's quality at the same sampler and steps.
    Grid items are (sampler, steps) or (sampler, steps, {generate options}) such as {"clip": True}.
    ``one_step`` {label: (fn, baseline)}: one-evaluation samplers such as DSNO, ``fn(x_T) -> x`` on the same
    noise; ``baseline`` (model label, sampler, steps) or None names the row their ratio is taken against
    (e.g. the teacher's, run as an extra model with its own grid).
    ``peer_nfe``: extra NFE budgets for the diffusers peers (e.g. DSNO's 1, 2, 4). Returns the results dict."""
    from .. import viz

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    grid = grid or default_grid()
    rows = []
    models = {"difflab": (model, grid)}
    for label, spec in (extra_models or {}).items():
        models[label] = spec if isinstance(spec, tuple) else (spec, grid)
    jobs = [(label, *item[:2], item[2] if len(item) > 2 else {}) for label, (_, g) in models.items() for item in g]
    if peers:
        budgets = {k for s, k, *_ in grid if SPECS[s].evals_per_step == 1 and 0 < k <= 100} | set(peer_nfe)
        jobs += [("diffusers", p, nfe, {}) for p in ("ddim", "dpmsolver++") for nfe in sorted(budgets, reverse=True)]
    jobs += [(label, "one-step", 1, {}) for label in (one_step or {})]
    it = jobs
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(jobs, desc="bench")
    for label, sampler, steps, opts in it:
        if label == "diffusers":
            try:
                g = torch.Generator(device).manual_seed(seed)
                import time

                t0 = time.perf_counter()
                xs = [diffusers_sample(model, (min(batch, n - i), *data_shape), sampler, steps, generator=g, device=device)
                      for i in range(0, n, batch)]
                res = {"x": torch.cat(xs).cpu(), "nfe": steps, "seconds": time.perf_counter() - t0}
            except DifflabError as e:
                rows.append({"model": "diffusers", "sampler": sampler, "steps": steps, "nfe": steps, "error": str(e)})
                continue
            name = f"diffusers {sampler}"
        elif sampler == "one-step":
            res = generate_one_step(one_step[label][0], data_shape, n, seed, batch, device)
            name = "one-step"
        else:
            res = generate(models[label][0], tuple(data_shape), sampler=sampler, steps=max(steps, 1), n=n, seed=seed,
                           batch=batch, device=device, **opts)
            name = row_name(sampler, opts)
        metrics = evaluate_samples(res["x"], data_name, data_dir=data_dir, seed=seed)
        rows.append({"model": label, "sampler": name, "steps": steps, "nfe": res["nfe"],
                     "seconds_per_sample": res["seconds"] / n, **{k: v for k, v in metrics.items() if _scalar(v)}})
    _add_ratios(rows, one_step or {})
    machine = f"{platform.machine()} {torch.get_num_threads()} threads" + (
        f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", CPU")
    result = {"data": data_name, "n_samples": n, "seed": seed, "machine": machine, "rows": rows}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    _write_tables(result, out)
    series = {}
    for r in rows:
        if "quality" in r and SPECS.get(r["sampler"], SPECS["ddim"]).evals_per_step is not None:
            if r["model"] in ("difflab", "diffusers"):
                key = r["sampler"]
            elif r["sampler"] == "one-step":  # one-step samplers: the method's name
                key = r["model"]
            else:
                key = f"{r['sampler']} [{r['model']}]"
            series.setdefault(key, ([], []))
            series[key][0].append(r["nfe"])
            series[key][1].append(r["quality"])
    qname = next((r.get("quality_name") for r in rows if "quality_name" in r), "quality")
    viz.save_curves({k: tuple(zip(*sorted(zip(*v)))) for k, v in series.items()}, out / "quality_vs_nfe.png", "NFE",
                    qname, title=f"{data_name}: {qname} vs NFE ({n} samples)", logx=True, logy=True)
    return result


def row_name(sampler: str, opts: dict) -> str:
    """A row's sampler column: the sampler and its scalar generate() options (e.g. 'ddim clip=True')."""
    return sampler + "".join(f" {k}={v}" for k, v in opts.items() if isinstance(v, (bool, int, float, str)))


def generate_one_step(fn, data_shape, n: int, seed: int = 0, batch: int = 500, device="cpu") -> dict:
    """n samples of a one-evaluation sampler ``fn(x_T) -> x`` from seeded standard-normal x_T."""
    import time

    g = torch.Generator(device).manual_seed(seed)
    xs, t0 = [], time.perf_counter()
    with torch.no_grad():
        for i in range(0, n, batch):
            x_T = torch.randn((min(batch, n - i), *data_shape), generator=g, device=device)
            xs.append(fn(x_T).cpu())
    return {"x": torch.cat(xs), "nfe": 1, "seconds": time.perf_counter() - t0}


def _add_ratios(rows: list[dict], one_step: dict) -> None:
    """Rows of a method built on the base model get ``ratio`` = quality / the base row's quality
    (one-step rows: / their named baseline row's)."""
    quality = {(r["model"], r["sampler"], r["steps"]): r["quality"] for r in rows if "quality" in r}
    for r in rows:
        if r["model"] in ("difflab", "diffusers") or "quality" not in r:
            continue
        if r["sampler"] == "one-step":
            ref = one_step.get(r["model"], (None, None))[1]
            if ref is None:
                continue
            key = tuple(ref)
            r["baseline"] = f"{key[0]} {key[1]}@{key[2]}"
        else:
            key = ("difflab", r["sampler"], r["steps"])
        if quality.get(key, 0) > 0:
            r["ratio"] = r["quality"] / quality[key]


def _scalar(v) -> bool:
    return isinstance(v, (int, float, str)) and not (isinstance(v, float) and math.isnan(v))


def _write_tables(result: dict, out: Path):
    rows = result["rows"]
    qname = next((r.get("quality_name") for r in rows if "quality_name" in r), "quality")
    floor = next((r["quality_floor"] for r in rows if "quality_floor" in r), None)
    note = ""
    if floor and result["data"].startswith("toy:"):
        note = f" (two independent true samples of this size score {floor:.4g}: smaller differences are noise)"
    elif floor:
        note = f" ({result['n_samples']} real test images score {floor:.4g}: the floor at this sample size)"
    lines = [f"{result['data']}: {qname}{note}; {result['n_samples']} samples per row; machine: {result['machine']}", "",
             f"| model | sampler | NFE | {qname} | ratio to base | s/sample |", "|---|---|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r.get("model", ""), r["sampler"], -r["nfe"])):
        q = f"{r['quality']:.4g}" if "quality" in r else r.get("error", "")
        ratio = f"{r['ratio']:.3f}" + (f" (vs {r['baseline']})" if "baseline" in r else "") if "ratio" in r else ""
        sps = f"{r['seconds_per_sample'] * 1e3:.2f} ms" if "seconds_per_sample" in r else ""
        lines.append(f"| {r['model']} | {r['sampler']} | {r['nfe']} | {q} | {ratio} | {sps} |")
    refs = [f"- {reference_line(m)}" for m in PAPER_FIDS if any(r["model"].startswith(m) for r in rows)]
    if refs:
        lines += ["", "ratio to base = this row's quality / the base model's at the same sampler and steps "
                  "(below 1: the method helps). The papers' reference ratios:", *refs]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    keys = sorted({k for r in rows for k in r})
    with open(out / "table.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
