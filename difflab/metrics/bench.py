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

import functools
import json
import math
import platform
from pathlib import Path

import torch

from ..errors import DifflabError
from ..interop.peers import PEERS, diffusers_sample
from ..samplers.batched import generate
from ..samplers.registry import SPECS, get_spec
from .tables import _n_text, write_tables

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


SOLVER_NFE_LEVELS = (3, 4, 5, 6, 8, 10, 15, 20)
SOLVERS = ("dpmpp_2m", "dpmpp_3m", "dpmpp_2m_sde", "unipc", "edm_euler", "edm_heun", "ipndm")
SOLVER_GRIDS = ("auto", "power", "logsnr", "karras")


def solver_grid(nfe_levels=SOLVER_NFE_LEVELS, solvers=SOLVERS, spacings=SOLVER_GRIDS) -> list[tuple]:
    """The few-step table: every solver x time grid at every budget (the peers join at the same NFE)."""
    grid = []
    for nfe in nfe_levels:
        for s in solvers:
            steps = steps_for(s, nfe)
            if steps:
                grid += [(s, steps, {} if sp == "auto" else {"spacing": sp}) for sp in spacings]
    return grid


# ---------------------------------------------------------------------------- metrics by data
def evaluate_samples(x: torch.Tensor, data_name: str, *, data_dir=None, seed: int = 0, n_boot: int = 100) -> dict:
    """Metrics of samples ``x`` (N, ...) in [-1, 1] for data ``data_name``; keys include ``quality``
    (lower is better: FID or sliced W2), ``quality_floor`` (what real data score at this N) and
    ``feature_space``; for the MNIST family also the interval, floor and ratio in each feature space
    (:func:`mnist_family_metrics`)."""
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
        if tuple(x.shape[1:]) != (1, 28, 28):
            raise DifflabError(f"difflab's {name} evaluator takes (N, 1, 28, 28) images, got {tuple(x.shape[1:])}")
        return mnist_family_metrics(x, name, data_dir=data_dir, seed=seed, n_boot=n_boot)
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


# The feature spaces of the MNIST family, each with the prefix of its keys in a result row: the first
# (difflab-<data>, keys fid, kid, ...) and the independent residual network's (difflab-<data>-res, res_fid, ...).
SPACE_PREFIX = {"cnn": "", "res": "res_"}
FLOOR_MAX_N = 10000  # the test split's size: a floor at larger N uses all of it (and says so)


def mnist_family_metrics(x: torch.Tensor, name: str, *, data_dir=None, seed: int = 0, n_boot: int = 100) -> dict:
    """FID with its 95% interval, the real-data floor at the same N with its interval, the ratio to the
    floor, KID with its standard error, precision and recall, in every shipped feature space of the
    MNIST family (keys prefixed per :data:`SPACE_PREFIX`). ``quality`` is the first space's FID."""
    from .evaluator import available_kinds, evaluate_images

    out: dict = {}
    for kind in available_kinds(name):
        pre = SPACE_PREFIX[kind]
        m = evaluate_images(x, name, data_dir=data_dir, seed=seed, kind=kind, n_boot=n_boot)
        floor = _real_fid_floor(name, None if data_dir is None else str(data_dir), len(x), seed, kind, n_boot)
        keep = ("fid", "fid_lo", "fid_hi", "fid_debiased", "fid_se", "kid", "kid_std", "kid_se", "precision",
                "recall", "feature_space") + (("is", "is_std", "n_fake", "n_real") if kind == "cnn" else ())
        out.update({pre + k: m[k] for k in keep if k in m})
        out.update({pre + "fid_floor": floor["fid"], pre + "fid_floor_lo": floor.get("fid_lo"),
                    pre + "fid_floor_hi": floor.get("fid_hi"), pre + "fid_floor_n": floor["n"],
                    pre + "fid_ratio": m["fid"] / floor["fid"] if floor["fid"] > 0 else float("nan")})
    if "fid" not in out:
        raise DifflabError(f"no evaluator weights ship for {name!r}; see recipes/evaluator.md")
    return {**out, "quality": out["fid"], "quality_floor": out["fid_floor"],
            "quality_name": f"FID, {out['feature_space']} features"}


def compare_samples(a: torch.Tensor, b: torch.Tensor, data_name: str, *, data_dir=None, seed: int = 0,
                    n_boot: int = 200, paired: bool | None = None) -> dict:
    """Samples ``a`` against samples ``b`` of the same data, in every shipped feature space of the MNIST
    family: ratio and difference of their FIDs with paired-bootstrap 95% intervals (``paired``, by default
    when both have the same size, i.e. made from the same per-sample seeds), keys prefixed per
    :data:`SPACE_PREFIX`."""
    from .evaluator import available_kinds, compare_images

    name = data_name.strip().lower()
    if name not in MNIST_FAMILY:
        raise DifflabError(f"a paired FID comparison needs the MNIST family's evaluators; {data_name!r} has none")
    out: dict = {}
    for kind in available_kinds(name):
        c = compare_images(a, b, name, data_dir=data_dir, kind=kind, n_boot=n_boot, seed=seed, paired=paired)
        out.update({SPACE_PREFIX[kind] + k: v for k, v in c.items()})
    return out


