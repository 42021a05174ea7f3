"""The bench's tables: every FID with its interval, floor and ratio, in both feature spaces, and the
pairs of rows that the two spaces order oppositely beyond their intervals."""
from __future__ import annotations

import csv
from pathlib import Path

from difflab.metrics.references import PAPER_FIDS, reference_line


def _n_text(n) -> str:
    return str(n) if isinstance(n, int) else "/".join(map(str, n))


def _iv(r: dict, pre: str = "") -> str:
    """'2.42 [2.31, 2.55]' for a row's FID in one feature space (or just the value)."""
    if pre + "fid" not in r:
        return ""
    if r.get(pre + "fid_lo") is None:
        return f"{r[pre + 'fid']:.3g}"
    return f"{r[pre + 'fid']:.3g} [{r[pre + 'fid_lo']:.3g}, {r[pre + 'fid_hi']:.3g}]"


def disagreements(rows: list[dict], a: str = "", b: str = "res_") -> list[tuple[int, int]]:
    """Pairs (i, j) of rows that the two feature spaces order oppositely, each beyond its intervals:
    space a puts i below j with disjoint intervals, space b puts j below i with disjoint intervals."""
    have = [i for i, r in enumerate(rows) if r.get(a + "fid_lo") is not None and r.get(b + "fid_lo") is not None]
    out = []
    for i in have:
        for j in have:
            ri, rj = rows[i], rows[j]
            if ri[a + "fid_hi"] < rj[a + "fid_lo"] and rj[b + "fid_hi"] < ri[b + "fid_lo"]:
                out.append((i, j))
    return out


def write_tables(result: dict, out: Path) -> None:
    """table.md (every FID with its interval, floor and ratio, both feature spaces, the rows they order
    oppositely) and table.csv of a bench result."""
    rows = sorted(result["rows"], key=lambda r: (r.get("model", ""), r["sampler"], -r["nfe"]))
    result["rows"] = rows
    qname = next((r.get("quality_name") for r in rows if "quality_name" in r), "quality")
    floor = next((r["quality_floor"] for r in rows if "quality_floor" in r), None)
    spaces = any("res_fid" in r for r in rows)
    intervals = any("fid_lo" in r for r in rows)
    seeds = result.get("seeds", 1)
    head = f"{result['data']}: {qname}; {_n_text(result['n_samples'])} samples per row"
    head += f", {seeds} seeds each" if seeds > 1 else ""
    lines = [f"{head}; machine: {result['machine']}", ""]
    if result.get("stack"):
        lines += ["Every row's model (the diffusers peers' too) is the stack " + " + ".join(result["stack"]) + ".", ""]
    if intervals:
        lines += [f"Every FID: the plug-in value, then its 95% interval "
                  f"({'Student t over the seeds' if seeds > 1 else 'basic bootstrap over the generated samples'}; "
                  "an interval for the distance itself, so it sits below the plug-in value by about FID's "
                  "finite-sample bias), the real-data floor at the row's n (that many real test images against "
                  "the same statistics) and the ratio FID / floor. Two rows whose intervals overlap are no "
                  "different.", ""]
        cols = ["#", "model", "sampler", "NFE", "n", "FID [95% CI]", "floor", "× floor"]
        if spaces:
            cols += ["FID (res) [95% CI]", "floor (res)", "× floor (res)"]
        cols += ["KID ± SE", "P / R", "ratio to base", "s/sample", "spaces disagree"]
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        clash = disagreements(rows) if spaces else []
        for i, r in enumerate(rows):
            if "quality" not in r:
                lines.append(f"| {i} | {r['model']} | {r['sampler']} | {r['nfe']} | | {r.get('error', '')} |")
                continue
            cells = [str(i), r["model"], r["sampler"], str(r["nfe"]), str(r.get("n", "")), _iv(r),
                     f"{r['fid_floor']:.3g}", f"{r['fid_ratio']:.2f}"]
            if spaces:
                cells += [_iv(r, "res_"), f"{r['res_fid_floor']:.3g}" if "res_fid_floor" in r else "",
                          f"{r['res_fid_ratio']:.2f}" if "res_fid_ratio" in r else ""]
            kid = f"{r['kid'] * 1e3:.2f} ± {r['kid_se'] * 1e3:.2f} e-3" if "kid_se" in r else ""
            pr = f"{r['precision']:.3f} / {r['recall']:.3f}" if "precision" in r else ""
            ratio = ""
            if "ratio" in r:
                ratio = f"{r['ratio']:.3f}"
                ratio += f" [{r['ratio_lo']:.2f}, {r['ratio_hi']:.2f}]" if "ratio_lo" in r else ""
                ratio += f" (vs {r['baseline']})" if "baseline" in r else ""
            sps = f"{r['seconds_per_sample'] * 1e3:.2f} ms" if "seconds_per_sample" in r else ""
            other = sorted({j for a, j in clash if a == i} | {a for a, j in clash if j == i})
            cells += [kid, pr, ratio, sps, ", ".join(f"#{j}" for j in other)]
            lines.append("| " + " | ".join(cells) + " |")
        if spaces:
            lines += ["", f"spaces disagree: the first feature space ({_space(rows, '')}) and the second "
                      f"({_space(rows, 'res_')}) order the two rows oppositely, each beyond its intervals "
                      f"({len(clash)} ordered pairs): such a ranking is not a finding."]
    else:
        note = ""
        if floor and result["data"].startswith("toy:"):
            note = f" (two independent true samples of this size score {floor:.4g}: smaller differences are noise)"
        elif floor:
            note = f" (as many real test images score {floor:.4g}: the floor at this sample size)"
        lines[0] = lines[0].replace(f"{qname};", f"{qname}{note};", 1)
        lines += [f"| model | sampler | NFE | {qname} | ratio to base | s/sample |", "|---|---|---:|---:|---:|---:|"]
        for r in rows:
            q = f"{r['quality']:.4g}" if "quality" in r else r.get("error", "")
            ratio = f"{r['ratio']:.3f}" + (f" (vs {r['baseline']})" if "baseline" in r else "") if "ratio" in r else ""
            sps = f"{r['seconds_per_sample'] * 1e3:.2f} ms" if "seconds_per_sample" in r else ""
            lines.append(f"| {r['model']} | {r['sampler']} | {r['nfe']} | {q} | {ratio} | {sps} |")
    refs = [f"- {reference_line(m)}" for m in PAPER_FIDS if any(r["model"].startswith(m) for r in rows)]
    if refs:
        lines += ["", "ratio to base = this row's quality / the base model's at the same sampler and steps "
                  "(below 1: the method helps; its interval, where shown, spans the extremes of the two FID "
                  "intervals: when it holds 1 the method made no difference). The papers' reference ratios:", *refs]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    keys = sorted({k for r in rows for k in r})
    with open(out / "table.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def _space(rows, pre):
    return next((r[pre + "feature_space"] for r in rows if pre + "feature_space" in r), "?")
