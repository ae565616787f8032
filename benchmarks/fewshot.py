"""Few-shot benchmark on EuroSAT-MS: 5 base / 5 novel classes (and the swap), 5-way 1- and 5-shot.

For each class split, backbones (resnet10t) are embedded frozen on the novel classes' images and
scored over ``--episodes`` episodes (the same episodes for every backbone and method) by
nearest prototype (``protonet``) and by a logistic-regression head fitted on the support set
(``finetune``, the fine-tune-on-the-support baseline with a frozen backbone):

- ``random-init``: an untrained resnet10t (a floor);
- ``scratch+protonet``: resnet10t meta-trained from scratch with ``--strategy protonet`` on the base classes;
- ``moco``: the shipped ``eotransfer:eurosat-s2-resnet10t-moco`` backbone, frozen;
- ``moco+protonet``: the same backbone meta-trained with ``protonet`` on the base classes.

Meta-training runs through ``eotransfer.fit`` (the one engine) with a wall-clock budget per run
(``--train-seconds``); the episodes actually run are recorded.  The shipped backbone was
pre-trained without labels on EuroSAT's training side, which includes the novel classes' images.

    python benchmarks/fewshot.py --data ../shared/data/eurosat-ms --out benchmarks/results/fewshot_cpu
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

import eotransfer
import eotransfer.api
from eotransfer.api import FitConfig, choose_normalizer
from eotransfer.data.base import open_dataset
from eotransfer.data.splits import Split
from eotransfer.engine.loop import EngineConfig
from eotransfer.evaluation.fewshot import embed, evaluate_episodes
from eotransfer.models.backbones import create_backbone
from eotransfer.models.model import EOClassifier

MOCO = "eotransfer:eurosat-s2-resnet10t-moco"


def frozen_model(ds, train: np.ndarray, weights: str | None, seed: int) -> torch.nn.Module:  # type: ignore[no-untyped-def]
    """The network ``fit`` would build (normalisation included), untrained."""
    bb = create_backbone("resnet10t", ds.bands, weights, None, 64, seed, verbose=False)
    norm = choose_normalizer(FitConfig(normalization="auto", seed=seed), ds, train, bb.weights.get("normalization"))
    model = EOClassifier(bb.module, bb.num_features, len(ds.classes), len(ds.bands))
    model.normalize.set_from(norm)
    return model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "eurosat-ms"))
    ap.add_argument("--out", default="benchmarks/results/fewshot_cpu")
    ap.add_argument("--episodes", type=int, default=600)
    ap.add_argument("--queries", type=int, default=10, help="query samples per class in evaluation episodes")
    ap.add_argument("--train-shots", type=int, default=5)
    ap.add_argument("--train-queries", type=int, default=5)
    ap.add_argument("--train-seconds", type=float, default=150.0, help="wall-clock budget of each meta-training run")
    ap.add_argument("--batch-size", type=int, default=16, help="engine batch size: one episode per step")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # fit() exposes no time budget; the engine has one: give every meta-training run the same wall-clock budget
    eotransfer.api.EngineConfig = functools.partial(EngineConfig, time_budget_s=args.train_seconds)  # type: ignore[misc]

    t_all = time.perf_counter()
    ds = open_dataset(args.data, bands="eurosat-ms")
    names = list(ds.classes)
    halves = (names[:5], names[5:])
    rows, training = [], []
    for split_name, (base, novel) in (("A", halves), ("B", halves[::-1])):
        base_ids = [names.index(c) for c in base]
        novel_ids = [names.index(c) for c in novel]
        base_idx = np.flatnonzero(np.isin(ds.labels, base_ids))
        novel_idx = np.flatnonzero(np.isin(ds.labels, novel_ids))
        split = Split(
            base_idx, np.zeros(0, np.int64), np.zeros(0, np.int64), {"kind": "base-classes", "seed": args.seed}
        )
        models: dict[str, torch.nn.Module] = {
            "random-init": frozen_model(ds, base_idx, None, args.seed),
            "moco": frozen_model(ds, base_idx, MOCO, args.seed),
        }
        for label, weights, lr in (("scratch+protonet", None, 1e-3), ("moco+protonet", MOCO, 1e-4)):
            t0 = time.perf_counter()
            res = eotransfer.fit(
                ds, strategy="protonet", backbone="resnet10t", weights=weights, split_override=split,
                base_classes=",".join(base), shots=args.train_shots, queries=args.train_queries, ways=5, lr=lr,
                epochs=1000, batch_size=args.batch_size, seed=args.seed, accelerator="cpu", progress=False,
                verbose=False,
            )  # fmt: skip
            steps = len(res.history) * math.ceil(len(base_idx) / args.batch_size)
            losses = [round(r["train_loss"], 3) for r in res.history]
            training.append({"split": split_name, "model": label, "lr": lr, "episodes": steps, "epochs": len(res.history),
                             "seconds": round(time.perf_counter() - t0, 1), "train_loss_per_epoch": losses})  # fmt: skip
            print(json.dumps(training[-1]), flush=True)
            models[label] = res.model
        for label, model in models.items():
            feats, labels = embed(model, ds, novel_idx)
            for shots in (1, 5):
                t0 = time.perf_counter()
                results = evaluate_episodes(feats, labels, ways=5, shots=shots, queries=args.queries,
                                            episodes=args.episodes, seed=args.seed, classes=novel_ids,
                                            class_names=names)  # fmt: skip
                for r in results.values():
                    row = {"split": split_name, "base": "+".join(base), "novel": "+".join(novel), "model": label,
                           **r.to_dict(), "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
                    rows.append(row)
                    print(f"{split_name} {label:<17} 5-way {shots}-shot {r.method:<9} {r.mean:.3f} ± {r.ci95:.3f}",
                          flush=True)  # fmt: skip

    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    meta = {
        "command": " ".join(["python", *sys.argv]),
        "data": f"{args.data} ({len(ds)} patches, 10 classes)",
        "hardware": f"CPU, {args.threads} threads on 2 shared cores ({platform.processor() or platform.machine()})",
        "seed": args.seed, "episodes": args.episodes, "eval_queries": args.queries,
        "train_episodes": f"5-way {args.train_shots}-shot {args.train_queries}-query",
        "training": training, "total_seconds": round(time.perf_counter() - t_all, 1),
    }  # fmt: skip
    (out / "run.json").write_text(json.dumps(meta, indent=1))
    lines = ["| split | model | 1-shot protonet | 1-shot finetune | 5-shot protonet | 5-shot finetune |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for split_name in ("A", "B"):
        for label in ("random-init", "scratch+protonet", "moco", "moco+protonet"):
            cell = {(r["shots"], r["method"]): f"{r['accuracy']:.3f} ± {r['ci95']:.3f}" for r in rows
                    if r["split"] == split_name and r["model"] == label}  # fmt: skip
            lines.append(f"| {split_name} | {label} | " + " | ".join(
                cell[(s, m)] for s in (1, 5) for m in ("protonet", "finetune")) + " |")  # fmt: skip
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"total {meta['total_seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
