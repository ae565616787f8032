"""Classification metrics: overall accuracy, macro-F1, per-class precision/recall, confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Overall accuracy, macro-F1 and per-class precision/recall/F1/support (classes absent from
    ``y_true`` are left out of the macro average, as scikit-learn does with ``labels`` present)."""
    k = len(classes)
    cm = confusion_matrix(y_true, y_pred, k)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(1)
    predicted = cm.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    present = support > 0
    total = int(cm.sum())
    return {
        "overall_accuracy": float(tp.sum() / total) if total else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "n": total,
        "per_class": {
            c: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, c in enumerate(classes)
        },
        "confusion_matrix": cm.tolist(),
    }


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and half-width of the 95 % confidence interval (Student's t, n - 1 degrees of freedom)."""
    from scipy import stats

    arr = np.asarray(values, dtype=np.float64)
    if len(arr) < 2:
        return float(arr.mean()) if len(arr) else float("nan"), float("nan")
    return float(arr.mean()), float(stats.t.ppf(0.975, len(arr) - 1) * standard_error(arr))


def standard_error(values: Sequence[float] | np.ndarray) -> float:
    """Standard error of the mean: sample standard deviation / sqrt(n); 0 for fewer than two values."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.std(ddof=1) / np.sqrt(len(arr))) if len(arr) > 1 else 0.0


def metrics_table(metrics: dict[str, Any]) -> str:
    """Per-class precision/recall as a printable table."""
    lines = [f"{'class':<22} {'precision':>9} {'recall':>7} {'f1':>6} {'n':>5}"]
    for c, m in metrics["per_class"].items():
        lines.append(f"{c:<22} {m['precision']:>9.3f} {m['recall']:>7.3f} {m['f1']:>6.3f} {m['support']:>5d}")
    lines.append(
        f"overall accuracy {metrics['overall_accuracy']:.3f}   macro-F1 {metrics['macro_f1']:.3f}   n={metrics['n']}"
    )
    return "\n".join(lines)
