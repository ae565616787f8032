"""The command line: generated options, YAML configs with overrides, one-line errors, predict/evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

from eotransfer.cli import main, run
from eotransfer.errors import ConfigError

FAST = ["--backbone", "resnet18", "--no-progress", "--no-verbose", "--batch-size", "16"]


def _exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return int(exc.value.code or 0)


def test_bands_prints_catalogue(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["bands", "sentinel2-l1c"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 + 13
    assert any(line.split()[1] == "B8A" and "864.7" in line for line in lines[1:])


def test_unknown_backbone_is_one_line_error(capsys: pytest.CaptureFixture[str], eurosat_like: Path) -> None:
    assert _exit_code(["fit", str(eurosat_like), "--bands", "eurosat-ms", "--backbone", "resnet81"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "--backbone" in err[0] and "did you mean 'resnet18'" in err[0]


def test_option_of_another_strategy_is_refused(capsys: pytest.CaptureFixture[str], eurosat_like: Path) -> None:
    code = _exit_code(
        ["fit", str(eurosat_like), "--bands", "eurosat-ms", "--strategy", "linear-probe", "--head-epochs", "2"]
    )
    assert code == 2
    assert "'head_epochs' is not a parameter of strategy 'linear-probe'" in capsys.readouterr().err


def test_yaml_config_with_override_then_evaluate_and_predict(
    tmp_path: Path, eurosat_like: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model"
    cfg = tmp_path / "fit.yaml"
    cfg.write_text(
        f"data: {eurosat_like}\nbands: eurosat-ms\nstrategy: finetune\nlabels_per_class: 4\nseed: 1\n"
        f"out: {out}\nstrategy_params:\n  head_epochs: 3\n  epochs: 1\n"
    )
    assert run(["fit", "--config", str(cfg), "--head-epochs", "2", *FAST]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["strategy"]["name"] == "finetune"
    assert card["strategy"]["params"]["head_epochs"] == 2  # the command line overrides the file
    assert card["strategy"]["params"]["epochs"] == 1  # the file overrides the default
    assert card["fit"]["labels_per_class"] == 4 and card["fit"]["seed"] == 1
    assert [b["name"] for b in card["bands"]][-1] == "B8A"
    assert not list(tmp_path.glob(".model*")), "no temporary or checkpoint folder may remain"
    capsys.readouterr()

    assert run(["evaluate", str(out), str(eurosat_like), "--bands", "eurosat-ms", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n"] == 36 and 0.0 <= metrics["overall_accuracy"] <= 1.0

    csv_path = tmp_path / "pred.csv"
    assert run(["predict", str(out), str(eurosat_like), "--out", str(csv_path), "--no-progress"]) == 0
    rows = csv_path.read_text().strip().splitlines()
    assert len(rows) == 1 + 36
    probs = np.array([[float(v) for v in r.split(",")[2:]] for r in rows[1:]])
    assert probs.shape == (36, 3)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-4)
    # the batch size and the accelerator change where and how the forward passes run, not the answer
    small = tmp_path / "pred_small_batches.csv"
    assert run(["predict", str(out), str(eurosat_like), "--out", str(small), "--no-progress",
                "--batch-size", "5", "--accelerator", "cpu"]) == 0  # fmt: skip
    probs_small = np.array([[float(v) for v in r.split(",")[2:]] for r in small.read_text().strip().splitlines()[1:]])
    np.testing.assert_allclose(probs_small, probs, rtol=0, atol=2e-5)
    with pytest.raises(ConfigError, match="--accelerator 'tpu' is unknown; use one of auto, cpu, cuda, gpu"):
        run(["predict", str(out), str(eurosat_like), "--out", str(tmp_path / "x.csv"), "--accelerator", "tpu"])
    assert not (tmp_path / "x.csv").exists()

    raster = tmp_path / "scene.tif"
    rng = np.random.default_rng(0)
    transform = from_origin(500000, 4200000, 10, 10)
    with rasterio.open(raster, "w", driver="GTiff", width=40, height=36, count=13, dtype="uint16",
                       crs="EPSG:32632", transform=transform) as dst:  # fmt: skip
        dst.write(rng.integers(500, 3000, (13, 36, 40)).astype("uint16"))
    class_map = tmp_path / "map.tif"
    assert run(["predict", str(out), str(raster), "--out", str(class_map), "--no-progress"]) == 0
    with rasterio.open(class_map) as src:
        assert (src.width, src.height) == (40, 36) and src.transform == transform and src.crs.to_epsg() == 32632
        classes = src.read(1)
    assert classes.max() < 3
    assert (tmp_path / "map.png").is_file()
    ahead = tmp_path / "map_ahead.tif"  # reading ahead on a thread changes the speed, never the map
    assert run(["predict", str(out), str(raster), "--out", str(ahead), "--no-progress", "--read-ahead", "3"]) == 0
    with rasterio.open(class_map) as a, rasterio.open(ahead) as b:
        np.testing.assert_array_equal(a.read(), b.read())
    from eotransfer.api import default_read_ahead

    assert default_read_ahead(torch.device("cpu")) == 0 and default_read_ahead(torch.device("cuda", 0)) == 2


def test_predict_raster_with_unmappable_band_count(
    tmp_path: Path, eurosat_like: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "m"
    assert run(["fit", str(eurosat_like), "--bands", "eurosat-ms", "--strategy", "linear-probe", "--epochs", "2",
                "--labels-per-class", "3", "--out", str(out), *FAST]) == 0  # fmt: skip
    raster = tmp_path / "rgb.tif"
    with rasterio.open(raster, "w", driver="GTiff", width=20, height=20, count=3, dtype="uint8",
                       crs="EPSG:32632", transform=from_origin(500000, 4200000, 10, 10)) as dst:  # fmt: skip
        dst.write(np.zeros((3, 20, 20), dtype="uint8"))
    capsys.readouterr()
    assert _exit_code(["predict", str(out), str(raster), "--out", str(tmp_path / "x.tif")]) == 2
    assert "--raster-bands" in capsys.readouterr().err
    assert not (tmp_path / "x.tif").exists()


def test_group_split_keeps_each_event_on_one_side() -> None:
    from eotransfer.data.splits import make_split

    labels = np.array([0, 1] * 10)
    groups = np.array(["a"] * 6 + ["b"] * 6 + ["c"] * 8)
    split = make_split("group", labels, seed=3, groups=groups, test_fraction=0.3, val_fraction=0.0)
    test_groups = set(groups[split.test])
    assert test_groups and not test_groups & set(groups[split.train])
    assert len(split.train) + len(split.test) == 20
    explicit = make_split("group", labels, seed=0, groups=groups, test_blocks=["c"], val_fraction=0.0)
    assert set(groups[explicit.test]) == {"c"} and len(explicit.test) == 8


def test_every_command_has_help() -> None:
    """Help texts are %-formatted by argparse: a bare '%' in a parameter's help used to crash `fit --help`."""
    import argparse

    from eotransfer.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert {"fit", "evaluate", "advise", "benchmark", "report"} <= set(sub.choices)
    for name, cmd in sub.choices.items():
        text = cmd.format_help()
        assert name in text and "--help" in text
