"""The band-statistics reference as a deployable graph: fit it, export it, check and time the export (CPU).

Fits ``--backbone band-stats --strategy feature-extraction`` (logistic regression, C by cross-validation) on
EuroSAT-MS with the default stratified split, exports it with ``eotransfer.export.export_model`` (the scaler and
coefficients folded into the head; parity against scikit-learn's probabilities and against PyTorch on real
patches), then times ONNX Runtime against the PyTorch + scikit-learn path on the same random 13 × 64 × 64
patches (gamma-distributed reflectances, fixed seed; median of ``--repeats`` passes after a warm-up).

    .venv/bin/python benchmarks/export_band_stats.py [--data ../shared/data/eurosat-ms] [--images 1024]
        [--repeats 5] [--threads 2] [--out benchmarks/results/export_band_stats_cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch

import eotransfer
from eotransfer.card import load_model
from eotransfer.export import export_model, parity_table


def _median_seconds(fn: Any, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/eurosat-ms"))
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/export_band_stats_cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, export_dir = Path(tmp) / "model", Path(tmp) / "export"
        fit = eotransfer.fit(args.data, bands="eurosat-ms", backbone="band-stats", strategy="feature-extraction",
                             out=str(model_dir), accelerator="cpu", progress=False, verbose=False)  # fmt: skip
        report = export_model(model_dir, export_dir, check_data=args.data, check_bands="eurosat-ms")
        print(parity_table(report))
        x = np.random.default_rng(0).gamma(2.0, 600.0, (args.images, 13, 64, 64)).astype(np.float32)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = onnxruntime.InferenceSession(str(export_dir / "model.onnx"), options,
                                               providers=["CPUExecutionProvider"])  # fmt: skip
        saved = load_model(model_dir)
        logits = session.run(["logits"], {"image": x})[0].astype(np.float64)
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        agree = float((probs.argmax(1) == saved.predict_proba(x).argmax(1)).mean())
        t_onnx = _median_seconds(lambda: session.run(["logits"], {"image": x}), args.repeats)
        t_torch = _median_seconds(lambda: saved.predict_proba(x), args.repeats)
        result = {
            "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
            "test_accuracy": fit.metrics["test"]["overall_accuracy"],
            "test_n": fit.metrics["test"]["n"],
            "parity": report["parity"],
            "head": report["head"],
            "onnx_bytes": os.path.getsize(export_dir / "model.onnx"),
            "images": args.images,
            "threads": args.threads,
            "argmax_agree_random": agree,
            "onnx_patches_per_s": args.images / t_onnx,
            "pytorch_sklearn_patches_per_s": args.images / t_torch,
        }
    (out / "result.json").write_text(json.dumps(result, indent=2, default=str))
    print(f"test accuracy {result['test_accuracy']:.3f} (n={result['test_n']}); ONNX file {result['onnx_bytes']} bytes")
    print(f"{args.images} random 13×64×64 patches, {args.threads} threads: ONNX Runtime "
          f"{result['onnx_patches_per_s']:.0f} patches/s, PyTorch + scikit-learn "
          f"{result['pytorch_sklearn_patches_per_s']:.0f} patches/s; argmax agrees on {agree:.1%}")  # fmt: skip


if __name__ == "__main__":
    main()
