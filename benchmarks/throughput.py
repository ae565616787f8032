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
Then a per-batch breakdown (backbone, normalisation layer, an in-place alternative to it, collate,
DataLoader, the whole Engine step), timed one batch at a time in random order, to name the cause
of any gap.

    .venv/bin/python benchmarks/throughput.py [--images 640] [--repeats 3] [--breakdown-repeats 30]
        [--threads N] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import timm
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

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


def timed_faults(fn: Callable[[], Any]) -> tuple[float, int]:
    """Seconds and minor page faults (fresh memory touched for the first time) of one call."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    seconds = timed(fn)
    return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def normalize_in_place(norm: Any, x: torch.Tensor) -> torch.Tensor:
    """What ``Normalize.forward`` computes, with one new tensor instead of five: for comparison only."""
    inf = float("inf")
    return x.sub(norm.center).div_(norm.scale).nan_to_num_(nan=0.0, posinf=inf, neginf=-inf)


def breakdown(parts: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Time each part on one batch, ``repeats`` times, in a new random order every round."""
    rng = random.Random(SEED)
    times: dict[str, list[float]] = {k: [] for k in parts}
    with torch.no_grad():
        for fn in parts.values():
            fn()
        for _ in range(repeats):
            for k in rng.sample(list(parts), len(parts)):
                times[k].append(timed(parts[k]))
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=640, help="images per pass (default 640 = 10 batches)")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per variant (default 3)")
    ap.add_argument("--breakdown-repeats", type=int, default=30, help="rounds of the per-batch breakdown (default 30)")
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
    engine64 = Engine(EngineConfig(progress=False, eval_batch_size=BATCH, accelerator="cpu"))
    engine128 = Engine(EngineConfig(progress=False, accelerator="cpu"))  # CPU even where a GPU is present
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
    faults: dict[str, list[int]] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            sec, flt = timed_faults(fn)
            seconds[name].append(sec)
            faults[name].append(flt)
    med_faults = {k: int(statistics.median(v)) for k, v in faults.items()}
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

    # where the time goes, per batch of 64, parts interleaved at batch granularity
    x = batches[0]
    samples = [dataset[i] for i in range(BATCH)]
    assert torch.equal(normalize_in_place(model.normalize, x), model.normalize(x))
    parts: dict[str, Callable[[], Any]] = {
        "bare_timm_forward": lambda: bare(x),
        "eotransfer_backbone_forward": lambda: model.backbone(x),
        "normalize_layer": lambda: model.normalize(x),
        "normalize_in_place_alternative": lambda: normalize_in_place(model.normalize, x),
        "default_collate": lambda: default_collate(samples),
        "dataloader_fetch_and_collate": lambda: next(iter(DataLoader(dataset, batch_size=BATCH))),
        "engine_forward_all_one_batch": lambda: engine64._forward_all(model.features, TensorImages(x)),
    }
    per_batch = breakdown(parts, args.breakdown_repeats)
    per_batch_ms = {k: 1000 * statistics.median(v) for k, v in per_batch.items()}
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
        "minor_page_faults_per_pass": faults,
        "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_") or k == "LD_PRELOAD"},
        "best_seconds": best,
        "images_per_second_best": ips_best,
        "ratio_eotransfer_to_bare": ratio,
        "ratio_eotransfer_to_bare_best": ratio_best,
        "ratio_eotransfer_to_bare_paired_median": paired,
        "load_average_1_5_15_min_at_end": load,
        "per_batch_breakdown_repeats": args.breakdown_repeats,
        "per_batch_median_ms": per_batch_ms,
        "per_batch_seconds": per_batch,
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
        f"| {labels_md[k]} | {ips[k]:,.0f} | {med[k]:.3f} | {ips[k] / ips['a_bare_timm']:.3f} | {ips_best[k]:,.0f} | {med_faults[k]:,} |"
        for k in variants
    )
    parts_md = {
        "bare_timm_forward": "bare timm resnet18 forward (reference)",
        "eotransfer_backbone_forward": "eotransfer's backbone module forward (same timm network)",
        "normalize_layer": "`EOClassifier.normalize` (`Normalize.forward`, now one `sub` then `div_` + `nan_to_num_` in place)",
        "normalize_in_place_alternative": "same normalisation in place (`sub` + `div_` + `nan_to_num_`), identical output",
        "default_collate": "`default_collate` of 64 samples",
        "dataloader_fetch_and_collate": "DataLoader: build, fetch 64 samples, collate",
        "engine_forward_all_one_batch": "`Engine._forward_all(model.features)` on one batch (everything)",
    }
    malloc_env = ", ".join(f"{k}={v}" for k, v in result["malloc_env"].items())
    ref_ms = per_batch_ms["bare_timm_forward"]
    parts_rows = "\n".join(f"| {parts_md[k]} | {v:.1f} | {100 * v / ref_ms:.1f} % |" for k, v in per_batch_ms.items())
    cmd = " ".join(shlex.quote(a) for a in [".venv/bin/python", "benchmarks/throughput.py", *sys.argv[1:]])
    md = f"""# CPU feature-extraction throughput: eotransfer vs a bare timm loop

{ARCH}, {args.images} random-normal images of {BANDS} × {SIZE} × {SIZE} (seed {SEED}), batches of {BATCH}
unless stated, {args.threads} torch threads; one warm-up pass, then the median of {args.repeats} passes
(variants interleaved).

| variant | images/s (median) | median s per pass | relative to (a) | images/s (best pass) | minor page faults per pass |
|---|---:|---:|---:|---:|---:|
{rows}

**eotransfer / bare = {ratio:.3f}** on medians (target ≥ 0.90: {"met" if ratio >= 0.9 else "NOT met"});
{ratio_best:.3f} on best passes; {paired:.3f} as the median of the per-repeat paired ratios.
Load average at the end (1/5/15 min): {", ".join(f"{x:.2f}" for x in load)} on {os.cpu_count()} cores.
Same weights in both paths (same seed, identity normalisation): max |feature difference| = {max_diff:.2e}.

Where the time goes, per batch of {BATCH} (median of {args.breakdown_repeats} rounds, parts in random order each round):

| part | ms per batch | % of the bare forward |
|---|---:|---:|
{parts_rows}

Command: `{cmd}`

Machine: {os.cpu_count()} CPU cores (shared with other work), no GPU; torch {torch.__version__}, timm {timm.__version__},
Python {platform.python_version()}. Allocator settings: {malloc_env or "glibc defaults (no MALLOC_* variables, no LD_PRELOAD)"}.
Per-pass seconds and page faults are in `throughput.json`.
"""
    atomic_write_text(out / "throughput.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
