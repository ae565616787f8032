"""A linear scikit-learn classifier folded into one linear layer gives the classifier's own probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eotransfer.errors import ConfigError
from eotransfer.evaluation.classical import ABSENT_CLASS_LOGIT, classifier_proba, fit_cv, linear_head


def _data(n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), 12)
    # features on very different scales and offsets, so that folding the scaler matters
    scale, offset = rng.uniform(0.01, 100, 6), rng.uniform(-500, 500, 6)
    feats = rng.normal(size=(len(labels), 6)) + labels[:, None] * 0.8
    return (feats * scale + offset).astype(np.float32), labels


@pytest.mark.parametrize("name", ["logreg", "linear-svm"])
@pytest.mark.parametrize("n_classes", [2, 4])
def test_folded_softmax_equals_the_classifier_probabilities(name: str, n_classes: int) -> None:
    feats, labels = _data(n_classes, n_classes)
    clf, _ = fit_cv(name, feats, labels, folds=3, seed=0)
    layer = linear_head(clf, 6, n_classes)
    assert layer.weight.shape == (n_classes, 6)
    with torch.no_grad():
        got = torch.softmax(layer(torch.from_numpy(feats)).double(), dim=1).numpy()
    want = classifier_proba(clf, feats, n_classes)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert (got.argmax(1) == clf.predict(feats)).all()


def test_a_class_without_samples_gets_probability_zero() -> None:
    feats, labels = _data(3, 0)
    labels = np.where(labels == 1, 3, labels)  # classes 0, 2, 3 of 4: class 1 has no sample
    clf, _ = fit_cv("logreg", feats, labels, folds=3, seed=0)
    layer = linear_head(clf, 6, 4)
    assert layer.bias[1].item() == ABSENT_CLASS_LOGIT and not layer.weight[1].any()
    with torch.no_grad():
        got = torch.softmax(layer(torch.from_numpy(feats)).double(), dim=1).numpy()
    assert (got[:, 1] == 0).all()
    np.testing.assert_allclose(got, classifier_proba(clf, feats, 4), atol=1e-5)


def test_non_linear_classifiers_and_wrong_widths_are_refused() -> None:
    feats, labels = _data(2, 1)
    knn, _ = fit_cv("knn", feats, labels, folds=3, seed=0)
    with pytest.raises(ConfigError, match="KNeighborsClassifier, not linear: only logreg, linear-svm"):
        linear_head(knn, 6, 2)
    logreg, _ = fit_cv("logreg", feats, labels, folds=3, seed=0)
    with pytest.raises(ConfigError, match="takes 6 features but the network gives 8"):
        linear_head(logreg, 8, 2)
