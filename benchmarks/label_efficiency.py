"""Label efficiency on EuroSAT-MS: overall accuracy against the number of labels per class.

``linear-probe`` and ``finetune`` (resnet18, no pre-trained weights: from scratch) at 1, 5 and 10
labels per class and with all labels (stratified split, 30 % test), several seeds each, beside
the two reference rows on the same splits and seeds: per-band statistics + logistic regression,
and training from scratch (the finetune-from-scratch row).  Mean ± 95 % interval (Student's t).

    .venv/bin/python benchmarks/label_efficiency.py [--data PATH] [--seeds 5] [--out benchmarks/results]

Writes ``label_efficiency.csv`` (one row per fit), ``label_efficiency.md`` (table, command,
machine, minutes) and ``label_efficiency.png`` (the curve, log-scaled labels) under ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eotransfer.api import fit
from eotransfer.card import atomic_write_text
from eotransfer.data.base import open_dataset
from eotransfer.demo import _plot, _reference_band_stats, _summarise, _table

REPO = Path(__file__).resolve().parents[1]
BACKBONE = "resnet18"
WEIGHTS = None  # from scratch: no EO weights offline
STRATEGIES: dict[str, dict[str, Any]] = {  # the demo's parameters
    "linear-probe": {"epochs": 100},
    "finetune": {"head_epochs": 30, "epochs": 8, "patience": 4},
}
METHODS = {  # the demo's row names
    "linear-probe": f"linear-probe ({BACKBONE}, random init: no EO weights offline)",
    "finetune": f"finetune ({BACKBONE} from scratch = scratch reference)",
}
BAND_STATS = "band statistics + logistic regression (reference)"
LABELS: tuple[int | str, ...] = (1, 5, 10, "all")
TEST_FRACTION = 0.3


def split_options(labels: int | str) -> dict[str, Any]:
    """``fit`` options giving the split of one column of the table."""
    if labels == "all":
        return {"split": "stratified", "test_fraction": TEST_FRACTION}
    assert isinstance(labels, int)
    return {"labels_per_class": labels, "val_per_class": 1 if labels >= 5 else 0}


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def verdict(rows: list[dict[str, Any]], summary: list[dict[str, Any]], columns: dict[float, str]) -> str:
    """Which method wins: per column the best mean, whether its 95 % interval clears the runner-up's,
    and in how many seeds it beat the runner-up on the same split (a paired count)."""

    def disjoint(a: dict[str, Any], b: dict[str, Any]) -> bool:
        lo, hi = sorted((a, b), key=lambda s: s["mean"])
        return bool(hi["mean"] - hi["ci95"] > lo["mean"] + lo["ci95"])

    def short(method: str) -> str:
        return method.split(" (")[0]

    def seed_wins(x: float, m1: str, m2: str) -> str:
        acc = {(r["method"], r["seed"]): r["overall_accuracy"] for r in rows if r["labels_per_class"] == x}
        seeds = sorted({s for _, s in acc})
        return f"{sum(acc[m1, s] > acc[m2, s] for s in seeds)}/{len(seeds)} seeds"

    parts, best_methods, clear = [], set(), []
    for x, name in columns.items():
        col = sorted((s for s in summary if s["labels_per_class"] == x), key=lambda s: -s["mean"])
        best, second = col[0], col[1]
        best_methods.add(best["method"])
        if disjoint(best, second):
            clear.append(name)
        parts.append(
            f"{name}: {short(best['method'])} {best['mean']:.3f} vs {short(second['method'])} {second['mean']:.3f}, "
            f"{'intervals disjoint' if disjoint(best, second) else 'intervals overlap'}, higher in "
            f"{seed_wins(x, best['method'], second['method'])}"
        )
    if len(best_methods) == 1:
        winner = next(iter(best_methods))
        head = f"{short(winner)} has the best mean in every column"
        head += "." if not clear else f"; its 95 % interval is disjoint from the runner-up's at {', '.join(clear)}."
        if winner == BAND_STATS:
            head += (
                f" Neither network strategy, with a {BACKBONE} that has no pre-trained weights, beats per-band "
                "spectra on this data."
            )
    else:
        head = "The best method depends on the number of labels."
    lp = [s for s in summary if s["method"] == METHODS["linear-probe"]]
    ft = [s for s in summary if s["method"] == METHODS["finetune"]]
    nets_differ = [columns[a["labels_per_class"]] for a, b in zip(lp, ft, strict=True) if disjoint(a, b)]
    nets = (
        "Linear-probe and finetune from scratch differ significantly only at: " + ", ".join(nets_differ) + "."
        if nets_differ
        else "Linear-probe and finetune from scratch cannot be told apart (intervals overlap in every column)."
    )
    return f"{head} {nets} Per column: " + "; ".join(parts) + "."


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(REPO / "../shared/data/eurosat-ms"), help="EuroSAT-MS class folders")
    ap.add_argument("--seeds", type=int, default=5, help="seeds per cell (default 5)")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results"), help="output folder")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = open_dataset(Path(args.data).resolve(), bands="eurosat-ms")
    n_classes = len(ds.classes)
    print(
        f"EuroSAT-MS: {len(ds)} patches, {n_classes} classes, {len(ds.bands)} bands ({Path(args.data).resolve()})",
        flush=True,
    )

    rows: list[dict[str, Any]] = []
    common: dict[str, Any] = {"backbone": BACKBONE, "weights": WEIGHTS, "progress": False, "verbose": False}
    for labels in LABELS:
        for seed in range(args.seeds):
            split = None
            for strategy, params in STRATEGIES.items():
                r = fit(ds, strategy=strategy, seed=seed, **split_options(labels), **common, **params)
                if split is not None:  # every method of a (labels, seed) cell sees the same split
                    assert all(np.array_equal(getattr(split, a), getattr(r.split, a)) for a in ("train", "val", "test"))
                split = r.split
                rows.append(
                    {
                        "method": METHODS[strategy],
                        "strategy": strategy,
                        "labels": labels,
                        # numeric x of the column: k, or the mean training labels per class of the full split
                        "labels_per_class": labels if labels != "all" else len(split.train) / n_classes,
                        "seed": seed,
                        "overall_accuracy": r.metrics["test"]["overall_accuracy"],
                        "macro_f1": r.metrics["test"]["macro_f1"],
                        "n_train": len(split.train),
                        "n_val": len(split.val),
                        "n_test": len(split.test),
                        "epochs_run": r.card["training"]["epochs_run"],
                        "seconds": round(r.seconds, 1),
                    }
                )
            assert split is not None
            t_ref = time.perf_counter()
            acc = _reference_band_stats(ds, split, seed)
            rows.append(
                {
                    **rows[-1],
                    "method": BAND_STATS,
                    "strategy": "band-statistics",
                    "overall_accuracy": acc,
                    "macro_f1": float("nan"),
                    "epochs_run": 0,
                    "seconds": round(time.perf_counter() - t_ref, 1),
                }
            )
            print(
                f"labels={labels!s:<4} seed={seed}: "
                + ", ".join(f"{x['strategy']} {x['overall_accuracy']:.3f} ({x['seconds']:.0f} s)" for x in rows[-3:])
                + f"  [{(time.perf_counter() - t0) / 60:.1f} min]",
                flush=True,
            )
            write_csv(rows, out / "label_efficiency.csv")  # partial results survive an interruption

    minutes = (time.perf_counter() - t0) / 60
    summary = _summarise(rows)
    x_all = next(r["labels_per_class"] for r in rows if r["labels"] == "all")
    table = _table(summary).replace(f"{x_all} labels/class", f"all ({x_all:g}/class)")
    columns = {float(k): f"{k} labels/class" for k in LABELS if k != "all"} | {x_all: "all labels"}
    n_test = ", ".join(
        f"{k}: {'/'.join(str(n) for n in sorted({r['n_test'] for r in rows if r['labels'] == k}))}" for k in LABELS
    )
    n_val = ", ".join(
        f"{k}: {'/'.join(str(n) for n in sorted({r['n_val'] for r in rows if r['labels'] == k}))}" for k in LABELS
    )
    params = "; ".join(f"`{s}`: " + ", ".join(f"{k} {v}" for k, v in p.items()) for s, p in STRATEGIES.items())
    cmd = " ".join(shlex.quote(a) for a in [".venv/bin/python", "benchmarks/label_efficiency.py", *sys.argv[1:]])
    md = f"""# Label efficiency on EuroSAT-MS

