"""The evidence page: several benchmark grids joined into one report (``eotransfer report DIR DIR ...``).

Each grid keeps its own page (``eotransfer report DIR``); this one answers the two questions that cut across
them. *Which strategy was measured where?* A coverage table of every registered strategy against the data
sets, naming the grids that carry it, and listing the strategies no grid on a data set carries. *Did transfer
pay?* For every grid and labels-per-class setting, the best pre-trained row against the two reference rows
of the same grid (same split, same seeds): the band-statistics reference (per-band mean, std and percentiles
with logistic regression) and fine-tuning from scratch, as seed-paired differences with 95 % Student-t
intervals. A transfer strategy that does not beat them is shown as such. Rows that adapt to the test side's
own images (``"@test"``: transductive) are marked and left out of "best".
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eotransfer.errors import ConfigError

TRANSDUCTIVE = "@test"
INTRO = ("Each grid keeps its own page (linked); this one answers two questions across them. Which strategy was "
         "measured where: every registered strategy against the data sets, with the grids that carry it. Did "
         "transfer pay: for every grid and labels-per-class setting, the best pre-trained row against the grid's "
         "own two reference rows (same split, same seeds): the band-statistics reference (per-band mean, std and "
         "percentiles with logistic regression) and training from scratch, as seed-paired differences with 95 % "
         "Student-t intervals. A transfer strategy that does not beat them is shown as such.")  # fmt: skip
SCRATCH_BASELINE = "finetune"
EVIDENCE_CSV_COLUMNS = ("family", "grid", "split", "k", "n_train", "reference", "scratch", "best_pretrained",
                        "best_pretrained_mean", "gap_reference", "gap_reference_low", "gap_reference_high",
                        "gap_scratch", "gap_scratch_low", "gap_scratch_high", "pretrained_rows",
                        "pretrained_rows_above_reference")  # fmt: skip


@dataclass
class Grid:
    """One benchmark output folder: its finished rows, its ``benchmark.json`` and the data set it belongs to."""

    folder: Path
    rows: list[dict[str, Any]]
    meta: dict[str, Any]

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def family(self) -> str:
        """The data set, named by the grid's data path (``../shared/data/xbd`` → ``xbd``), else its rows' name."""
        data = (self.meta.get("config") or {}).get("data")
        if data:
            return Path(str(data)).name.removesuffix(".npz")
        return str(self.rows[0]["data"])

    @property
    def split(self) -> str:
        split = (self.meta.get("config") or {}).get("split") or {}
        kind = str(split.get("kind") or self.rows[0].get("split", "?"))
        blocks = split.get("test_blocks")
        return f"{kind}, test {blocks}" if blocks else kind

    def transductive_labels(self) -> set[str]:
        """Strategy labels whose parameters name the test side's images (``"@test"``)."""
        out = set()
        for s in (self.meta.get("config") or {}).get("strategies") or []:
            if any(v == TRANSDUCTIVE for v in (s.get("params") or {}).values()):
                out.add(str(s.get("label") or s.get("name")))
        return out


def grid_subfolders(folder: Path) -> list[Path]:
    """The benchmark folders inside ``folder`` (subfolders holding ``results.csv`` and ``benchmark.json``), by name."""
    from eotransfer.evaluation.benchmark import BENCHMARK_JSON, RESULTS_CSV

    if not folder.is_dir():
        return []
    return sorted(d for d in folder.iterdir() if (d / RESULTS_CSV).is_file() and (d / BENCHMARK_JSON).is_file())


def benchmark_folders(paths: Sequence[str | Path]) -> list[Path]:
    """Each path is a benchmark folder (``results.csv``) or a folder of them (:func:`grid_subfolders`)."""
    from eotransfer.evaluation.benchmark import RESULTS_CSV

    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        subs = [p] if (p / RESULTS_CSV).is_file() else grid_subfolders(p)
        if not subs:
            raise ConfigError(f"report: {p} is neither a benchmark output folder (with {RESULTS_CSV}) nor a folder "
                              "of them; pass folders given to `eotransfer benchmark --out`")  # fmt: skip
        out.extend(subs)
    return list(dict.fromkeys(out))


