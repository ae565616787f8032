"""``multitask``: spectral-index targets by hand, missing labels masked, clear refusals, a saved model that loads."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

import eotransfer
from eotransfer.bands import BandSet
from eotransfer.card import load_model
from eotransfer.data.base import open_dataset
from eotransfer.errors import ConfigError
from eotransfer.models.model import EOClassifier
from eotransfer.strategies.multitask import Multitask, MultitaskParams, index_params, index_targets

NAN = float("nan")
FAST: dict[str, Any] = {"bands": "eurosat-ms", "backbone": "resnet10t", "accelerator": "cpu", "progress": False,
                        "verbose": False, "seed": 0, "patience": 0, "batch_size": 8, "head_epochs": 1, "epochs": 1}  # fmt: skip


def test_ndvi_and_ndwi_targets_by_hand() -> None:
    bands = BandSet.parse("eurosat-ms")
    red, nir, green = bands.index("B04"), bands.index("B08"), bands.index("B03")
    patch = torch.full((2, len(bands), 2, 2), 0.2)
    patch[0, nir] = torch.tensor([[0.5, 0.3], [0.6, NAN]])  # the fourth pixel is masked
    patch[0, red] = torch.tensor([[0.1, 0.3], [0.2, 0.4]])
    patch[0, green] = torch.tensor([[0.3, 0.3], [0.2, 0.1]])
    patch[1] = NAN  # a fully masked sample has no label
    ndvi = index_targets(patch, "NDVI", index_params("NDVI", bands))
    # (N - R) / (N + R): 0.4/0.6, 0/0.6, 0.4/0.8 over the three valid pixels
    assert ndvi[0].item() == pytest.approx((2 / 3 + 0 + 0.5) / 3, rel=1e-6)
    assert torch.isnan(ndvi[1])
    ndwi = index_targets(patch, "NDWI", index_params("NDWI", bands))
    # (G - N) / (G + N): -0.2/0.8, 0/0.6, -0.4/0.8
    assert ndwi[0].item() == pytest.approx((-0.25 + 0 - 0.5) / 3, rel=1e-6)


def test_index_bands_by_common_name_then_wavelength() -> None:
    assert index_params("NDVI", BandSet.parse("eurosat-ms")) == {"N": 7, "R": 3}  # B08 'nir', B04 'red'
    landsat = BandSet.parse("landsat8:B2,B3,B4,B5")  # B5 is 'nir08' (865 nm): found by wavelength
    assert index_params("NDVI", landsat) == {"N": 3, "R": 2}
    evi = index_params("EVI", BandSet.parse("eurosat-ms"))
    assert evi["g"] == 2.5 and evi["L"] == 1.0 and evi["B"] == 1  # constants take spyndex's defaults
    with pytest.raises(
        ConfigError, match="^--tasks: task 'ndvi' has no labels: it needs band N .*drop it from --tasks"
    ):
        index_params("NDVI", BandSet.parse("rgb"))


def test_unknown_index_and_bad_weights_are_refused() -> None:
    with pytest.raises(ConfigError, match="^--tasks: 'ndvii' is not a spyndex spectral index; did you mean 'NDVI'"):
        Multitask(MultitaskParams(tasks="ndvii"))
    with pytest.raises(ConfigError, match="^--task-weights: 'nvdi' is not a task; did you mean 'ndvi'"):
        Multitask(MultitaskParams(tasks="ndvi", task_weights="nvdi=2"))


def _write_labels(ds: Any, path: Path, labelled: list[int]) -> Path:
    """A ``bright`` class (by mean reflectance) for the ``labelled`` samples only, as file names and indices."""
    rows = ["sample,task,value"]
    means = {i: float(np.nanmean(ds.read(i))) for i in labelled}
    threshold = float(np.median(list(means.values())))
    for n, i in enumerate(labelled):
        value = "hi" if means[i] > threshold else "lo"
        rows.append(f"{Path(ds.sources[i]).name if n % 2 else i},bright,{value}")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_task_without_labels_in_training_split_is_refused(eurosat_like: Path, tmp_path: Path) -> None:
    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    csv = _write_labels(ds, tmp_path / "labels.csv", [0, 1, 2])
    strategy = Multitask(MultitaskParams(tasks="", task_labels=str(csv), task_types="bright=classification"))
    model = EOClassifier(torch.nn.Flatten(), 13 * 16 * 16, len(ds.classes), 13)
    split = SimpleNamespace(train=np.arange(3, len(ds)))
    with pytest.raises(
        ConfigError, match=r"^--task-labels: task 'bright' has no label in any of the \d+ training samples"
    ):
        strategy.prepare(ds, split, model)
    rgb = open_dataset(eurosat_like, bands="eurosat-ms")
    rgb.select_bands(["B04", "B03", "B02"])
    with pytest.raises(ConfigError, match="^--tasks: task 'ndvi' has no labels"):
        Multitask(MultitaskParams(tasks="ndvi")).prepare(rgb, split, model)


def test_missing_label_gives_zero_gradient_and_labels_follow_the_batch_indices(eurosat_like: Path, tmp_path: Path) -> None:  # fmt: skip
    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    csv = _write_labels(ds, tmp_path / "labels.csv", [0, 1, 2, 3])  # samples 4, 5 have no 'bright' label
    strategy = Multitask(MultitaskParams(tasks="ndvi", task_labels=str(csv), task_types="bright=classification"))
    torch.manual_seed(0)
    model = EOClassifier(torch.nn.Flatten(), 13 * 16 * 16, len(ds.classes), 13).eval()
    strategy.prepare(ds, SimpleNamespace(train=np.arange(len(ds))), model)
    images = torch.stack([ds[i]["image"] for i in range(6)])
    labels = torch.as_tensor(ds.labels[:6])
    strategy.batch_indices = torch.arange(6)  # what the engine sets before each training step
    (bright,) = (y for t, y in zip(strategy.tasks, strategy.task_targets(images, strategy.batch_indices), strict=True)
                 if t.name == "bright")  # fmt: skip
    assert bright[4:].tolist() == [-1, -1] and (bright[:4] >= 0).all()
    assert bright[:4].tolist() == strategy.targets["bright"][:4].tolist() and set(bright[:4].tolist()) == {0, 1}
    order = torch.tensor([5, 3, 1, 0, 4, 2])  # a shuffled batch: each sample keeps its own label
    (shuffled,) = (y for t, y in zip(strategy.tasks, strategy.task_targets(images[order], order), strict=True)
                   if t.name == "bright")  # fmt: skip
    assert shuffled.tolist() == bright[order].tolist()

    head = model.aux_tasks.heads["bright"]  # type: ignore[index]

    def head_grad(idx: slice) -> torch.Tensor:
        model.zero_grad()
        strategy.batch_indices = torch.arange(6)[idx]
        strategy.training_loss(model, images[idx], labels[idx], torch.Generator()).backward()
        return torch.zeros_like(head.weight) if head.weight.grad is None else head.weight.grad.clone()

    # the labelled samples 0-3 alone, or with the unlabelled 4 and 5: the same gradient on the 'bright' head
    with_unlabelled, labelled_only = head_grad(slice(0, 6)), head_grad(slice(0, 4))
    assert torch.count_nonzero(labelled_only) > 0 and torch.allclose(with_unlabelled, labelled_only, atol=1e-7)
    assert torch.count_nonzero(head_grad(slice(4, 6))) == 0


def test_fit_saves_a_loadable_main_model_and_records_every_task(eurosat_like: Path, tmp_path: Path) -> None:
    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    csv = _write_labels(ds, tmp_path / "labels.csv", list(range(0, len(ds), 2)))
    out = tmp_path / "model"
    result = eotransfer.fit(ds, strategy="multitask", tasks="ndvi,ndwi", task_labels=str(csv), out=str(out),
                            task_types="bright=classification", weighting="static", task_weights="ndwi=0.5", **FAST)  # fmt: skip
    tasks = result.metrics["test"]["tasks"]
    assert set(tasks) == {"ndvi", "ndwi", "bright"}
    assert tasks["ndvi"]["kind"] == "regression" and tasks["ndvi"]["rmse"] >= 0 and tasks["ndvi"]["n"] == len(result.split.test)  # fmt: skip
    assert 0 <= tasks["bright"]["accuracy"] <= 1 and 0 < tasks["bright"]["n"] < len(result.split.test)
    assert not hasattr(result.model, "aux_tasks")  # the saved model is the class-label classifier alone
    assert [row["phase"] for row in result.history] == ["heads", "end-to-end"]
    assert "val_ndvi_rmse" in result.history[-1] and "val_bright_accuracy" in result.history[-1]
    saved = load_model(out)
    probs = saved.predict_proba(np.stack([ds.read(i) for i in range(3)]))
    assert probs.shape == (3, len(ds.classes)) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert json.loads((out / "metrics.json").read_text())["test"]["tasks"]["ndwi"]["kind"] == "regression"
    card = json.loads((out / "tasks.json").read_text())
    assert card["weights"] == {"label": 1.0, "ndvi": 1.0, "ndwi": 0.5, "bright": 1.0}
    assert card["metrics"]["test"]["bright"] == tasks["bright"]
    from safetensors.torch import load_file

    heads = load_file(str(out / "tasks.safetensors"))
    assert heads["heads.bright.weight"].shape == (2, 512) and heads["heads.ndvi.weight"].shape == (1, 512)
