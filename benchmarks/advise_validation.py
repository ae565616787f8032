"""Is the advisor's first choice within 2 points of the best strategy a benchmark measured?

For each benchmark table given (``rows.jsonl`` of ``reuse_strategies.py``/``pretrain_transfer.py`` or
``results.csv`` of ``eotransfer benchmark``) and each labels-per-class setting in it, the advisor is asked
for its first choice on that data set with that many labels per class (its rules, without ``--auto``),
and the choice is looked up in the table with its initialisation (pre-trained, or from scratch when the
advisor's transfer probe found that the weights do not transfer).  Reported: the advisor's pick and its
mean accuracy, the best strategy's (pre-trained or from scratch), and the gap.  Reference rows (band statistics + logistic
regression, training from scratch) are shown but are not strategies the advisor can pick.

Rows of strategies that adapt to unlabelled target imagery (their parameters have a ``target``: dann, mmd,
coral, adabn; in a grid they adapt to the test side's images, ``target: "@test"``) are compared apart: the
advisor is asked without ``--target`` here, so the best such row is shown beside the comparison, as what
giving the advisor the imagery to be mapped could add, and does not count as the best strategy.

    python benchmarks/advise_validation.py --data ../shared/data/eurosat-ms --bands eurosat-ms \
        --table benchmarks/results/reuse_eurosat_h100/rows.jsonl --out benchmarks/results/advise_validation
    python benchmarks/advise_validation.py --data benchmarks/configs/xbd_grid.yaml \
        --table benchmarks/results/xbd_grid_cpu/results.csv --out ...   # data + data_options from the config
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from eotransfer.evaluation.advise import AdviseConfig, inspect_task, recommend  # noqa: E402


def read_table(path: Path) -> list[dict[str, Any]]:
    """Rows with ``k``, ``init``, ``strategy`` (classifier folded in, e.g. feature-extraction:logreg), ``accuracy``."""
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = []
    with path.open() as f:
        for r in csv.DictReader(f):
            name = r["strategy"]
            if r["strategy_name"] == "feature-extraction" and ":" not in name:
                name = "feature-extraction:logreg"
            init = "pretrained" if r["weights"] else r["init"]  # a pre-trained cell's init names its weights
            rows.append({"k": r["k"] if r["k"] == "all" else int(r["k"]), "init": init,
                         "strategy": name, "accuracy": float(r["accuracy"]), "n_train": int(r["n_train"])})  # fmt: skip
    return rows


def needs_target(strategy: str) -> bool:
    """Whether a table row's strategy adapts to unlabelled target imagery (its Params have ``target``)."""
    import dataclasses

    from eotransfer.errors import ConfigError
    from eotransfer.strategies.base import get_strategy

    try:
        cls = get_strategy(strategy.split(":")[0])
    except ConfigError:
        return False
    return "target" in {f.name for f in dataclasses.fields(cls.Params)}


def advisor_name(rec: Any) -> str:
    if rec.strategy == "feature-extraction":
        return f"feature-extraction:{rec.options.get('classifier', 'logreg')}"
    return str(rec.strategy)


def advise_config(data: str, bands: str | None) -> AdviseConfig:
    """The advisor's view of a data set: a path (with ``bands``), or a benchmark config YAML (its data options)."""
    if data.endswith((".yaml", ".yml")):
        from eotransfer.evaluation.benchmark import BenchmarkConfig

        bench = BenchmarkConfig.from_yaml(data)
        opts = {k: v for k, v in bench.data_options.items() if k != "use_bands"}
        return AdviseConfig(data=bench.data, verbose=False, **opts)
    return AdviseConfig(data=data, bands=bands, verbose=False)


