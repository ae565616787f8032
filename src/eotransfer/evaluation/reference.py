"""The reference row every accuracy table carries: per-band statistics + logistic regression.

A transfer strategy has to beat a classifier that sees only each band's distribution (mean, std
and percentiles), since many EO land-cover classes are separable on spectra alone (the classical
pixel/object-statistics baseline; cf. Helber et al. 2019 for EuroSAT).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

PERCENTILES = (5, 25, 50, 75, 95)


def band_statistics(image: np.ndarray) -> np.ndarray:
    """Per band: mean, std and the 5/25/50/75/95th percentiles (NaN pixels ignored) → 7·C features."""
    flat = image.reshape(image.shape[0], -1).astype(np.float64)
    stats = [np.nanmean(flat, 1), np.nanstd(flat, 1), *np.nanpercentile(flat, PERCENTILES, axis=1)]
    return np.nan_to_num(np.stack(stats, axis=1).ravel())


def band_statistics_matrix(read: Callable[[int], np.ndarray], indices: Sequence[int] | np.ndarray) -> np.ndarray:
    return np.stack([band_statistics(read(int(i))) for i in indices]) if len(indices) else np.zeros((0, 0))


def fit_band_statistics_classifier(features: np.ndarray, labels: np.ndarray, seed: int = 0):  # type: ignore[no-untyped-def]
    """Standardised band statistics → multinomial logistic regression (L2, C=1).

    The pipeline's steps are named ``scale`` and ``clf``, as the feature-extraction classifiers' are, so
    :func:`reference_network` folds it into a linear layer.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    clf = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(max_iter=5000, C=1.0, random_state=seed))])
    return clf.fit(features, labels)


def reference_network(clf: Any, n_bands: int, n_classes: int) -> torch.nn.Module:
    """The fitted reference as a network on raw C×H×W patches: band statistics, then the folded classifier.

    Its logits' argmax is ``clf``'s prediction on :func:`band_statistics` (patches without NaN pixels), and it
    is differentiable in the pixels (the percentiles through ``sort``), so gradient attacks
    (:mod:`eotransfer.evaluation.attacks`) score the reference row's robustness as they score a network's.
    """
    from eotransfer.evaluation.classical import linear_head
    from eotransfer.models.band_statistics import BandStatistics

    stats = BandStatistics(n_bands)
    return torch.nn.Sequential(stats, linear_head(clf, stats.num_features, n_classes)).eval()
