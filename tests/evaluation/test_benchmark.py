"""The benchmark grid: intervals, the labels-needed ratio, config validation, resuming, the legacy summary."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from scipy import stats

from eotransfer import api
from eotransfer.cli import main as cli_main
from eotransfer.errors import ConfigError
from eotransfer.evaluation import benchmark as bm

# t quantiles by hand (tables of Student's t, two-sided 95 %): df=4 → 2.776445, df=1 → 12.706205
T_975_DF4 = 2.7764451051977987
T_975_DF1 = 12.706204736174698


def test_interval95_on_known_samples() -> None:
    mean, lo, hi = bm.interval95([1.0, 2.0, 3.0, 4.0, 5.0])
    # sd = sqrt(2.5), se = sqrt(2.5 / 5) = sqrt(0.5)
    half = T_975_DF4 * math.sqrt(0.5)
    assert mean == pytest.approx(3.0)
    assert (lo, hi) == pytest.approx((3.0 - half, 3.0 + half))
    assert half == pytest.approx(1.963243, abs=1e-6)
    assert (lo, hi) == pytest.approx(stats.t.interval(0.95, 4, loc=3.0, scale=stats.sem([1, 2, 3, 4, 5])))
    mean, lo, hi = bm.interval95([0.5, 0.7])  # sd = 0.1414, se = 0.1
    assert mean == pytest.approx(0.6)
    assert hi - mean == pytest.approx(T_975_DF1 * 0.1)
    mean, lo, hi = bm.interval95([0.8])
    assert mean == 0.8 and math.isnan(lo) and math.isnan(hi)


def test_labels_needed_interpolates_in_log_labels() -> None:
    # B reaches 0.7 with 1000 labels; A goes 0.6 → 0.8 between 10 and 100: 0.7 is half-way in log10 → 10^1.5
    r = bm.labels_needed({10: 0.6, 100: 0.8}, {100: 0.5, 1000: 0.7})
    assert r.target == pytest.approx(0.7) and r.n_b == 1000
    assert r.n_a == pytest.approx(10**1.5)
    assert r.ratio == pytest.approx(1000 / 10**1.5)
    assert not r.at_most
    never = bm.labels_needed({10: 0.5, 100: 0.6}, {1000: 0.7})
    assert never.n_a is None and never.ratio is None
    first = bm.labels_needed({10: 0.9, 100: 0.95}, {1000: 0.7})
    assert first.at_most and first.ratio == pytest.approx(100.0)


def _config(eurosat_like: Path, **over: Any) -> dict[str, Any]:
    cfg = {
        "name": "tiny",
        "data": str(eurosat_like),
        "data_options": {"bands": "eurosat-ms"},
        "split": {"kind": "stratified", "test_fraction": 0.3, "val_fraction": 0.1},
        "strategies": [{"name": "linear-probe", "params": {"epochs": 1, "augment": False}}],
        "models": [{"backbone": "resnet10t", "weights": "eotransfer:eurosat-s2-resnet10t-moco"}],
        "labels_per_class": [2, "all"],
        "seeds": 2,
        "fit": {"batch_size": 16},
    }
    cfg.update(over)
    return cfg


class CountingFit:
    def __init__(self) -> None:
        self.calls = 0
        self.real = api.fit

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.real(*args, **kwargs)


def test_all_config_errors_reported_before_any_run(
    eurosat_like: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = CountingFit()
    monkeypatch.setattr(api, "fit", counter)
    bad = _config(
        eurosat_like,
        strategies=[{"name": "linear-prob"}, {"name": "finetune", "params": {"head_epoch": 1}}],
        models=[{"backbone": "resnet10x"}, {"backbone": "resnet10t", "weights": "eotransfer:no-such-weights"}],
        split={"kind": "lonlat-blocks"},
        labels_per_class=[0.5, "all"],
        seed=3,
    )
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError) as err:
        bm.BenchmarkConfig.from_yaml(path)
    msg = str(err.value)
    assert str(path) in msg and "nothing was run" in msg
    for expected in (
        "strategies[0].name/params: --strategy: unknown strategy 'linear-prob'; did you mean 'linear-probe'?",
        "strategies[1].name/params: 'head_epoch' is not a parameter of strategy 'finetune'",
        "models[0].backbone: --backbone: unknown backbone 'resnet10x'",
        "models[1].weights: unknown weights 'eotransfer:no-such-weights'",
        "split.kind: unknown split 'lonlat-blocks'; did you mean 'lonlat-block'?",
        "labels_per_class: 0.5 is neither",
        "seed: unknown key; did you mean 'seeds'?",
    ):
        assert expected in msg
    assert "7 problem(s)" in msg
    # the CLI prints the same message without a traceback and exits non-zero, before any fit
    with pytest.raises(SystemExit) as code:
        cli_main(["benchmark", str(path), "--out", str(tmp_path / "out")])
    assert code.value.code == 2
    assert counter.calls == 0
    assert not (tmp_path / "out").exists()


def test_grid_adds_references_and_resume_skips_finished_cells(
    eurosat_like: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = bm.BenchmarkConfig.from_dict(_config(eurosat_like))
    assert [(m.backbone, m.init, m.added) for m in cfg.models] == [
        ("resnet10t", "eotransfer:eurosat-s2-resnet10t-moco", False),
        ("resnet10t", "scratch", True),
    ]
    counter = CountingFit()
    monkeypatch.setattr(api, "fit", counter)
    out = tmp_path / "grid"
    logs: list[str] = []
    rows = bm.run_benchmark(cfg, out, log=logs.append)
    # 2 seeds × 2 label counts × (reference + 2 models × 1 strategy)
    assert len(rows) == 12 and counter.calls == 8
    assert any(line.startswith("[cell 12/12]") and "elapsed" in line for line in logs)
    table = bm.read_results(out / "results.csv")
    assert {r["init"] for r in table} == {"—", "scratch", "eotransfer:eurosat-s2-resnet10t-moco"}
    assert {r["strategy"] for r in table} == {bm.REFERENCE, "linear-probe"}
    for seed in (0, 1):  # one test side per seed, shared by every cell of that seed
        assert len({r["n_test"] for r in table if r["seed"] == seed}) == 1
    assert {r["n_train"] for r in table if r["k"] == 2} == {6}  # 2 per class × 3 classes

    # resume: nothing left to do, fit is not called again and the table is unchanged
    before = (out / "results.csv").read_text()
    bm.run_benchmark(cfg, out, log=logs.append)
    assert counter.calls == 8
    assert (out / "results.csv").read_text() == before
    assert "12 already in" in logs[-1] or any("12 already in" in x for x in logs)

    # a run stopped mid-cell leaves a torn last line: that cell, and only it, runs again
    lines = before.splitlines()
    torn = "\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 3]
    (out / "results.csv").write_text(torn)
    rows = bm.run_benchmark(cfg, out, log=logs.append)
    assert counter.calls == 9 and len(rows) == 12

    # the summary is mean ± t-interval of the table's rows
    with (out / "summary.csv").open(newline="") as f:
        summary = list(csv.DictReader(f))
    acc = [r["accuracy"] for r in rows if r["strategy"] == "linear-probe" and r["init"] == "scratch" and r["k"] == 2]
    mean, lo, hi = bm.interval95(acc)
    rec = next(s for s in summary if (s["strategy"], s["init"], s["k"]) == ("linear-probe", "scratch", "2"))
    assert float(rec["mean"]) == pytest.approx(mean, abs=1e-4) and int(rec["n"]) == 2
    assert float(rec["ci_low"]) == pytest.approx(lo, abs=1e-4) and float(rec["ci_high"]) == pytest.approx(hi, abs=1e-4)
    assert (out / "label_efficiency_tiny.png").is_file()
    # the same tidy table as Parquet: one record per row, the same cells and accuracies
    import pyarrow.parquet as pq

    pq_rows = pq.read_table(out / "results.parquet").to_pylist()
    assert sorted(r["cell"] for r in pq_rows) == sorted(r["cell"] for r in rows)
    by_cell = {r["cell"]: r for r in rows}
    assert all(r["accuracy"] == pytest.approx(by_cell[r["cell"]]["accuracy"]) for r in pq_rows)
    assert not list(out.glob(".results.parquet.*"))  # no temporary file left behind
    md = (out / "summary.md").read_text()
    assert "band-stats+LR" in md and "labels needed, linear-probe (resnet10t, eotransfer:" in md


def test_changed_strategy_params_are_new_cells(eurosat_like: Path) -> None:
    a = bm.BenchmarkConfig.from_dict(_config(eurosat_like)).cells()
    b = bm.BenchmarkConfig.from_dict(
        _config(eurosat_like, strategies=[{"name": "linear-probe", "params": {"epochs": 2, "augment": False}}])
    ).cells()
    ref_a = {c.key for c in a if c.strategy is None}
    ref_b = {c.key for c in b if c.strategy is None}
    assert ref_a == ref_b  # the reference rows do not depend on the strategies
    assert not ({c.key for c in a if c.strategy} & {c.key for c in b if c.strategy})


def test_data_fingerprint_follows_the_files_not_the_path(eurosat_like: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "elsewhere" / "another-name"
    shutil.copytree(eurosat_like, copy)
    fp = bm.data_fingerprint(eurosat_like)
    assert len(fp) == 16 and bm.data_fingerprint(copy) == fp
    (copy / ".DS_Store").write_bytes(b"x")  # hidden files are not data
    (copy / ".ipynb_checkpoints").mkdir()
    (copy / ".ipynb_checkpoints" / "a.tif").write_bytes(b"x")
    assert bm.data_fingerprint(copy) == fp
    some = sorted(p for p in copy.rglob("*.tif") if ".ipynb" not in str(p))[0]
    shutil.copy(some, some.with_name("extra.tif"))  # one more image: other data
    assert bm.data_fingerprint(copy) != fp
    some.with_name("extra.tif").unlink()
    with some.open("ab") as f:  # an image replaced by a larger one: other data
        f.write(b"\0")
    assert bm.data_fingerprint(copy) != fp
    single = tmp_path / "chips.npz"
    single.write_bytes(b"abc")
    moved = tmp_path / "elsewhere" / "chips.npz"
    moved.write_bytes(b"xyz")
    assert bm.data_fingerprint(single) == bm.data_fingerprint(moved)  # name and size
    moved.write_bytes(b"xyzw")
    assert bm.data_fingerprint(single) != bm.data_fingerprint(moved)
    with pytest.raises(ConfigError, match="no-such: no such file or folder"):
        bm.data_fingerprint(tmp_path / "no-such")


def test_cell_keys_do_not_depend_on_where_the_data_lie(
    eurosat_like: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import shutil

    absolute = {c.key for c in bm.BenchmarkConfig.from_dict(_config(eurosat_like)).cells()}
    monkeypatch.chdir(tmp_path)
    relative = os.path.relpath(eurosat_like, tmp_path)
    assert not Path(relative).is_absolute()
    assert {c.key for c in bm.BenchmarkConfig.from_dict(_config(Path(relative))).cells()} == absolute
    shutil.copytree(eurosat_like, tmp_path / "copy")
    assert {c.key for c in bm.BenchmarkConfig.from_dict(_config(tmp_path / "copy")).cells()} == absolute
    # earlier versions hashed the path: the path as written and as resolved are the legacy keys
    cells = bm.BenchmarkConfig.from_dict(_config(Path(relative))).cells()
    assert all(len(c.legacy_keys) == 2 and c.key not in c.legacy_keys for c in cells)
    assert len({k for c in cells for k in c.legacy_keys}) == 2 * len(cells)


def test_rows_under_legacy_path_keys_are_renamed_not_rerun(
    eurosat_like: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    monkeypatch.chdir(tmp_path)  # a relative data path: written and resolved, two legacy keys per cell
    cfg = bm.BenchmarkConfig.from_dict(_config(Path(os.path.relpath(eurosat_like, tmp_path))))
    cells = cfg.cells()
    assert {len(c.legacy_keys) for c in cells} == {2}
    out = tmp_path / "grid"
    out.mkdir()
    results = out / "results.csv"
    for i, c in enumerate(cells):  # a table an earlier version wrote: its cells keyed by the data's path
        old = c.legacy_keys[i % 2]
        bm.append_row(results, {"cell": old, "data": "tiny", "split": "stratified", "strategy": "x", "strategy_name": "x",
                                "backbone": "b", "weights": "", "init": "scratch", "k": c.k, "n_train": 6, "n_val": 0,
                                "n_test": 9, "seed": c.seed, "accuracy": 0.5 + i / 100, "macro_f1": 0.5, "seconds": 1.0,
                                "confusion_matrix": "[[1, 2], [3, 4]]", "finished": "2026-12-01T00:00:00"})  # fmt: skip
    before = results.read_bytes()
    with results.open("ab") as f:  # and a torn line of an unfinished cell, kept as it is
        f.write(b"torn|cell,tin")

    def no_fit(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a recorded cell ran again")

    monkeypatch.setattr(bm, "fit_cell", no_fit)
    monkeypatch.setattr(bm, "reference_accuracy", no_fit)
    logs: list[str] = []
    rows = bm.run_benchmark(cfg, out, log=logs.append)
    assert f"{len(cells)} rows of {results} recorded under the path-keyed cell names" in logs[0]
    assert f"{len(cells)} already in" in logs[1]
    assert sorted(r["cell"] for r in rows) == sorted(c.key for c in cells)
    by_key = {r["cell"]: r["accuracy"] for r in rows}
    assert [by_key[c.key] for c in cells] == pytest.approx([0.5 + i / 100 for i in range(len(cells))])
    after = results.read_bytes()
    assert after.endswith(b"torn|cell,tin")
    # only the first field of each line changed: the rest, line endings included, is byte for byte the same
    assert [a.split(b",", 1)[1] for a in after.splitlines(keepends=True)[1:-1]] == [
        b.split(b",", 1)[1] for b in before.splitlines(keepends=True)[1:]
    ]
    assert b"\r\n" in after and not list(out.glob(".results.csv.*"))
    assert bm.rekey_legacy_rows(results, cells) == 0  # a second run renames nothing


def test_legacy_summary_from_rows_jsonl(tmp_path: Path) -> None:
    rows = []
    for seed, (ref, scratch, pre_k1, pre_all) in enumerate([(0.5, 0.6, 0.55, 0.8), (0.7, 0.8, 0.75, 0.9)]):
        rows += [
            {"data": "d", "k": 1, "n_train": 10, "seed": seed, "init": "—", "strategy": "band-stats+LR", "accuracy": ref},
            {"data": "d", "k": 1, "n_train": 10, "seed": seed, "init": "scratch", "strategy": "lp", "accuracy": 0.3},
            {"data": "d", "k": 1, "n_train": 10, "seed": seed, "init": "pretrained", "strategy": "lp", "accuracy": pre_k1},
            {"data": "d", "k": "all", "n_train": 100, "seed": seed, "init": "scratch", "strategy": "lp", "accuracy": scratch},
            {"data": "d", "k": "all", "n_train": 100, "seed": seed, "init": "pretrained", "strategy": "lp", "accuracy": pre_all},
        ]  # fmt: skip
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    text = bm.summarise(tmp_path)
    half = T_975_DF1 * 0.1  # two seeds 0.1 apart: se = 0.1
    assert f"| band-stats+LR | {0.6:.3f} ± {half:.3f} (n=2) | — |" in text
    assert f"| lp (pretrained) | {0.65:.3f} ± {half:.3f} (n=2) | {0.85:.3f} ± {T_975_DF1 * 0.05:.3f} (n=2) |" in text
    # best scratch with all labels: 0.7 at 100; pretrained: 0.65 at 10 → 0.85 at 100, crosses 0.7 at 10^(1+0.25)
    assert f"{10**1.25:.0f} labels, {100 / 10**1.25:.1f}× fewer" in text
    assert (tmp_path / "results.md").read_text() == text
    assert (tmp_path / "label_efficiency_d.png").is_file()


def test_summary_rows_group_by_method_and_k() -> None:
    rows = [
        {"data": "d", "strategy": "s", "backbone": "b", "init": "scratch", "k": 5, "n_train": 15, "accuracy": a}
        for a in (0.2, 0.4, 0.6)
    ]
    (s,) = bm.summarise_rows(rows)
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.4)
    assert s["ci_high"] - s["mean"] == pytest.approx(
        stats.t.ppf(0.975, 2) * np.std([0.2, 0.4, 0.6], ddof=1) / np.sqrt(3)
    )


def test_spatial_grid_names_its_test_blocks_and_adapts_to_them(eurosat_like: Path, tmp_path: Path) -> None:
    """``split.test_blocks`` holds the test side to the named zones; ``target: "@test"`` adapts to its images."""
    raw = _config(
        eurosat_like,
        split={"kind": "utm-zone", "test_blocks": "32N", "val_fraction": 0.1},
        strategies=[{"name": "adabn", "params": {"head_epochs": 1, "epochs": 1, "target": "@test"}}],
        models=[{"backbone": "resnet10t", "weights": "none"}],
        labels_per_class=["all"],
        seeds=1,
    )
    cfg = bm.BenchmarkConfig.from_dict(raw)
    assert cfg.split["test_blocks"] == ["32N"]
    rows = bm.run_benchmark(cfg, tmp_path / "grid", log=lambda _m: None)
    assert {r["strategy"] for r in rows} == {bm.REFERENCE, "adabn"}
    assert {r["n_test"] for r in rows} == {18}  # the fixture's 18 files in EPSG:32632, and only they
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)
    ds = bm.open_benchmark_data(cfg)
    split = bm.base_split(ds, cfg.split, 0)
    assert split.info["test_blocks"] == ["32N"]
    assert all(ds.locations[int(i)].crs.endswith("32632") for i in split.test)


def test_test_blocks_need_a_block_split(eurosat_like: Path) -> None:
    with pytest.raises(
        ConfigError, match="split.test_blocks: needs split.kind utm-zone, lonlat-block, group, not stratified"
    ):
        bm.BenchmarkConfig.from_dict(_config(eurosat_like, split={"kind": "stratified", "test_blocks": "east"}))
    with pytest.raises(ConfigError, match=r"split.test_blocks: \[\]; give block names"):
        bm.BenchmarkConfig.from_dict(_config(eurosat_like, split={"kind": "utm-zone", "test_blocks": []}))


def test_cell_text_leaves_out_the_interval_of_one_seed() -> None:
    one = bm.summarise_rows([{"data": "d", "strategy": "s", "backbone": "b", "init": "scratch", "k": 5, "n_train": 10,
                              "accuracy": 0.5}])[0]  # fmt: skip
    assert bm.cell_text(one) == "0.500 (n=1)"
    two = bm.summarise_rows([{"data": "d", "strategy": "s", "backbone": "b", "init": "scratch", "k": 5, "n_train": 10,
                              "accuracy": a} for a in (0.4, 0.6)])[0]  # fmt: skip
    half = stats.t.ppf(0.975, 1) * np.std([0.4, 0.6], ddof=1) / np.sqrt(2)
    assert bm.cell_text(two) == f"0.500 ± {half:.3f} (n=2)"


def test_in_memory_copy_keeps_the_selected_bands(eurosat_like: Path) -> None:
    """``data_options.use_bands`` of a grid: the in-memory copy holds those bands' pixels, in their order."""
    ds = api.load_data(api.FitConfig(data=str(eurosat_like), bands="eurosat-ms", use_bands="B04,B03,B02"))
    full = api.load_data(api.FitConfig(data=str(eurosat_like), bands="eurosat-ms"))
    arr = bm.ArrayDataset(ds, np.arange(3))
    assert arr.bands.keys == ["sentinel2-l1c:B04", "sentinel2-l1c:B03", "sentinel2-l1c:B02"]
    for i in range(3):
        want = full.checked_read(i)[[full.bands.index("B04"), full.bands.index("B03"), full.bands.index("B02")]]
        np.testing.assert_array_equal(arr.checked_read(i), want)


