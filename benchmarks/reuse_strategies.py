"""Reuse strategies side by side: feature extraction (each classifier), linear probe, fine-tune, progressive unfreezing.

From scratch and from a pre-trained backbone, at several labels per class and seeds, on one fixed
split, with the two reference rows (band statistics + logistic regression; training from scratch).
Reads packed ``.npz`` data (``scripts/pack_device_data.py``) or any data set path, so it runs on the
lent GPU as well as on the CPU.  Rows go to ``rows.jsonl`` as they finish; ``results.md`` and a plot
summarise them (the same summary as ``pretrain_transfer.py``: both use
:mod:`eotransfer.evaluation.benchmark`; ``eotransfer benchmark CONFIG.yaml`` runs such grids from YAML).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from eotransfer.data.base import open_dataset  # noqa: E402
from eotransfer.data.splits import make_split  # noqa: E402
from eotransfer.evaluation.benchmark import ArrayDataset, run_grid, summarise  # noqa: E402

STRATEGIES: dict[str, dict[str, Any]] = {
    **{
        f"feature-extraction:{c}": {"strategy": "feature-extraction", "classifier": c}
        for c in ("logreg", "linear-svm", "rbf-svm", "knn", "random-forest")
    },  # fmt: skip
    "linear-probe": {"strategy": "linear-probe", "epochs": 60, "lr": 1e-2, "patience": 15, "augment": False},
    "finetune": {"strategy": "finetune", "head_epochs": 20, "epochs": 15, "patience": 6},
    "progressive-unfreeze": {"strategy": "progressive-unfreeze", "head_epochs": 10, "unfreeze_every": 3, "epochs": 8},
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--name", default="eurosat")
    ap.add_argument("--bands", default=None)
    ap.add_argument("--split", default="stratified", choices=("stratified", "lonlat-block"))
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--backbone", default="resnet10t")
    ap.add_argument("--weights", default="eotransfer:eurosat-s2-resnet10t-moco")
    ap.add_argument("--ks", default="5,20,0", help="labels per class; 0 = all")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--budget-s", type=float, default=1e9, help="stop starting new fits after this many seconds")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    t_start = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rows.jsonl").unlink(missing_ok=True)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {device}; torch {torch.__version__}", flush=True)
    ds = ArrayDataset(
        open_dataset(args.data, bands=args.bands) if args.bands else open_dataset(args.data), None, args.size
    )
    if args.split == "lonlat-block":
        base = make_split(
            "lonlat-block", ds.labels, ds.lonlat(), seed=0, block_deg=0.1, test_fraction=0.3, val_fraction=0.1
        )
    else:
        base = make_split("stratified", ds.labels, seed=0, test_fraction=0.3, val_fraction=0.1)
    chosen = {s: STRATEGIES[s] for s in args.strategies.split(",") if s}
    ks = [int(v) for v in args.ks.split(",")]
    run_grid(args.name, ds, base, args.weights, ks, args.seeds, t_start + args.budget_s, args.out, args.backbone,
             {"batch_size": 64}, chosen)  # fmt: skip
    print(summarise(args.out), flush=True)
    print(f"total {time.time() - t_start:.0f} s on {device}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