Overall accuracy on the test patches, mean ± 95 % interval (Student's t) over {args.seeds} seeds.
{len(ds)} patches, {n_classes} classes (15–23 patches each), {len(ds.bands)} bands, 64 × 64 px.

{table}

- Splits: k labels/class = `labels_per_class=k` (k-per-class split; `val_per_class=1` for k ≥ 5, 0 for
  k = 1), the test side is every other patch (test patches per column: {n_test}); "all" = stratified split,
  `test_fraction={TEST_FRACTION}`, `val_fraction=0.1` ({x_all:g} training labels per class on average).
  Validation patches per column: {n_val}. Test sets differ between columns, so compare rows within a column.
- Every method of a column sees the same split for a given seed (checked). The band-statistics reference
  trains on training + validation patches; the networks use validation only for early stopping /
  choosing the best epoch (with k = 1 there is no validation: the last epoch is kept).
- Backbone {BACKBONE}, weights none (random initialisation): the linear probe trains a head on
  random-init features, and finetune from scratch is the scratch reference.
- Strategy parameters (as in `eotransfer demo`): {params}; everything else at its default.
- Plot (`label_efficiency.png`): the rightmost point of each curve, at x = {x_all:g}, is the "all" column.

**Which method wins.** {verdict(rows, summary, columns)}

Command: `{cmd}`

Machine: {os.cpu_count()} CPU cores (shared with other work), no GPU; {platform.processor() or platform.machine()},
Python {platform.python_version()}, torch {torch.__version__}. Total: {minutes:.1f} minutes for
{len([r for r in rows if r["strategy"] != "band-statistics"])} fits.
"""
    write_csv(rows, out / "label_efficiency.csv")
    atomic_write_text(out / "label_efficiency.md", md)
    _plot(summary, out / "label_efficiency.png")
    print("\n" + table)
    print(f"\ndone in {minutes:.1f} min; results in {out}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
