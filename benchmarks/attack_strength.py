"""Attack strength: one grid's models under several attacks, seed by seed (is a row's robustness real?).

Robust accuracy under one attack is only an upper bound on the true robust accuracy; a model can look
robust to PGD on the cross-entropy because its softmax saturates and the input gradient underflows to
zero (gradient masking, Athalye, Carlini & Wagner 2018, "Obfuscated Gradients Give a False Sense of
Security", ICML).  This script pairs the cells of several ``eotransfer benchmark`` result folders that
share data, split, rows and seeds and differ only in ``robustness:`` (e.g. PGD on the cross-entropy,
PGD on Carlini & Wagner's margin, the gradient-free Square Attack) by row, labels per class and seed,
and writes, per row and labels per class:

- in how many seeds every folder scored the same model (equal clean accuracy; training is seeded, but
  adversarial fine-tuning's CPU runs do not always repeat to the last patch); the gaps are seed-paired
  either way;
- robust accuracy under each attack (mean and 95 % Student-t interval over seeds);
- the seed-paired difference of each attack to the first one, in points;
- the strongest attack per cell (the lowest robust accuracy: the tightest upper bound measured).

    .venv/bin/python benchmarks/attack_strength.py \\
        benchmarks/results/eurosat_robust_grid_eps0.01_cpu \\
        benchmarks/results/eurosat_robust_grid_eps0.01_margin_cpu \\
        benchmarks/results/eurosat_robust_grid_eps0.01_square_cpu \\
        --out benchmarks/results/attack_strength_eps0.01_cpu

Writes ``table.md``, ``table.csv`` and ``robust_by_attack.png`` under ``--out``, atomically.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np

from eotransfer.card import atomic_write_bytes, atomic_write_text
from eotransfer.evaluation.benchmark import interval95, method_label

Key = tuple[str, str, str, str, int]


def read_grid(folder: Path) -> tuple[str, dict[Key, dict[str, Any]]]:
    """The attack text and the cells with a robust accuracy of ``folder/results.csv``, by (row, k, seed)."""
    path = folder / "results.csv"
    if not path.is_file():
        raise SystemExit(f"{path}: missing; run the grid first (eotransfer benchmark CONFIG --out {folder})")
    cells: dict[Key, dict[str, Any]] = {}
    attacks = set()
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            if r.get("robust_accuracy", "") == "":
                continue
            attacks.add(r["attack"])
            cells[(r["strategy"], r["backbone"], r["init"], r["k"], int(r["seed"]))] = r
    if len(attacks) != 1:
        raise SystemExit(f"{path}: {len(attacks)} attacks in one grid ({sorted(attacks)}); give one per folder")
    return attacks.pop(), cells


def compare(folders: list[Path]) -> tuple[list[str], list[dict[str, Any]]]:
    """Per (row, k): robust accuracy under each folder's attack and the paired gaps to the first."""
    grids = [read_grid(f) for f in folders]
    # "pgd-10 margin, eps 0.01 reflectance" → "pgd-10 margin" when every folder has the same budget
    budgets = {a.partition(", ")[2] for a, _ in grids}
    names = [a.partition(", ")[0] if len(budgets) == 1 else a for a, _ in grids]
    if len(set(names)) < len(names):
        raise SystemExit(f"two folders ran the same attack ({names}): nothing to compare")
    common = set.intersection(*(set(c) for _, c in grids))
    if not common:
        raise SystemExit("no cell is in every folder: the grids share no row, k and seed")
    groups: dict[tuple[str, str, str, str], list[int]] = {}
    for s, b, i, k, seed in sorted(common):
        groups.setdefault((s, b, i, k), []).append(seed)
    out = []
    for (s, b, i, k), seeds in groups.items():
        per_attack = [np.array([float(c[(s, b, i, k, sd)]["robust_accuracy"]) for sd in seeds]) for _, c in grids]
        clean = np.array([float(grids[0][1][(s, b, i, k, sd)]["accuracy"]) for sd in seeds])
        same = sum(len({round(float(c[(s, b, i, k, sd)]["accuracy"]), 9) for _, c in grids}) == 1 for sd in seeds)
        row: dict[str, Any] = {"method": method_label((s, b, i)), "k": k, "seeds": len(seeds), "same_model": same,
                               "clean": interval95(clean.tolist())}  # fmt: skip
        for name, v in zip(names, per_attack, strict=True):
            row[name] = interval95(v.tolist())
        for name, v in zip(names[1:], per_attack[1:], strict=True):
            row[f"gap:{name}"] = interval95((100 * (v - per_attack[0])).tolist())
        row["strongest"] = interval95(np.min(per_attack, axis=0).tolist())
        out.append(row)
    return names, out


def _ci(t: tuple[float, float, float], digits: int = 3) -> str:
    mean, lo, hi = t
    return f"{mean:.{digits}f}" if not np.isfinite(lo) else f"{mean:.{digits}f} ± {(hi - lo) / 2:.{digits}f}"


def markdown(names: list[str], rows: list[dict[str, Any]]) -> str:
    head = [
        "method",
        "k",
        "same model",
        "clean (first)",
        *names,
        *(f"{n} − {names[0]} (points)" for n in names[1:]),
        "strongest",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"], r["k"], f"{r['same_model']}/{r['seeds']}", _ci(r["clean"]), *(_ci(r[n]) for n in names),
                 *(_ci(r[f"gap:{n}"], 1) for n in names[1:]), _ci(r["strongest"])]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table_csv(names: list[str], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    cols = ["clean", *names, *(f"gap:{n}" for n in names[1:]), "strongest"]
    w.writerow(["method", "k", "seeds", "same_model", *(f"{c}:{p}" for c in cols for p in ("mean", "low", "high"))])
    for r in rows:
        w.writerow([r["method"], r["k"], r["seeds"], r["same_model"], *(f"{x:.6g}" for c in cols for x in r[c])])
    return buf.getvalue()


def plot(names: list[str], rows: list[dict[str, Any]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 0.45 * len(rows) + 1.5))
    y = np.arange(len(rows))
    height = 0.8 / len(names)
    for j, n in enumerate(names):
        means = [r[n][0] for r in rows]
        errs = [(r[n][2] - r[n][1]) / 2 if np.isfinite(r[n][1]) else 0.0 for r in rows]
        ax.barh(y + j * height, means, height, xerr=errs, label=n, capsize=2)
    ax.set_yticks(y + 0.4 - height / 2, [f"{r['method']} k={r['k']}" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("robust accuracy (mean, 95 % interval over seeds)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="benchmark result folders; the first is the baseline attack")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if len(args.folders) < 2:
        ap.error("give at least two result folders to compare")
    names, rows = compare(args.folders)
    args.out.mkdir(parents=True, exist_ok=True)
    md = markdown(names, rows)
    atomic_write_text(args.out / "table.md", md)
    atomic_write_text(args.out / "table.csv", table_csv(names, rows))
    atomic_write_bytes(args.out / "robust_by_attack.png", plot(names, rows))
    sys.stdout.write(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
