"""Classification metrics against scikit-learn and scipy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from eotransfer.engine.metrics import (
    classification_metrics,
    confusion_matrix,
    mean_ci95,
    metrics_table,
    standard_error,
)

CLASSES = ["a", "b", "c", "d", "e"]


def test_confusion_matrix_by_hand() -> None:
    cm = confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]  # rows true, columns predicted


@pytest.mark.parametrize("seed", range(5))
def test_against_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, 200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, 5, 200))
    m = classification_metrics(y, p, CLASSES)
    labels = list(range(5))
    assert np.array_equal(np.array(m["confusion_matrix"]), skm.confusion_matrix(y, p, labels=labels))
    assert m["overall_accuracy"] == pytest.approx(skm.accuracy_score(y, p))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, p, average="macro", labels=labels))
    prec, rec, f1, sup = skm.precision_recall_fscore_support(y, p, labels=labels, zero_division=0)
    for i, c in enumerate(CLASSES):
        pc = m["per_class"][c]
        assert (pc["precision"], pc["recall"], pc["f1"]) == pytest.approx((prec[i], rec[i], f1[i]))
        assert pc["support"] == sup[i]
    assert m["n"] == 200


def test_class_absent_from_truth_left_out_of_macro_f1() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array([0, 3, 1, 1, 2, 0])  # class 3 is predicted but never true
    m = classification_metrics(y, p, ["w", "x", "y", "z"])
    present = sorted(set(y))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, p, average="macro", labels=present))
    assert m["per_class"]["z"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_perfect_and_empty() -> None:
    y = np.array([2, 0, 1, 1])
    m = classification_metrics(y, y, ["a", "b", "c"])
    assert m["overall_accuracy"] == 1.0 and m["macro_f1"] == 1.0
    empty = classification_metrics(np.array([], dtype=int), np.array([], dtype=int), ["a", "b"])
    assert empty["overall_accuracy"] == 0.0 and empty["macro_f1"] == 0.0 and empty["n"] == 0


@pytest.mark.parametrize("values", [[0.81, 0.84, 0.79, 0.9, 0.86], [0.5, 0.7], list(np.linspace(0, 1, 30))])
def test_mean_ci95_against_scipy(values: list[float]) -> None:
    mean, half = mean_ci95(values)
    lo, hi = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert mean == pytest.approx(np.mean(values))
    assert half == pytest.approx((hi - lo) / 2)


def test_mean_ci95_degenerate() -> None:
    mean, half = mean_ci95([0.7])
    assert mean == 0.7 and np.isnan(half)
    mean, half = mean_ci95([])
    assert np.isnan(mean) and np.isnan(half)
    assert mean_ci95([0.5, 0.5, 0.5]) == (0.5, 0.0)


def test_standard_error_by_hand() -> None:
    # [1, 2, 3, 4]: sample variance 5/3, so SE = sqrt(5/3) / 2
    assert standard_error([1.0, 2.0, 3.0, 4.0]) == pytest.approx(np.sqrt(5 / 3) / 2)
    assert standard_error([0.8]) == 0.0 and standard_error([]) == 0.0


def test_metrics_table() -> None:
    m = classification_metrics(np.array([0, 1, 1]), np.array([0, 1, 0]), ["forest", "water"])
    lines = metrics_table(m).splitlines()
    assert lines[1].split() == ["forest", "0.500", "1.000", "0.667", "1"]
    assert lines[-1].split() == ["overall", "accuracy", "0.667", "macro-F1", "0.667", "n=3"]