def load_grid(folder: Path) -> Grid:
    """One benchmark folder's finished rows and ``benchmark.json`` (empty where absent); refuses a grid with none."""
    from eotransfer.evaluation.benchmark import BENCHMARK_JSON, RESULTS_CSV, read_results

    rows = read_results(folder / RESULTS_CSV)
    if not rows:
        raise ConfigError(f"report: {folder / RESULTS_CSV} holds no finished cell yet; run the benchmark first")
    meta_path = folder / BENCHMARK_JSON
    return Grid(folder, rows, json.loads(meta_path.read_text()) if meta_path.is_file() else {})


def load_grids(folders: Sequence[Path]) -> list[Grid]:
    return [load_grid(f) for f in folders]


# -- coverage ----------------------------------------------------------------------------------------------------------
def coverage(grids: Sequence[Grid]) -> tuple[list[str], dict[str, dict[str, list[str]]]]:
    """``(families, {registered strategy: {family: [grid names carrying it]}})``."""
    from eotransfer.strategies.base import STRATEGIES

    STRATEGIES._load()
    families = list(dict.fromkeys(g.family for g in grids))
    table: dict[str, dict[str, list[str]]] = {name: {f: [] for f in families} for name in sorted(STRATEGIES)}
    for g in grids:
        for name in dict.fromkeys(str(r.get("strategy_name") or "") for r in g.rows):
            if name in table:
                table[name][g.family].append(g.name)
    return families, table


# -- transfer against the two references -------------------------------------------------------------------------------
def _by_seed(rows: list[dict[str, Any]]) -> dict[int, float]:
    """Mean accuracy per seed (one row per seed in a grid; averaged should a seed repeat)."""
    acc: dict[int, list[float]] = {}
    for r in rows:
        acc.setdefault(int(r["seed"]), []).append(float(r["accuracy"]))
    return {s: float(np.mean(v)) for s, v in acc.items()}