def validate(data: str, bands: str | None, table: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    cfg = advise_config(data, bands)
    facts, ds = inspect_task(cfg)
    rows = read_table(table)
    by: dict[tuple[Any, str, str], list[float]] = defaultdict(list)
    n_train: dict[Any, int] = {}
    for r in rows:
        by[(r["k"], r["init"], r["strategy"])].append(float(r["accuracy"]))
        n_train[r["k"]] = int(r.get("n_train", 0))
    out = []
    for k in sorted({key[0] for key in by}, key=lambda v: (isinstance(v, str), v)):
        per_class = int(k) if k != "all" else max(1, n_train.get(k, 0) // max(len(ds.classes), 1))
        f = facts.__class__(**{**facts.__dict__, "labels_per_class": dict.fromkeys(facts.classes, per_class)})
        first = recommend(f, cfg)[0]
        pick = (advisor_name(first), "pretrained" if first.options.get("weights") else "scratch")
        means = {(i, s): float(np.mean(v)) for (kk, i, s), v in by.items() if kk == k}
        # every strategy the advisor could pick, from pre-trained weights or from scratch (not the reference)
        candidates = {(s, i): m for (i, s), m in means.items() if i in ("pretrained", "scratch")}
        strategies = {key: m for key, m in candidates.items() if not needs_target(key[0])}
        adapting = {key: m for key, m in candidates.items() if needs_target(key[0])}
        if not strategies:
            continue
        best = max(strategies, key=lambda s: strategies[s])
        best_adapting = max(adapting, key=lambda s: adapting[s]) if adapting else None
        got = strategies.get(pick)
        out.append({
            "k": k, "labels_per_class": per_class, "advisor": f"{pick[0]} ({pick[1]})", "advisor_accuracy": got,
            "best": f"{best[0]} ({best[1]})", "best_accuracy": strategies[best],
            "gap_points": None if got is None else round(100 * (strategies[best] - got), 1),
            "band_stats": means.get(("—", "band-stats+LR")),
            "scratch_best": max((m for (i, _), m in means.items() if i == "scratch"), default=None),
            "best_adapting": None if best_adapting is None else f"{best_adapting[0]} ({best_adapting[1]})",
            "best_adapting_accuracy": None if best_adapting is None else adapting[best_adapting],
        })  # fmt: skip
    probe = (facts.probe_pretrained, facts.probe_random)
    return out, {"data": data, "table": str(table), "n_samples": facts.n_samples, "transfer_probe": probe}


def markdown(results: list[tuple[list[dict[str, Any]], dict[str, Any]]]) -> str:
    lines = ["# Advisor vs. benchmark: is the first choice within 2 points of the best strategy?", ""]
    for rows, meta in results:
        pp, pr = meta.get("transfer_probe", (None, None))
        probe = "" if pp is None else f" (transfer probe: pre-trained features {pp:.3f}, random init {pr:.3f})"
        lines += [f"**{meta['data']}** — table `{meta['table']}`{probe}", "",
                  "| labels/class | advisor's first choice | its accuracy | best strategy | best | gap (points) | within 2 | "
                  "band stats + LR | best from scratch | best adapting to the test images (transductive) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in rows:
            acc = "not in the table" if r["advisor_accuracy"] is None else f"{r['advisor_accuracy']:.3f}"
            ok = "—" if r["gap_points"] is None else ("yes" if r["gap_points"] <= 2 else "**no**")
            bs = "—" if r["band_stats"] is None else f"{r['band_stats']:.3f}"
            sc = "—" if r["scratch_best"] is None else f"{r['scratch_best']:.3f}"
            ad = "—" if r.get("best_adapting") is None else f"{r['best_adapting']} {r['best_adapting_accuracy']:.3f}"
            lines.append(f"| {r['k']} | {r['advisor']} | {acc} | {r['best']} | {r['best_accuracy']:.3f} | "
                         f"{'—' if r['gap_points'] is None else r['gap_points']} | {ok} | {bs} | {sc} | {ad} |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data", action="append", required=True,
        help="data set, or the benchmark config YAML that produced the table (repeat, one per --table)",
    )  # fmt: skip
    ap.add_argument("--bands", action="append", default=None, help="its bands (repeat; 'none' to infer)")
    ap.add_argument("--table", action="append", type=Path, required=True, help="benchmark table (repeat)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    bands = args.bands or ["none"] * len(args.data)
    results = [validate(d, None if b == "none" else b, t) for d, b, t in zip(args.data, bands, args.table, strict=True)]
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(results)
    (args.out / "results.md").write_text(text)
    (args.out / "results.json").write_text(json.dumps([{"meta": m, "rows": r} for r, m in results], indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
