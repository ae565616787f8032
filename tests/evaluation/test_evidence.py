"""The evidence page: several benchmark grids joined, strategy coverage, transfer against the two references."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from scipy import stats

from eotransfer.cli import main
from eotransfer.errors import ConfigError
from eotransfer.evaluation import benchmark as bm
from eotransfer.evaluation.evidence import (
    benchmark_folders,
    comparisons,
    coverage,
    gap_text,
    load_grids,
    paired_gap,
)
from eotransfer.evaluation.report import build_report

MOCO = "eotransfer:eurosat-s2-resnet10t-moco"


def _row(strategy: str, name: str, init: str, k: int | str, seed: int, acc: float, data: str) -> dict[str, object]:
    return {"cell": f"{strategy}|{init}|{k}|{seed}", "data": data, "split": "stratified", "strategy": strategy,
            "strategy_name": name, "backbone": "—" if init == "—" else "resnet10t", "weights": "", "init": init,
            "k": k, "n_train": 20 if k == 5 else 80, "n_val": 0, "n_test": 50, "seed": seed, "accuracy": acc,
            "macro_f1": acc, "seconds": 1.0, "confusion_matrix": "", "finished": "now"}  # fmt: skip


def write_grid(folder: Path, data: str, rows: list[dict[str, object]], strategies: list[dict[str, object]]) -> Path:
    folder.mkdir(parents=True)
    for r in rows:
        bm.append_row(folder / bm.RESULTS_CSV, r)
    config = {"name": folder.name, "data": data, "split": {"kind": "stratified"}, "strategies": strategies}
    (folder / "benchmark.json").write_text(json.dumps({"config": config, "source": "test"}))
    return folder


@pytest.fixture
def grids(tmp_path: Path) -> Path:
    """Two grids on "toy" and one on "other" (scratch only), under one parent folder, 3 seeds each."""
    rows = []
    for seed in range(3):
        for k, bump in ((5, 0.0), ("all", 0.1)):
            rows += [_row(bm.REFERENCE, bm.REFERENCE, "—", k, seed, 0.50 + bump + 0.01 * seed, "toy"),
                     _row("finetune", "finetune", "scratch", k, seed, 0.40 + bump, "toy"),
                     _row("finetune", "finetune", MOCO, k, seed, 0.55 + bump + 0.02 * seed, "toy"),
                     _row("linear-probe", "linear-probe", MOCO, k, seed, 0.45 + bump, "toy"),
                     _row("dann", "dann", MOCO, k, seed, 0.95, "toy")]  # fmt: skip
    strategies = [{"label": "finetune", "name": "finetune", "params": {}},
                  {"label": "dann", "name": "dann", "params": {"target": "@test", "epochs": 2}}]  # fmt: skip
    write_grid(tmp_path / "runs" / "toy_grid", "../data/toy", rows, strategies)
    other = [_row(bm.REFERENCE, bm.REFERENCE, "—", 5, s, 0.7, "other") for s in range(3)]
    other += [_row("protonet", "protonet", "scratch", 5, s, 0.6 + 0.1 * s, "other") for s in range(3)]
    write_grid(tmp_path / "runs" / "other_grid", ".device-data/d/other.npz", other, [])
    (tmp_path / "runs" / "notes").mkdir()  # a folder that is no benchmark is passed over
    return tmp_path / "runs"


def test_paired_gap_on_known_samples() -> None:
    a = [{"seed": s, "accuracy": v} for s, v in enumerate((0.60, 0.62, 0.64))]
    b = [{"seed": s, "accuracy": v} for s, v in enumerate((0.50, 0.51, 0.52, 0.99))]  # seed 3 has no pair
    mean, lo, hi, n = paired_gap(a, b)
    half = stats.t.ppf(0.975, 2) * 1.0 / 3**0.5  # differences 10, 11, 12 points: sd 1
    assert n == 3
    assert mean == pytest.approx(11.0)
    assert (lo, hi) == pytest.approx((11.0 - half, 11.0 + half))
    assert paired_gap(a, [{"seed": 7, "accuracy": 0.5}])[3] == 0


def test_gap_text_says_whether_the_interval_excludes_zero() -> None:
    assert gap_text(3.0, 1.0, 5.0) == "+3.0 ± 2.0 (above)"
    assert gap_text(-3.0, -5.0, -1.0) == "-3.0 ± 2.0 (below)"
    assert gap_text(1.0, -1.0, 3.0) == "+1.0 ± 2.0 (level)"
    assert gap_text(float("nan"), float("nan"), float("nan")) == "—"


def test_folders_and_families(grids: Path) -> None:
    folders = benchmark_folders([grids])
    assert [f.name for f in folders] == ["other_grid", "toy_grid"]
    assert benchmark_folders([grids / "toy_grid", grids]) == [grids / "toy_grid", grids / "other_grid"]
    assert [g.family for g in load_grids(folders)] == ["other", "toy"]
    with pytest.raises(ConfigError, match="notes.*neither a benchmark output folder"):
        benchmark_folders([grids / "notes"])


def test_comparison_leaves_out_transductive_rows_and_pairs_by_seed(grids: Path) -> None:
    toy, = load_grids([grids / "toy_grid"])  # fmt: skip
    at5, at_all = comparisons(toy)
    assert at5["k"] == 5 and at_all["k"] == "all"
    assert at5["best"] == ("finetune", "resnet10t", MOCO)  # dann (0.95, on the test images) is left out
    assert at5["scratch"] == ("finetune", "resnet10t", "scratch")
    # finetune from MoCo − reference: 5 + 1·seed points; − scratch: 15 + 2·seed points
    assert at5["gap_reference"] == pytest.approx(6.0)
    assert at5["gap_scratch"] == pytest.approx(17.0)
    assert at5["gap_reference_low"] > 0
    assert (at5["pretrained_rows"], at5["pretrained_rows_above_reference"]) == (2, 1)  # linear-probe is below it
    other, = load_grids([grids / "other_grid"])  # fmt: skip
    rec, = comparisons(other)  # fmt: skip
    assert rec["best"] is None and rec["scratch"] == ("protonet", "resnet10t", "scratch")
    assert rec["pretrained_rows"] == 0


def test_coverage_names_the_grids_of_each_strategy(grids: Path) -> None:
    families, table = coverage(load_grids(benchmark_folders([grids])))
    assert families == ["other", "toy"]
    assert table["finetune"] == {"other": [], "toy": ["toy_grid"]}
    assert table["protonet"] == {"other": ["other_grid"], "toy": []}
    assert table["zero-shot"] == {"other": [], "toy": []}
    assert bm.REFERENCE not in table  # the reference is no registered strategy


def test_evidence_page_csv_and_cli(grids: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (grids / "toy_grid" / "report.html").write_text("<html></html>")
    out = build_report([grids / "toy_grid", grids / "other_grid"], tmp_path / "page" / "evidence.html")
    page = out.read_text()
    assert "Strategy coverage" in page and "toy: no grid here carries" in page
    assert "href='../runs/toy_grid/report.html'" in page  # the grid's own page, relative to this one
    assert "dann" in page and "+6.0 ± " in page and "(above)" in page
    assert (
        "toy: the best pre-trained row is below the band-statistics reference in 0 and level with it in 0 of 2" in page
    )
    assert "data-name='transfer_gap_toy'" in page and "transfer_gap_other" not in page  # no pre-trained row there
    assert (out.parent / "evidence_transfer_gap_toy.png").is_file()
    with (out.parent / "evidence.csv").open() as f:
        lines = list(csv.DictReader(f))
    assert [(r["grid"], r["k"]) for r in lines] == [("toy_grid", "5"), ("toy_grid", "all"), ("other_grid", "5")]
    assert float(lines[0]["gap_reference"]) == pytest.approx(6.0) and lines[2]["best_pretrained"] == ""
    with pytest.raises(SystemExit) as code:
        main(["report", str(grids), "--out", str(tmp_path / "cli" / "e.html")])
    assert code.value.code == 0
    assert "report written to" in capsys.readouterr().out
    assert (tmp_path / "cli" / "e.csv").is_file()
    assert not list((tmp_path / "cli").glob(".*"))  # nothing half-written left behind


def test_evidence_refuses_unfinished_grids(grids: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / bm.RESULTS_CSV).write_text(",".join(bm.COLUMNS) + "\n")
    with pytest.raises(ConfigError, match="empty.*no finished cell"):
        build_report([grids / "toy_grid", empty], tmp_path / "e.html")


def test_evidence_page_renders_in_chromium(grids: Path, tmp_path: Path, chromium_dom: Callable[[Path], str]) -> None:
    out = build_report([grids], tmp_path / "evidence.html")
    dom = chromium_dom(out)
    assert "<h2>Transfer against the two references, grid by grid</h2>" in dom
    assert 'data-name="transfer_gap_toy"' in dom or "data-name='transfer_gap_toy'" in dom
