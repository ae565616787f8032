"""Frozen-feature monitors: weighted k-nearest-neighbour and logistic-regression accuracy.

Self-supervised pre-training has no accuracy of its own; the standard monitor is a weighted kNN
classifier on the frozen features of a small labelled set (Wu et al. 2018, "Unsupervised Feature
Learning via Non-Parametric Instance Discrimination", CVPR; the protocol DINO and SSL4EO-S12 report),
plus a linear probe (logistic regression) on the same features.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch


@torch.no_grad()
def knn_predict(
    bank: torch.Tensor, bank_labels: torch.Tensor, query: torch.Tensor, num_classes: int, k: int = 20,
    temperature: float = 0.07,
) -> torch.Tensor:  # fmt: skip
    """Class predicted for each ``query`` row by its ``k`` most cosine-similar ``bank`` rows, votes weighted by ``exp(sim / T)``."""
    bank = torch.nn.functional.normalize(bank.float(), dim=1)
    query = torch.nn.functional.normalize(query.float(), dim=1)
    k = min(k, len(bank))
    sim, idx = (query @ bank.T).topk(k, dim=1)
    votes = torch.zeros(len(query), num_classes, dtype=torch.float32)
    votes.scatter_add_(1, bank_labels[idx].long(), (sim / temperature).exp())
    return votes.argmax(1)


def logistic_accuracy(
    train: np.ndarray, y_train: np.ndarray, test: np.ndarray, y_test: np.ndarray, seed: int = 0
) -> float:
    """Accuracy of a logistic regression on standardised features (a cheap linear probe)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(y_train)) < 2:
        return float("nan")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, C=1.0, random_state=seed))
    clf.fit(train, y_train)
    return float((clf.predict(test) == y_test).mean())


class FeatureMonitor:
    """Scores an encoder's frozen features: kNN and logistic regression fitted on ``bank``, tested on ``val``."""

    def __init__(self, bank: Any, val: Any, num_classes: int, k: int = 20, linear: bool = True) -> None:
        self.bank, self.val, self.num_classes, self.k, self.linear = bank, val, num_classes, k, linear

    def __call__(self, encode: Callable[[torch.Tensor], torch.Tensor], engine: Any) -> dict[str, float]:
        fb, yb = engine._forward_all(encode, self.bank)
        fv, yv = engine._forward_all(encode, self.val)
        pred = knn_predict(fb, yb, fv, self.num_classes, self.k)
        out = {"knn_accuracy": float((pred == yv).float().mean())}
        if self.linear:
            out["linear_accuracy"] = logistic_accuracy(fb.numpy(), yb.numpy(), fv.numpy(), yv.numpy())
        return out