@functools.lru_cache(maxsize=16)
def _real_fid_floor(name: str, data_dir: str | None, n: int, seed: int, kind: str = "cnn", n_boot: int = 100) -> dict:
    """FID is biased upwards at small N: what n real test images score against the training statistics
    (with its interval) is the floor a perfect sampler reaches at this N (once per data, n, seed, space).
    The test split has 10,000 images: at larger N the floor uses all of them (``n`` says how many)."""
    from ..data import load_dataset
    from .evaluator import evaluate_images

    test = load_dataset(name, data_dir=data_dir, split="test").x
    pick = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed + 7919))[:min(n, FLOOR_MAX_N)]
    m = evaluate_images(test[pick], name, data_dir=data_dir, seed=seed, kind=kind, n_boot=n_boot)
    return {"fid": m["fid"], "fid_lo": m.get("fid_lo"), "fid_hi": m.get("fid_hi"), "n": int(len(pick))}


# ---------------------------------------------------------------------------- the benchmark


MNIST_FAMILY = ("mnist", "fashion-mnist")


def default_n(data_name: str, nfe: int | None) -> int:
    """Samples per row when none is asked for: 10,000 for the MNIST family at up to 50 NFE (where FID's
    own bias and noise are small enough to rank the rows), 2,000 above (costly rows; they still print
    their n, floor and interval), 1,000 elsewhere."""
    if data_name.strip().lower() in MNIST_FAMILY:
        return 10000 if nfe is not None and nfe <= 50 else 2000
    return 1000


def _job_nfe(label, sampler, steps) -> int | None:
    if label == "diffusers" or sampler == "one-step":
        return steps
    spec = SPECS.get(sampler)
    return None if spec is None else spec.nfe(max(steps, 1))


def combine_seeds(per_seed: list[dict]) -> dict:
    """One row from K >= 2 independent seeds: the mean of every number, and for each FID the Student-t
    interval of the per-seed (debiased) estimates instead of one seed's bootstrap interval."""
    from .features import interval_over_seeds

    out = dict(per_seed[0])
    for k, v in per_seed[0].items():
        if isinstance(v, float) and all(isinstance(p.get(k), float) for p in per_seed):
            out[k] = float(sum(p[k] for p in per_seed) / len(per_seed))
    for pre in SPACE_PREFIX.values():
        if pre + "fid" in out:
            est = [p.get(pre + "fid_debiased", p[pre + "fid"]) for p in per_seed]
            _, lo, hi = interval_over_seeds(est)
            out[pre + "fid_lo"], out[pre + "fid_hi"] = max(0.0, lo), max(0.0, hi)
    return {**out, "seeds": len(per_seed)}


def run_bench(model, data_name: str, data_shape, out_dir, *, grid=None, n: int | None = None, seed: int = 0,
              data_dir=None, peers: bool = True, extra_models: dict | None = None, one_step: dict | None = None,
              peer_nfe: tuple[int, ...] = (), batch: int = 500, device="cpu", progress: bool = True, seeds: int = 1,
              n_boot: int = 100, stack: tuple[str, ...] | None = None) -> dict:
    """Every (sampler, steps) of ``grid`` on ``model`` (and diffusers peers at the same NFE), side by side with
    methods built on it; writes results.json, table.md, table.csv and quality_vs_nfe.png into ``out_dir``.

    ``extra_models`` {label: model or (model, grid)}: wrapped models (TP, DG, ...) run on ``grid`` or their
    own grid; their rows get ``ratio`` = quality / the unwrapped model's quality at the same sampler and steps.
    Grid items are (sampler, steps) or (sampler, steps, {generate options}) such as {"clip": True}.
    ``one_step`` {label: (fn, baseline)}: one-evaluation samplers such as DSNO, ``fn(x_T) -> x`` on the same
    noise; ``baseline`` (model label, sampler, steps) or None names the row their ratio is taken against
    (e.g. the teacher's, run as an extra model with its own grid).
    ``peer_nfe``: extra NFE budgets for the diffusers peers (e.g. DSNO's 1, 2, 4). ``n`` samples per row
    (default :func:`default_n` by the row's NFE); ``seeds`` independent sample sets per row (K >= 2:
    the FID interval is over seeds); ``n_boot`` bootstrap resamples of each FID interval. ``stack``: the
    parts of a :func:`difflab.compose.stack_on` stack ``model`` is (recorded with the results and shown in
    the tables' title). Returns the results dict."""
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
        jobs += [("diffusers", p, nfe, {}) for p in PEERS for nfe in sorted(budgets, reverse=True)]
    jobs += [(label, "one-step", 1, {}) for label in (one_step or {})]
    it = jobs
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(jobs, desc="bench")
    for label, sampler, steps, opts in it:
        rn = n or default_n(data_name, _job_nfe(label, sampler, steps))
        per_seed = []
        for k in range(max(1, seeds)):
            res = _draw(label, sampler, steps, opts, models, one_step, data_shape, rn, seed + k, batch, device)
            if "error" in res:
                break
            per_seed.append((res, evaluate_samples(res["x"], data_name, data_dir=data_dir, seed=seed + k,
                                                   n_boot=n_boot)))
        name = res.get("name", sampler)
        if not per_seed:
            rows.append({"model": label, "sampler": name, "steps": steps, "nfe": steps, "error": res["error"]})
            continue
        metrics = per_seed[0][1] if len(per_seed) == 1 else combine_seeds([m for _, m in per_seed])
        rows.append({"model": label, "sampler": name, "steps": steps, "nfe": per_seed[0][0]["nfe"], "n": rn,
                     "seconds_per_sample": sum(r["seconds"] for r, _ in per_seed) / (rn * len(per_seed)),
                     **{k: v for k, v in metrics.items() if _scalar(v)}})
    _add_ratios(rows, one_step or {})
    machine = f"{platform.machine()} {torch.get_num_threads()} threads" + (
        f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", CPU")
    ns = sorted({r["n"] for r in rows if "n" in r})
    result = {"data": data_name, "n_samples": n if n else (ns[0] if len(ns) == 1 else ns), "seed": seed,
              "seeds": max(1, seeds), "machine": machine, "rows": rows, **({"stack": list(stack)} if stack else {})}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    write_tables(result, out)
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
                    qname, title=f"{data_name}: {qname} vs NFE ({_n_text(result['n_samples'])} samples)",
                    logx=True, logy=True)
    return result


