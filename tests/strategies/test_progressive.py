"""``progressive`` through ``fit``: earlier tasks' outputs bit-identical after saving and reloading; a task sequence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import eotransfer
from eotransfer.card import load_model
from eotransfer.cli import run
from eotransfer.data.formats.folder import ClassFolderDataset
from eotransfer.errors import BandError, ConfigError
from eotransfer.strategies.progressive import run_sequence

SHORT = {"head_epochs": 1, "epochs": 1, "batch_size": 8, "patience": 0, "backbone": "resnet10t", "accelerator": "cpu",
         "progress": False, "verbose": False}  # fmt: skip


def rgb(root: Path) -> ClassFolderDataset:
    ds = ClassFolderDataset(root, bands="eurosat-ms")
    ds.select_bands(["B04", "B03", "B02"])
    return ds


@pytest.fixture(scope="module")
def first(eurosat_like: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fine-tuned 13-band model: the first column."""
    out = tmp_path_factory.mktemp("progressive") / "land"
    eotransfer.fit(ClassFolderDataset(eurosat_like, bands="eurosat-ms"), strategy="finetune", out=str(out), **SHORT)
    return out


def test_second_task_keeps_the_first_bit_identical(eurosat_like: Path, first: Path, tmp_path: Path) -> None:
    ds1 = ClassFolderDataset(eurosat_like, bands="eurosat-ms")
    x1 = np.stack([ds1.checked_read(i) for i in range(0, len(ds1), 3)])
    before = load_model(first).predict_proba(x1)
    out = tmp_path / "two"
    result = eotransfer.fit(rgb(eurosat_like), strategy="progressive", previous=str(first), task="rgb-land",
                            column_band_policy="mean", out=str(out), **{**SHORT, "epochs": 2})  # fmt: skip
    assert [row["phase"] for row in result.history] == ["head", "column", "column"]
    with torch.no_grad():  # in memory, after training ...
        logits = result.model.backbone.task_logits(torch.from_numpy(x1), 0)  # type: ignore[operator]
    assert torch.equal(torch.softmax(logits, 1), torch.from_numpy(before))
    earlier = load_model(out, task="land")  # ... and saved and reloaded
    assert np.array_equal(earlier.predict_proba(x1), before)
    tasks = load_model(out).card["network"]["tasks"]
    assert [t["name"] for t in tasks] == ["land", "rgb-land"]
    assert len(tasks[0]["bands"]) == 13 and [b["name"] for b in tasks[1]["bands"]] == ["B04", "B03", "B02"]
    ds2 = rgb(eurosat_like)
    metrics = eotransfer.evaluate(out, ds2)  # the newest task by default
    x2 = np.stack([ds2.checked_read(i) for i in range(len(ds2))])
    expected = float(np.mean(load_model(out).predict_proba(x2).argmax(1) == ds2.labels))
    assert metrics["n"] == len(ds2) and metrics["overall_accuracy"] == pytest.approx(expected)
    # an earlier task through evaluate (API and CLI): the same scores as the first model's own
    first_scores = eotransfer.evaluate(first, ds1)
    assert eotransfer.evaluate(out, ds1, task="land")["overall_accuracy"] == first_scores["overall_accuracy"]
    assert run(["evaluate", str(out), str(eurosat_like), "--bands", "eurosat-ms", "--task", "land"]) == 0


def test_a_linear_scikit_learn_model_is_an_earlier_column_through_its_folded_head(
    eurosat_like: Path, tmp_path: Path
) -> None:
    ds1 = ClassFolderDataset(eurosat_like, bands="eurosat-ms")
    fe = {k: v for k, v in SHORT.items() if k not in ("head_epochs", "epochs", "batch_size", "patience")}
    eotransfer.fit(ds1, strategy="feature-extraction", classifier="logreg", out=str(tmp_path / "fe"), **fe)
    x1 = np.stack([ds1.checked_read(i) for i in range(len(ds1))])
    before = load_model(tmp_path / "fe").predict_proba(x1)  # scikit-learn's probabilities
    out = tmp_path / "two"
    eotransfer.fit(rgb(eurosat_like), strategy="progressive", previous=str(tmp_path / "fe"), task="rgb-land",
                   column_band_policy="mean", out=str(out), **SHORT)  # fmt: skip
    earlier = load_model(out, task="fe")
    np.testing.assert_allclose(earlier.predict_proba(x1), before, atol=1e-4)  # the first task kept, float32 head
    eotransfer.fit(ds1, strategy="feature-extraction", classifier="knn", out=str(tmp_path / "knn"), **fe)
    with pytest.raises(ConfigError, match="^--previous: .*earlier column cannot use .the 'knn' classifier is not"):
        eotransfer.fit(rgb(eurosat_like), strategy="progressive", previous=str(tmp_path / "knn"),
                       column_band_policy="mean", **SHORT)  # fmt: skip


