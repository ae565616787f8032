"""Zero-shot land cover on EuroSAT-MS: unseen classes predicted from their descriptions alone.

For each of ``--splits`` draws of ``--unseen`` held-out classes (of EuroSAT's 10), the ``zero-shot``
strategy is fitted on the seen classes only (the unseen classes' training and validation samples are
ignored), with the shipped backbone ``resnet10t`` + ``eotransfer:eurosat-s2-resnet10t-moco`` frozen
and the shipped EuroSAT descriptions (``src/eotransfer/descriptions/eurosat.yaml``) embedded by the
offline all-MiniLM-L6-v2 encoder.  Methods: ``devise`` (projection trained by the engine) and
``eszsl`` (closed form); ``eszsl-names`` is ESZSL with the bare class names as descriptions, to show
what the descriptions add.

The split is the backbone's own held-out split (``stratified``, seed 0, 30 % test, 10 % of the rest
for validation): the 63 test patches were never in the self-supervised pre-training pool, so the
figures are on them only.  Reported per split and averaged: conventional zero-shot accuracy (unseen
test samples, argmax among the unseen classes; chance = 1/#unseen), and generalised zero-shot
(argmax among all classes) seen/unseen per-class accuracy and harmonic mean H at γ = 0; AUSUC,
the area under the seen-unseen accuracy curve traced by calibrated stacking's γ (Chao et al. 2016),
which needs no choice of γ; and the best H over γ, chosen on the test set (an upper bound, flagged).

    .venv/bin/python benchmarks/zeroshot.py --data ../shared/data/eurosat-ms --out benchmarks/results/zeroshot_cpu
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import eotransfer
from eotransfer.card import atomic_write_text
from eotransfer.data.base import open_dataset
from eotransfer.data.splits import Split, make_split
from eotransfer.strategies.zeroshot import calibrated_stacking, zeroshot_metrics


def seen_unseen_curve(y: np.ndarray, scores: np.ndarray, seen: np.ndarray) -> tuple[float, float, float]:
    """AUSUC and the best harmonic mean over calibrated stacking's γ (Chao et al. 2016).

    γ runs over every value at which some test sample's prediction switches between its best seen and
    best unseen class, from "always unseen" to "always seen".
    """
    gap = scores[:, seen].max(1) - scores[:, ~seen].max(1)
    gammas = np.concatenate([[gap.min() - 1], np.sort(gap), [gap.max() + 1]])
    points = []
    for g in gammas:
        m = zeroshot_metrics(y, calibrated_stacking(scores, seen, float(g)), seen)
        points.append((m["unseen_accuracy"], m["seen_accuracy"], m["harmonic_mean"]))
    pts = np.array(sorted(points))
    # the area under seen accuracy as a function of unseen accuracy (the curve's upper envelope per x)
    xs = np.unique(pts[:, 0])
    ys = np.array([pts[pts[:, 0] == x, 1].max() for x in xs])
    return float(np.trapezoid(ys, xs)), float(pts[:, 2].max()), float(gammas[int(np.argmax([p[2] for p in points]))])


def run_one(ds: Any, split: Split, unseen: list[str], method: str, descriptions: str | None, epochs: int,
            seed: int) -> dict[str, Any]:  # fmt: skip
    t0 = time.perf_counter()
    result = eotransfer.fit(ds, split_override=split, strategy="zero-shot", method=method, backbone="resnet10t",
                            weights="eotransfer:eurosat-s2-resnet10t-moco", unseen_classes=",".join(unseen),
                            descriptions=descriptions, epochs=epochs, seed=seed, accelerator="cpu",
                            progress=False, verbose=False)  # fmt: skip
    model = result.model.cpu().eval()
    with torch.no_grad():
        x = torch.from_numpy(np.stack([ds[int(i)]["image"].numpy() for i in split.test]))
        scores = model(x).double().numpy()
    y = ds.labels[split.test]
    seen = np.array([c not in unseen for c in ds.classes])
    m = zeroshot_metrics(y, scores, seen)
    ausuc, best_h, best_gamma = seen_unseen_curve(y, scores, seen)
    return {"method": method, "unseen": unseen, **m, "ausuc": ausuc, "best_h_test_oracle": best_h,
            "best_gamma_test_oracle": best_gamma, "epochs_run": len(result.history),
            "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip


def summarise(rows: list[dict[str, Any]]) -> str:
    keys = ["zsl_unseen_accuracy", "chance", "seen_accuracy", "unseen_accuracy", "harmonic_mean", "ausuc",
            "best_h_test_oracle"]  # fmt: skip
    lines = ["| method | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for method in dict.fromkeys(r["method"] for r in rows):
        sel = [r for r in rows if r["method"] == method]
        cells = []
        for k in keys:
            v = np.array([r[k] for r in sel], dtype=np.float64)
            cells.append(f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}")
        lines.append(f"| {method} (n={len(sel)} splits) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/eurosat-ms")
    ap.add_argument("--unseen", type=int, default=3, help="held-out classes per split")
    ap.add_argument("--splits", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=30, help="devise epochs (early stopping on seen-class validation)")
    ap.add_argument("--methods", default="devise,eszsl,eszsl-names")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/zeroshot_cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = open_dataset(args.data, bands="eurosat-ms")
    read = functools.lru_cache(maxsize=None)(ds.read)  # 206 small patches: read each GeoTIFF once
    ds.read = lambda i: read(i).copy()  # type: ignore[method-assign]
    base = make_split("stratified", ds.labels, seed=0, test_fraction=0.3, val_fraction=0.1)  # the backbone's held-out
    names_yaml = Path(tempfile.mkdtemp()) / "names.yaml"
    names_yaml.write_text("".join(f"{c}: {' '.join(w.lower() for w in _split_camel(c))}\n" for c in ds.classes))
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for s in range(args.splits):
        unseen = sorted(np.random.default_rng(s).choice(ds.classes, args.unseen, replace=False).tolist())
        for method in args.methods.split(","):
            descriptions = str(names_yaml) if method == "eszsl-names" else None
            row = run_one(ds, base, unseen, method.removesuffix("-names"), descriptions, args.epochs, seed=s)
            row["method"], row["split"] = method, s
            rows.append(row)
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    meta = {"command": "python " + shlex.join(sys.argv), "data": str(Path(args.data).resolve()), "n_patches": len(ds),
            "split": {"kind": "stratified", "seed": 0, "test_fraction": 0.3, "val_fraction": 0.1,
                      "n_train": len(base.train), "n_val": len(base.val), "n_test": len(base.test)},
            "backbone": "resnet10t + eotransfer:eurosat-s2-resnet10t-moco (frozen)", "text_encoder": "all-MiniLM-L6-v2",
            "unseen_draws": "numpy default_rng(split).choice(classes, unseen)", "fit_seed": "= split index",
            "hardware": f"CPU, {args.threads} threads ({platform.processor() or platform.machine()}), 2 cores shared",
            "torch": torch.__version__, "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
    atomic_write_text(out / "zeroshot.json", json.dumps({"meta": meta, "rows": rows}, indent=2))
    table = summarise(rows)
    atomic_write_text(out / "zeroshot.md", f"# Zero-shot EuroSAT-MS\n\n`{meta['command']}`\n\n{table}\n")
    print(table)


def _split_camel(name: str) -> list[str]:
    import re

    return re.findall(r"[A-Z][a-z]*|[a-z]+", name) or [name]


if __name__ == "__main__":
    main()
