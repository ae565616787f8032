"""How well does ``advise --auto``'s cross-validation foresee the test side of a grid, by how its folds are drawn?

Reads the per-seed logs of ``advise_validation.py --auto`` runs (their ``results.json``: each seed's candidates
and their CV accuracies, the band-statistics reference's included) and looks each candidate up in the grid table
at the same labels per class and seed (the test side the advisor never saw).  Reported per run: the mean CV
accuracy minus the test accuracy (optimism), its mean absolute value, and how often the CV order of two
candidates of one seed matches their test order (pairwise concordance, ties on either side left out), over every
candidate and over the strategies alone (runs before ab00277 did not log the appended reference's CV accuracy).

    python benchmarks/cv_calibration.py --runs benchmarks/results/advise_validation_auto_fallback_reference_west_east \
        benchmarks/results/advise_validation_auto_spatial_cv_west_east --out benchmarks/results/cv_calibration
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from advise_validation import REFERENCE_KEY, read_table  # noqa: E402

#: strategies the advisor proposes only with weights that transfer (``recommend``): their seed's candidates are
#: pre-trained; a seed without them was ranked from scratch
PRETRAINED_ONLY = ("linear-probe", "progressive-unfreeze")


def parse_seed(line: str) -> tuple[int, dict[str, float], str]:
    """A per-seed log line: its seed, ``{candidate: CV accuracy}`` and how the folds were drawn."""
    seed = int(re.match(r"seed (\d+):", line).group(1))  # type: ignore[union-attr]
    m = re.search(r"CV: (.*?); probe", line)
    cv: dict[str, float] = {}
    if m:
        for part in m.group(1).split(", "):
            name, acc = part.rsplit(" ", 1)
            cv[name.replace(" (appended)", "")] = float(acc)
    if "; no CV (" in line:
        return seed, cv, "not cross-validated"
    folds = re.search(r"; (\d+ (?:folds of whole|stratified folds)[^;]*)", line)
    return seed, cv, folds.group(1) if folds else "3 stratified folds"  # runs before the folds were logged


def calibration(run: Path) -> list[dict[str, Any]]:
    """One row per grid and labels-per-class setting of ``run``, and one for the run as a whole."""
    out = []
    every: list[tuple[float, float]] = []
    pairs_all = [0, 0, 0, 0]
    for table in json.loads((run / "results.json").read_text()):
        rows = read_table(Path(table["meta"]["table"]))
        test = {(r["k"], r["seed"], r["strategy"], r["init"]): r["accuracy"] for r in rows}
        for row in table["rows"]:
            k = row["k"] if row["k"] == "all" else int(row["k"])
            diffs: list[tuple[float, float]] = []
            pairs = [0, 0, 0, 0]  # concordant, pairs; the same among the strategies (the reference left out)
            folds = set()
            for line in row["per_seed"]:
                seed, cv, how = parse_seed(line)
                folds.add(re.sub(r" \(\d+\)$", "", how))
                init = "pretrained" if any(s in cv for s in PRETRAINED_ONLY) else "scratch"
                got = []
                for name, acc in cv.items():
                    key = (k, seed, name, REFERENCE_KEY[1] if name == REFERENCE_KEY[0] else init)
                    if key in test:
                        got.append((acc, test[key], name == REFERENCE_KEY[0]))
                diffs += [(c, t) for c, t, _ in got]
                for (c1, t1, r1), (c2, t2, r2) in itertools.combinations(got, 2):
                    if c1 != c2 and t1 != t2:
                        hit = int((c1 > c2) == (t1 > t2))
                        pairs[0] += hit
                        pairs[1] += 1
                        if not (r1 or r2):
                            pairs[2] += hit
                            pairs[3] += 1
            every += diffs
            pairs_all = [a + b for a, b in zip(pairs_all, pairs, strict=True)]
            out.append(summary(f"{Path(table['meta']['data']).stem} k={row['k']}", diffs, pairs, folds))
    out.append(summary("all", every, pairs_all, set()))
    return out


def summary(name: str, diffs: list[tuple[float, float]], pairs: list[int], folds: set[str]) -> dict[str, Any]:
    d = np.array([c - t for c, t in diffs]) if diffs else np.zeros(0)
    return {"setting": name, "n": len(d), "folds": "; ".join(sorted(folds)),
            "optimism": float(d.mean()) if len(d) else None, "mae": float(np.abs(d).mean()) if len(d) else None,
            "concordant": pairs[0], "pairs": pairs[1], "concordant_strategies": pairs[2],
            "pairs_strategies": pairs[3]}  # fmt: skip


def markdown(results: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["# `advise --auto`'s CV accuracy against the grid's test side, by how the folds are drawn", "",
             "| run | setting | folds | candidates | CV − test (mean, points) | abs (points) | CV order = test order "
             "| the same, strategies only |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for run, rows in results.items():
        for r in rows:
            opt = "—" if r["optimism"] is None else f"{100 * r['optimism']:+.1f}"
            mae = "—" if r["mae"] is None else f"{100 * r['mae']:.1f}"
            conc = f"{r['concordant']} / {r['pairs']}" if r["pairs"] else "—"
            alone = f"{r['concordant_strategies']} / {r['pairs_strategies']}" if r["pairs_strategies"] else "—"
            lines.append(f"| `{run}` | {r['setting']} | {r['folds']} | {r['n']} | {opt} | {mae} | {conc} | {alone} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", nargs="+", type=Path, required=True, help="advise_validation.py --auto output folders")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    results = {run.name: calibration(run) for run in args.runs}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    (args.out / "results.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
