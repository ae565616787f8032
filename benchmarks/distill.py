"""Teacher against distilled student: parameters, multiply-accumulates, CPU latency and accuracy side by side.

Fits a student (``--student``, a smaller timm architecture) with the ``distill`` strategy
(Hinton et al. 2015) from a saved teacher, on the teacher's own split (its card's split settings,
so the test samples are unseen by both), then measures both networks:

- parameters (all of the classifier: backbone and head);
- multiply-accumulates per image: ``torch.utils.flop_counter.FlopCounterMode`` on one input of the
  data's size, MACs = FLOPs / 2 (convolutions and matrix products; element-wise work is not counted);
- CPU latency per image: median and minimum wall time, and median thread CPU time, over ``--runs``
  timed forward passes (after ``--warmup``) at batch 1 and at batch 32 (divided by 32), under ``torch.inference_mode`` with ``--threads`` torch threads;
- overall accuracy on the same test samples.

    .venv/bin/python benchmarks/distill.py --teacher models/eurosat-resnet18 --data data/eurosat-ms \\
        --bands eurosat-ms --student resnet10t --epochs 30 --threads 4 --out benchmarks/results/distill
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

import eotransfer
from eotransfer.api import predict_samples
from eotransfer.card import atomic_write_text, load_model
from eotransfer.data.base import open_dataset

#: the fit settings that decide the split; taken from the teacher's card
SPLIT_KEYS = ("split", "labels_per_class", "val_per_class", "test_fraction", "val_fraction", "block_deg", "seed")


def macs_per_image(model: torch.nn.Module, image: torch.Tensor) -> int:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(image[None])
    return int(counter.get_total_flops()) // 2


def latencies_ms(
    models: dict[str, torch.nn.Module], batch: torch.Tensor, runs: int, warmup: int
) -> dict[str, dict[str, float]]:
    """Milliseconds per image of a forward pass on ``batch``, for each model: wall median and minimum, CPU median.

    The models take turns run by run, so that load from other processes on a shared machine falls on
    all of them alike instead of on whichever was timed while it lasted.  The minimum wall time over
    the runs is timeit's estimate of what the machine does undisturbed (interference only ever adds
    time); the median includes typical interference.  With one torch thread the forward pass runs in
    the calling thread, so its thread CPU time (``time.thread_time``) is the compute it cost, whatever
    else the cores were doing: the steadiest figure on a shared machine.
    """
    wall: dict[str, list[float]] = {name: [] for name in models}
    cpu: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for i in range(warmup + runs):
            for name, model in models.items():
                c0, t0 = time.thread_time(), time.perf_counter()
                model(batch)
                t1, c1 = time.perf_counter(), time.thread_time()
                if i >= warmup:
                    wall[name].append(t1 - t0)
                    cpu[name].append(c1 - c0)
    n = 1000.0 / len(batch)
    return {
        name: {"median": n * statistics.median(wall[name]), "min": n * min(wall[name]),
               "cpu_median": n * statistics.median(cpu[name])}
        for name in models
    }  # fmt: skip


def measure(
    models: dict[str, torch.nn.Module], images: torch.Tensor, runs: int, warmup: int
) -> dict[str, dict[str, Any]]:
    models = {name: model.eval().cpu() for name, model in models.items()}
    batch32 = images[torch.arange(32) % len(images)]
    one = latencies_ms(models, images[:1], runs, warmup)
    many = latencies_ms(models, batch32, runs, warmup)
    return {
        name: {
            "parameters": sum(p.numel() for p in model.parameters()),
            "macs_per_image": macs_per_image(model, images[0]),
            "latency_ms_batch1": one[name]["median"],
            "latency_ms_per_image_batch32": many[name]["median"],
            "latency_ms_batch1_min": one[name]["min"],
            "latency_ms_per_image_batch32_min": many[name]["min"],
            "cpu_ms_batch1": one[name]["cpu_median"],
            "cpu_ms_per_image_batch32": many[name]["cpu_median"],
        }
        for name, model in models.items()
    }


def markdown(rows: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    t, s = rows["teacher"], rows["student"]
    lines = [
        "# Distillation: teacher against student",
        "",
        f"`{meta['command']}`",
        "",
        f"{meta['machine']}, torch {meta['torch']}, {meta['threads']} thread(s); latency: median of {meta['runs']} runs, teacher and student timed in turns; "
        f"test: {meta['n_test']} samples of the teacher's split; student fit {meta['fit_seconds']:.1f} s.",
        "",
        "| | architecture | parameters | MACs / image | CPU ms / image (batch 1) | CPU ms / image (batch 32) | test accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in (("teacher", t), ("student", s)):
        lines.append(
            f"| {name} | {r['arch']} | {r['parameters']:,} | {r['macs_per_image'] / 1e6:,.1f} M | "
            f"{r['latency_ms_batch1']:.2f} | {r['latency_ms_per_image_batch32']:.3f} | {r['test_accuracy']:.3f} |"
        )
    lines.append(
        f"| student / teacher | | {s['parameters'] / t['parameters']:.2f}× | {s['macs_per_image'] / t['macs_per_image']:.2f}× | "
        f"{s['latency_ms_batch1'] / t['latency_ms_batch1']:.2f}× | "
        f"{s['latency_ms_per_image_batch32'] / t['latency_ms_per_image_batch32']:.2f}× | "
        f"{s['test_accuracy'] - t['test_accuracy']:+.3f} |"
    )
    if "latency_ms_batch1_min" in t:
        lines += [
            "",
            f"Best of {meta['runs']} runs (timeit's minimum): teacher {t['latency_ms_batch1_min']:.2f} / "
            f"{t['latency_ms_per_image_batch32_min']:.3f} ms, student {s['latency_ms_batch1_min']:.2f} / "
            f"{s['latency_ms_per_image_batch32_min']:.3f} ms per image at batch 1 / 32: the student is "
            f"{t['latency_ms_batch1_min'] / s['latency_ms_batch1_min']:.2f}× and "
            f"{t['latency_ms_per_image_batch32_min'] / s['latency_ms_per_image_batch32_min']:.2f}× faster "
            f"(medians: {t['latency_ms_batch1'] / s['latency_ms_batch1']:.2f}× and "
            f"{t['latency_ms_per_image_batch32'] / s['latency_ms_per_image_batch32']:.2f}×).",
        ]
    if "cpu_ms_batch1" in t:
        lines += [
            "",
            f"CPU time of the forward pass (median thread time, {meta['threads']} thread(s)): teacher "
            f"{t['cpu_ms_batch1']:.2f} / {t['cpu_ms_per_image_batch32']:.3f} ms, student {s['cpu_ms_batch1']:.2f} / "
            f"{s['cpu_ms_per_image_batch32']:.3f} ms per image at batch 1 / 32: the student is "
            f"{t['cpu_ms_batch1'] / s['cpu_ms_batch1']:.2f}× and "
            f"{t['cpu_ms_per_image_batch32'] / s['cpu_ms_per_image_batch32']:.2f}× cheaper"
            + ("" if meta["threads"] == 1 else " (with more than one thread this misses the worker threads' time)")
            + ".",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher", required=True, help="saved eotransfer model directory")
    ap.add_argument("--data", required=True, help="the labelled data set the teacher was trained on")
    ap.add_argument("--bands", default=None, help="the data's bands (default: the teacher's)")
    ap.add_argument("--student", default="resnet10t", help="student architecture (default resnet10t)")
    ap.add_argument("--weights", default=None, help="student initialisation (default: random)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the latency (default 1)")
    ap.add_argument("--runs", type=int, default=30, help="timed runs per latency (default 30)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--accelerator", default="auto", help="where the student trains (latency is always CPU)")
    ap.add_argument("--out", required=True, help="output folder for distill.md and distill.json")
    args = ap.parse_args(argv)

    saved = load_model(args.teacher)
    bands = args.bands or ",".join(saved.bands.keys)
    ds = open_dataset(args.data, bands=bands)
    split_kw = {k: saved.card["fit"][k] for k in SPLIT_KEYS if k in saved.card.get("fit", {})}
    t0 = time.perf_counter()
    result = eotransfer.fit(ds, strategy="distill", teacher=args.teacher, backbone=args.student, weights=args.weights,
                            epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, temperature=args.temperature,
                            alpha=args.alpha, accelerator=args.accelerator, progress=False, verbose=False,
                            **split_kw)  # fmt: skip
    fit_seconds = time.perf_counter() - t0
    test = result.split.test
    teacher_probs = predict_samples(saved, ds, test)
    teacher_acc = float((teacher_probs.argmax(1) == ds.labels[test]).mean())

    torch.set_num_threads(args.threads)
    images = torch.from_numpy(np.stack([ds[int(i)]["image"].numpy() for i in test[:32]]))
    timed = measure({"teacher": saved.network, "student": result.model}, images, args.runs, args.warmup)
    rows = {
        "teacher": {"arch": saved.card["arch"], **timed["teacher"], "test_accuracy": teacher_acc},
        "student": {"arch": args.student, **timed["student"],
                    "test_accuracy": float(result.metrics["test"]["overall_accuracy"])},
    }  # fmt: skip
    meta = {
        "command": "python " + shlex.join(["benchmarks/distill.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": f"{platform.processor() or platform.machine()} ({platform.system()})",
        "torch": torch.__version__,
        "threads": args.threads,
        "runs": args.runs,
        "n_test": len(test),
        "fit_seconds": fit_seconds,
        "split": split_kw,
        "strategy_params": result.card["strategy"]["params"],
    }
    out = Path(args.out)
    atomic_write_text(out / "distill.json", json.dumps({"meta": meta, **rows}, indent=2))
    atomic_write_text(out / "distill.md", markdown(rows, meta))
    print(markdown(rows, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