def _draw(label, sampler, steps, opts, models, one_step, data_shape, n, seed, batch, device) -> dict:
    """One row's samples: dict(x, nfe, seconds, name), or dict(error, name) when a peer is missing."""
    import time

    if label == "diffusers":
        from difflab.samplers.noise import PerSampleNoise, sample_seeds

        try:  # from the per-sample x_T of generate(): sample i of a peer row pairs with sample i of every other row
            t0 = time.perf_counter()
            xs = [diffusers_sample(models["difflab"][0], (min(batch, n - i), *data_shape), sampler, steps, device=device,
                                   x=PerSampleNoise(sample_seeds(seed, i, min(batch, n - i)), device).randn(
                                       (min(batch, n - i), *data_shape))) for i in range(0, n, batch)]
            return {"x": torch.cat(xs).cpu(), "nfe": steps, "seconds": time.perf_counter() - t0,
                    "name": f"diffusers {sampler}"}
        except DifflabError as e:
            return {"error": str(e), "name": sampler}
    if sampler == "one-step":
        return {**generate_one_step(one_step[label][0], data_shape, n, seed, batch, device), "name": "one-step"}
    res = generate(models[label][0], tuple(data_shape), sampler=sampler, steps=max(steps, 1), n=n, seed=seed,
                   batch=batch, device=device, **opts)
    return {**res, "name": row_name(sampler, opts)}


def row_name(sampler: str, opts: dict) -> str:
    """A row's sampler column: the sampler and its scalar generate() options (e.g. 'ddim clip=True')."""
    return sampler + "".join(f" {k}={v}" for k, v in opts.items() if isinstance(v, (bool, int, float, str)))


def generate_one_step(fn, data_shape, n: int, seed: int = 0, batch: int = 500, device="cpu") -> dict:
    """n samples of a one-evaluation sampler ``fn(x_T) -> x`` from the per-sample x_T of
    :func:`difflab.samplers.generate` (so sample i starts from the same noise as every other row's)."""
    import time

    from difflab.samplers.noise import PerSampleNoise, sample_seeds

    xs, t0 = [], time.perf_counter()
    with torch.no_grad():
        for i in range(0, n, batch):
            b = min(batch, n - i)
            xs.append(fn(PerSampleNoise(sample_seeds(seed, i, b), device).randn((b, *data_shape))).cpu())
    return {"x": torch.cat(xs), "nfe": 1, "seconds": time.perf_counter() - t0}


def _add_ratios(rows: list[dict], one_step: dict) -> None:
    """Rows of a method built on the base model get ``ratio`` = quality / the base row's quality
    (one-step rows: / their named baseline row's)."""
    quality = {(r["model"], r["sampler"], r["steps"]): r["quality"] for r in rows if "quality" in r}
    bounds = {(r["model"], r["sampler"], r["steps"]): (r["fid_lo"], r["fid_hi"]) for r in rows if "fid_lo" in r}
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
            base = bounds.get(key)
            if base and "fid_lo" in r and base[0] > 0:  # conservative: the extremes of the two intervals
                r["ratio_lo"], r["ratio_hi"] = r["fid_lo"] / base[1], r["fid_hi"] / base[0]


def _scalar(v) -> bool:
    return isinstance(v, (int, float, str)) and not (isinstance(v, float) and math.isnan(v))
