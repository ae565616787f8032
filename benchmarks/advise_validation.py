"""Is the advisor's first choice within 2 points of the best strategy a benchmark measured?

For each benchmark table given (``rows.jsonl`` of ``reuse_strategies.py``/``pretrain_transfer.py`` or
``results.csv`` of ``eotransfer benchmark``) and each labels-per-class setting in it, the advisor is asked
for its first choice on that data set with that many labels per class (its rules, without ``--auto``),
and the choice is looked up in the table with its initialisation (pre-trained, or from scratch when the
advisor's transfer probe found that the weights do not transfer).  Reported: the advisor's pick and its
mean accuracy, the best strategy's (pre-trained or from scratch), and the gap.  The band-statistics reference row
(band statistics + logistic regression) counts as a strategy: the advisor can pick it, as ``--backbone band-stats``
(its ranking puts it first when it beats the frozen features the first choice would use on the transfer probe, and
``--auto`` counts it as a candidate); ``--auto`` reports the gap to the best strategy without it beside.

Rows of strategies that adapt to unlabelled target imagery (their parameters have a ``target``: dann, mmd,
coral, adabn; in a grid they adapt to the test side's images, ``target: "@test"``) are compared apart: the
advisor is asked without ``--target`` here, so the best such row is shown beside the comparison, as what
giving the advisor the imagery to be mapped could add, and does not count as the best strategy.

    python benchmarks/advise_validation.py --data ../shared/data/eurosat-ms --bands eurosat-ms \
        --table benchmarks/results/reuse_eurosat_h100/rows.jsonl --out benchmarks/results/advise_validation
    python benchmarks/advise_validation.py --data benchmarks/configs/xbd_grid.yaml \
        --table benchmarks/results/xbd_grid_cpu/results.csv --out ...   # data + data_options from the config

``--auto`` validates ``advise --auto`` instead, out of sample: for each labels-per-class setting and seed, the
grid's own training side of that cell (same split, same k labels per class drawn with the same seed; ``--data``
must be the grid's config YAML) is all the advisor sees.  It inspects it (transfer probe included), ranks, and
cross-validates its top candidates within ``--budget-minutes``; its pick is then looked up in the table at that
k and seed, and compared with the best strategy's mean over the same seeds.  The test side never enters the choice.
``--auto --ranking`` does the same for the ranking's first choice (no cross-validation of candidates): the
advisor's first choice out of sample, its transfer probe seeing only the cell's own labelled samples.  Each gap
comes with the 95 % interval (Student's t over the seeds) of the seed-by-seed gap, best minus pick: a miss whose
interval covers 2 points is not shown to be one.

A config whose split is geographic (``utm-zone``, ``lonlat-block``, ``group``: the test side lies in places no
label comes from) asks the advisor with ``--new-regions``, as a user who means to map such places would.
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

from eotransfer.evaluation.advise import (  # noqa: E402
    CV_SPLITS,
    AdviseConfig,
    inspect_task,
    measure_candidates,
    recommend,
)

#: appended to the strategy of a row fitted with ``per_date`` (one network per date of a stack), and of a
#: recommendation with that option, so that each names the other
PER_DATE = " per-date"


def read_table(path: Path, metric: str = "accuracy") -> list[dict[str, Any]]:
    """Rows with ``k``, ``init``, ``strategy`` (classifier folded in, e.g. feature-extraction:logreg), ``accuracy``.

    ``metric``: the table's column read as ``accuracy`` (``robust_accuracy``: rows without one are left out).

    ``path`` may join several tables of one data set and split with ``+`` (a grid and its per-date variant); the
    rows of a grid fitted with ``fit: per_date`` (its ``benchmark.json``) are named with :data:`PER_DATE`, and the
    band-statistics reference is read from the first table only.
    """
    rows: list[dict[str, Any]] = []
    for n, part in enumerate(str(path).split("+")):
        table = Path(part)
        if table.suffix == ".jsonl":
            rows += [json.loads(line) for line in table.read_text().splitlines() if line.strip()]
            continue
        meta = table.with_name("benchmark.json")
        fit = json.loads(meta.read_text())["config"].get("fit") or {} if meta.is_file() else {}
        suffix = PER_DATE if fit.get("per_date") else ""
        with table.open() as f:
            for r in csv.DictReader(f):
                if r.get(metric) in (None, ""):
                    continue  # e.g. no robust accuracy: a head without an input gradient
                name = r["strategy"]
                if r["strategy_name"] == "feature-extraction" and ":" not in name:
                    name = "feature-extraction:logreg"
                init = "pretrained" if r["weights"] else r["init"]  # a pre-trained cell's init names its weights
                if n and init not in ("pretrained", "scratch"):
                    continue
                rows.append({"k": r["k"] if r["k"] == "all" else int(r["k"]), "init": init,
                             "strategy": name + (suffix if init in ("pretrained", "scratch") else ""),
                             "accuracy": float(r[metric]), "n_train": int(r["n_train"]),
                             "seed": int(r["seed"])})  # fmt: skip
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


#: the band-statistics reference as the tables name it: (strategy, init)
REFERENCE_KEY = ("band-stats+LR", "—")


def advisor_name(rec: Any) -> str:
    if rec.options.get("backbone") == "band-stats":
        return REFERENCE_KEY[0]
    name = str(rec.strategy)
    if rec.strategy == "feature-extraction":
        name = f"feature-extraction:{rec.options.get('classifier', 'logreg')}"
    return name + (PER_DATE if rec.options.get("per_date") else "")


def advisor_pick(rec: Any) -> tuple[str, str]:
    """A recommendation as a table key: (strategy as the table names it, ``pretrained`` or ``scratch``).

    ``--auto`` keeping the band-statistics reference (``--backbone band-stats``) is the tables' reference row.
    """
    if rec.options.get("backbone") == "band-stats":
        return REFERENCE_KEY
    return advisor_name(rec), "pretrained" if rec.options.get("weights") else "scratch"


def pickable(init: str, strategy: str) -> bool:
    """A row the advisor could pick without ``--target``: a strategy (not the reference) that needs no test images."""
    return init in ("pretrained", "scratch") and not needs_target(strategy)


def advise_config(data: str, bands: str | None) -> AdviseConfig:
    """The advisor's view of a data set: a path (with ``bands``), or a benchmark config YAML (its data options)."""
    if data.endswith((".yaml", ".yml")):
        from eotransfer.evaluation.benchmark import BenchmarkConfig

        bench = BenchmarkConfig.from_yaml(data)
        from eotransfer.data.splits import GEOGRAPHIC_SPLITS

        opts = {k: v for k, v in bench.data_options.items() if k != "use_bands"}
        # a geographic split scores the model on places no label comes from: what --new-regions declares
        new_regions = bench.split.get("kind") in GEOGRAPHIC_SPLITS
        return AdviseConfig(data=bench.data, verbose=False, new_regions=new_regions, **opts)
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
        pick = advisor_pick(recommend(f, cfg)[0])
        means = {(i, s): float(np.mean(v)) for (kk, i, s), v in by.items() if kk == k}
        # every strategy the advisor could pick, from pre-trained weights or from scratch; those adapting to the
        # test images apart (not the reference)
        strategies = {(s, i): m for (i, s), m in means.items() if pickable(i, s) or (s, i) == REFERENCE_KEY}
        adapting = {(s, i): m for (i, s), m in means.items() if i in ("pretrained", "scratch") and needs_target(s)}
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


