"""Robustness: clean and PGD accuracy of standard against adversarial (PGD) fine-tuning, budgets in reflectance.

On EuroSAT-MS (one fixed stratified split: the same 63 test patches for every seed), from the shipped
backbone ``eotransfer:eurosat-s2-resnet10t-moco``:

- ``finetune``: the standard two-stage fine-tune;
- ``adversarial``: the same schedule, the end-to-end phase on clean + PGD examples (Madry et al. 2018;
  ``--train-eps``, ``--train-pgd-steps``, ``--adv-ratio``) or TRADES (Zhang et al. 2019; ``--adv-loss trades``,
  ``--trades-beta``), the kept epoch chosen on robust (``--select-on robust``, Rice et al. 2020) or clean
  validation accuracy, the backbone at ``--backbone-lr-factor`` × the head's learning rate;

each scored on the 15 validation patches (clean and PGD at the training budget: what a setting may be
chosen on) and on the test patches clean and under PGD (``--pgd-steps`` steps, random start, step
2.5·ε/steps) at every budget of ``--eps`` (reflectance units, L∞ per band, clipped to each band's
min..max over the training split).  B10 (cirrus, 1375 nm) spans only ~0.004 reflectance in EuroSAT
(std 4 DN against 240-1230 DN for every other band), so a uniform budget would exceed its whole range;
it gets ``--b10-factor`` × the budget.  The two reference rows of every accuracy table (band
statistics + logistic regression; fine-tuning from scratch) are scored clean.

    .venv/bin/python benchmarks/robustness.py --data ../shared/data/eurosat-ms --seeds 3 \\
        --out benchmarks/results/robustness_cpu

``--methods`` picks the rows to fit, ``--seed-list`` the seeds, ``--append`` adds to ``rows.jsonl``
instead of starting it afresh (the summary covers every row in it), so a sweep can run one seed per
setting first and the other seeds later into the same folder.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import eotransfer  # noqa: E402
from eotransfer.card import atomic_write_text  # noqa: E402
from eotransfer.data.base import open_dataset  # noqa: E402
from eotransfer.data.splits import make_split  # noqa: E402
from eotransfer.engine.metrics import mean_ci95  # noqa: E402
from eotransfer.evaluation.attacks import band_range, make_budget, robust_accuracy  # noqa: E402
from eotransfer.evaluation.benchmark import ArrayDataset  # noqa: E402
from eotransfer.evaluation.reference import band_statistics_matrix, fit_band_statistics_classifier  # noqa: E402

WEIGHTS = "eotransfer:eurosat-s2-resnet10t-moco"
SCHEDULE: dict[str, Any] = {"head_epochs": 20, "epochs": 15, "patience": 6, "batch_size": 32}


def eps_spec(eps: float, b10_factor: float) -> str:
    return f"{eps:g},B10={eps * b10_factor:g}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "eurosat-ms")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--eps", default="0.001,0.005,0.02", help="test budgets, reflectance units")
    ap.add_argument("--b10-factor", type=float, default=0.05, help="B10's budget = this × the budget")
    ap.add_argument("--train-eps", type=float, default=0.005, help="adversarial fine-tuning budget (reflectance)")
    ap.add_argument("--train-pgd-steps", type=int, default=3)
    ap.add_argument("--adv-ratio", type=float, default=0.5)
    ap.add_argument("--adv-loss", choices=("mixed", "trades"), default="mixed")
    ap.add_argument("--trades-beta", type=float, default=6.0)
    ap.add_argument(
        "--select-on",
        choices=("robust", "clean"),
        default="robust",
        help="adversarial: validation score that keeps the epoch and stops early",
    )
    ap.add_argument("--val-pgd-steps", type=int, default=10, help="adversarial: PGD steps of the validation attack")
    ap.add_argument("--backbone-lr-factor", type=float, default=0.1, help="adversarial: backbone lr = lr × this")
    ap.add_argument("--patience", type=int, default=SCHEDULE["patience"])
    ap.add_argument(
        "--methods",
        default="finetune,adversarial,finetune-scratch",
        help="comma-separated: finetune, adversarial, finetune-scratch, band-statistics",
    )
    ap.add_argument("--seed-list", default=None, help="comma-separated seeds (default: 0..--seeds-1)")
    ap.add_argument("--append", action="store_true", help="add to rows.jsonl instead of starting it afresh")
    ap.add_argument("--pgd-steps", type=int, default=10, help="PGD steps of the test attack")
    ap.add_argument("--head-epochs", type=int, default=SCHEDULE["head_epochs"])
    ap.add_argument("--epochs", type=int, default=SCHEDULE["epochs"], help="end-to-end epochs")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget-s", type=float, default=900.0, help="start no new fit after this many seconds")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "robustness_cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    SCHEDULE.update(head_epochs=args.head_epochs, epochs=args.epochs, patience=args.patience)
    t_start = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    rows_path = args.out / "rows.jsonl"
    if not args.append:
        rows_path.unlink(missing_ok=True)
    seeds = [int(v) for v in args.seed_list.split(",")] if args.seed_list else list(range(args.seeds))
    wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
    test_eps = [float(v) for v in args.eps.split(",")]

    ds = ArrayDataset(open_dataset(args.data, bands="eurosat-ms"))
    split = make_split("stratified", ds.labels, seed=0, test_fraction=0.3, val_fraction=0.1)
    lo, hi = band_range(ds.read, split.train)
    budgets = {e: make_budget(eps_spec(e, args.b10_factor), ds.bands, lo, hi) for e in test_eps}
    train_budget = make_budget(eps_spec(args.train_eps, args.b10_factor), ds.bands, lo, hi)
    y_val = ds.labels[split.val]
    y_test = ds.labels[split.test]
    std = np.stack([ds.read(int(i)) for i in split.train]).std((0, 2, 3))
    rows: list[dict[str, Any]] = (
        [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()] if rows_path.exists() else []
    )

    def record(row: dict[str, Any]) -> None:
        rows.append(row)
        with rows_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps({k: v for k, v in row.items() if not isinstance(v, dict)}), flush=True)

    stats = band_statistics_matrix(ds.read, np.arange(len(ds)))
    adv = {"strategy": "adversarial", "attack": "pgd", "eps": eps_spec(args.train_eps, args.b10_factor),
           "pgd_steps": args.train_pgd_steps, "adv_ratio": args.adv_ratio, "adv_loss": args.adv_loss,
           "trades_beta": args.trades_beta, "select_on": args.select_on, "val_pgd_steps": args.val_pgd_steps,
           "backbone_lr_factor": args.backbone_lr_factor}  # fmt: skip
    methods = {
        "finetune": ({"strategy": "finetune"}, WEIGHTS),
        "adversarial": (adv, WEIGHTS),
        "finetune-scratch": ({"strategy": "finetune"}, None),
    }
    for seed in seeds:
        if "band-statistics" in wanted:
            clf = fit_band_statistics_classifier(stats[split.train], ds.labels[split.train], seed)
            acc = float((clf.predict(stats[split.test]) == y_test).mean())
            record({"method": "band-statistics", "seed": seed, "clean_accuracy": acc})
        for name, (params, weights) in methods.items():
            if name not in wanted:
                continue
            if time.time() - t_start > args.budget_s:
                print(f"time budget reached before {name} seed {seed}", flush=True)
                continue
            t0 = time.time()
            result = eotransfer.fit(ds, split_override=split, backbone="resnet10t", weights=weights, seed=seed,
                                    accelerator="cpu", progress=False, verbose=False, **SCHEDULE, **params)  # fmt: skip
            fit_s = time.time() - t0
            row: dict[str, Any] = {"method": name, "seed": seed, "fit_seconds": round(fit_s, 1),
                                   "clean_accuracy": float(result.metrics["test"]["overall_accuracy"]),
                                   "epochs_run": {ph: sum(h["phase"] == ph for h in result.history)
                                                  for ph in dict.fromkeys(h["phase"] for h in result.history)}}  # fmt: skip
            if name != "finetune-scratch":  # the selection score: validation patches, PGD at the training budget
                v = robust_accuracy(result.model.eval(), ds.read, split.val, y_val, train_budget, "pgd",
                                    args.pgd_steps, seed)  # fmt: skip
                row["val_clean_accuracy"] = v["clean_accuracy"]
                row[f"val_pgd_accuracy@{args.train_eps:g}"] = v["robust_accuracy"]
            for e, budget in budgets.items():
                if name == "finetune-scratch":
                    break  # reference row: clean accuracy only
                r = robust_accuracy(
                    result.model.eval(), ds.read, split.test, y_test, budget, "pgd", args.pgd_steps, seed
                )
                row[f"pgd_accuracy@{e:g}"] = r["robust_accuracy"]
            row["attack_seconds"] = round(time.time() - t0 - fit_s, 1)
            record(row)

    meta = {
        "command": "python " + shlex.join(["benchmarks/robustness.py", *(argv if argv is not None else sys.argv[1:])]),
        "hardware": f"CPU, {args.threads} torch threads on 2 cores shared with other work ({platform.machine()})",
        "torch": torch.__version__,
        "data": f"{args.data} (EuroSAT-MS, 206 patches, 13 bands, reflectance x 10^4)",
        "split": {
            "kind": "stratified",
            "seed": 0,
            "train": len(split.train),
            "val": len(split.val),
            "test": len(split.test),
        },  # fmt: skip
        "seeds": sorted({int(r["seed"]) for r in rows}),
        "schedule": SCHEDULE,
        "adversarial": adv,
        "test_attack": {"attack": "pgd", "steps": args.pgd_steps, "random_start": True, "step": "2.5*eps/steps"},
        "budgets": {f"{e:g}": budgets[e].to_dict(ds.bands.names) for e in test_eps},
        "train_std_data_units": dict(zip(ds.bands.names, map(float, std), strict=True)),
        "minutes": round((time.time() - t_start) / 60, 1),
    }
    atomic_write_text(args.out / "meta.json", json.dumps(meta, indent=1))
    md = summary(rows, test_eps, meta, std, args)
    atomic_write_text(args.out / "results.md", md)
    print(md)
    return 0


def _cell(values: list[float]) -> str:
    if not values:
        return "—"
    m, h = mean_ci95(values)
    return f"{m:.3f} ± {h:.3f}" if np.isfinite(h) else f"{m:.3f}"


def summary(rows: list[dict[str, Any]], test_eps: list[float], meta: dict[str, Any], std: np.ndarray,
            args: argparse.Namespace) -> str:  # fmt: skip
    rel = {e: (e * 1e4 / np.delete(std, 9)) for e in test_eps}  # budget / per-band std, B10 left out
    loss = (
        f"CE(clean) + {args.trades_beta:g}·KL(clean ‖ adversarial) (TRADES)"
        if args.adv_loss == "trades"
        else f"{1 - args.adv_ratio:g}·CE(clean) + {args.adv_ratio:g}·CE(adversarial)"
    )
    lines = [
        "# Robustness: standard vs. adversarial (PGD) fine-tuning on EuroSAT-MS",
        "",
        f"`{meta['command']}`",
        "",
        f"{meta['hardware']}, torch {meta['torch']}; {meta['minutes']} minutes. Backbone resnet10t from "
        f"`{WEIGHTS}`; test: the {meta['split']['test']} held-out patches of one stratified split (seed 0), "
        f"seeds {meta['seeds']} (initialisation, shuffling, PGD starts). Mean ± 95 % interval (Student t) over seeds.",
        "",
        f"Test attack: PGD, {args.pgd_steps} steps, random start, L∞ budget ε per band in reflectance (B10: "
        f"{args.b10_factor:g} × ε), clipped to each band's min..max over the training split. Adversarial "
        f"fine-tuning: PGD-{args.train_pgd_steps} examples at ε = {args.train_eps:g}, loss {loss}; kept epoch and "
        f"early stopping on {args.select_on} validation accuracy; backbone lr {args.backbone_lr_factor:g} × the "
        f"head's; schedule {meta['schedule']}. Validation columns: the {meta['split']['val']} validation patches, "
        f"clean and PGD-{args.pgd_steps} at the training budget (the score a setting may be chosen on).",
        "",
        f"| method | val clean | val PGD ε={args.train_eps:g} | test clean | "
        + " | ".join(f"PGD ε={e:g}" for e in test_eps)
        + " |",
        "|---|---|---|---|" + "---|" * len(test_eps),
    ]
    names = {"band-statistics": "band statistics + logistic regression (reference)",
             "finetune-scratch": "fine-tune from scratch (reference)", "finetune": "fine-tune (standard)",
             "adversarial": "adversarial fine-tune (TRADES)" if args.adv_loss == "trades" else "adversarial fine-tune (PGD)"}  # fmt: skip
    for key in ("finetune", "adversarial", "band-statistics", "finetune-scratch"):
        rs = [r for r in rows if r["method"] == key]
        if not rs:
            continue
        val_key = f"val_pgd_accuracy@{args.train_eps:g}"
        cells = [_cell([r[k] for r in rs if k in r]) for k in ("val_clean_accuracy", val_key)]
        cells += [_cell([r["clean_accuracy"] for r in rs])]
        cells += [_cell([r[f"pgd_accuracy@{e:g}"] for r in rs if f"pgd_accuracy@{e:g}" in r]) for e in test_eps]
        lines.append(f"| {names[key]} (n={len(rs)}) | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Budgets against the spread of the data (training split, B10 left out): "
        + "; ".join(
            f"ε={e:g} = {e * 1e4:g} DN = {rel[e].min():.1%}–{rel[e].max():.1%} of a band's std" for e in test_eps
        ),
        "",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
