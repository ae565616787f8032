"""``band-stats``: the band-statistics reference as a parameter-free backbone, fitted, saved and reloaded."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import eotransfer
from eotransfer.card import load_model
from eotransfer.errors import ConfigError
from eotransfer.evaluation.benchmark import BenchmarkConfig
from eotransfer.evaluation.reference import band_statistics
from eotransfer.models.backbones import build_network, check_backbone_strategy, get_architecture
from eotransfer.models.band_statistics import BandStatistics


@pytest.mark.parametrize("side", [1, 5, 8])  # 1 pixel: std 0 and every percentile the value itself
def test_features_equal_the_reference_statistics(side: int) -> None:
    rng = np.random.default_rng(side)
    x = rng.normal(1000, 300, (4, 3, side, side)).astype(np.float32)
    got = BandStatistics(3)(torch.from_numpy(x)).numpy()
    want = np.stack([band_statistics(img) for img in x])  # numpy: mean, std, nanpercentile (linear)
    assert got.shape == want.shape == (4, 21)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-2)


def test_no_parameters_and_a_registered_backbone() -> None:
    net = build_network(get_architecture("band-stats"), 13)
    assert isinstance(net, BandStatistics) and net.num_features == 91
    assert list(net.parameters()) == [] and list(net.buffers()) == []


def test_standardised_features_do_not_depend_on_the_normalisation() -> None:
    """The model sees (x - center) / scale: after the classifier's standardisation the features are the reference's."""
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 400.0, (30, 2, 6, 6)).astype(np.float32)
    center, scale = np.array([900.0, 50.0]), np.array([250.0, 4.0])
    normalised = (x - center[None, :, None, None]) / scale[None, :, None, None]
    a = BandStatistics(2)(torch.from_numpy(normalised.astype(np.float32))).double().numpy()
    b = np.stack([band_statistics(img) for img in x])

    def standardise(f: np.ndarray) -> np.ndarray:
        return (f - f.mean(axis=0)) / f.std(axis=0)

    np.testing.assert_allclose(standardise(a), standardise(b), atol=1e-4)


OPTS: dict[str, Any] = dict(bands="eurosat-ms", labels_per_class=6, seed=0, accelerator="cpu", progress=False,
                            verbose=False, backbone="band-stats")  # fmt: skip


def test_fit_save_reload_predict(eurosat_like: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EOTRANSFER_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "model"
    result = eotransfer.fit(eurosat_like, strategy="feature-extraction", cv_folds=3, out=str(out), **OPTS)
    assert result.history == [] and result.card["arch"] == "band-stats"
    assert result.metrics["test"]["overall_accuracy"] >= 0.9  # three classes apart in their spectra
    saved = load_model(out)
    metrics = eotransfer.api.evaluate(out, eurosat_like, split="stratified", labels_per_class=6, seed=0)
    assert metrics["n"] == result.metrics["test"]["n"]
    assert metrics["overall_accuracy"] == pytest.approx(result.metrics["test"]["overall_accuracy"])
    probs = saved.predict_proba(np.full((2, 13, 16, 16), 1500.0, dtype=np.float32))
    assert probs.shape == (2, 3) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # linear-probe trains the head alone: the backbone has nothing to train
    probe = eotransfer.fit(eurosat_like, strategy="linear-probe", epochs=3, **OPTS)
    assert probe.metrics["test"]["n"] == result.metrics["test"]["n"]


def test_exports_to_onnx_and_torchscript_for_any_patch_size(
    eurosat_like: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sorting and interpolating trace without constants: the graph's percentiles follow the patch size."""
    import onnxruntime

    from eotransfer.export import export_model

    monkeypatch.setenv("EOTRANSFER_CACHE", str(tmp_path / "cache"))
    eotransfer.fit(eurosat_like, strategy="feature-extraction", cv_folds=3, out=str(tmp_path / "m"), **OPTS)
    with warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)
        report = export_model(tmp_path / "m", tmp_path / "e", check_data=eurosat_like)
    assert report["parity"]["onnx"]["argmax_all_agree"] and report["parity"]["torchscript"]["argmax_all_agree"]
    assert report["head"]["max_abs_prob_diff"] <= 1e-5
    saved = load_model(tmp_path / "m")  # its network's own head is unused: the scikit-learn classifier decides
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated
        traced = torch.jit.load(str(tmp_path / "e" / "model.torchscript.pt"))
    session = onnxruntime.InferenceSession(str(tmp_path / "e" / "model.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for side in (5, 16, 33):  # traced on 16 px patches; the traced graph computes the percentiles at any size
        x = rng.gamma(2.0, 600.0, (3, 13, side, side)).astype(np.float32)
        with torch.no_grad():
            got = torch.softmax(traced(torch.from_numpy(x)), dim=1).numpy()
        np.testing.assert_allclose(got, saved.predict_proba(x), atol=1e-5)
        if side == 16:
            logits = torch.from_numpy(session.run(["logits"], {"image": x})[0])
            np.testing.assert_allclose(torch.softmax(logits, dim=1).numpy(), saved.predict_proba(x), atol=1e-5)


def test_what_a_backbone_without_parameters_cannot_do(eurosat_like: Path) -> None:
    with pytest.raises(ConfigError, match="--backbone band-stats has no parameters to train or adapt, so --strategy"):
        eotransfer.fit(eurosat_like, strategy="finetune", **OPTS)
    with pytest.raises(ConfigError, match="has no weights to load"):
        check_backbone_strategy("band-stats", "feature-extraction", "eotransfer:eurosat-s2-resnet10t-moco")
    with pytest.raises(ConfigError, match="--per-date does not apply"):
        check_backbone_strategy("band-stats", "linear-probe", None, per_date=True)
    check_backbone_strategy("resnet10t", "finetune", "none")  # any strategy on a network
    raw = {
        "name": "x", "data": str(eurosat_like), "data_options": {"bands": "eurosat-ms"},
        "strategies": [{"name": "feature-extraction"}, {"name": "dann"}],
        "models": [{"backbone": "band-stats", "weights": "none"}],
    }  # fmt: skip
    with pytest.raises(ConfigError, match=r"models\[0\] with strategies 'dann': --backbone band-stats has no"):
        BenchmarkConfig.from_dict(raw)
