"""Does our self-supervised pre-training transfer?  Pre-train, then label-efficiency curves against scratch.

Runs where the data are packed ``.npz`` files (``scripts/pack_device_data.py``), so it needs no
rasterio: on the lent GPU, or on the CPU with ``--tiny``.

``harvey``: MoCo on the Hurricane Harvey chips of the *training* side of a longitude/latitude block
split (the test blocks are never seen, not even unlabelled), then linear probe and fine-tuning
from scratch vs. from the pre-trained backbone at 10, 50, 100, 500 and all labels per class, on
the held-out blocks; then xBD buildings event to event (Santa Rosa → Guatemala and back; damaged
vs. no damage) with the same backbone.
``eurosat``: MoCo on EuroSAT-MS (training side of a fixed split only), BigEarthNet S2 and Landsat 8
windows mapped to the EuroSAT band set — redistributable data only, the compact shipped backbone —
then the same curves on the held-out EuroSAT patches.

Every table carries the two reference rows: band statistics + logistic regression, and training
from scratch, on the same split and seeds.  Rows are appended to ``rows.jsonl`` as they finish, so
a run stopped at its time limit still leaves a (shorter) table.  The grid, the reference rows and
the summary are :mod:`eotransfer.evaluation.benchmark`'s (``run_grid``, ``summarise``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from eotransfer.data.base import EODataset, open_dataset  # noqa: E402
from eotransfer.data.splits import Split, make_split  # noqa: E402
from eotransfer.evaluation.benchmark import ArrayDataset, run_grid, summarise  # noqa: E402
from eotransfer.pretrain.run import pretrain  # noqa: E402

__all__ = ["ArrayDataset", "main", "run_grid", "summarise"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("task", choices=("harvey", "eurosat"))
    ap.add_argument("--data", type=Path, required=True, help="the labelled packed data (harvey.npz / eurosat.npz)")
    ap.add_argument("--xbd", type=Path, help="xbd_post.npz (harvey task)")
    ap.add_argument("--extra-pool", default="", help="more packed sources for the pool, comma-separated (eurosat task)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--method", default="moco")
    ap.add_argument("--size", type=int, default=64, help="resize chips to this size")
    ap.add_argument("--pretrain-epochs", type=int, default=50)
    ap.add_argument("--pretrain-minutes", type=float, default=None, help="time budget of pre-training")
    ap.add_argument("--weights-dir", type=Path, help="where the pre-trained backbone goes (default: --out)")
    ap.add_argument("--patches", type=int, default=0, help="pool patches per epoch (0 = one per sample)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--ks", default="10,50,100,500,0", help="labels per class; 0 = all")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--budget-s", type=float, default=540, help="stop starting new fits after this many seconds")
    ap.add_argument("--half", action="store_true", help="store the pre-trained weights as float16")
    ap.add_argument("--tiny", action="store_true", help="a CPU smoke run: few samples, one epoch")
    args = ap.parse_args(argv)
    t_start = time.time()
    deadline = t_start + args.budget_s
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rows.jsonl").unlink(missing_ok=True)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    print(f"device: {device}; torch {torch.__version__}", flush=True)

    packed = open_dataset(args.data)
    rng = np.random.default_rng(0)
    take = np.sort(rng.choice(len(packed), min(240, len(packed)), replace=False)) if args.tiny else None
    ds = ArrayDataset(packed, take, args.size)
    if args.task == "harvey":
        base = make_split("lonlat-block", ds.labels, ds.lonlat(), seed=0, block_deg=0.1, test_fraction=0.3,
                          val_fraction=0.1)  # fmt: skip
    else:
        base = make_split("stratified", ds.labels, seed=0, test_fraction=0.3, val_fraction=0.1)
    seen = np.concatenate([base.train, base.val])
    print(
        f"{args.task}: {len(ds)} samples, train {len(base.train)} / val {len(base.val)} / test {len(base.test)}",
        flush=True,
    )

    pool_sources: list[EODataset] = [ArrayDataset(ds, seen)]
    licences = ["research-use"] if args.task == "harvey" else ["MIT"]
    pool_bands = None
    for extra in [e for e in args.extra_pool.split(",") if e]:
        src = open_dataset(extra, nodata="mask")
        if "landsat" in Path(extra).name:
            # Landsat 8 Collection 2 Level-1 DN -> TOA reflectance x 10^4 (rho = 2e-5 DN - 0.1, USGS Landsat 8-9
            # Data Format Control Book; sun-elevation correction left out), the unit of the Sentinel-2 sources
            src.scale, src.offset = 0.2, -1000.0  # type: ignore[attr-defined]
        pool_sources.append(src)
        licences.append("CDLA-Permissive-1.0" if "bigearthnet" in extra else "public-domain")
        pool_bands = "eurosat-ms"
    # the monitor's labels come from the training side (never the test side); EuroSAT's validation side is too small
    monitor = ArrayDataset(ds, seen if args.task == "eurosat" else base.val)
    epochs = 1 if args.tiny else args.pretrain_epochs
    batch = 16 if args.tiny else args.batch_size
    t0 = time.time()
    result = pretrain(pool_sources, method=args.method, backbone=args.backbone, patch_size=args.size,
                      patches=args.patches, epochs=epochs, batch_size=batch, monitor_data=monitor,
                      monitor_per_class=5 if args.tiny or args.task == "eurosat" else 20, pool_bands=pool_bands, data_licence=",".join(licences),
                      out=str((args.weights_dir or args.out) / f"{args.task}-{args.backbone}-{args.method}"), half=args.half,
                      max_minutes=args.pretrain_minutes,
                      progress=False, verbose=True, lr=1e-3 * batch / 256, num_workers=0)  # fmt: skip
    pre_s = time.time() - t0
    with (args.out / "pretrain.json").open("w") as f:
        json.dump({"seconds": pre_s, "device": device, "history": result.history,
                   "card": {k: v for k, v in result.card.items() if k != "settings"}}, f, indent=1, default=str)  # fmt: skip
    print(f"pre-training: {pre_s:.0f} s", flush=True)

    ks = [int(k) for k in args.ks.split(",")]
    if args.tiny:
        ks, seeds = [2, 0], 1
    else:
        seeds = args.seeds
    fit_opts: dict[str, Any] = {"batch_size": 16 if args.tiny else 128}
    weights = str(result.out)
    if args.task == "harvey" and args.xbd:
        xsrc = open_dataset(args.xbd)
        xl = (xsrc.labels != xsrc.classes.index("no-damage")).astype(np.int64)  # damaged (minor/major/destroyed) vs not
        xds = ArrayDataset(xsrc, None, args.size, labels=xl, classes=["no-damage", "damaged"])
        events = np.asarray(getattr(xsrc, "events", xsrc.groups))
    grid_deadline = deadline if not (args.task == "harvey" and args.xbd) else t_start + 0.8 * args.budget_s
    run_grid(args.task, ds, base, weights, ks, seeds, grid_deadline, args.out, args.backbone, fit_opts)
    if args.task == "harvey" and args.xbd:
        for a in sorted(set(events.tolist())):
            b = next(e for e in sorted(set(events.tolist())) if e != a)
            train_all = np.flatnonzero(events == a)
            r = np.random.default_rng(0).permutation(train_all)
            n_val = max(2, len(r) // 10)
            split = Split(np.sort(r[n_val:]), np.sort(r[:n_val]), np.flatnonzero(events == b), {"kind": f"{a}->{b}"})
            run_grid(f"xbd_{a}_to_{b}", xds, split, weights, [10, 50, 100, 500, 0] if not args.tiny else [0],
                     seeds, deadline, args.out, args.backbone, fit_opts)  # fmt: skip
    print(summarise(args.out), flush=True)
    print(f"total {time.time() - t_start:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
