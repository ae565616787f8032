"""The frozen-feature monitor."""

from __future__ import annotations

import numpy as np
import torch

from eotransfer.evaluation.knn import knn_predict, logistic_accuracy


def test_knn_votes_by_cosine_neighbours() -> None:
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.05, 1.0]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    query = torch.tensor([[1.0, 0.05], [0.0, 2.0]])
    assert knn_predict(bank, labels, query, num_classes=2, k=2).tolist() == [0, 1]
    # k larger than the bank: all vote, the similarity weighting still picks the near class
    assert knn_predict(bank, labels, query, num_classes=2, k=50, temperature=0.05).tolist() == [0, 1]


def test_logistic_accuracy_separable_and_single_class() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-3, 1, (20, 4)), rng.normal(3, 1, (20, 4))])
    y = np.repeat([0, 1], 20)
    assert logistic_accuracy(x, y, x, y) == 1.0
    assert np.isnan(logistic_accuracy(x[:20], y[:20], x, y))
