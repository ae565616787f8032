"""Progressive networks against naive sequential fine-tuning and independent columns on a real task sequence.

EuroSAT-MS land cover (13 Sentinel-2 bands, 64 px) → Hurricane Harvey building damage (RGB chips,
a random subsample of ``--harvey-n`` chips, 128 px block-averaged 2×2 to 64 px), with
:func:`eotransfer.strategies.progressive.run_sequence` (Rusu et al. 2016): per task accuracy after
each step, forgetting (zero by construction for progressive networks) and forward transfer
(progressive minus an independent column on the new task).  Harvey's RGB reaches the EuroSAT
column through the band mapping (B02/B03/B04 by common name; the ten other bands ``--band-policy``).

Models are written under ``--work`` (default: a temporary folder), never into the repository:
weights trained on Harvey may not be shipped (research-use licence).  Results go to ``--out``.

    .venv/bin/python benchmarks/progressive.py --seeds 0 1 2 --out benchmarks/results/progressive_cpu
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eotransfer.bands import BandSet
from eotransfer.card import atomic_write_text
from eotransfer.data.base import EODataset, Location
from eotransfer.data.formats.folder import ClassFolderDataset
from eotransfer.strategies.progressive import run_sequence

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


class HarveySubsample(EODataset):
    """``n`` Harvey chips drawn at random (seeded), read once and block-averaged 2×2 (128 → 64 px)."""

    format_name = "harvey-subsample"

    def __init__(self, root: Path, n: int, seed: int) -> None:
        super().__init__()
        full = ClassFolderDataset(root, cache=False)
        pick = np.sort(np.random.default_rng(seed).choice(len(full), size=min(n, len(full)), replace=False))
        self.root, self.bands, self.classes = root, BandSet.parse("rgb"), full.classes
        self.labels = full.labels[pick]
        self.sources = [full.sources[i] for i in pick]
        self.locations: list[Location] = [full.locations[i] for i in pick]
        imgs = [full.read(int(i)) for i in pick]
        self.images = [
            x.reshape(3, x.shape[1] // 2, 2, x.shape[2] // 2, 2).mean((2, 4)).astype(np.float32) for x in imgs
        ]

    def read(self, index: int) -> np.ndarray:
        return self.images[index]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eurosat", type=Path, default=SHARED / "eurosat-ms")
    ap.add_argument("--harvey", type=Path, default=SHARED / "hurricane-harvey")
    ap.add_argument("--harvey-n", type=int, default=1000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--backbone", default="resnet10t")
    ap.add_argument("--weights", default="eotransfer:eurosat-s2-resnet10t-moco")
    ap.add_argument("--band-policy", default="zero", choices=("zero", "mean"))
    ap.add_argument("--eurosat-epochs", type=int, default=6)
    ap.add_argument("--harvey-epochs", type=int, default=3)
    ap.add_argument("--head-epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--work", type=Path, help="model directories (default: a temporary folder; never commit Harvey weights)"
    )
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="eotransfer-progressive-"))
    t_all = time.perf_counter()
    eurosat = ClassFolderDataset(args.eurosat, bands="eurosat-ms")
    rows: list[dict[str, Any]] = []
    summaries: list[dict[str, Any]] = []
    seconds = {}
    for seed in args.seeds:
        t0 = time.perf_counter()
        harvey = HarveySubsample(args.harvey, args.harvey_n, seed)
        config = {
            "backbone": args.backbone, "weights": args.weights, "seed": seed, "accelerator": "cpu",
            "progress": False, "verbose": False, "band_policy": args.band_policy, "out": str(work / f"seed{seed}"),
            "params": {"head_epochs": args.head_epochs, "batch_size": 32, "patience": 0},
            "tasks": [{"name": "eurosat", "data": eurosat, "epochs": args.eurosat_epochs},
                      {"name": "harvey", "data": harvey, "epochs": args.harvey_epochs}],
        }  # fmt: skip
        result = run_sequence(config)
        rows += result["rows"]
        summaries += [{"seed": seed, **s} for s in result["summary"]]
        seconds[seed] = round(time.perf_counter() - t0, 1)
        print(f"seed {seed}: {seconds[seed]} s", flush=True)
        for s in result["summary"]:
            print("  ", {k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items()}, flush=True)
        # after each seed, so that partial results survive an interrupted run
        write_results(args, rows, summaries, seconds, time.perf_counter() - t_all)


def _ms(values: list[float]) -> str:
    if not values:
        return "—"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def write_results(args: argparse.Namespace, rows: list[dict[str, Any]], summaries: list[dict[str, Any]],
                  seconds: dict[int, float], total_s: float) -> None:  # fmt: skip
    out: Path = args.out
    head = list(rows[0])
    atomic_write_text(
        out / "accuracy.csv", "\n".join([",".join(head)] + [",".join(str(r[h]) for h in head) for r in rows]) + "\n"
    )
    lines = [f"# Progressive networks vs. naive sequential fine-tuning vs. independent columns (seeds {sorted(seconds)})", "",
             "Per-task test accuracy after each step (mean ± sd over seeds).", "",
             "| method | after step | eurosat | harvey |", "|---|---|---|---|"]  # fmt: skip
    for method in ("progressive", "naive", "independent"):
        for step, trained in ((1, "eurosat"), (2, "harvey")):
            cells = []
            for task in ("eurosat", "harvey"):
                v = [r["accuracy"] for r in rows if (r["method"], r["step"], r["task"]) == (method, step, task)]
                cells.append(_ms(v))
            lines.append(f"| {method} | {step} ({trained}) | " + " | ".join(cells) + " |")
    lines += ["", "| method | task | forgetting (acc. after own step − after last) | forward transfer (− independent) |",
              "|---|---|---|---|"]  # fmt: skip
    for method in ("progressive", "naive", "independent"):
        for task in ("eurosat", "harvey"):
            sel = [s for s in summaries if (s["method"], s["task"]) == (method, task)]
            fwd = [s["forward_transfer"] for s in sel if s["forward_transfer"] is not None]
            lines.append(f"| {method} | {task} | {_ms([s['forgetting'] for s in sel])} | {_ms(fwd)} |")
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    run = {
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]),
        "hardware": f"CPU, 2 cores, shared ({platform.processor() or platform.machine()}), torch threads {args.threads}",
        "data": {"eurosat": str(args.eurosat), "harvey": f"{args.harvey}: {args.harvey_n} random chips per seed, 64 px"},
        "seeds": args.seeds, "seconds_per_seed": seconds, "seconds_total": round(total_s, 1),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "note": "models were written outside the repository; Harvey-trained weights are not committed (research-use licence)",
    }  # fmt: skip
    atomic_write_text(out / "run.json", json.dumps(run, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
