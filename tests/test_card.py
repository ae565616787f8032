"""The saved model: a card that knows everything, identical predictions after loading, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import eotransfer
from eotransfer.bands import BandSet
from eotransfer.card import atomic_write_dir, atomic_write_text, load_model, resolve_device, save_model
from eotransfer.data.base import open_dataset
from eotransfer.data.normalization import Normalizer
from eotransfer.errors import ConfigError, DataError, WeightError
from eotransfer.models.backbones import create_backbone


@pytest.fixture(scope="module")
def fitted(eurosat_like: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    out = tmp_path_factory.mktemp("models") / "m"
    result = eotransfer.fit(
        eurosat_like, bands="eurosat-ms", strategy="linear-probe", backbone="resnet18", epochs=5, lr=0.05,
        out=str(out), seed=3, accelerator="cpu", progress=False, verbose=False,
    )  # fmt: skip
    return result


@pytest.fixture(scope="module")
def images(eurosat_like: Path) -> tuple[np.ndarray, np.ndarray]:
    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    return np.stack([ds[i]["image"].numpy() for i in range(len(ds))]), ds.labels


def test_loaded_model_predicts_identically(fitted: Any, images: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = images
    saved = load_model(fitted.out)
    fitted.model.eval()
    with torch.no_grad():
        in_memory = torch.softmax(fitted.model(torch.from_numpy(x)), dim=1).numpy()
    loaded = saved.predict_proba(x)
    assert loaded.shape == (36, 3)
    assert np.array_equal(loaded, in_memory)
    np.testing.assert_allclose(loaded.sum(1), 1.0, rtol=1e-6)
    # other batch sizes may take other kernels: equal up to float rounding
    np.testing.assert_allclose(saved.predict_proba(x, batch_size=5), loaded, rtol=0, atol=1e-5)


def test_card_contents(fitted: Any, eurosat_like: Path) -> None:
    out: Path = fitted.out
    card = json.loads((out / "card.json").read_text())
    assert card["kind"] == "eotransfer-model" and card["eotransfer_version"] == eotransfer.__version__
    assert (card["arch"], card["num_features"], card["img_size"]) == ("resnet18", 512, 16)
    assert BandSet.from_list(card["bands"]) == BandSet.parse("eurosat-ms")
    assert card["classes"] == ["cropland", "forest", "water"]
    assert card["strategy"]["name"] == "linear-probe"
    assert card["strategy"]["params"]["epochs"] == 5 and card["strategy"]["params"]["lr"] == 0.05
    assert card["fit"]["seed"] == 3 and card["fit"]["bands"] == "eurosat-ms"
    assert card["weights"] == {"source": "none"} and card["band_mapping"] is None
    # normalisation: the statistics of the training side only
    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    expected = Normalizer.fit(ds.checked_read, fitted.split.train, ds.bands, seed=3)
    norm = card["normalization"]
    assert norm["method"] == "standard" and norm["n_samples"] == len(fitted.split.train)
    np.testing.assert_allclose(norm["mean"], expected.mean, rtol=1e-6)
    np.testing.assert_allclose(norm["std"], expected.std, rtol=1e-6)
    # metrics, as returned
    assert card["metrics"] == json.loads(json.dumps(fitted.metrics))
    assert set(card["metrics"]) == {"test", "val"}
    assert 0.0 <= card["metrics"]["test"]["overall_accuracy"] <= 1.0
    assert card["metrics"]["test"]["n"] == len(fitted.split.test)
    assert card["data"]["split"]["n_train"] == len(fitted.split.train)
    assert card["data"]["n_samples"] == 36
    assert card["training"]["epochs_run"] == 5
    md = (out / "card.md").read_text()
    assert md.startswith("# Model card: m")
    assert "linear-probe" in md and "cropland, forest, water" in md and "sentinel2-l1c:B8A (nir08)" in md
    assert json.loads((out / "metrics.json").read_text()) == card["metrics"]
    assert (out / "history.csv").read_text().splitlines()[0].startswith("phase,epoch,train_loss")
    assert not list(out.parent.glob(".m*"))  # no temporary folder, no leftover checkpoints


def test_saved_model_as_pretrained_weights(fitted: Any) -> None:
    bb = create_backbone("resnet18", BandSet.parse("eurosat-ms"), weights=str(fitted.out), verbose=False)
    assert bb.mapping is not None and bb.mapping.is_identity(13)
    own = bb.module.state_dict()
    trained = fitted.model.backbone.state_dict()
    assert all(torch.equal(own[k], trained[k]) for k in trained)
    # and for a 3-band subset, the kernels are mapped from the saved model's own bands
    rgb = create_backbone(
        "resnet18", BandSet.parse("sentinel2-l1c:B04,B03,B02"), weights=str(fitted.out), verbose=False
    )
    w = trained["conv1.weight"]
    assert torch.equal(rgb.module.state_dict()["conv1.weight"], w[:, [3, 2, 1]] * (13 / 3))


def test_evaluate_saved_model(fitted: Any, eurosat_like: Path, images: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = images
    metrics = eotransfer.evaluate(fitted.out, eurosat_like)  # bands come from the card
    pred = load_model(fitted.out).predict_proba(x).argmax(1)
    assert metrics["n"] == 36
    assert metrics["overall_accuracy"] == pytest.approx(float((pred == y).mean()))


def test_predict_proba_checks_the_input(fitted: Any) -> None:
    with pytest.raises(DataError, match="expects N×13×H×W in band order B01, B02"):
        load_model(fitted.out).predict_proba(np.zeros((2, 3, 16, 16), dtype=np.float32))


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="'tpu' is unknown; use one of auto, cpu, cuda, gpu"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="torch sees no CUDA device on this machine; use --accelerator cpu"):
            resolve_device("cuda")


def test_saved_model_to_a_device(fitted: Any, images: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = images
    on_cpu = load_model(fitted.out).predict_proba(x)
    moved = load_model(fitted.out).to("auto")
    assert next(moved.network.parameters()).device.type == moved.device.type
    got = moved.predict_proba(x)
    assert got.dtype == np.float32 and got.shape == on_cpu.shape
    # a GPU's kernels (TF32 off by default for convolutions in float32) round differently: equal to 1e-4
    np.testing.assert_allclose(got, on_cpu, rtol=0, atol=1e-4)
    assert (got.argmax(1) == on_cpu.argmax(1)).mean() >= 0.97


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_saved_model_on_cuda_matches_the_cpu(fitted: Any, images: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = images
    saved = load_model(fitted.out).to("cuda")
    assert saved.device.type == "cuda"
    np.testing.assert_allclose(saved.predict_proba(x), load_model(fitted.out).predict_proba(x), rtol=0, atol=1e-4)


def test_load_model_errors(fitted: Any, tmp_path: Path) -> None:
    with pytest.raises(WeightError, match="not an eotransfer model directory"):
        load_model(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("weights.safetensors", "card.json"):
        (broken / name).write_bytes((fitted.out / name).read_bytes())
    card = json.loads((broken / "card.json").read_text())
    (broken / "card.json").write_text(json.dumps(card | {"arch": "resnet34"}))
    with pytest.raises(WeightError, match="do not match the card's architecture"):
        load_model(broken)


class Boom(RuntimeError):
    pass


def test_atomic_write_dir_leaves_nothing_when_the_writer_raises(tmp_path: Path) -> None:
    def writer(d: Path) -> None:
        (d / "weights.safetensors").write_bytes(b"half")
        raise Boom

    with pytest.raises(Boom):
        atomic_write_dir(tmp_path / "model", writer)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_dir_keeps_the_old_version_on_failure_and_replaces_on_success(tmp_path: Path) -> None:
    target = tmp_path / "model"
    atomic_write_dir(target, lambda d: (d / "v").write_text("1"))
    assert (target / "v").read_text() == "1"

    def fail(d: Path) -> None:
        (d / "v").write_text("2")
        raise Boom

    with pytest.raises(Boom):
        atomic_write_dir(target, fail)
    assert (target / "v").read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["model"]
    atomic_write_dir(target, lambda d: (d / "w").write_text("3"))
    assert sorted(p.name for p in target.iterdir()) == ["w"]  # replaced as a whole
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_outputs_have_ordinary_permissions(tmp_path: Path) -> None:
    """Written with the umask's permissions, like any file or folder, not private as tempfile makes them."""
    atomic_write_dir(tmp_path / "model", lambda d: (d / "v").write_text("1"))
    (tmp_path / "reference").mkdir()
    assert (tmp_path / "model").stat().st_mode & 0o777 == (tmp_path / "reference").stat().st_mode & 0o777
    atomic_write_text(tmp_path / "sub" / "predictions.csv", "a,b\n")
    (tmp_path / "reference.csv").write_text("")
    assert (tmp_path / "sub" / "predictions.csv").read_text() == "a,b\n"
    assert (tmp_path / "sub" / "predictions.csv").stat().st_mode & 0o777 == (
        tmp_path / "reference.csv"
    ).stat().st_mode & 0o777
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["predictions.csv"]


def test_save_model_failure_leaves_no_model(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 2)
    card: dict[str, Any] = {"arch": "resnet18"}  # render_markdown needs more than this: the write fails
    with pytest.raises(KeyError):
        save_model(tmp_path / "m", model, card)
    assert list(tmp_path.iterdir()) == []
