"""Cross-sensor transfer: a Sentinel-2 (13-band) EuroSAT-MS model applied to, and fine-tuned on, other band sets.

For each seed, two source models are fine-tuned on all 13 bands from the shipped pre-trained
backbone: one plainly, one with ``--band-dropout``.  Each is then scored on the test side seen
through other band sets:

* ``s2-13``: all 13 bands (the source setting);
* ``rgb``: B04, B03, B02 only;
* ``landsat8-like``: the Sentinel-2 bands nearest to Landsat 8 OLI's (B01, B02, B03, B04, B8A, B11,
  B12, B10), *renamed* to Landsat 8's B1–B7 and B9, so that they reach the model through the
  band-aware mapping (common name, then wavelength) as a Landsat 8 patch would; pixel values stay
  Sentinel-2's, so this isolates the band-set change from the radiometric one;
* ``no-red-edge``: B05, B06, B07 missing.

``apply``: the source model with the bands the target lacks masked (``evaluate --missing-bands
mask``).  ``fine-tune``: the source model as ``--weights`` for ``finetune`` on the target bands (the
first layer's kernels mapped by band).  Reference rows on the same target bands, split and seeds:
band statistics + logistic regression, and ``finetune`` from scratch.

    python benchmarks/cross_sensor.py --data ../shared/data/eurosat-ms --seeds 3 --out benchmarks/results/cross_sensor_cpu
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from eotransfer.api import align_bands, fit, predict_samples  # noqa: E402
from eotransfer.bands import BandSet  # noqa: E402
from eotransfer.card import load_model  # noqa: E402
from eotransfer.data.base import EODataset, open_dataset  # noqa: E402
from eotransfer.data.splits import make_split  # noqa: E402
from eotransfer.engine.metrics import mean_ci95  # noqa: E402
from eotransfer.evaluation.benchmark import reference_accuracy  # noqa: E402

#: target band set → (Sentinel-2 bands read, the names they are given; None = keep Sentinel-2's)
TARGETS: dict[str, tuple[list[str], str | None]] = {
    "s2-13": (["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"], None),
    "rgb": (["B04", "B03", "B02"], None),
    "landsat8-like": (["B01", "B02", "B03", "B04", "B8A", "B11", "B12", "B10"], "landsat8:B1,B2,B3,B4,B5,B6,B7,B9"),
    "no-red-edge": (["B01", "B02", "B03", "B04", "B08", "B8A", "B09", "B10", "B11", "B12"], None),
}
FINETUNE: dict[str, Any] = {"strategy": "finetune", "head_epochs": 15, "epochs": 12, "patience": 6, "batch_size": 32}


def target_data(root: Path, name: str) -> EODataset:
    bands, rename = TARGETS[name]
    ds = open_dataset(root, bands="eurosat-ms")
    ds.select_bands(bands)
    if rename:
        ds.bands = BandSet.parse(rename)  # the same pixels, declared as another sensor's bands
    return ds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="EuroSAT-MS (13-band GeoTIFF class folders)")
    ap.add_argument("--backbone", default="resnet10t")
    ap.add_argument("--weights", default="eotransfer:eurosat-s2-resnet10t-moco")
    ap.add_argument("--band-dropout", type=float, default=0.3)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows_path = args.out / "rows.jsonl"
    rows_path.unlink(missing_ok=True)
    t_start = time.time()
    full = open_dataset(args.data, bands="eurosat-ms")
    common = {"backbone": args.backbone, "accelerator": "cpu", "progress": False, "verbose": False}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            split = make_split("stratified", full.labels, seed=seed, test_fraction=0.3, val_fraction=0.1)
            rows: list[dict[str, Any]] = []
            sources = {}
            for tag, p in (("plain", 0.0), (f"band-dropout {args.band_dropout}", args.band_dropout)):
                out = Path(tmp) / f"source-{seed}-{p}"
                fit(full, split_override=split, weights=args.weights, seed=seed, out=str(out), band_dropout=p,
                    **FINETUNE, **common)  # fmt: skip
                sources[tag] = out
            for target in TARGETS:
                ds = target_data(args.data, target)
                rows.append(
                    {
                        "target": target,
                        "method": "band-stats+LR",
                        "accuracy": reference_accuracy(ds, split, seed)["overall_accuracy"],
                    }
                )
                res = fit(ds, split_override=split, weights=None, seed=seed, **FINETUNE, **common)
                rows.append(
                    {"target": target, "method": "scratch", "accuracy": res.metrics["test"]["overall_accuracy"]}
                )
                for tag, src in sources.items():
                    acc = _test_accuracy(src, target_data(args.data, target), split)
                    rows.append({"target": target, "method": f"apply ({tag})", "accuracy": acc})
                    res = fit(ds, split_override=split, weights=str(src), seed=seed, **FINETUNE, **common)
                    rows.append({"target": target, "method": f"fine-tune ({tag})",
                                 "accuracy": res.metrics["test"]["overall_accuracy"]})  # fmt: skip
            with rows_path.open("a") as f:
                for r in rows:
                    f.write(json.dumps({"seed": seed, **r}) + "\n")
            print(f"seed {seed} done at {time.time() - t_start:.0f} s: "
                  + ", ".join(f"{r['target']}/{r['method']}={r['accuracy']:.3f}" for r in rows), flush=True)  # fmt: skip
    table = summarise(rows_path, args)
    (args.out / "results.md").write_text(table)
    print(table)
    print(f"total {time.time() - t_start:.0f} s on CPU ({torch.get_num_threads()} threads)")
    return 0


def _test_accuracy(model: Path, ds: EODataset, split: Any) -> float:
    """Accuracy of a saved model on the test side of ``split``, bands the data lack masked."""
    saved = load_model(model)
    align_bands(saved.bands, ds, "mask", verbose=False)
    probs = predict_samples(saved, ds, split.test)
    return float((probs.argmax(1) == ds.labels[split.test]).mean())


def summarise(rows_path: Path, args: argparse.Namespace) -> str:
    rows = [json.loads(line) for line in rows_path.read_text().splitlines()]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    seeds = len({r["seed"] for r in rows})
    lines = [
        "# Cross-sensor: EuroSAT-MS 13-band models on other band sets",
        "",
        f"`python benchmarks/cross_sensor.py --data {args.data} --seeds {args.seeds} --band-dropout "
        f"{args.band_dropout} --out {args.out}`",
        "",
        f"CPU (2 cores, shared with other work); {args.backbone} from `{args.weights}`; stratified split "
        f"(30 % test), {seeds} seeds; test accuracy, mean ± 95 % interval (t).",
        "",
        "| method | " + " | ".join(TARGETS) + " |",
        "|---|" + "---|" * len(TARGETS),
    ]
    for m in methods:
        cells = []
        for t in TARGETS:
            vals = [r["accuracy"] for r in rows if r["method"] == m and r["target"] == t]
            mean, half = mean_ci95(vals)
            cells.append(f"{mean:.3f} ± {half:.3f}" if vals else "—")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
