"""Multi-task against single-task on EuroSAT-MS: land cover alone vs land cover + NDVI + NDWI regression.

On the same split per seed (stratified, 30 % test, 10 % of the rest for validation) and the same
resnet10t schedule (heads ``--head-epochs`` on the frozen backbone, then ``--epochs`` end to end):

- ``finetune``: the class label alone;
- ``multitask --tasks ndvi,ndwi --weighting static`` (all weights 1) and ``--weighting uncertainty``
  (Kendall et al. 2018): the class label plus the per-patch mean NDVI and NDWI computed with spyndex;

each from the shipped backbone (``eotransfer:eurosat-s2-resnet10t-moco``) and from scratch, beside the
two reference rows: per-band statistics + logistic regression, and finetune from scratch.  Overall
accuracy (mean ± 95 % interval, Student's t, over the seeds) and, for the multi-task rows, the test RMSE
and R² of NDVI and NDWI.

    .venv/bin/python benchmarks/multitask.py [--data ../shared/data/eurosat-ms] [--seeds 5] \\
        [--out benchmarks/results/multitask_cpu]
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
from eotransfer.engine.metrics import mean_ci95
from eotransfer.evaluation.reference import band_statistics_matrix, fit_band_statistics_classifier

REPO = Path(__file__).resolve().parents[1]
PRETRAINED = "eotransfer:eurosat-s2-resnet10t-moco"
BAND_STATS = "band statistics + logistic regression (reference)"
#: row name → (strategy, weights, its own parameters)
METHODS: dict[str, tuple[str, str | None, dict[str, Any]]] = {
    "finetune, from scratch (reference)": ("finetune", None, {}),
    "finetune, pre-trained (land cover alone)": ("finetune", PRETRAINED, {}),
    "multitask static, pre-trained": ("multitask", PRETRAINED, {"weighting": "static"}),
    "multitask uncertainty, pre-trained": ("multitask", PRETRAINED, {"weighting": "uncertainty"}),
    "multitask static, from scratch": ("multitask", None, {"weighting": "static"}),
    "multitask uncertainty, from scratch": ("multitask", None, {"weighting": "uncertainty"}),
}
TASKS = ("ndvi", "ndwi")


def band_statistics_accuracy(ds: Any, split: Any, seed: int) -> float:
    train = np.concatenate([split.train, split.val])
    clf = fit_band_statistics_classifier(band_statistics_matrix(ds.checked_read, train), ds.labels[train], seed)
    return float((clf.predict(band_statistics_matrix(ds.checked_read, split.test)) == ds.labels[split.test]).mean())


def cell(values: list[float], digits: int = 3) -> str:
    values = [v for v in values if np.isfinite(v)]
    if not values:
        return "—"
    m, h = mean_ci95(values)
    return f"{m:.{digits}f} ± {h:.{digits}f}" if np.isfinite(h) else f"{m:.{digits}f}"


def table(rows: list[dict[str, Any]]) -> str:
    cols = ["overall accuracy", "macro-F1"] + [f"{t.upper()} {m}" for t in TASKS for m in ("RMSE", "R²")]
    lines = ["| method | " + " | ".join(cols) + " | s / fit |", "|---" * (len(cols) + 2) + "|"]
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == method]
        vals = [cell([r["overall_accuracy"] for r in rs]), cell([r["macro_f1"] for r in rs])]
        vals += [cell([r[f"{t}_{m}"] for r in rs], 4 if m == "rmse" else 3) for t in TASKS for m in ("rmse", "r2")]
        lines.append(f"| {method} | " + " | ".join(vals) + f" | {np.mean([r['seconds'] for r in rs]):.0f} |")
    return "\n".join(lines)


def paired(rows: list[dict[str, Any]], a: str, b: str) -> str:
    acc = {(r["method"], r["seed"]): r["overall_accuracy"] for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    diff = [acc[a, s] - acc[b, s] for s in seeds]
    return f"{cell(diff)} (higher in {sum(d > 0 for d in diff)}, equal in {sum(d == 0 for d in diff)} of {len(seeds)} seeds)"  # fmt: skip


def write_summary(rows: list[dict[str, Any]], args: Any, ds: Any, t0: float, out: Path) -> str:
    """``multitask.md`` from the rows so far (rewritten after every seed, so an interrupted run keeps its summary)."""
    minutes = (time.perf_counter() - t0) / 60
    n_seeds = len({r["seed"] for r in rows})
    names = list(METHODS)
    cmd = " ".join(shlex.quote(a) for a in [".venv/bin/python", "benchmarks/multitask.py", *sys.argv[1:]])
    md = f"""# Multi-task vs single-task on EuroSAT-MS (CPU)