def test_bands_the_first_column_needs_require_a_policy(eurosat_like: Path, first: Path) -> None:
    with pytest.raises(BandError, match=r"task 'rgb': column 1 \('land'\) takes the bands .*B01.*--column-band-policy"):
        eotransfer.fit(rgb(eurosat_like), strategy="progressive", previous=str(first), task="rgb", **SHORT)


def test_refuses_a_duplicate_task_and_a_non_resnet(eurosat_like: Path, first: Path) -> None:
    ds = ClassFolderDataset(eurosat_like, bands="eurosat-ms")
    with pytest.raises(ConfigError, match="--task: 'land' is already a task"):
        eotransfer.fit(ds, strategy="progressive", previous=str(first), task="land", **SHORT)
    with pytest.raises(ConfigError, match="--previous: .*not an eotransfer model directory"):
        eotransfer.fit(ds, strategy="progressive", previous=str(eurosat_like), **SHORT)


def test_sequence_progressive_never_forgets(eurosat_like: Path, tmp_path: Path) -> None:
    config = {
        "backbone": "resnet10t", "seed": 0, "accelerator": "cpu", "progress": False, "verbose": False,
        "out": str(tmp_path / "seq"), "band_policy": "zero",
        "params": {"head_epochs": 1, "epochs": 1, "batch_size": 8, "patience": 0},
        "tasks": [{"name": "ms", "data": ClassFolderDataset(eurosat_like, bands="eurosat-ms")},
                  {"name": "rgb", "data": rgb(eurosat_like), "epochs": 2}],
    }  # fmt: skip
    result = run_sequence(config)
    rows = result["rows"]
    assert {(r["method"], r["step"], r["task"]) for r in rows} == {
        (m, s, t) for m in ("progressive", "naive", "independent") for s, t in ((1, "ms"), (2, "ms"), (2, "rgb"))
    }
    acc = {(r["method"], r["step"], r["task"]): r["accuracy"] for r in rows}
    assert acc[("progressive", 2, "ms")] == acc[("progressive", 1, "ms")]  # zero forgetting, exactly
    assert acc[("independent", 2, "ms")] == acc[("independent", 1, "ms")]
    summary = {(s["method"], s["task"]): s for s in result["summary"]}
    assert summary[("progressive", "ms")]["forgetting"] == 0.0
    fwd = summary[("progressive", "rgb")]["forward_transfer"]
    assert fwd == pytest.approx(acc[("progressive", 2, "rgb")] - acc[("independent", 2, "rgb")])
    assert (tmp_path / "seq" / "sequence.csv").is_file() and "forgetting" in (
        tmp_path / "seq" / "sequence.md"
    ).read_text()
    assert load_model(tmp_path / "seq" / "progressive" / "step2-rgb", task="ms").classes == [
        "cropland",
        "forest",
        "water",
    ]


def test_sequence_from_a_yaml_config_on_the_command_line(
    eurosat_like: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from eotransfer.cli import run

    config = tmp_path / "seq.yaml"
    config.write_text(
        f"backbone: resnet10t\naccelerator: cpu\nprogress: false\nverbose: false\nout: {tmp_path / 'out'}\n"
        "methods: [progressive]\nparams: {head_epochs: 1, epochs: 1, batch_size: 8, patience: 0}\ntasks:\n"
        f"  - {{name: ms, data: {eurosat_like}, bands: eurosat-ms}}\n"
        f"  - {{name: rgb, data: {eurosat_like}, bands: eurosat-ms, use_bands: 'B02,B03,B04', column_band_policy: zero}}\n"
    )
    assert run(["progressive-sequence", str(config)]) == 0
    assert "| progressive | ms | " in capsys.readouterr().out
    assert load_model(tmp_path / "out" / "progressive" / "step2-rgb").bands.keys[0] == "sentinel2-l1c:B02"
    config.write_text("tasks: [{name: a}]\n")
    with pytest.raises(ConfigError, match="tasks: give a list of tasks, each with its 'data'"):
        run(["progressive-sequence", str(config)])