def validate_auto(config: str, table: Path, seeds: list[int], budget_minutes: float, top: int,
                  ks: list[str] | None = None, measure: bool = True, auto_min_samples: int = 0,
                  auto_reference: bool = True, cv_split: str = "auto", cv_block_deg: float | None = None,
                  robust: bool = False) -> tuple[list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
    """``advise --auto`` on each grid cell's training side; its pick's test accuracy against the best strategy's.

    ``measure=False``: the ranking's first choice instead (inspection and transfer probe on that training side,
    no cross-validation of candidates), the advisor's first choice out of sample.  ``robust``: the advisor is
    asked with ``--robust`` at the grid's ``robustness:`` budget, and picks are scored on the table's
    ``robust_accuracy`` (the grid must have been run with ``robustness:``).
    """
    import dataclasses
    import time

    from eotransfer.engine.metrics import mean_ci95
    from eotransfer.errors import ConfigError
    from eotransfer.evaluation.benchmark import (
        ArrayDataset,
        BenchmarkConfig,
        base_split,
        grid_split,
        open_benchmark_data,
    )

    if not config.endswith((".yaml", ".yml")):
        raise SystemExit(f"--auto: --data must be the benchmark config YAML of {table}, not {config}")
    bench = BenchmarkConfig.from_yaml(config)
    if robust and bench.robustness is None:
        raise SystemExit(f"--robust: {config} has no robustness: section, so {table} holds no robust accuracy")
    metric = "robust_accuracy" if robust else "accuracy"
    ds = open_benchmark_data(bench)
    cfg = dataclasses.replace(
        advise_config(config, None),
        budget_minutes=budget_minutes,
        top=top,
        auto_min_samples=auto_min_samples,
        auto_reference=auto_reference,
        cv_split=cv_split,
        # the block size of the grid's own split (the scale it calls a new region), else advise's default
        cv_block_deg=cv_block_deg
        or float(bench.split.get("block_deg", 1.0) if bench.split.get("kind") == "lonlat-block" else 1.0),
    )
    if robust:
        assert bench.robustness is not None  # checked above
        cfg = dataclasses.replace(cfg, robust=True, robust_eps=str(bench.robustness["eps"]),
                                  robust_value_per_reflectance=bench.robustness.get("value_per_reflectance"))  # fmt: skip
    table_ks = sorted({r["k"] for r in read_table(table, metric)}, key=lambda v: (isinstance(v, str), v))
    out = []
    for k in [k for k in table_ks if ks is None or str(k) in ks]:
        picks, got, lines = [], [], []
        got_auto: dict[str, Any] = {}
        for seed in seeds:
            t0 = time.time()
            split = grid_split(ds, base_split(ds, bench.split, seed), k, seed)
            train = ArrayDataset(ds, split.train)
            scfg = dataclasses.replace(cfg, seed=seed)
            facts, _ = inspect_task(scfg, train)
            recs = recommend(facts, scfg)
            try:
                if not measure:
                    best, how = recs[0], "the ranking's first (not measured)"
                else:
                    got_auto = measure_candidates(train, recs, scfg)
                    best = got_auto["best"]
                    how = "CV" if got_auto["cross_validated"] else (
                        f"the ranking's first ({len(train)} samples, under --auto-min-samples {scfg.auto_min_samples})")  # fmt: skip
            except ConfigError as exc:  # e.g. one label per class: nothing to cross-validate, the ranking decides
                best, how = recs[0], f"no CV ({exc}), the ranking's first"
            pick = advisor_pick(best)
            picks.append(pick)
            measured = ", ".join(f"{advisor_name(r)} {r.cv_accuracy:.3f}" for r in recs if r.cv_accuracy is not None)
            ref_cv = got_auto.get("reference_cv") if measure and how == "CV" else None
            if ref_cv is not None and not any(advisor_name(r) == "band-stats+LR" and r.cv_accuracy is not None
                                              for r in recs):  # fmt: skip
                measured += f", band-stats+LR (appended) {ref_cv[0]:.3f}"
            probe = "" if facts.probe_pretrained is None else (
                f"; probe pre-trained {facts.probe_pretrained:.3f} / random {facts.probe_random:.3f} (SE "
                f"{facts.probe_se:.3f}) / band stats {facts.probe_reference:.3f} (SE {facts.probe_reference_se:.3f})"
                + (f" on {facts.probe_folds}" if facts.probe_folds else ""))  # fmt: skip
            if facts.shared_kernels:
                probe += f"; shared kernels {facts.shared_kernel_share:.0%} of the bands"
            if facts.reference_robust is not None:
                probe += (f"; reference under attack {facts.reference_robust:.3f} (certified "
                          f"{facts.reference_certified:.3f}) vs. majority {facts.majority_accuracy:.3f} (SE "
                          f"{facts.reference_robust_se:.3f})")  # fmt: skip
            if ref_cv is not None and got_auto.get("cv_folds"):
                probe += f"; {got_auto['cv_folds']}"
            if ref_cv is not None and got_auto.get("skipped"):
                probe += "; not measured: " + ", ".join(f"{n} ({why})" for n, why in got_auto["skipped"])
            lines.append(f"seed {seed}: {pick[0]} ({pick[1]}); {how}" + (f": {measured}" if measured else "") + probe)
            print(f"[{bench.name} k={k} seed={seed}] {lines[-1]} ({time.time() - t0:.0f} s)", flush=True)
        acc: dict[tuple[Any, int, tuple[str, str]], float] = {}  # read now: the grid may still be growing
        # the ranking puts the reference first when it leads the transfer probe, and --auto counts it as a
        # candidate: the reference row is a strategy the advisor can pick, and "best" counts it
        table_rows = read_table(table, metric)
        for r in table_rows:
            key = (r["strategy"], r["init"])
            if pickable(r["init"], r["strategy"]) or key == REFERENCE_KEY:
                acc[(r["k"], r["seed"], key)] = float(r["accuracy"])
        got = [acc.get((k, seed, pick), float("nan")) for seed, pick in zip(seeds, picks, strict=True)]
        lines = [f"{line}; test {g:.3f}" for line, g in zip(lines, got, strict=True)]
        # the best strategy over the same seeds (a strategy missing a seed is left out)
        means = {}
        for key in {key for (kk, _, key) in acc if kk == k}:
            vals = [acc.get((k, s, key)) for s in seeds]
            if all(v is not None for v in vals):
                means[key] = float(np.mean(vals))  # type: ignore[arg-type]
        best_key = max(means, key=lambda key: means[key])
        # the best strategy without the reference: the criterion of the runs before the reference could be picked
        best_strategy = max((key for key in means if key != REFERENCE_KEY), key=lambda key: means[key])
        mean_got = float(np.mean(got))
        # the gap seed by seed (the best strategy's accuracy minus the pick's, same split and labels): its 95 %
        # interval over the seeds says whether a miss stands out from the seeds' spread
        seed_gaps = [acc[(k, s, best_key)] - g for s, g in zip(seeds, got, strict=True)]
        gap_half = mean_ci95(seed_gaps)[1] if not np.isnan(mean_got) else float("nan")
        # the band-statistics reference on the same seeds: a pick below it has not earned its transfer
        ref = {int(r["seed"]): float(r["accuracy"]) for r in table_rows
               if r["k"] == k and (r["strategy"], r["init"]) == REFERENCE_KEY}  # fmt: skip
        ref_mean = float(np.mean([ref[s] for s in seeds])) if all(s in ref for s in seeds) else None
        out.append({
            "k": k, "seeds": seeds, "picks": [f"{a} ({b})" for a, b in picks], "advisor_accuracy": mean_got,
            "best": f"{best_key[0]} ({best_key[1]})", "best_accuracy": means[best_key],
            "gap_points": None if np.isnan(mean_got) else round(100 * (means[best_key] - mean_got), 1),
            "gap_ci95_points": None if np.isnan(gap_half) else round(100 * gap_half, 1),
            "best_strategy": f"{best_strategy[0]} ({best_strategy[1]})", "best_strategy_accuracy": means[best_strategy],
            "gap_strategies_points": None if np.isnan(mean_got) else round(100 * (means[best_strategy] - mean_got), 1),
            "reference_accuracy": ref_mean, "per_seed": lines,
        })  # fmt: skip
    mode = "auto" if measure else "ranking"
    meta = {"data": config, "table": str(table), "mode": mode, "budget_minutes": budget_minutes, "top": top,
            "auto_min_samples": auto_min_samples, "auto_reference": measure and auto_reference,
            "cv_split": cv_split if measure else None, "cv_block_deg": cfg.cv_block_deg, "metric": metric,
            **({"robust_eps": cfg.robust_eps} if robust else {})}  # fmt: skip
    return out, meta


def markdown_auto(results: list[tuple[list[dict[str, Any]], dict[str, Any]]]) -> str:
    auto = all(meta["mode"] == "auto" for _, meta in results)
    who = "`advise --auto`" if auto else "the advisor's first choice (its ranking, no --auto)"
    lines = [f"# {who} vs. benchmark, out of sample: is its pick within 2 points of the best strategy?", ""]
    for rows, meta in results:
        how = f"--top {meta['top']}, --budget-minutes {meta['budget_minutes']} per seed" + (
            f", --auto-min-samples {meta['auto_min_samples']}" if meta.get("auto_min_samples") else "") + (
            "; the reference counts as a candidate" if meta.get("auto_reference")
            else "") + (f"; --cv-split {meta['cv_split']}" if meta.get("cv_split") not in (None, "auto")
            else "") + (f"; --cv-block-deg {meta['cv_block_deg']:g}" if meta.get("cv_block_deg") and meta.get("cv_split") != "stratified"
            else "") if auto else (
            "inspection and transfer probe on each cell's training side only")  # fmt: skip
        if meta.get("metric") == "robust_accuracy":
            how += (f"; asked with --robust --robust-eps {meta.get('robust_eps')}, every accuracy here is the table's "
                    "robust accuracy (under the grid's attack)")  # fmt: skip
        lines += [f"**{meta['data']}** — table `{meta['table']}`; {how}; the reference row counts as a strategy "
                  "for the best (the advisor can pick it); the gap to the best strategy without it in brackets; "
                  "± the 95 % interval of the seed-by-seed gap", "",
                  f"| labels/class | seeds | {'advise --auto' if auto else 'first choice'}'s picks (one per seed) | their test accuracy (mean) | "
                  "best on the same seeds | best | gap (points) | within 2 | band stats + LR (reference) |",
                  "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in rows:
            ok = "—" if r["gap_points"] is None else ("yes" if r["gap_points"] <= 2 else "**no**")
            ref = r.get("reference_accuracy")
            beaten = "" if ref is None or r["advisor_accuracy"] > ref else " (**above the pick**)"
            lines.append(f"| {r['k']} | {len(r['seeds'])} | {'; '.join(r['picks'])} | {r['advisor_accuracy']:.3f} | "
                         f"{r['best']} | {r['best_accuracy']:.3f} | {r['gap_points']} "
                         f"({r.get('gap_strategies_points')})"
                         + ("" if r.get("gap_ci95_points") is None else f" ± {r['gap_ci95_points']}")
                         + f" | {ok} | "
                         f"{'—' if ref is None else f'{ref:.3f}'}{beaten} |")  # fmt: skip
        lines.append("")
        for r in rows:
            lines += [f"- k={r['k']}: " + " / ".join(r["per_seed"])]
        lines.append("")
    return "\n".join(lines)


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
    ap.add_argument("--auto", action="store_true", help="validate advise --auto on each cell's training side")
    ap.add_argument("--seeds", default="0,1,2", help="--auto: the grid seeds to run it on (comma-separated)")
    ap.add_argument("--budget-minutes", type=float, default=5.0, help="--auto: its budget per seed")
    ap.add_argument("--top", type=int, default=3, help="--auto: candidates it measures")
    ap.add_argument("--auto-min-samples", type=int, default=0,
                    help="--auto: keep the ranking's first choice below this many labelled samples (advise's option)")  # fmt: skip
    ap.add_argument("--no-auto-reference", action="store_true",
                    help="--auto: do not count the band-statistics reference as a candidate (advise's option)")  # fmt: skip
    ap.add_argument(
        "--cv-split",
        default="auto",
        choices=CV_SPLITS,
        help="--auto: how its folds are drawn (advise's option; auto: spatial for a geographic split)",
    )
    ap.add_argument(
        "--cv-block-deg",
        type=float,
        default=None,
        help="--auto: spatial folds' block size (advise's; default: the grid split's block_deg, else 1)",
    )
    ap.add_argument("--ks", default=None, help="--auto: only these labels-per-class settings (comma-separated)")
    ap.add_argument("--robust", action="store_true",
                    help="with --auto: ask advise --robust at the grid's robustness budget, score robust accuracy")  # fmt: skip
    ap.add_argument("--ranking", action="store_true",
                    help="with --auto: the ranking's first choice out of sample, no cross-validation of candidates")  # fmt: skip
    args = ap.parse_args(argv)
    if args.robust and not args.auto:
        ap.error("--robust scores picks made on each grid cell's training side: give it with --auto (and --ranking)")
    if args.ranking and not args.auto:
        ap.error("--ranking scores the ranking's first choice on each grid cell's training side: give it with --auto")
    bands = args.bands or ["none"] * len(args.data)
    if args.auto:
        seeds = [int(s) for s in args.seeds.split(",")]
        ks = args.ks.split(",") if args.ks else None
        args.out.mkdir(parents=True, exist_ok=True)
        auto = []
        for d, t in zip(args.data, args.table, strict=True):
            auto.append(validate_auto(d, t, seeds, args.budget_minutes, args.top, ks, measure=not args.ranking,
                                      auto_min_samples=args.auto_min_samples,
                                      auto_reference=not args.no_auto_reference,
                                      cv_split=args.cv_split, cv_block_deg=args.cv_block_deg,
                                      robust=args.robust))  # fmt: skip
            (args.out / "results.md").write_text(markdown_auto(auto))  # after each table: a stopped run keeps it
            (args.out / "results.json").write_text(json.dumps([{"meta": m, "rows": r} for r, m in auto], indent=1))
        print(markdown_auto(auto))
        return 0
    results = [validate(d, None if b == "none" else b, t) for d, b, t in zip(args.data, bands, args.table, strict=True)]
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(results)
    (args.out / "results.md").write_text(text)
    (args.out / "results.json").write_text(json.dumps([{"meta": m, "rows": r} for r, m in results], indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
