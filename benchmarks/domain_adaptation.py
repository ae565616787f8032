"""Unsupervised domain adaptation on real spatial shifts: source-only vs. DANN vs. MMD vs. CORAL.

Each task splits one labelled data set into a western *source* and an eastern *target* domain:

- ``eurosat``: EuroSAT-MS (206 patches, 13 bands, 10 classes), source = UTM zones up to
  ``--eurosat-west-zone`` (default 31N: western Europe), target = the zones east of it;
- ``harvey``: a stratified random subset of ``--harvey-chips`` Hurricane Harvey chips (damage vs.
  no damage, RGB), split at the subset's median longitude, downsampled to ``--harvey-px``.

Each side is packed into a ``.npz`` (:mod:`eotransfer.data.formats.packed`) under ``--work``; the
adapting strategies read the eastern pack as their unlabelled ``--target`` (transductive, as in
Ganin et al. 2016: the target images seen unlabelled in training are the ones scored), and every
model is scored on all target samples with their labels.  Per seed the source is split into
training and validation (15 %, for keep-best/early stopping: no target label is used for any choice).

Methods: ``finetune`` (source only), ``dann`` (Ganin et al. 2016), ``mmd`` (DAN, Long et al. 2015),
``coral`` (Sun & Saenko 2016), all from the shipped ``eotransfer:eurosat-s2-resnet10t-moco`` weights
(mapped to RGB for Harvey) with the same schedule; plus the project's two reference rows: band
statistics + logistic regression (:mod:`eotransfer.evaluation.reference`) and ``finetune`` from
scratch.  For every network: the target accuracy and the proxy A-distance between source-training
and target backbone features (:func:`eotransfer.evaluation.domain.proxy_a_distance`; source-only's
is the "before").  Mean ± 95 % t-interval over ``--seeds`` seeds.

    .venv/bin/python benchmarks/domain_adaptation.py --out benchmarks/results/domain_adaptation_cpu
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import eotransfer
from eotransfer.card import atomic_write_text
from eotransfer.data.base import EODataset, open_dataset
from eotransfer.data.formats.folder import ClassFolderDataset
from eotransfer.data.formats.packed import pack_dataset
from eotransfer.data.splits import Split, block_ids, stratified_split
from eotransfer.engine.metrics import mean_ci95
from eotransfer.evaluation.domain import proxy_a_distance
from eotransfer.evaluation.reference import band_statistics_matrix, fit_band_statistics_classifier

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = "eotransfer:eurosat-s2-resnet10t-moco"
ADAPTING = ("dann", "mmd", "coral")
SOURCE_ONLY = "finetune (source only)"
SCRATCH = "finetune from scratch (reference)"
BAND_STATS = "band statistics + logistic regression (reference)"


class ResizedFolder(ClassFolderDataset):
    """Class folders read at ``size`` px (mean over size×size blocks, or nearest when not a divisor)."""

    size = 64

    def read(self, index: int) -> np.ndarray:
        arr = super().read(index)
        h = arr.shape[-1]
        if h == self.size:
            return arr
        if h % self.size == 0:
            f = h // self.size
            return arr.reshape(arr.shape[0], self.size, f, self.size, f).mean(axis=(2, 4)).astype(np.float32)
        t = torch.nn.functional.interpolate(torch.from_numpy(arr)[None], size=(self.size, self.size), mode="area")
        return t[0].numpy()


def pack_sides(ds: EODataset, west: np.ndarray, east: np.ndarray, work: Path, name: str) -> tuple[Path, Path]:
    """The two domains as packed ``.npz`` files (pixels read through ``ds.read``, so resized)."""
    paths = work / f"{name}_west.npz", work / f"{name}_east.npz"
    for idx, path in zip((west, east), paths, strict=True):
        if not path.exists():
            pack_dataset(ds, path, idx, keep_encoded=False, progress=False)
    return paths


def prepare_eurosat(args: argparse.Namespace, work: Path) -> tuple[Path, Path, str]:
    ResizedFolder.size = args.eurosat_px
    ds = ResizedFolder(Path(args.eurosat).resolve(), bands="eurosat-ms")
    zones = block_ids(ds.lonlat(), "utm-zone")
    number = np.array([int(z[:-1]) for z in zones])
    west, east = np.flatnonzero(number <= args.eurosat_west_zone), np.flatnonzero(number > args.eurosat_west_zone)
    desc = (
        f"EuroSAT-MS, {len(ds)} patches at {args.eurosat_px} px, 13 bands: source = UTM zones ≤ {args.eurosat_west_zone}N "
        f"({len(west)} patches, {', '.join(sorted(set(zones[west])))}), target = zones east of it ({len(east)} patches, "
        f"{', '.join(sorted(set(zones[east])))})"
    )
    return *pack_sides(ds, west, east, work, f"eurosat{args.eurosat_px}"), desc


def prepare_harvey(args: argparse.Namespace, work: Path) -> tuple[Path, Path, str]:
    ResizedFolder.size = args.harvey_px
    ds = ResizedFolder(Path(args.harvey).resolve(), bands="rgb")
    rng = np.random.default_rng(0)
    subset = []
    for c in range(len(ds.classes)):  # stratified: the classes in their overall proportion
        idx = np.flatnonzero(ds.labels == c)
        subset.extend(rng.choice(idx, int(round(args.harvey_chips * len(idx) / len(ds))), replace=False))
    chosen = np.sort(np.asarray(subset))
    lon = ds.lonlat()[chosen, 0]
    cut = float(np.median(lon))
    west, east = chosen[lon <= cut], chosen[lon > cut]
    desc = (
        f"Hurricane Harvey, stratified random {len(chosen)} of {len(ds)} chips (seed 0) at {args.harvey_px} px, RGB: "
        f"source = west of the subset's median longitude {cut:.4f}° ({len(west)} chips), target = east ({len(east)} chips)"
    )
    return *pack_sides(ds, west, east, work, f"harvey{args.harvey_chips}_{args.harvey_px}"), desc


@torch.no_grad()
def logits_features(model: torch.nn.Module, images: torch.Tensor, batch: int = 128) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    logits, feats = [], []
    for s in range(0, len(images), batch):
        f = model.features(images[s : s + batch])  # type: ignore[operator]
        feats.append(f.numpy())
        logits.append(model.head(f).numpy())  # type: ignore[operator]
    return np.concatenate(logits), np.concatenate(feats)


def run_task(name: str, west: Path, east: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    src, tgt = open_dataset(west), open_dataset(east)
    if src.classes != tgt.classes:
        raise SystemExit(f"{name}: source and target classes differ ({src.classes} vs {tgt.classes})")
    x_src = torch.from_numpy(np.stack([src.checked_read(i) for i in range(len(src))]))
    x_tgt = torch.from_numpy(np.stack([tgt.checked_read(i) for i in range(len(tgt))]))
    y_tgt = tgt.labels
    stats_src = band_statistics_matrix(src.checked_read, np.arange(len(src)))
    stats_tgt = band_statistics_matrix(tgt.checked_read, np.arange(len(tgt)))
    schedule = {"head_epochs": args.head_epochs, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
                "backbone_lr_factor": args.backbone_lr_factor, "patience": 0}  # fmt: skip
    common = {"backbone": "resnet10t", "accelerator": "cpu", "progress": False, "verbose": False, **schedule}
    methods: list[tuple[str, dict[str, Any]]] = [(SOURCE_ONLY, {"strategy": "finetune", "weights": WEIGHTS})]
    methods += [(m, {"strategy": m, "weights": WEIGHTS, "target": str(east), "adapt_weight": args.adapt_weight}) for m in ADAPTING]  # fmt: skip
    methods.append((SCRATCH, {"strategy": "finetune", "weights": None}))
    rows = []
    for seed in range(args.seeds):
        s = stratified_split(src.labels, test_fraction=0.15, val_fraction=0.0, seed=seed)
        split = Split(s.train, s.test, np.zeros(0, np.int64), {"kind": "source train/val", "seed": seed})
        clf = fit_band_statistics_classifier(stats_src[split.train], src.labels[split.train], seed)
        acc = float((clf.predict(stats_tgt) == y_tgt).mean())
        rows.append({"task": name, "method": BAND_STATS, "seed": seed, "target_accuracy": acc, "pad": float("nan"),
                     "source_val_accuracy": float("nan"), "seconds": 0.0})  # fmt: skip
        for method, options in methods:
            t0 = time.perf_counter()
            r = eotransfer.fit(src, split_override=split, seed=seed, **common, **options)
            logits, f_tgt = logits_features(r.model, x_tgt)
            _, f_src = logits_features(r.model, x_src[split.train])
            row = {"task": name, "method": method, "seed": seed,
                   "target_accuracy": float((logits.argmax(1) == y_tgt).mean()),
                   "pad": proxy_a_distance(f_src, f_tgt, seed),
                   "source_val_accuracy": r.metrics.get("val", {}).get("overall_accuracy", float("nan")),
                   "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
            rows.append(row)
            print(f"{name} seed {seed} {method}: target {row['target_accuracy']:.3f}  PAD {row['pad']:.3f}  "
                  f"({row['seconds']:.0f} s)", flush=True)  # fmt: skip
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        base = {r["seed"]: r["target_accuracy"] for r in rows if r["task"] == task and r["method"] == SOURCE_ONLY}
        for method in dict.fromkeys(r["method"] for r in rows if r["task"] == task):
            rs = [r for r in rows if r["task"] == task and r["method"] == method]
            acc, acc_ci = mean_ci95([r["target_accuracy"] for r in rs])
            pad, pad_ci = mean_ci95([r["pad"] for r in rs]) if not np.isnan(rs[0]["pad"]) else (float("nan"),) * 2
            delta, delta_ci = mean_ci95([r["target_accuracy"] - base[r["seed"]] for r in rs if r["seed"] in base])
            wins = sum(r["target_accuracy"] > base[r["seed"]] for r in rs if r["seed"] in base)
            out.append({"task": task, "method": method, "n": len(rs), "acc": acc, "acc_ci": acc_ci, "pad": pad,
                        "pad_ci": pad_ci, "delta": delta, "delta_ci": delta_ci, "wins": wins})  # fmt: skip
    return out


def fmt(m: float, ci: float, scale: float = 1.0, digits: int = 3) -> str:
    if np.isnan(m):
        return "—"
    return f"{m * scale:.{digits}f} ± {ci * scale:.{digits}f}" if not np.isnan(ci) else f"{m * scale:.{digits}f}"


def verdict(summary: list[dict[str, Any]]) -> str:
    parts = []
    for task in dict.fromkeys(s["task"] for s in summary):
        adapt = [s for s in summary if s["task"] == task and s["method"] in ADAPTING]
        best = max(adapt, key=lambda s: s["delta"])
        at_least = [s["method"] for s in adapt if s["delta"] >= 0]
        parts.append(
            f"**{task}**: methods at or above source-only (mean): {', '.join(at_least) or 'none'} of "
            f"{', '.join(s['method'] for s in adapt)}; best {best['method']} {best['delta'] * 100:+.1f} points "
            f"(95 % interval of the paired difference ±{best['delta_ci'] * 100:.1f}, higher in {best['wins']}/{best['n']} "
            f"seeds) — the +3-point target is {'met' if best['delta'] >= 0.03 else 'not met'}"
        )
    return "\n".join(f"- {p}" for p in parts)


def markdown(summary: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = ["# Domain adaptation: source-only vs. DANN vs. MMD vs. CORAL", "", f"`{meta['command']}`", "",
             f"{meta['machine']}, torch {meta['torch']}; {meta['seeds']} seeds (0…{meta['seeds'] - 1}); "
             f"{meta['minutes']:.1f} minutes in all.", "",
             f"Schedule (every network): {json.dumps(meta['schedule'])}; adapt weight λ = {meta['adapt_weight']} "
             f"for dann/mmd/coral; backbone resnet10t from `{WEIGHTS}` except the scratch row.", ""]  # fmt: skip
    lines += [f"- {d}" for d in meta["tasks"].values()]
    lines += ["", "Target accuracy and proxy A-distance (source-training vs. target backbone features; 0 = "
              "indistinguishable, 2 = separable): mean ± 95 % t-interval over seeds. Δ: paired difference to "
              "source-only, in points.", ""]  # fmt: skip
    for task in dict.fromkeys(s["task"] for s in summary):
        lines += [f"## {task}", "", "| method | target accuracy | Δ vs. source-only (points) | higher than source-only | proxy A-distance |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for s in (s for s in summary if s["task"] == task):
            delta = "—" if s["method"] == SOURCE_ONLY else fmt(s["delta"], s["delta_ci"], 100, 1)
            wins = "—" if s["method"] == SOURCE_ONLY else f"{s['wins']}/{s['n']} seeds"
            lines.append(
                f"| {s['method']} | {fmt(s['acc'], s['acc_ci'])} | {delta} | {wins} | {fmt(s['pad'], s['pad_ci'])} |"
            )
        lines.append("")
    lines += ["## Verdict", "", verdict(summary), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default="eurosat,harvey", help="comma-separated: eurosat, harvey")
    ap.add_argument("--eurosat", default=str(REPO / "../shared/data/eurosat-ms"))
    ap.add_argument("--harvey", default=str(REPO / "../shared/data/hurricane-harvey"))
    ap.add_argument("--eurosat-px", type=int, default=64)
    ap.add_argument("--eurosat-west-zone", type=int, default=31, help="last UTM zone number of the source")
    ap.add_argument("--harvey-chips", type=int, default=1500)
    ap.add_argument("--harvey-px", type=int, default=64)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--head-epochs", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=4, help="end-to-end (adapt) epochs")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--backbone-lr-factor", type=float, default=0.3)
    ap.add_argument("--adapt-weight", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="/tmp/eotransfer-domain-adaptation", help="where the packed domains go")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/domain_adaptation_cpu"))
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    torch.set_num_threads(args.threads)
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    prepare = {"eurosat": prepare_eurosat, "harvey": prepare_harvey}
    rows: list[dict[str, Any]] = []
    tasks: dict[str, str] = {}
    for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        west, east, desc = prepare[task](args, work)
        tasks[task] = desc
        print(desc, flush=True)
        rows += run_task(task, west, east, args)
        with open(out / "domain_adaptation.csv", "w", newline="") as f:  # after each task: partial results survive
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    summary = summarise(rows)
    meta = {
        "command": "python " + shlex.join(["benchmarks/domain_adaptation.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": f"CPU, {os.cpu_count()} cores, shared with other work ({platform.processor() or platform.machine()})",
        "torch": torch.__version__, "seeds": args.seeds, "minutes": (time.perf_counter() - t0) / 60,
        "schedule": {k: getattr(args, k) for k in ("head_epochs", "epochs", "batch_size", "lr", "backbone_lr_factor")},
        "adapt_weight": args.adapt_weight, "tasks": tasks,
    }  # fmt: skip
    text = markdown(summary, meta)
    atomic_write_text(out / "domain_adaptation.md", text)
    atomic_write_text(out / "domain_adaptation.json", json.dumps({"meta": meta, "summary": summary}, indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
