"""CPU throughput of feature extraction: eotransfer's inference path against a bare timm loop.

resnet18, 13 × 64 × 64 random-normal images (fixed seed), batches of 64, images per second:

(a) bare: ``timm.create_model("resnet18", in_chans=13, num_classes=0).eval()`` on pre-built batches
    under ``torch.no_grad()``;
(b) eotransfer: an ``EOClassifier`` built by ``create_backbone`` and
    ``Engine(EngineConfig(progress=False, eval_batch_size=64))._forward_all(model.features, dataset)``
    over an in-memory dataset of the same tensors (the path of ``predict_logits`` and of the
    linear probe's feature cache).

Diagnostics that split the difference: (c) ``model.features`` on the pre-built batches (the
normalisation layer, no DataLoader), (d) the DataLoader alone (fetch + collate, no network) and
(e) the Engine at its default ``eval_batch_size=128``.  A warm-up pass, then ``--repeats`` passes of
every variant interleaved (so drift on shared cores hits all alike); the median is reported.

    .venv/bin/python benchmarks/throughput.py [--images 640] [--repeats 3] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import timm
import torch
from torch.utils.data import DataLoader, Dataset

from eotransfer.bands import BandSet
from eotransfer.card import atomic_write_text
from eotransfer.engine.loop import Engine, EngineConfig
from eotransfer.models.backbones import create_backbone
from eotransfer.models.model import EOClassifier

REPO = Path(__file__).resolve().parents[1]
ARCH, BANDS, SIZE, BATCH, SEED = "resnet18", 13, 64, 64, 0


class TensorImages(Dataset[dict[str, Any]]):
    """In-memory samples in eotransfer's format: ``{"image": tensor, "label": 0}``."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.images[i], "label": 0}


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=640, help="images per pass (default 640 = 10 batches)")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per variant (default 3)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads (default: all cores)")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results"), help="output folder")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    images = torch.randn(args.images, BANDS, SIZE, SIZE, generator=torch.Generator().manual_seed(SEED))
    batches = list(images.split(BATCH))
    dataset = TensorImages(images)

    torch.manual_seed(SEED)
    bare = timm.create_model(ARCH, in_chans=BANDS, num_classes=0).eval()
    bands = BandSet.parse("eurosat-ms")
    assert len(bands) == BANDS
    backbone = create_backbone(ARCH, bands, None, None, SIZE, SEED, verbose=False)
    model = EOClassifier(backbone.module, backbone.num_features, 10, BANDS).eval()  # identity normalisation
    engine64 = Engine(EngineConfig(progress=False, eval_batch_size=BATCH))
    engine128 = Engine(EngineConfig(progress=False))
    threads_after_engine = torch.get_num_threads()  # Fabric must not have changed it

    def run_bare() -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([bare(b) for b in batches])

    def run_features() -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([model.features(b) for b in batches])

    def run_loader() -> int:
        return sum(len(b["image"]) for b in DataLoader(dataset, batch_size=BATCH, shuffle=False))

    variants: dict[str, Callable[[], Any]] = {
        "a_bare_timm": run_bare,
        "b_eotransfer_engine_bs64": lambda: engine64._forward_all(model.features, dataset),
        "c_features_no_loader": run_features,
        "d_dataloader_only": run_loader,
        "e_eotransfer_engine_bs128": lambda: engine128._forward_all(model.features, dataset),
    }
    # same weights (same seed) and identity normalisation: both paths must give the same features
    feats_eo, labels = engine64._forward_all(model.features, dataset)
    max_diff = float((run_bare() - feats_eo).abs().max())
    assert feats_eo.shape == (args.images, backbone.num_features) and len(labels) == args.images

    for fn in variants.values():  # warm-up
        fn()
    seconds: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            seconds[name].append(timed(fn))
    med = {k: statistics.median(v) for k, v in seconds.items()}
    best = {k: min(v) for k, v in seconds.items()}
    ips = {k: args.images / v for k, v in med.items()}
    ips_best = {k: args.images / v for k, v in best.items()}
    ratio = ips["b_eotransfer_engine_bs64"] / ips["a_bare_timm"]
    ratio_best = ips_best["b_eotransfer_engine_bs64"] / ips_best["a_bare_timm"]
    # per repeat, (a) and (b) ran back to back: the median of their paired ratios is the least noisy
    paired = statistics.median(
        a / b for a, b in zip(seconds["a_bare_timm"], seconds["b_eotransfer_engine_bs64"], strict=True)
    )
    load = os.getloadavg()
    result = {
        "arch": ARCH,
        "input": [BANDS, SIZE, SIZE],
        "batch_size": BATCH,
        "images": args.images,
        "repeats": args.repeats,
        "threads": args.threads,
        "threads_after_engine": threads_after_engine,
        "engine_device": str(engine64.fabric.device),
        "seconds": seconds,
        "median_seconds": med,
        "images_per_second": ips,
        "best_seconds": best,
        "images_per_second_best": ips_best,
        "ratio_eotransfer_to_bare": ratio,
        "ratio_eotransfer_to_bare_best": ratio_best,
        "ratio_eotransfer_to_bare_paired_median": paired,
        "load_average_1_5_15_min_at_end": load,
        "within_10_percent": ratio >= 0.9,
        "max_abs_feature_difference": max_diff,
        "machine": {
            "cpu_cores": os.cpu_count(),
            "gpu": torch.cuda.is_available(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "timm": timm.__version__,
            "python": platform.python_version(),
        },
    }
    atomic_write_text(out / "throughput.json", json.dumps(result, indent=2) + "\n")

    labels_md = {
        "a_bare_timm": "(a) bare timm loop, `torch.no_grad()`",
        "b_eotransfer_engine_bs64": "(b) eotransfer `Engine._forward_all(model.features)`, eval_batch_size=64",
        "c_features_no_loader": "(c) diagnostic: `model.features` (normalise + backbone), no DataLoader",
        "d_dataloader_only": "(d) diagnostic: DataLoader fetch + collate only, no network",
        "e_eotransfer_engine_bs128": "(e) diagnostic: eotransfer Engine at default eval_batch_size=128",
    }
    rows = "\n".join(
        f"| {labels_md[k]} | {ips[k]:,.0f} | {med[k]:.3f} | {ips[k] / ips['a_bare_timm']:.3f} | {ips_best[k]:,.0f} |"
        for k in variants
    )
    cmd = " ".join(shlex.quote(a) for a in [".venv/bin/python", "benchmarks/throughput.py", *sys.argv[1:]])
    md = f"""# CPU feature-extraction throughput: eotransfer vs a bare timm loop

{ARCH}, {args.images} random-normal images of {BANDS} × {SIZE} × {SIZE} (seed {SEED}), batches of {BATCH}
unless stated, {args.threads} torch threads; one warm-up pass, then the median of {args.repeats} passes
(variants interleaved).

| variant | images/s (median) | median s per pass | relative to (a) | images/s (best pass) |
|---|---:|---:|---:|---:|
{rows}

**eotransfer / bare = {ratio:.3f}** on medians (target ≥ 0.90: {"met" if ratio >= 0.9 else "NOT met"});
{ratio_best:.3f} on best passes; {paired:.3f} as the median of the per-repeat paired ratios.
Load average at the end (1/5/15 min): {", ".join(f"{x:.2f}" for x in load)} on {os.cpu_count()} cores.
Same weights in both paths (same seed, identity normalisation): max |feature difference| = {max_diff:.2e}.

Command: `{cmd}`

Machine: {os.cpu_count()} CPU cores (shared with other work), no GPU; torch {torch.__version__}, timm {timm.__version__},
Python {platform.python_version()}. Per-pass seconds are in `throughput.json`.
"""
    atomic_write_text(out / "throughput.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