Test-set scores, mean ± 95 % interval (Student's t) over {n_seeds} seeds; {len(ds)} patches, {len(ds.classes)} classes,
13 bands, 64 × 64 px.  Split per seed: stratified, 30 % test, 10 % of the rest validation
(train/val/test = {rows[0]["n_train"]}/{rows[0]["n_val"]}/{rows[0]["n_test"]}); every method of a seed sees the same split (checked).

{table(rows)}

- NDVI/NDWI: the per-patch mean of the index over valid pixels (spyndex `NDVI` = (N−R)/(N+R) with B08/B04,
  `NDWI` = (G−N)/(G+N) with B03/B08), standardised on the training split for the loss; RMSE in index units
  and R² (1 − SSE/SST on the test patches; 0 = predicting the test mean) of the de-standardised predictions.
- Backbone resnet10t; "pre-trained" = `{PRETRAINED}`, "from scratch" = random initialisation.
  Schedule for every network row: {args.head_epochs} epochs of heads on the frozen backbone (lr 1e-2), then
  {args.epochs} end to end (lr 1e-3, backbone × 0.1), batch 32, early stopping patience 5 on validation accuracy.
  Multitask: `--tasks ndvi,ndwi`, `--weighting static` (weights 1) or `uncertainty`.
- The band-statistics reference trains on training + validation patches.

Paired differences in overall accuracy (same split and seed):
- multitask static − finetune, pre-trained: {paired(rows, names[2], names[1])}
- multitask uncertainty − finetune, pre-trained: {paired(rows, names[3], names[1])}
- multitask static − finetune, from scratch: {paired(rows, names[4], names[0])}
- multitask uncertainty − finetune, from scratch: {paired(rows, names[5], names[0])}

Command: `{cmd}`

Hardware: CPU, {os.cpu_count()} cores, shared with other work ({args.threads} torch thread(s)); no GPU; {platform.processor() or platform.machine()},
Python {platform.python_version()}, torch {torch.__version__}.  Seeds 0–{n_seeds - 1}.  Total {minutes:.1f} minutes.
Per-fit rows: `multitask.csv`.
"""
    atomic_write_text(out / "multitask.md", md)
    return md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(REPO / "../shared/data/eurosat-ms"), help="EuroSAT-MS class folders")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--head-epochs", type=int, default=15)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all cores)")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/multitask_cpu"))
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = open_dataset(Path(args.data).resolve(), bands="eurosat-ms")
    common: dict[str, Any] = {"backbone": "resnet10t", "head_epochs": args.head_epochs, "epochs": args.epochs, "patience": 5,
              "batch_size": 32, "test_fraction": 0.3, "val_fraction": 0.1, "progress": False, "verbose": False}  # fmt: skip
    rows: list[dict[str, Any]] = []
    for seed in range(args.seeds):
        split = None
        for method, (strategy, weights, params) in METHODS.items():
            extra: dict[str, Any] = {"tasks": ",".join(TASKS)} if strategy == "multitask" else {}
            r = fit(ds, strategy=strategy, weights=weights, seed=seed, **common, **params, **extra)
            if split is not None:  # every method of a seed sees the same split
                assert all(np.array_equal(getattr(split, a), getattr(r.split, a)) for a in ("train", "val", "test"))
            split, test = r.split, r.metrics["test"]
            tasks = test.get("tasks", {})
            row = {"method": method, "strategy": strategy, "weights": weights or "none", "seed": seed,
                   "overall_accuracy": test["overall_accuracy"], "macro_f1": test["macro_f1"],
                   "n_train": len(split.train), "n_val": len(split.val), "n_test": len(split.test),
                   "epochs_run": r.card["training"]["epochs_run"], "seconds": round(r.seconds, 1)}  # fmt: skip
            for t in TASKS:
                row[f"{t}_rmse"] = tasks.get(t, {}).get("rmse", float("nan"))
                row[f"{t}_r2"] = tasks.get(t, {}).get("r2", float("nan"))
            rows.append(row)
            print(f"seed {seed} {method}: acc {row['overall_accuracy']:.3f} ({row['seconds']:.0f} s) "
                  f"[{(time.perf_counter() - t0) / 60:.1f} min]", flush=True)  # fmt: skip
        assert split is not None
        t_ref = time.perf_counter()
        acc = band_statistics_accuracy(ds, split, seed)
        rows.append({**rows[-1], "method": BAND_STATS, "strategy": "band-statistics", "weights": "none",
                     "overall_accuracy": acc, "macro_f1": float("nan"), "epochs_run": 0,
                     "seconds": round(time.perf_counter() - t_ref, 1), **{f"{t}_{m}": float("nan") for t in TASKS for m in ("rmse", "r2")}})  # fmt: skip
        with open(out / "multitask.csv", "w", newline="") as f:  # partial results survive an interruption
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        write_summary(rows, args, ds, t0, out)

    print("\n" + write_summary(rows, args, ds, t0, out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
