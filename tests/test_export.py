"""ONNX and TorchScript exports: parity with PyTorch on real patches (masked pixels too), the card travels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

import eotransfer
from eotransfer import export as export_module
from eotransfer.card import load_model
from eotransfer.cli import run
from eotransfer.data.base import open_dataset
from eotransfer.data.normalization import Normalizer
from eotransfer.errors import ConfigError, WeightError
from eotransfer.export import export_model

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")


@pytest.fixture(scope="module")
def model_dir(eurosat_like: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export-model") / "m"
    eotransfer.fit(
        eurosat_like, bands="eurosat-ms", backbone="resnet18", strategy="linear-probe", epochs=1, labels_per_class=3,
        out=str(out), accelerator="cpu", progress=False, verbose=False,
    )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def exported(model_dir: Path, eurosat_like: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return export_model(model_dir, tmp_path_factory.mktemp("exports") / "e", check_data=eurosat_like)


@pytest.fixture(scope="module")
def patches(eurosat_like: Path) -> np.ndarray:
    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    return np.stack([ds.checked_read(i) for i in range(len(ds))]).astype(np.float32)


def _session(path: Path) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _torch(model_dir: Path, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return load_model(model_dir).network(torch.from_numpy(x)).numpy()


def test_onnx_matches_pytorch_on_the_fixture_patches(
    exported: dict[str, Any], model_dir: Path, patches: np.ndarray
) -> None:
    out = Path(exported["path"])
    parity = exported["parity"]
    assert parity["inputs"]["kind"] == "data" and parity["n"] == 32
    assert parity["onnx"]["max_abs_diff"] <= 1e-4 and parity["onnx"]["argmax_all_agree"]
    assert parity["onnx"]["masked"]["max_abs_diff"] <= 1e-4
    # recomputed here, on the same patches, with a fresh session: the recorded number is the real one
    x = patches[parity["inputs"]["indices"]]
    session = _session(out / "model.onnx")
    logits = session.run(["logits"], {"image": x})[0]
    diff = float(np.abs(logits - _torch(model_dir, x)).max())
    assert diff <= 1e-4
    assert diff == pytest.approx(parity["onnx"]["max_abs_diff"], abs=1e-6)
    # the batch axis is dynamic: one patch, and all 36
    np.testing.assert_allclose(session.run(None, {"image": patches[:1]})[0], _torch(model_dir, patches[:1]), atol=1e-4)
    np.testing.assert_allclose(session.run(None, {"image": patches})[0], _torch(model_dir, patches), atol=1e-4)


def test_torchscript_equals_pytorch(exported: dict[str, Any], model_dir: Path, patches: np.ndarray) -> None:
    extra = {"card.json": ""}
    module = torch.jit.load(str(Path(exported["path"]) / "model.torchscript.pt"), _extra_files=extra)
    with torch.no_grad():
        got = module(torch.from_numpy(patches)).numpy()
    np.testing.assert_allclose(got, _torch(model_dir, patches), rtol=0, atol=1e-5)
    assert exported["parity"]["torchscript"]["max_abs_diff"] <= 1e-5
    assert json.loads(extra["card.json"]) == json.loads((model_dir / "card.json").read_text())


def test_masked_pixels_give_the_same_outputs(exported: dict[str, Any], model_dir: Path, patches: np.ndarray) -> None:
    x = patches[:8].copy()
    x[:, :, 2:7, 3:9] = np.nan  # a cloud over every band
    x[1, 4] = np.nan  # a band missing entirely
    x[2, :, 0, 0] = np.nan
    reference = _torch(model_dir, x)
    assert np.isfinite(reference).all()
    onnx_logits = _session(Path(exported["path"]) / "model.onnx").run(None, {"image": x})[0]
    np.testing.assert_allclose(onnx_logits, reference, rtol=0, atol=1e-4)
    module = torch.jit.load(str(Path(exported["path"]) / "model.torchscript.pt"))
    with torch.no_grad():
        np.testing.assert_allclose(module(torch.from_numpy(x)).numpy(), reference, rtol=0, atol=1e-5)


def test_export_json_describes_the_graph_input(exported: dict[str, Any], model_dir: Path) -> None:
    out = Path(exported["path"])
    card = json.loads((model_dir / "card.json").read_text())
    info = json.loads((out / "export.json").read_text())
    assert info == json.loads(json.dumps({k: v for k, v in exported.items() if k != "path"}))
    assert [b["key"] for b in info["bands"]] == [f"{b['sensor']}:{b['name']}" for b in card["bands"]]
    assert [b["wavelength_nm"] for b in info["bands"]] == [b["wavelength_nm"] for b in card["bands"]]
    center, scale = Normalizer.from_dict(card["normalization"]).center_scale()
    np.testing.assert_allclose([b["centre"] for b in info["bands"]], center, rtol=1e-6)
    np.testing.assert_allclose([b["scale"] for b in info["bands"]], scale, rtol=1e-6)
    assert info["classes"] == card["classes"] == ["cropland", "forest", "water"]
    assert info["input"] == info["input"] | {"name": "image", "shape": ["batch", 13, 16, 16], "dtype": "float32"}
    assert info["opset"] == 17 and set(info["formats"]) == {"onnx", "torchscript"}
    graph = onnx.load(str(out / "model.onnx"))
    assert graph.opset_import[0].version == 17
    assert [i.name for i in graph.graph.input] == ["image"]
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_the_card_travels(exported: dict[str, Any], model_dir: Path) -> None:
    out = Path(exported["path"])
    assert sorted(p.name for p in out.iterdir()) == [
        "card.json", "card.md", "export.json", "model.onnx", "model.torchscript.pt"
    ]  # fmt: skip
    assert (out / "card.json").read_bytes() == (model_dir / "card.json").read_bytes()
    assert (out / "card.md").read_bytes() == (model_dir / "card.md").read_bytes()
    meta = {p.key: p.value for p in onnx.load(str(out / "model.onnx")).metadata_props}
    assert json.loads(meta["eotransfer.card"])["classes"] == ["cropland", "forest", "water"]
    assert not list(out.parent.glob(".e*"))  # no temporary folder left


def test_random_inputs_when_no_check_data(model_dir: Path, tmp_path: Path) -> None:
    report = export_model(model_dir, tmp_path / "e", formats="onnx", n_check=4)
    assert report["parity"]["inputs"]["kind"] == "random" and report["parity"]["n"] == 4
    assert report["parity"]["onnx"]["max_abs_diff"] <= 1e-4
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["card.json", "card.md", "export.json", "model.onnx"]


def test_a_failed_parity_check_writes_nothing(model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = export_module._onnx_runner
    monkeypatch.setattr(export_module, "_onnx_runner", lambda *a: lambda x: real(*a)(x) + 1e-3)
    with pytest.raises(WeightError, match=r"onnx export's logits differ from PyTorch's by 0\.001"):
        export_model(model_dir, tmp_path / "e", formats="onnx", n_check=2)
    assert list(tmp_path.iterdir()) == []


def test_errors(model_dir: Path, eurosat_like: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--format: unknown export format 'tflite'; choose from onnx, torchscript"):
        export_model(model_dir, tmp_path / "e", formats="onnx,tflite")
    with pytest.raises(WeightError, match=f"{tmp_path / 'nope'}: no such model directory"):
        export_model(tmp_path / "nope", tmp_path / "e")
    with pytest.raises(ConfigError, match="is the model directory itself"):
        export_model(model_dir, model_dir)
    rgb = open_dataset(eurosat_like, bands="eurosat-ms")
    rgb.select_bands(["B04", "B03", "B02"])
    with pytest.raises(ConfigError, match="--check-bands: the check data's bands sentinel2-l1c:B04,"):
        export_model(model_dir, tmp_path / "e", check_data=rgb)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_cli_export(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli-export"
    assert run(["export", str(model_dir), "--out", str(out), "--format", "onnx", "--n-check", "4"]) == 0
    printed = capsys.readouterr().out
    assert "parity with PyTorch on 4 random inputs" in printed and "onnx" in printed
    assert f"export written to {out}" in printed
    assert (out / "model.onnx").is_file() and not (out / "model.torchscript.pt").exists()