def paired_gap(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> tuple[float, float, float, int]:
    """Seed-paired difference ``a − b`` in accuracy points: mean, 95 % interval (low, high), pairs."""
    from eotransfer.evaluation.benchmark import interval95

    sa, sb = _by_seed(a), _by_seed(b)
    diffs = [100.0 * (sa[s] - sb[s]) for s in sorted(set(sa) & set(sb))]
    if not diffs:
        return float("nan"), float("nan"), float("nan"), 0
    mean, lo, hi = interval95(diffs)
    return mean, lo, hi, len(diffs)


def gap_text(mean: float, lo: float, hi: float) -> str:
    """``"+3.2 ± 1.5 (above)"``; the verdict says whether the 95 % interval excludes zero."""
    if not np.isfinite(mean):
        return "—"
    if not np.isfinite(lo):
        return f"{mean:+.1f} (1 seed)"
    verdict = "above" if lo > 0 else "below" if hi < 0 else "level"
    return f"{mean:+.1f} ± {(hi - lo) / 2:.1f} ({verdict})"


def comparisons(grid: Grid) -> list[dict[str, Any]]:
    """Per k: the reference, fine-tuning from scratch (else the best from-scratch row), the best inductive
    pre-trained row, and the seed-paired gaps of that row to both references."""
    from eotransfer.evaluation.benchmark import NO_MODEL, REFERENCE, method_label, method_of

    transductive = grid.transductive_labels()
    ks = sorted(dict.fromkeys(r["k"] for r in grid.rows),
                key=lambda k: np.mean([r["n_train"] for r in grid.rows if r["k"] == k]))  # fmt: skip
    out = []
    for k in ks:
        at_k = [r for r in grid.rows if r["k"] == k]
        by_method: dict[Any, list[dict[str, Any]]] = {}
        for r in at_k:
            if r["strategy"] not in transductive:
                by_method.setdefault(method_of(r), []).append(r)

        def mean(m: Any, by_method: dict[Any, list[dict[str, Any]]] = by_method) -> float:
            return float(np.mean([r["accuracy"] for r in by_method[m]]))

        ref = next((m for m in by_method if m[0] == REFERENCE and m[2] == NO_MODEL), None)
        scratch_rows = [m for m in by_method if m[2] == "scratch"]
        plain = [m for m in scratch_rows if m[0] == SCRATCH_BASELINE]
        scratch = max(plain or scratch_rows, key=mean, default=None)
        pretrained = [m for m in by_method if m[2] not in ("scratch", NO_MODEL)]
        best = max(pretrained, key=mean, default=None)
        rec: dict[str, Any] = {"family": grid.family, "grid": grid.name, "split": grid.split, "k": k,
                               "n_train": float(np.mean([r["n_train"] for r in at_k])),
                               "reference": ref, "scratch": scratch, "best": best, "means": {},
                               "pretrained_rows": len(pretrained), "pretrained_rows_above_reference": 0}  # fmt: skip
        for m in (ref, scratch, best):
            if m is not None:
                rec["means"][m] = mean(m)
        for m, key in ((ref, "gap_reference"), (scratch, "gap_scratch")):
            g = paired_gap(by_method[best], by_method[m]) if best is not None and m is not None else (np.nan,) * 3
            rec[key], rec[f"{key}_low"], rec[f"{key}_high"] = g[:3]
        if ref is not None:
            rec["pretrained_rows_above_reference"] = sum(
                paired_gap(by_method[m], by_method[ref])[1] > 0 for m in pretrained
            )
        rec["labels"] = {m: method_label(m) for m in (ref, scratch, best) if m is not None}
        out.append(rec)
    return out


def _grid_link(name: str, links: dict[str, str]) -> str:
    """The grid's name, as a link to its own report where it has one (HTML)."""
    link = links.get(name)
    return f"<a href='{html.escape(link)}'>{html.escape(name)}</a>" if link else html.escape(name)


def _cell(rec: dict[str, Any], which: str) -> str:
    m = rec[which]
    return "—" if m is None else f"{rec['labels'][m]}: {rec['means'][m]:.3f}"


def comparison_table(recs: list[dict[str, Any]], links: dict[str, str]) -> str:
    from eotransfer.evaluation.report import html_table

    header = ["grid", "split", "labels/class (labelled samples)", "band-stats+LR reference",
              "training from scratch", "best pre-trained row (inductive)", "best pre-trained − reference, points",
              "best pre-trained − scratch, points", "pre-trained rows above the reference"]  # fmt: skip
    body = []
    for rec in recs:
        body.append([_grid_link(rec["grid"], links), rec["split"], f"{rec['k']} ({rec['n_train']:.0f})", _cell(rec, "reference"),
                     _cell(rec, "scratch"), _cell(rec, "best") if rec["best"] else "— (no pre-trained row)",
                     gap_text(rec["gap_reference"], rec["gap_reference_low"], rec["gap_reference_high"]),
                     gap_text(rec["gap_scratch"], rec["gap_scratch_low"], rec["gap_scratch_high"]),
                     f"{rec['pretrained_rows_above_reference']} of {rec['pretrained_rows']}"])  # fmt: skip
    return html_table(header, body, escape_first=False)


def gap_figure(recs: list[dict[str, Any]], family: str) -> bytes:
    """Best pre-trained row minus each reference (points, seed-paired 95 % interval) against labelled samples."""
    from eotransfer.evaluation.report import _plt, _png

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.2, 4.2), dpi=90)
    ax.axhline(0.0, color="0.3", lw=1)
    for grid in dict.fromkeys(r["grid"] for r in recs):
        pts = sorted((r["n_train"], r) for r in recs if r["grid"] == grid and r["best"] is not None)
        if not pts:
            continue
        xs = np.array([p[0] for p in pts])
        line = None
        for key, ls, what in (("gap_reference", "-", "vs. reference"), ("gap_scratch", ":", "vs. scratch")):
            ys = np.array([p[1][key] for p in pts], dtype=np.float64)
            err = np.array([(p[1][f"{key}_high"] - p[1][f"{key}_low"]) / 2 for p in pts], dtype=np.float64)
            if not np.isfinite(ys).any():
                continue
            kw: dict[str, Any] = {"color": line.get_color()} if line is not None else {}
            bars = ax.errorbar(xs, ys, yerr=np.nan_to_num(err), ls=ls, marker="o", ms=4, capsize=2,
                               label=f"{grid} {what}", **kw)  # fmt: skip
            line = bars.lines[0]
    ax.set_xscale("log")
    ax.set_xlabel("labelled training samples (log scale)")
    ax.set_ylabel("best pre-trained − reference (points)")
    ax.set_title(f"{family}: does transfer beat the two references? (seed-paired, 95 % interval)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6, loc="best")
    fig.tight_layout()
    png: bytes = _png(fig)
    return png


def evidence_csv(recs: list[dict[str, Any]]) -> str:
    """The comparison as a tidy table (one line per grid and k)."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(EVIDENCE_CSV_COLUMNS)
    for r in recs:
        label, means = r["labels"], r["means"]
        w.writerow([r["family"], r["grid"], r["split"], r["k"], f"{r['n_train']:.0f}",
                    label.get(r["reference"], ""), label.get(r["scratch"], ""), label.get(r["best"], ""),
                    f"{means[r['best']]:.4f}" if r["best"] else "",
                    *(f"{r[k]:.2f}" if np.isfinite(r[k]) else "" for k in EVIDENCE_CSV_COLUMNS[9:15]),
                    r["pretrained_rows"], r["pretrained_rows_above_reference"]])  # fmt: skip
    return buf.getvalue()


def evidence_sections(folders: Sequence[Path], out: Path) -> tuple[str, list[Any], str]:
    """Title, sections and the tidy comparison CSV of the evidence page over ``folders``, written as ``out``."""
    from eotransfer.evaluation.report import Figure, Section, _safe, html_table, note
    from eotransfer.strategies.base import STRATEGIES

    grids = load_grids(folders)
    families, cov = coverage(grids)
    links = {}
    for g in grids:
        if (g.folder / "report.html").is_file():
            links[g.name] = os.path.relpath(g.folder / "report.html", out.parent)
    intro = Section("What this page joins", f"<p>{html.escape(INTRO)}</p>")
    intro.body += html_table(["grid", "data set", "split", "labels/class", "seeds", "cells", "source"], [
        [_grid_link(g.name, links),
         g.family, g.split, ", ".join(str(k) for k in dict.fromkeys(r["k"] for r in g.rows)),
         str(len({r["seed"] for r in g.rows})), str(len(g.rows)), str(g.meta.get("source", "—"))]
        for g in grids], escape_first=False)  # fmt: skip
    covered = Section("Strategy coverage: which grids measured each registered strategy")
    rows = [[f"{name} — {getattr(STRATEGIES[name], 'summary', '')}",
             *[", ".join(cov[name][f]) or "—" for f in families]] for name in cov]  # fmt: skip
    covered.body += html_table(["strategy", *families], rows)
    for f in families:
        missing = [name for name in cov if not cov[name][f]]
        n_classes = {len(g.meta["classes"]) for g in grids if g.family == f and g.meta.get("classes")}
        what = f"{f} ({'/'.join(str(n) for n in sorted(n_classes))} classes)" if n_classes else f
        covered.body += note(f"{what}: no grid here carries " + ", ".join(missing)) if missing else \
            f"<p>{html.escape(what)}: every registered strategy is in at least one grid.</p>"  # fmt: skip
    recs = [rec for g in grids for rec in comparisons(g)]
    paid = Section("Transfer against the two references, grid by grid",
                   "<p>Each grid's own reference rows: same split, same seeds. Gaps are seed-paired differences in "
                   "accuracy points with their 95 % Student-t interval; <em>above</em> or <em>below</em> when the "
                   "interval excludes zero, else <em>level</em>. Training from scratch is plain fine-tuning from a "
                   "random initialisation where the grid has it, else its best from-scratch row. "
                   f"Rows that adapt to the test side's own images ({TRANSDUCTIVE}) are left out here.</p>")  # fmt: skip
    for f in families:
        sub = [r for r in recs if r["family"] == f]
        paid.body += f"<h3>{html.escape(f)}</h3>" + comparison_table(sub, links)
        below = [r for r in sub if r["best"] is not None and r["gap_reference_high"] < 0]
        level = [r for r in sub if r["best"] is not None and r["gap_reference_low"] <= 0 <= r["gap_reference_high"]]
        paid.body += (f"<p>{html.escape(f)}: the best pre-trained row is below the band-statistics reference in "
                      f"{len(below)} and level with it in {len(level)} of "
                      f"{sum(r['best'] is not None for r in sub)} settings.</p>")  # fmt: skip
        if any(r["best"] is not None for r in sub):
            paid.figures.append(Figure(f"transfer_gap_{_safe(f)}", gap_figure(sub, f),
                                       f"{f}: best pre-trained row minus the references, per grid"))  # fmt: skip
    title = f"eotransfer evidence: {len(grids)} benchmark grids on {', '.join(families)}"
    return title, [intro, covered, paid], evidence_csv(recs)
