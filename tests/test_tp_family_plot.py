"""scripts/tp_family_plot.py reads the TP family's reported table, so the plot cannot drift from it."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

TABLE = """intro
## Reported: n = 10,000

| sampler @ NFE | variant | FID | ratio | FID | ratio | p / r |
|---|---|---:|---:|---:|---:|---:|
| ddim@10 | plain | 1.933 [1.762, 1.995] | — | 2.716 [2.379, 3.025] | — | 0.689 / 0.864 |
| ddim@10 | `--t-shift -0.01` | 1.685 [1.520, 1.739] | **0.871 [0.853, 0.880]** | 2.391 | **0.880 [0.864, 0.893]** | 0.684 / 0.869 |
| dpmpp_3m@10 `power:0.8` (best solver) | `--eps-scale 0.995` | 0.805 | 1.020 [0.978, 1.061] | 0.728 | **0.855 [0.775, 0.891]** | — |
| dpmpp_3m@20 (trailing) | tuned times (a note) | 0.9 | 0.951 [0.907, 0.988] | 0.95 | 1.115 [1.062, 1.205] | — |

| ddim@5 | `--t-shift -0.01` | 3.9 | 0.770 [0.756, 0.778] | 5.8 | 0.903 [0.892, 0.913] | — |
"""


def test_the_ratio_rows_are_read_with_their_sampler_grid_steps_and_variant():
    from tp_family_plot import parse_ratio_rows

    rows = parse_ratio_rows(TABLE)
    assert [(r["sampler"], r["grid"], r["steps"], r["variant"]) for r in rows] == [
        ("ddim", "auto", 10, "--t-shift -0.01"), ("dpmpp_3m", "power:0.8", 10, "--eps-scale 0.995"),
        ("dpmpp_3m", "auto", 20, "tuned times")]  # the plain row has no ratio; the table ends at the blank line
    assert rows[0]["ratio"] == 0.871 and rows[0]["lo"] == 0.853 and rows[0]["res_hi"] == 0.893
    assert rows[2]["res_ratio"] == pytest.approx(1.115)


def test_the_plot_is_written_from_the_shipped_recipe(tmp_path):
    from tp_family_plot import main, parse_ratio_rows

    rows = parse_ratio_rows((ROOT / "recipes" / "mnist-tp-family.md").read_text())
    assert len(rows) >= 10 and all(r["lo"] <= r["hi"] and r["res_lo"] <= r["res_hi"] for r in rows)
    assert main([str(ROOT / "recipes" / "mnist-tp-family.md"), "--out", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").stat().st_size > 10_000
