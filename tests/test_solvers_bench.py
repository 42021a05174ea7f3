"""benchmarks/solvers_mnist.py's own pieces: the row parser's one-line errors, k-diffusion rows paired with
difflab's per-sample x_T (sample i does not depend on the batch), and the FID-vs-NFE plot; and
benchmarks/solvers_toy.py's summary over seeds."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import solvers_mnist  # noqa: E402

from difflab.models import exact_mixture_model  # noqa: E402
from difflab.process import GaussianDiffusion, linear_betas, ring_mixture  # noqa: E402


def test_rows_parse_and_bad_rows_name_the_value():
    assert solvers_mnist.parse_rows("dpmpp_3m:auto, unipc ,ipndm:logsnr,dpmpp_3m:power:0.8") == [
        ("dpmpp_3m", "auto"), ("unipc", "auto"), ("ipndm", "logsnr"), ("dpmpp_3m", "power:0.8")]
    with pytest.raises(SystemExit, match="unknown sampler 'nope'"):
        solvers_mnist.parse_rows("nope:auto")
    with pytest.raises(SystemExit, match="unknown grid spacing 'sideways'.*logsnr"):
        solvers_mnist.parse_rows("unipc:sideways")
    with pytest.raises(SystemExit, match="grid exponent 'zero'"):
        solvers_mnist.parse_rows("unipc:power:zero")


def test_kdiffusion_rows_pair_sample_by_sample():
    from difflab.errors import DifflabError
    from difflab.interop.peers import load_kdiffusion_sampling

    try:
        load_kdiffusion_sampling()
    except DifflabError as e:
        pytest.skip(str(e))
    model = exact_mixture_model(ring_mixture(8, radius=2.0, std=0.3), GaussianDiffusion(linear_betas(1000)).schedule)
    a = solvers_mnist.kdiffusion_rows(model, (2,), "dpmpp_2m", 5, n=10, seed=3, batch=3)["x"]
    b = solvers_mnist.kdiffusion_rows(model, (2,), "dpmpp_2m", 5, n=10, seed=3, batch=8)["x"]
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    c = solvers_mnist.kdiffusion_rows(model, (2,), "dpmpp_2m", 5, n=10, seed=4, batch=8)["x"]
    assert float((a - c).abs().min()) > 0  # another seed, other samples


def test_plot_draws_one_line_per_row(tmp_path):
    rows = [{"nfe": k, "row": r, "fid": f, "fid_floor": 0.26, "n": 2000, "feature_space": "difflab-mnist"}
            for r, fs in (("a", (2.0, 1.0)), ("b", (3.0, 1.5))) for k, f in zip((5, 10), fs)]
    path = solvers_mnist.plot_rows(rows, tmp_path / "p.png", "m")
    assert Path(path).stat().st_size > 1000


def test_plot_only_from_earlier_rows(tmp_path):
    import json

    rows = [{"nfe": n, "row": r, "fid": f, "fid_floor": 0.1, "n": 10000, "feature_space": "difflab-mnist"}
            for n, r, f in ((5, "a", 2.0), (10, "a", 1.0), (5, "b", 2.5))]
    (tmp_path / "r.json").write_text(json.dumps({"rows": rows}))
    assert solvers_mnist.main(["m", "--nfe", "", "--merge", str(tmp_path / "r.json"), "--plot", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").stat().st_size > 1000
    with pytest.raises(SystemExit, match="--nfe '' runs nothing"):
        solvers_mnist.main(["m", "--nfe", ""])


def test_toy_summary_pairs_each_row_with_its_own_seeds_floor():
    import numpy as np
    from scipy.stats import t as student_t

    import solvers_toy

    floors = [0.05, 0.07, 0.04]
    vals = [0.06, 0.075, 0.041]
    rows = [{"kind": "ref", "sampler": "floor", "grid": "", "budget": 0, "sliced_w2": f, "seed": s}
            for s, f in enumerate(floors)]
    rows += [{"kind": "difflab", "sampler": "ipndm", "grid": "power:3", "budget": 10, "nfe": 10 - (s == 1),
              "sliced_w2": v, "seed": s, "to_ode": 0.01 * s} for s, v in enumerate(vals)]
    s = solvers_toy.summarise(rows, 3)[("ipndm", "power:3", 10)]
    d = np.subtract(vals, floors)
    half = student_t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    assert s["mean"] == pytest.approx(np.mean(vals)) and s["to_ode"] == pytest.approx(0.01) and s["nfe"] == 10
    assert (s["d_lo"], s["d_hi"]) == pytest.approx((d.mean() - half, d.mean() + half))
    one = solvers_toy.summarise(rows[:1] + rows[3:4], 1)[("ipndm", "power:3", 10)]
    assert "lo" not in one and one["minus_floor"] == pytest.approx(0.01)
