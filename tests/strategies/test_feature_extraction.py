"""``feature-extraction``: every classifier fits on frozen features, saves safely, reloads, and caches features."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import eotransfer
from eotransfer.card import load_model
from eotransfer.engine.loop import Engine
from eotransfer.errors import ConfigError, WeightError
from eotransfer.evaluation.classical import CLASSIFIER_FILE, dump_classifier, load_classifier
from eotransfer.strategies.feature_extraction import CLASSIFIERS, FeatureExtraction, FeatureExtractionParams

OPTS: dict[str, Any] = dict(bands="eurosat-ms", strategy="feature-extraction", labels_per_class=6, seed=0, cv_folds=3,
                            accelerator="cpu", progress=False, verbose=False)  # fmt: skip
# Three well-separated classes, 5 test samples each (chance 1/3).  The RBF SVM, with 6 samples per
# class and standardised 512-d features, is the weakest (12/15 measured); the others reach 15/15.
MIN_ACCURACY = {"logreg": 0.9, "linear-svm": 0.9, "rbf-svm": 0.6, "knn": 0.9, "random-forest": 0.9}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("cache")
    mp.setenv("EOTRANSFER_CACHE", str(root))
    yield root / "features"
    mp.undo()


@pytest.fixture(scope="module")
def fitted(eurosat_like: Path, cache: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("models")
    return {c: eotransfer.fit(eurosat_like, classifier=c, out=str(out / c), **OPTS) for c in CLASSIFIERS}


@pytest.mark.parametrize("classifier", CLASSIFIERS)
def test_every_classifier_fits_and_saves(classifier: str, fitted: dict[str, Any]) -> None:
    result = fitted[classifier]
    assert result.history == []  # no network trained
    assert result.metrics["test"]["n"] == 15
    assert result.metrics["test"]["overall_accuracy"] >= MIN_ACCURACY[classifier]
    record = result.card["classifier"]
    assert record["name"] == classifier and record["cv_folds"] == 3 and 0.0 <= record["cv_score"] <= 1.0
    assert (result.out / CLASSIFIER_FILE).is_file() and (result.out / "card.json").is_file()


@pytest.mark.parametrize("classifier", ["logreg", "rbf-svm", "knn", "random-forest"])
def test_reloaded_model_scores_as_at_fit_time(classifier: str, fitted: dict[str, Any], eurosat_like: Path) -> None:
    result = fitted[classifier]
    saved = load_model(result.out)
    assert saved.classifier is not None
    # evaluate() on the same split's test side goes through SavedModel.predict_proba (as `predict` does)
    metrics = eotransfer.api.evaluate(result.out, eurosat_like, split="stratified", labels_per_class=6, seed=0)
    assert metrics["n"] == result.metrics["test"]["n"]
    assert metrics["confusion_matrix"] == result.metrics["test"]["confusion_matrix"]
    ds = eotransfer.api.load_data(eotransfer.api.FitConfig(data=str(eurosat_like), bands="eurosat-ms"))
    images = np.stack([ds[int(i)]["image"].numpy() for i in result.split.test])
    probs = saved.predict_proba(images)
    assert probs.shape == (15, 3) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probs, load_model(result.out).predict_proba(images))


def test_classifier_round_trip_gives_identical_probabilities() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 8)) + np.repeat(np.eye(4, 8) * 3, 10, 0), np.repeat(np.arange(4), 10)
    for name in CLASSIFIERS:
        strategy = FeatureExtraction(FeatureExtractionParams(classifier=name, cv_folds=2))
        strategy.fit_classifier(x, y, n_classes=5, seed=0)  # class 4 unseen: its column is 0
        before = strategy.predict_proba(x)
        path = Path(os.environ.get("TMPDIR", "/tmp")) / f"eot-fe-{os.getpid()}-{name}.skops"
        path.write_bytes(strategy.model_files()[CLASSIFIER_FILE])
        try:
            strategy.classifier_ = load_classifier(path)
        finally:
            path.unlink()
        np.testing.assert_array_equal(before, strategy.predict_proba(x))
        assert before.shape == (40, 5) and (before[:, 4] == 0).all() and (before.argmax(1) == y).mean() > 0.9


def test_tampered_classifier_is_refused(fitted: dict[str, Any], tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    model_dir = tmp_path / "model"
    shutil.copytree(fitted["logreg"].out, model_dir)
    evil = make_pipeline(FunctionTransformer(os.getcwd), LogisticRegression())
    (model_dir / CLASSIFIER_FILE).write_bytes(dump_classifier(evil))
    with pytest.raises(WeightError, match="types that eotransfer does not trust .*getcwd.*refit the model"):
        load_model(model_dir)
    (model_dir / CLASSIFIER_FILE).write_bytes(b"not a zip file")
    with pytest.raises(WeightError, match="not a readable skops file"):
        load_model(model_dir)


def test_unknown_classifier_names_the_option(eurosat_like: Path) -> None:
    msg = "^--classifier: 'lgreg' is not one of logreg, linear-svm, rbf-svm, knn, random-forest; did you mean 'logreg'"
    with pytest.raises(ConfigError, match=msg):
        eotransfer.fit(eurosat_like, classifier="lgreg", **OPTS)
    with pytest.raises(ConfigError, match="^--cv-folds: 1 is below the minimum 2"):
        eotransfer.fit(eurosat_like, classifier="knn", **{**OPTS, "cv_folds": 1})


def test_second_run_reads_the_feature_cache(
    fitted: dict[str, Any], cache: Path, eurosat_like: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert len(list(cache.glob("*.npz"))) == 3  # train, val, test: computed once for all five classifiers

    def no_forward(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("features were recomputed instead of read from the cache")

    monkeypatch.setattr(Engine, "_forward_all", no_forward)
    again = eotransfer.fit(eurosat_like, classifier="logreg", **OPTS)
    assert again.metrics["test"] == fitted["logreg"].metrics["test"]
    with pytest.raises(AssertionError, match="recomputed"):
        eotransfer.fit(eurosat_like, classifier="logreg", feature_cache=False, **OPTS)


def test_too_few_samples_for_cv_fits_the_defaults(eurosat_like: Path, cache: Path) -> None:
    result = eotransfer.fit(eurosat_like, classifier="knn", **{**OPTS, "labels_per_class": 1})
    assert result.card["classifier"]["cv_folds"] is None and "no CV" in result.card["classifier"]["params"]
    assert result.metrics["test"]["overall_accuracy"] >= 0.9


@pytest.mark.parametrize("classifier", ["logreg", "linear-svm"])
def test_a_linear_classifier_exports_with_its_probabilities(
    classifier: str, fitted: dict[str, Any], eurosat_like: Path, tmp_path: Path
) -> None:
    import onnxruntime

    from eotransfer.data.base import open_dataset
    from eotransfer.export import export_model, parity_table

    model_dir = fitted[classifier].out
    report = export_model(model_dir, tmp_path / "x", formats="onnx", check_data=eurosat_like)
    assert report["head"]["classifier"] == classifier and report["head"]["max_abs_prob_diff"] <= 1e-5
    assert f"head: the scikit-learn {classifier} folded into a linear layer" in parity_table(report)
    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    images = np.stack([ds.checked_read(i) for i in range(len(ds))]).astype(np.float32)
    session = onnxruntime.InferenceSession(str(tmp_path / "x" / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"image": images})[0].astype(np.float64)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    np.testing.assert_allclose(probs, load_model(model_dir).predict_proba(images), atol=1e-4)


def test_export_and_distill_refuse_a_non_linear_scikit_learn_head(
    fitted: dict[str, Any], eurosat_like: Path, tmp_path: Path
) -> None:
    from eotransfer.errors import ConfigError
    from eotransfer.export import export_model

    for name in ("knn", "rbf-svm", "random-forest"):
        with pytest.raises(ConfigError, match=f"the '{name}' classifier is not linear.*--classifier logreg"):
            export_model(fitted[name].out, tmp_path / "x")
    with pytest.raises(ConfigError, match="--teacher: .*distillation cannot use .the 'knn' classifier is not linear"):
        eotransfer.fit(eurosat_like, bands="eurosat-ms", strategy="distill", teacher=str(fitted["knn"].out),
                       backbone="resnet10t", labels_per_class=6, epochs=1, progress=False, verbose=False)  # fmt: skip
    assert not (tmp_path / "x").exists()


def test_a_linear_scikit_learn_teacher_distils_through_its_folded_head(
    fitted: dict[str, Any], eurosat_like: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from eotransfer.data.base import open_dataset
    from eotransfer.strategies import distill

    teachers: list[torch.nn.Module] = []
    prepare = distill.Distill.prepare

    def spy(self: distill.Distill, dataset: Any, split: Any, model: torch.nn.Module) -> None:
        prepare(self, dataset, split, model)
        assert self.teacher is not None
        teachers.append(self.teacher)

    monkeypatch.setattr(distill.Distill, "prepare", spy)
    result = eotransfer.fit(eurosat_like, bands="eurosat-ms", strategy="distill", teacher=str(fitted["logreg"].out),
                            backbone="resnet10t", labels_per_class=6, epochs=1, progress=False, verbose=False,
                            out=str(tmp_path / "student"))  # fmt: skip
    assert result.card["strategy"]["name"] == "distill" and (tmp_path / "student" / "card.json").is_file()
    # the teacher the student learnt from is the scikit-learn classifier: its softmax is predict_proba
    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    images = np.stack([ds.checked_read(i) for i in range(len(ds))]).astype(np.float32)
    with torch.no_grad():
        probs = torch.softmax(teachers[0](torch.from_numpy(images)), 1).numpy()
    np.testing.assert_allclose(probs, load_model(fitted["logreg"].out).predict_proba(images), atol=1e-4)


def test_intermediate_stage_embeds_fits_and_reloads(
    eurosat_like: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eotransfer.evaluation.classical import embedding_stages

    monkeypatch.setenv("EOTRANSFER_CACHE", str(tmp_path / "cache"))  # the module's cache keeps its 3 files
    cache = tmp_path / "cache" / "features"

    result = eotransfer.fit(eurosat_like, classifier="logreg", stage="layer3", out=str(tmp_path / "m"), **OPTS)
    assert result.card["classifier"]["stage"] == "layer3"
    assert result.card["strategy"]["params"]["stage"] == "layer3"
    assert result.metrics["test"]["overall_accuracy"] >= 0.9  # three well-separated classes (15/15 measured)
    saved = load_model(result.out)
    assert saved.classifier.n_features_in_ == 256  # resnet18's layer3 has 256 channels (pooled: 512)
    assert "layer3" in embedding_stages(saved.network.backbone)  # type: ignore[arg-type]
    from eotransfer.export import export_model

    with pytest.raises(ConfigError, match="it classifies the 'layer3' stage's features"):
        export_model(result.out, tmp_path / "x")
    metrics = eotransfer.api.evaluate(result.out, eurosat_like, split="stratified", labels_per_class=6, seed=0)
    assert metrics["confusion_matrix"] == result.metrics["test"]["confusion_matrix"]
    ds = eotransfer.api.load_data(eotransfer.api.FitConfig(data=str(eurosat_like), bands="eurosat-ms"))
    images = np.stack([ds[int(i)]["image"].numpy() for i in result.split.test])
    probs = saved.predict_proba(images)
    assert probs.shape == (15, 3)
    np.testing.assert_array_equal(probs, load_model(result.out).predict_proba(images))
    # the cached test-side features are those of the stage, and the stage's cache is separate from pooled ones
    assert {np.load(f)["features"].shape[1] for f in cache.glob("*.npz")} == {256}
    cached = [f for f in cache.glob("*.npz") if np.load(f)["features"].shape[1] == 256]
    test_feats = [np.load(f)["features"] for f in cached if len(np.load(f)["features"]) == 15]
    assert any(np.allclose(saved.classifier.predict_proba(f), probs, atol=1e-5) for f in test_feats)


def test_unknown_stage_names_the_option(eurosat_like: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--stage: unknown stage 'layer9'.*valid stages: pooled, layer1, .*layer4"):
        eotransfer.fit(eurosat_like, classifier="logreg", stage="layer9", **OPTS)