REPO = Path(__file__).resolve().parents[2]


def _recorded_grids() -> list[tuple[Path, list[Path]]]:
    """Each results folder of ``benchmarks/results`` and the configs whose recorded command writes to it."""
    import re

    out: dict[Path, list[Path]] = {}
    for cfg in sorted((REPO / "benchmarks" / "configs").glob("*.yaml")):
        m = re.search(r"--out (benchmarks/results/\S+)", cfg.read_text())
        if m:
            out.setdefault(REPO / m.group(1), []).append(cfg)
    return sorted(out.items())


@pytest.mark.parametrize("folder,configs", _recorded_grids(), ids=[f.name for f, _ in _recorded_grids()])
def test_recorded_grids_resume_under_their_configs_keys(
    folder: Path, configs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every recorded row is a cell of its config as it now reads: rerunning the command runs no finished cell."""
    monkeypatch.chdir(REPO)  # the configs name their data relative to the repository
    raws = [yaml.safe_load(c.read_text()) for c in configs]
    data = {r["data"] for r in raws} | {  # the earlier tasks of progressive rows as well
        s["previous"]["data"] for r in raws for s in r["strategies"] if isinstance(s, dict) and s.get("previous")
    }
    if not all(Path(d).exists() for d in data):
        pytest.skip(f"{', '.join(sorted(data))}: not here (shared data, or packed by scripts/pack_device_data.py)")
    keys = {c.key for cfg in configs for c in bm.BenchmarkConfig.from_yaml(cfg).cells()}
    recorded = [r["cell"] for r in bm.read_results(folder / "results.csv")]
    assert recorded, f"{folder}: no recorded rows"
    orphans = [k for k in recorded if k not in keys]
    assert not orphans, f"{len(orphans)} of {len(recorded)} rows of {folder} are no cell of {configs}: {orphans[:3]}"


# -- robustness: every cell scored under attack as well ----------------------------------------------------------------
def test_robustness_config_errors_reported_together(eurosat_like: Path) -> None:
    bad = _config(eurosat_like, robustness={"attack": "cw", "pgd_step": 3, "pgd_steps": 0, "value_per_reflectance": -1})
    with pytest.raises(ConfigError) as err:
        bm.BenchmarkConfig.from_dict(bad)
    msg = str(err.value)
    for expected in (
        "robustness.pgd_step: unknown key; did you mean 'pgd_steps'?",
        "robustness.attack: 'cw' is not one of fgsm, pgd",
        "robustness.eps: missing",
        "robustness.pgd_steps: 0 must be an integer from 1 to 1000",
        "robustness.value_per_reflectance: -1 must be a positive number",
    ):
        assert expected in msg
    assert "5 problem(s)" in msg
    with pytest.raises(ConfigError, match=r"robustness.eps: 'x' is not a number"):
        bm.BenchmarkConfig.from_dict(_config(eurosat_like, robustness={"eps": "x"}))
    with pytest.raises(ConfigError, match="robustness: 0.01; give a mapping"):
        bm.BenchmarkConfig.from_dict(_config(eurosat_like, robustness=0.01))


def test_robustness_keys_cells_anew_only_when_set(eurosat_like: Path) -> None:
    plain = bm.BenchmarkConfig.from_dict(_config(eurosat_like))
    robust = bm.BenchmarkConfig.from_dict(_config(eurosat_like, robustness={"eps": "0.01"}))
    assert robust.robustness == {"attack": "pgd", "eps": "0.01", "pgd_steps": 10, "value_per_reflectance": None}
    assert "robustness" not in plain.settings() and "robustness" not in plain.to_dict()
    assert robust.to_dict()["robustness"] == robust.robustness
    # the settings of a grid without robustness are what they were before the option existed
    assert set(plain.settings()) == {"data", "data_options", "size", "split", "fit"}
    assert not {c.key for c in plain.cells()} & {c.key for c in robust.cells()}
    fgsm = bm.BenchmarkConfig.from_dict(_config(eurosat_like, robustness={"attack": "fgsm", "eps": 0.01}))
    assert fgsm.robustness is not None and fgsm.robustness["pgd_steps"] == 1 and fgsm.robustness["eps"] == "0.01"
    assert bm.attack_text(robust.robustness) == "pgd-10, eps 0.01 reflectance"
    assert bm.attack_text({**robust.robustness, "value_per_reflectance": 255}) == "pgd-10, eps 0.01 reflectance (×255)"
    # the margin loss and the square attack key cells of their own; loss: ce is the default and keys nothing new
    ce = bm.BenchmarkConfig.from_dict(_config(eurosat_like, robustness={"eps": "0.01", "loss": "ce"}))
    assert ce.robustness == robust.robustness
    margin = bm.BenchmarkConfig.from_dict(_config(eurosat_like, robustness={"eps": "0.01", "loss": "margin"}))
    sq = bm.BenchmarkConfig.from_dict(_config(eurosat_like, robustness={"attack": "square", "eps": "0.01"}))
    assert margin.robustness is not None and sq.robustness is not None
    assert margin.robustness["loss"] == "margin" and sq.robustness["queries"] == 1000 and "loss" not in sq.robustness
    keys = [{c.key for c in g.cells()} for g in (robust, margin, sq)]
    assert not keys[0] & keys[1] and not keys[0] & keys[2] and not keys[1] & keys[2]
    assert bm.attack_text(margin.robustness) == "pgd-10 margin, eps 0.01 reflectance"
    assert bm.attack_text(sq.robustness) == "square-1000, eps 0.01 reflectance"
    for bad, msg in (
        ({"eps": "0.01", "loss": "hinge"}, "robustness.loss: 'hinge' is not one of ce, margin"),
        ({"eps": "0.01", "queries": 10}, "robustness.queries: only the square attack takes queries (attack is pgd)"),
        (
            {"attack": "square", "eps": "0.01", "queries": 0},
            "robustness.queries: 0 must be an integer from 1 to 100000",
        ),
        (
            {"attack": "square", "eps": "0.01", "loss": "ce"},
            "robustness.loss: the square attack always lowers the margin",
        ),
    ):
        with pytest.raises(ConfigError, match=re.escape(msg)):
            bm.BenchmarkConfig.from_dict(_config(eurosat_like, robustness=bad))


def test_the_reference_attacked_as_a_network_predicts_what_the_classifier_does(eurosat_like: Path) -> None:
    from eotransfer.evaluation.reference import (
        band_statistics_matrix,
        fit_band_statistics_classifier,
        reference_network,
    )

    cfg = bm.BenchmarkConfig.from_dict(_config(eurosat_like))
    ds = bm.open_benchmark_data(cfg)
    idx = np.arange(len(ds))
    feats = band_statistics_matrix(ds.checked_read, idx)
    clf = fit_band_statistics_classifier(feats, ds.labels, 0)
    net = reference_network(clf, len(ds.bands), len(ds.classes))
    import torch

    x = torch.from_numpy(np.stack([ds.checked_read(int(i)) for i in idx]).astype(np.float32))
    with torch.no_grad():
        logits = net(x).double()
    assert np.array_equal(logits.argmax(1).numpy(), clf.predict(feats))
    np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), clf.predict_proba(feats), atol=1e-3)
    # differentiable in the pixels: the attack has a gradient to follow
    x.requires_grad_(True)
    net(x).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_robust_grid_scores_every_attackable_cell(eurosat_like: Path, tmp_path: Path) -> None:
    strategies = [
        {"name": "linear-probe", "params": {"epochs": 2, "augment": False}},
        {"name": "feature-extraction", "label": "fe:logreg", "params": {"classifier": "logreg"}},
        {"name": "feature-extraction", "label": "fe:knn", "params": {"classifier": "knn"}},
    ]
    # eps 0.02 reflectance (200 DN): large against the fixture's class offsets, so the attack must cost accuracy
    cfg = bm.BenchmarkConfig.from_dict(
        _config(eurosat_like, strategies=strategies, labels_per_class=["all"], seeds=1,
                models=[{"backbone": "resnet10t", "weights": "none"}], robustness={"eps": "0.02", "pgd_steps": 5})
    )  # fmt: skip
    out = tmp_path / "robust"
    logs: list[str] = []
    rows = bm.run_benchmark(cfg, out, log=logs.append)
    by = {r["strategy"]: r for r in rows}
    assert set(by) == {bm.REFERENCE, "linear-probe", "fe:logreg", "fe:knn"}
    for name in (bm.REFERENCE, "linear-probe", "fe:logreg"):
        assert 0.0 <= by[name]["robust_accuracy"] <= 1.0, name
        assert by[name]["attack"] == "pgd-5, eps 0.02 reflectance"
    assert by[bm.REFERENCE]["robust_accuracy"] < by[bm.REFERENCE]["accuracy"]
    # the reference row is bracketed: its certified accuracy (a lower bound) below its robust accuracy
    assert 0.0 <= by[bm.REFERENCE]["certified_accuracy"] <= by[bm.REFERENCE]["robust_accuracy"]
    assert all(math.isnan(by[n]["certified_accuracy"]) for n in ("linear-probe", "fe:logreg", "fe:knn"))
    assert math.isnan(by["fe:knn"]["robust_accuracy"]) and by["fe:knn"]["attack"] == ""
    assert any("fe:knn" in line and "no robust accuracy" in line and "not linear" in line for line in logs)
    md = (out / "summary.md").read_text()
    assert "#### tiny: robust accuracy (pgd-5, eps 0.02 reflectance)" in md
    robust_part = md.split("robust accuracy (pgd-5")[1]
    knn_line = next(line for line in robust_part.splitlines() if line.startswith("| fe:knn"))
    assert knn_line == "| fe:knn (resnet10t, scratch) | — |"
    assert f"| {bm.REFERENCE} | {by[bm.REFERENCE]['robust_accuracy']:.3f} (n=1) |" in robust_part
    cert = by[bm.REFERENCE]["certified_accuracy"]
    assert f"Certified accuracy of {bm.REFERENCE} (no perturbation within the budget" in robust_part
    assert f"k=all {cert:.3f} (n=1)" in robust_part
    with (out / "summary_certified.csv").open(newline="") as f:
        assert [(r["strategy"], float(r["mean"])) for r in csv.DictReader(f)] == [(bm.REFERENCE, pytest.approx(cert))]
    with (out / "summary_robust.csv").open(newline="") as f:
        rec = {r["strategy"]: r for r in csv.DictReader(f)}
    assert set(rec) == {bm.REFERENCE, "linear-probe", "fe:logreg"}
    assert float(rec["linear-probe"]["mean"]) == pytest.approx(by["linear-probe"]["robust_accuracy"], abs=1e-4)
    for png in ("label_efficiency_tiny.png", "robust_efficiency_tiny.png", "clean_vs_robust_tiny.png"):
        assert (out / png).stat().st_size > 1000
    from eotransfer.evaluation.report import build_report

    page = build_report(out, out / "report.html").read_text()
    assert "Robustness: accuracy under attack" in page and "alt='clean vs. robust accuracy on tiny'" in page
    assert f"Certified accuracy of {bm.REFERENCE}" in page


def test_a_budget_wider_than_a_band_stops_the_grid_before_its_first_cell(
    eurosat_like: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = CountingFit()
    monkeypatch.setattr(api, "fit", counter)
    cfg = bm.BenchmarkConfig.from_dict(_config(eurosat_like, robustness={"eps": "0.5"}), source="wide.yaml")
    with pytest.raises(ConfigError, match=r"wide.yaml: robustness.eps: 0.5 reflectance .* exceeds the whole range"):
        bm.run_benchmark(cfg, tmp_path / "wide", log=lambda _: None)
    assert counter.calls == 0 and not (tmp_path / "wide" / "results.csv").exists()


def test_a_cells_robust_score_attacks_the_model_the_row_evaluates(eurosat_like: Path) -> None:
    cfg = bm.BenchmarkConfig.from_dict(_config(eurosat_like))
    ds = bm.open_benchmark_data(cfg)
    split = bm.base_split(ds, cfg.split, 0)
    m = bm.fit_cell(ds, split, "linear-probe", "resnet10t", None, 0, {"epochs": 2, "augment": False, "batch_size": 16},
                    {"attack": "pgd", "eps": "0.002", "pgd_steps": 2, "value_per_reflectance": None})  # fmt: skip
    assert m["robust"]["clean_accuracy"] == pytest.approx(m["overall_accuracy"])
    assert m["robust"]["n"] == len(split.test) and m["robust"]["steps"] == 2
    assert m["robust"]["value_per_reflectance"] == 10000.0  # guessed from the data's digital numbers
    assert "robust" not in bm.fit_cell(ds, split, "linear-probe", "resnet10t", None, 0, {"epochs": 1})


def test_a_table_of_earlier_columns_is_widened_when_robust_rows_arrive(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    old = {c: "1" for c in bm.COLUMNS_BEFORE_ROBUSTNESS} | {"cell": "a", "k": "all", "accuracy": "0.5",
                                                            "confusion_matrix": "[[1]]", "finished": "t"}  # fmt: skip
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=bm.COLUMNS_BEFORE_ROBUSTNESS)
        w.writeheader()
        w.writerow(old)
    before = path.read_bytes()
    bm.append_row(path, {**old, "cell": "b", "robust_accuracy": "", "attack": ""})  # nothing new: header kept
    assert path.read_bytes().startswith(before) and path.read_text().splitlines()[0] == ",".join(
        bm.COLUMNS_BEFORE_ROBUSTNESS
    )
    bm.append_row(path, {**old, "cell": "c", "robust_accuracy": 0.25, "attack": "pgd-10, eps 0.01 reflectance"})
    assert path.read_text().splitlines()[0] == ",".join(bm.COLUMNS)
    rows = {r["cell"]: r for r in bm.read_results(path)}
    assert set(rows) == {"a", "b", "c"}
    assert math.isnan(rows["a"]["robust_accuracy"]) and rows["a"]["accuracy"] == 0.5 and rows["a"]["attack"] == ""
    assert rows["c"]["robust_accuracy"] == 0.25 and rows["c"]["confusion_matrix"] == "[[1]]"
    assert not list(tmp_path.glob(".*"))  # the atomic rewrite left no temporary file


# -- distill rows taught by a row of the same grid -------------------------------------------------------------------
def _distill_config(eurosat_like: Path, **over: Any) -> dict[str, Any]:
    grid: dict[str, Any] = {"labels_per_class": [2], "seeds": 1, **over}
    return _config(
        eurosat_like,
        strategies=[
            {"name": "finetune", "params": {"head_epochs": 1, "epochs": 1, "augment": False}},
            {
                "name": "distill",
                "teacher": {"strategy": "finetune", "backbone": "resnet10t", "weights": "none"},
                "params": {"epochs": 1, "augment": False},
            },
        ],
        models=[{"backbone": "resnet10t", "weights": "none"}],
        **grid,
    )


def test_a_teacher_must_be_a_row_and_model_of_the_grid(eurosat_like: Path) -> None:
    bad = _distill_config(eurosat_like)
    bad["strategies"] += [
        {"name": "distill", "label": "d2", "teacher": {"strategy": "fine-tune", "backbone": "resnet10t"}},
        {"name": "distill", "label": "d3", "teacher": {"strategy": "finetune", "backbone": "resnet18"}},
        {"name": "finetune", "label": "f2", "teacher": {"strategy": "finetune", "backbone": "resnet10t"}},
        {"name": "distill", "label": "d4"},
        {"name": "distill", "label": "d5", "teacher": "finetune"},
        {"name": "distill", "label": "d6", "teacher": {"strategy": "distill", "backbone": "resnet10t"}},
    ]
    with pytest.raises(ConfigError) as err:
        bm.BenchmarkConfig.from_dict(bad)
    msg = str(err.value)
    for expected in (
        "strategies[2].teacher.strategy: 'fine-tune' is no row of this grid; did you mean 'finetune'?",
        "strategies[3].teacher: the model resnet18 (scratch) is not in models (resnet10t (scratch)); add it there",
        "strategies[4].teacher: strategy 'finetune' takes no teacher (distill does)",
        "strategies[5].teacher: 'distill' needs a teacher; name a row of this grid",
        "strategies[6].teacher: 'finetune'; give the teaching row as {strategy: ROW",
        "strategies[7].teacher.strategy: 'distill' is itself distilled",
    ):
        assert expected in msg
    assert "6 problem(s)" in msg
    # a grid without teachers keys its cells as before: no 'teacher' entry enters the hash or the record
    plain = bm.BenchmarkConfig.from_dict(_config(eurosat_like))
    assert all("teacher" not in s for s in plain.to_dict()["strategies"])
    cfg = bm.BenchmarkConfig.from_dict(_distill_config(eurosat_like))
    rec = cfg.to_dict()["strategies"][1]["teacher"]
    assert rec == {"strategy": "finetune", "backbone": "resnet10t", "weights": None}


def test_distill_rows_learn_from_their_cells_teacher_and_resume(
    eurosat_like: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = bm.BenchmarkConfig.from_dict(_distill_config(eurosat_like, seeds=2))
    calls: list[tuple[str, int, str | None, int]] = []
    real = api.fit

    def recording_fit(*args: Any, **kwargs: Any) -> Any:
        teacher = kwargs.get("teacher")
        if teacher is not None:  # the teacher is saved, trained on this cell's seed and k only
            card = json.loads((Path(teacher) / "card.json").read_text())
            assert card["strategy"]["name"] == "finetune" and card["fit"]["seed"] == kwargs["seed"]
            assert card["data"]["split"]["n_train"] == len(kwargs["split_override"].train) == 6
            assert card["data"]["split"]["k"] == 2
        calls.append((kwargs["strategy"], kwargs["seed"], teacher, len(kwargs["split_override"].train)))
        return real(*args, **kwargs)

    monkeypatch.setattr(api, "fit", recording_fit)
    out = tmp_path / "grid"
    rows = bm.run_benchmark(cfg, out, log=lambda _: None)
    assert sorted((r["strategy"], r["seed"]) for r in rows) == sorted(
        (s, seed) for s in (bm.REFERENCE, "finetune", "distill") for seed in (0, 1)
    )
    assert [(s, seed) for s, seed, _, _ in calls] == [("finetune", 0), ("distill", 0), ("finetune", 1), ("distill", 1)]
    assert calls[1][2] != calls[3][2]  # each seed's student has its own teacher
    assert not (out / bm.TEACHERS_DIR).exists()  # no teacher is kept once its students are done

    # resume after the distill row of seed 1 was lost: its teacher is trained again, its row is not repeated
    table = (out / "results.csv").read_text().splitlines()
    kept = [line for line in table if not (line.startswith("distill|") and "seed=1" in line)]
    assert len(kept) == len(table) - 1
    (out / "results.csv").write_text("\n".join(kept) + "\n")
    calls.clear()
    logs: list[str] = []
    rows = bm.run_benchmark(cfg, out, log=logs.append)
    assert [(s, seed) for s, seed, _, _ in calls] == [("finetune", 1), ("distill", 1)]
    assert any("training its teacher" in line for line in logs)
    assert len(rows) == 6 and sum(r["strategy"] == "finetune" for r in rows) == 2
    assert not (out / bm.TEACHERS_DIR).exists()


# -- generalised zero-shot grids (unseen_classes:) -------------------------------------------------------------------
def test_gzsl_scores_from_the_confusion_matrix_match_zeroshot_metrics() -> None:
    from eotransfer.strategies.zeroshot import zeroshot_metrics

    rng = np.random.default_rng(3)
    y, scores = rng.integers(0, 4, 60), rng.normal(size=(60, 4))
    seen = np.array([True, False, True, False])
    cm = np.zeros((4, 4), int)
    np.add.at(cm, (y, scores.argmax(1)), 1)
    got = bm.gzsl_scores(cm.tolist(), ["a", "b", "c", "d"], ["b", "d"])
    want = zeroshot_metrics(y, scores, seen)
    for key in ("seen_accuracy", "unseen_accuracy", "harmonic_mean"):
        assert got[key] == pytest.approx(want[key]), key
    # a method that never predicts an unseen class: U = 0, H = 0; S by hand (rows a, c: 3/4 and 1/2)
    never = bm.gzsl_scores([[3, 0, 1, 0], [2, 0, 0, 0], [1, 0, 1, 0], [0, 0, 4, 0]], ["a", "b", "c", "d"], ["b", "d"])
    assert never == {"seen_accuracy": pytest.approx(0.625), "unseen_accuracy": 0.0, "harmonic_mean": 0.0}


def test_unseen_classes_config_errors_and_draws(eurosat_like: Path) -> None:
    with pytest.raises(ConfigError) as err:
        bm.BenchmarkConfig.from_dict(_config(eurosat_like, unseen_classes=0))
    assert "unseen_classes: 0; give class names" in str(err.value)
    zs = [{"name": "zero-shot", "params": {"unseen_classes": "water"}}]
    with pytest.raises(ConfigError) as err:
        bm.BenchmarkConfig.from_dict(_config(eurosat_like, strategies=zs, unseen_classes=["water", "water"]))
    assert "names a class twice" in str(err.value) and "strategies[0].params.unseen_classes: set by the grid" in str(
        err.value
    )
    classes = ["cropland", "forest", "water"]
    cfg = bm.BenchmarkConfig.from_dict(_config(eurosat_like, unseen_classes="water, forest"))
    assert bm.unseen_for_seed(cfg, classes, 0) == ["forest", "water"]  # in the data's class order
    cfg = bm.BenchmarkConfig.from_dict(_config(eurosat_like, unseen_classes=["watr"]))
    with pytest.raises(ConfigError, match="unseen_classes: 'watr' is not a class of .*; did you mean 'water'"):
        bm.unseen_for_seed(cfg, classes, 0)
    cfg = bm.BenchmarkConfig.from_dict(_config(eurosat_like, unseen_classes=1, seeds=12))
    draws = [bm.unseen_for_seed(cfg, classes, s) for s in cfg.seeds]
    assert all(len(d) == 1 and d[0] in classes for d in draws) and draws == [bm.unseen_for_seed(cfg, classes, s)
                                                                            for s in cfg.seeds]  # fmt: skip
    assert len({d[0] for d in draws}) > 1  # drawn per seed
    with pytest.raises(ConfigError, match="leaves none seen"):
        bm.unseen_for_seed(bm.BenchmarkConfig.from_dict(_config(eurosat_like, unseen_classes=3)), classes, 0)
    # the key changes only when the grid sets unseen classes
    plain = bm.BenchmarkConfig.from_dict(_config(eurosat_like))
    assert "unseen_classes" not in plain.settings()
    assert {c.key for c in plain.cells()}.isdisjoint(c.key for c in cfg.cells())


def test_zeroshot_grid_holds_out_the_unseen_classes_from_every_row(eurosat_like: Path, tmp_path: Path) -> None:
    attributes = tmp_path / "attr.csv"
    attributes.write_text("class,green,wet,bright\ncropland,0.6,0.1,0.7\nforest,1,0.2,0.2\nwater,0,1,0.1\n")
    strategies = [
        {
            "name": "zero-shot",
            "label": "eszsl",
            "params": {"method": "eszsl", "attributes": str(attributes), "calibration_pool": "@test"},
        },  # fmt: skip
        {"name": "feature-extraction", "label": "fe:logreg", "params": {"classifier": "logreg"}},
    ]
    cfg = bm.BenchmarkConfig.from_dict(_config(eurosat_like, strategies=strategies, seeds=1, unseen_classes=["water"]))
    out = tmp_path / "zs"
    rows = bm.run_benchmark(cfg, out, log=lambda _m: None)
    assert len(rows) == 2 * (1 + 2 * 2)  # k ∈ {2, all} × (reference + 2 rows × pre-trained/scratch)
    ds = bm.open_benchmark_data(cfg)
    base = bm.base_split(ds, cfg.split, 0)
    water = ds.classes.index("water")
    n_seen_train = int((ds.labels[base.train] != water).sum())
    for r in rows:
        assert r["unseen_classes"] == "water"
        assert r["n_train"] == (2 * 2 if r["k"] == 2 else n_seen_train)  # no water label in any cell
        assert r["n_val"] == int((ds.labels[base.val] != water).sum())
        cm = np.asarray(json.loads(r["confusion_matrix"]))
        assert cm[water].sum() > 0  # the test side keeps the unseen class
        assert r["harmonic_mean"] == pytest.approx(bm.gzsl_scores(cm, ds.classes, ["water"])["harmonic_mean"])
        if r["strategy"] != "eszsl":  # trained without a water label, nothing predicts water
            assert cm[:, water].sum() == 0 and r["unseen_accuracy"] == 0.0 and r["harmonic_mean"] == 0.0
        else:  # prior matching sends a third of the test images to water
            assert abs(cm[:, water].sum() - cm.sum() / 3) <= 1
    md = (out / "summary.md").read_text()
    assert "#### tiny: generalised zero-shot" in md and "| H: method | k=2 | k=all |" in md
    assert f"| {bm.REFERENCE} | 0.000 (n=1) | 0.000 (n=1) |" in md.split("| H: method")[1]
    with (out / "summary_zeroshot.csv").open(newline="") as f:
        assert {r["strategy"] for r in csv.DictReader(f)} == {bm.REFERENCE, "eszsl", "fe:logreg"}
    assert (out / "zeroshot_efficiency_tiny.png").stat().st_size > 1000
    from eotransfer.evaluation.report import build_report

    page = build_report(out, out / "report.html").read_text()
    assert "Generalised zero-shot: seen and unseen classes" in page and "alt='zero-shot H on tiny'" in page


# -- progressive rows: an earlier task the grid trains once -----------------------------------------------------------
def _progressive_config(eurosat_like: Path, **over: Any) -> dict[str, Any]:
    previous = {"data": str(eurosat_like), "data_options": {"bands": "eurosat-ms"}, "strategy": "finetune",
                "backbone": "resnet10t", "weights": "none", "params": {"head_epochs": 1, "epochs": 1}}  # fmt: skip
    row = {"name": "progressive", "previous": previous, "params": {"head_epochs": 1, "epochs": 1}}
    return _config(eurosat_like, strategies=[row], models=[{"backbone": "resnet10t", "weights": "none"}],
                   labels_per_class=[2], **over)  # fmt: skip


def test_previous_is_checked_with_the_config(eurosat_like: Path, tmp_path: Path) -> None:
    bad = _progressive_config(eurosat_like)
    bad["strategies"][0]["previous"] |= {"strategy": "distill", "backbone": "resnet10x", "epoch": 3,
                                         "data": str(tmp_path / "nowhere")}  # fmt: skip
    bad["strategies"].append({"name": "finetune", "previous": {"data": str(eurosat_like), "strategy": "finetune",
                                                              "backbone": "resnet10t"}})  # fmt: skip
    with pytest.raises(ConfigError) as err:
        bm.BenchmarkConfig.from_dict(bad)
    msg = str(err.value)
    for expected in ("strategies[0].previous.epoch: unknown key", "strategies[0].previous.data: " + str(tmp_path),
                     "strategies[0].previous.strategy: 'distill' needs a model of its own",
                     "strategies[0].previous.backbone: --backbone: unknown backbone 'resnet10x'",
                     "strategies[1].previous: strategy 'finetune' takes no earlier task"):  # fmt: skip
        assert expected in msg, expected
    plain = bm.BenchmarkConfig.from_dict(_progressive_config(eurosat_like))
    longer = _progressive_config(eurosat_like)
    longer["strategies"][0]["previous"]["params"]["epochs"] = 2
    assert {c.key for c in plain.cells() if c.strategy} != {
        c.key for c in bm.BenchmarkConfig.from_dict(longer).cells() if c.strategy
    }  # another earlier task: other cells


def test_progressive_rows_grow_from_the_earlier_task_trained_once(
    eurosat_like: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eotransfer.strategies.progressive import Progressive

    counter = CountingFit()
    monkeypatch.setattr(api, "fit", counter)
    previous_seen: list[str] = []
    real_prepare = Progressive.prepare

    def prepare(self: Any, dataset: Any, split: Any, model: Any) -> None:
        previous_seen.append(self.params.previous)
        real_prepare(self, dataset, split, model)

    monkeypatch.setattr(Progressive, "prepare", prepare)
    cfg = bm.BenchmarkConfig.from_dict(_progressive_config(eurosat_like))
    out = tmp_path / "prog"
    logs: list[str] = []
    rows = bm.run_benchmark(cfg, out, log=logs.append)
    assert sorted((r["strategy"], r["seed"]) for r in rows) == [(bm.REFERENCE, 0), (bm.REFERENCE, 1),
                                                                ("progressive", 0), ("progressive", 1)]  # fmt: skip
    assert counter.calls == 1 + 2  # the earlier task once, then one fit per progressive cell
    assert len(set(previous_seen)) == 1 and Path(previous_seen[0]).parent == out / bm.PREVIOUS_DIR
    assert sum("training the earlier task" in line for line in logs) == 1
    record = json.loads((out / bm.PREVIOUS_JSON).read_text())
    (entry,) = record.values()
    assert entry["previous"]["strategy"] == "finetune" and 0.0 <= entry["test_accuracy"] <= 1.0
    assert not (out / bm.PREVIOUS_DIR).exists()  # no cell needs it any more: removed
    assert bm.run_benchmark(cfg, out, log=logs.append) and counter.calls == 3  # resumed: nothing refitted
    recorded = yaml.safe_load((out / "benchmark.yaml").read_text())
    assert recorded["strategies"][0]["previous"]["data"] == str(eurosat_like)
    from eotransfer.evaluation.report import build_report

    page = build_report(out, out / "report.html").read_text()
    assert "Earlier task of the progressive rows (their frozen first column): finetune (resnet10t, scratch) on " in page
    assert f"test accuracy {entry['test_accuracy']:.3f} on {entry['n_test']} of its own test images" in page


def test_previous_size_resizes_the_earlier_task(eurosat_like: Path, tmp_path: Path) -> None:
    from eotransfer.card import load_model

    bad = _progressive_config(eurosat_like)
    bad["strategies"][0]["previous"]["size"] = 4
    with pytest.raises(ConfigError, match=r"strategies\[0\].previous.size: 4 must be an integer ≥ 8"):
        bm.BenchmarkConfig.from_dict(bad)
    cfg = _progressive_config(eurosat_like)
    plain = bm.BenchmarkConfig.from_dict(cfg).strategies[0].previous
    assert plain is not None and "size" not in plain.to_dict()  # unset: the keys of earlier rows stay
    cfg["strategies"][0]["previous"]["size"] = 16
    spec = bm.BenchmarkConfig.from_dict(cfg).strategies[0].previous
    assert spec is not None and spec.to_dict()["size"] == 16
    metrics = bm.fit_previous(spec, tmp_path / "prev")
    assert 0.0 <= metrics["overall_accuracy"] <= 1.0
    saved = load_model(tmp_path / "prev")
    assert (
        saved.card["img_size"] == 16
        and saved.bands.keys == bm.open_data(str(eurosat_like), {"bands": "eurosat-ms"}).bands.keys
    )
