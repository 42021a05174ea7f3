"""The TP family's paired ratios to their base samplers against T, one panel per feature space, read from
the reported table of ``recipes/mnist-tp-family.md`` (the one place the figures live), so the plot cannot
drift from the table:

    python scripts/tp_family_plot.py recipes/mnist-tp-family.md --out docs/figures/mnist_tp_family_ratios.png

A row enters the plot when both ratio cells hold ``ratio [lo, hi]``; plain rows (ratio "—") do not.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

RATIO = re.compile(r"^\*{0,2}([0-9.]+) \[([0-9.]+), ([0-9.]+)\]\*{0,2}$")
SAMPLER = re.compile(r"^([a-z0-9_]+)@(\d+)(?:\s+`([^`]+)`)?")


def parse_ratio_rows(markdown: str, heading: str = "## Reported") -> list[dict]:
    """Rows (sampler, grid, steps, variant, ratio, lo, hi, res_ratio, res_lo, res_hi) of the first table
    under ``heading`` whose columns are: sampler@NFE, variant, FID, ratio, FID, ratio, ..."""
    text = markdown.split(heading, 1)[1] if heading in markdown else markdown
    rows, started = [], False
    for line in text.splitlines():
        if not line.startswith("|"):
            if started:
                break
            continue
        started = True
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        m = SAMPLER.match(cells[0]) if cells else None
        if m is None or len(cells) < 6:
            continue
        r1, r2 = RATIO.match(cells[3]), RATIO.match(cells[5])
        if r1 is None or r2 is None:
            continue
        variant = re.search(r"`([^`]+)`", cells[1])
        rows.append({"sampler": m.group(1), "steps": int(m.group(2)), "grid": m.group(3) or "auto",
                     "variant": variant.group(1) if variant else cells[1].split("(")[0].strip(),
                     "ratio": float(r1.group(1)), "lo": float(r1.group(2)), "hi": float(r1.group(3)),
                     "res_ratio": float(r2.group(1)), "res_lo": float(r2.group(2)), "res_hi": float(r2.group(3))})
    return rows


VARIANT_COLOR = {"--t-shift": "tab:blue", "--eps-scale": "tab:orange", "--time-shift": "tab:red",
                 "tuned": "tab:purple", "--tp": "tab:green"}
SAMPLER_STYLE = {"ddim": ("o", "-"), "dpmpp_2m": ("s", "--"), "dpmpp_3m": ("^", ":"), "ancestral": ("D", "-.")}


def style_of(row: dict) -> dict:
    """Colour by the variant's kind, marker and line by the sampler (hollow markers on a non-default grid)."""
    color = next((c for k, c in VARIANT_COLOR.items() if row["variant"].startswith(k)), "tab:gray")
    marker, ls = SAMPLER_STYLE.get(row["sampler"], ("x", "-"))
    style = {"color": color, "marker": marker, "ls": ls}
    if row["grid"] != "auto":
        style["mfc"] = "white"
    return style


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("recipe")
    p.add_argument("--out", required=True)
    p.add_argument("--heading", default="## Reported")
    args = p.parse_args(argv)
    from difflab.viz import save_ratio_panels

    rows = parse_ratio_rows(Path(args.recipe).read_text(), args.heading)
    if not rows:
        print(f"tp_family_plot: no ratio rows under {args.heading!r} in {args.recipe}", file=sys.stderr)
        return 2
    panels, styles = {"difflab-mnist": {}, "difflab-mnist-res": {}}, {}
    for r in rows:
        sampler = r["sampler"] + ("" if r["grid"] == "auto" else f" {r['grid']}")
        label = f"{sampler}, {r['variant']}"
        styles[label] = style_of(r)
        panels["difflab-mnist"].setdefault(label, []).append((r["steps"], r["ratio"], r["lo"], r["hi"]))
        panels["difflab-mnist-res"].setdefault(label, []).append((r["steps"], r["res_ratio"], r["res_lo"], r["res_hi"]))
    out = save_ratio_panels(panels, args.out, xlabel="T (steps)", ylabel="FID ratio to the plain sampler, paired 95%",
                            styles=styles)
    print(f"wrote {out}: {len(rows)} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
