"""Multi-task losses: uncertainty weighting (Kendall et al. 2018, eq. 10) by hand, static weights, masked labels."""

from __future__ import annotations

import math

import pytest
import torch

from eotransfer.errors import ConfigError
from eotransfer.losses.multitask import MultiTaskLoss, masked_task_loss


def test_uncertainty_weighting_by_hand() -> None:
    loss = MultiTaskLoss(["classification", "regression"], "uncertainty")
    with torch.no_grad():
        loss.log_vars.copy_(torch.tensor([0.5, -1.0]))
    l_cls, l_reg = torch.tensor(2.0), torch.tensor(3.0)
    # classification: exp(-s)·L + s/2;  regression: ½·exp(-s)·L + s/2
    expected = math.exp(-0.5) * 2.0 + 0.25 + 0.5 * math.exp(1.0) * 3.0 - 0.5
    got = loss([l_cls, l_reg])
    assert got.item() == pytest.approx(expected, rel=1e-6)
    got.backward()
    # d/ds (c·exp(-s)·L + s/2) = -c·exp(-s)·L + 1/2
    grad = loss.log_vars.grad
    assert grad is not None
    assert grad.tolist() == pytest.approx([-math.exp(-0.5) * 2.0 + 0.5, -0.5 * math.exp(1.0) * 3.0 + 0.5], rel=1e-6)
    assert loss.sigmas() == pytest.approx([math.exp(0.25), math.exp(-0.5)], rel=1e-6)


def test_uncertainty_at_zero_is_plain_sum_with_half_for_regression() -> None:
    loss = MultiTaskLoss(["classification", "multilabel", "regression"], "uncertainty")
    assert loss([torch.tensor(1.0), torch.tensor(2.0), torch.tensor(4.0)]).item() == pytest.approx(1 + 2 + 2)


def test_task_without_labels_leaves_the_sum_with_its_log_variance() -> None:
    loss = MultiTaskLoss(["classification", "regression"], "uncertainty")
    with torch.no_grad():
        loss.log_vars.copy_(torch.tensor([0.0, 3.0]))
    got = loss([torch.tensor(2.0), None])
    assert got.item() == pytest.approx(2.0)
    got.backward()
    assert loss.log_vars.grad is not None and loss.log_vars.grad[1].item() == 0.0


def test_static_weighting() -> None:
    loss = MultiTaskLoss(["classification", "regression", "regression"], "static", [1.0, 0.5, 2.0])
    assert loss([torch.tensor(2.0), torch.tensor(3.0), torch.tensor(0.25)]).item() == pytest.approx(2 + 1.5 + 0.5)
    assert not loss.log_vars.requires_grad
    with pytest.raises(ConfigError, match="--task-weights: 1 weights for 2 tasks"):
        MultiTaskLoss(["classification", "regression"], "static", [1.0])
    with pytest.raises(ConfigError, match="--weighting: 'gradnorm' is not one of static, uncertainty"):
        MultiTaskLoss(["classification"], "gradnorm")


def test_regression_masks_missing_targets_by_hand() -> None:
    pred = torch.tensor([[1.0], [2.0], [3.0]], requires_grad=True)
    target = torch.tensor([2.0, float("nan"), 5.0])
    got = masked_task_loss("regression", pred, target)
    assert got is not None and got.item() == pytest.approx(((1 - 2) ** 2 + (3 - 5) ** 2) / 2)
    got.backward()
    # d/dp mean((p - y)²) over the two labelled samples: (p - y); the unlabelled one gets exactly 0
    assert pred.grad is not None and pred.grad.reshape(-1).tolist() == pytest.approx([-1.0, 0.0, -2.0])


def test_classification_masks_missing_class_and_gives_zero_gradient() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.5, 1.5], [1.0, 1.0]], requires_grad=True)
    target = torch.tensor([0, -1, 1])
    got = masked_task_loss("classification", logits, target)
    expected = (-math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(0.5)) / 2
    assert got is not None and got.item() == pytest.approx(expected, rel=1e-6)
    got.backward()
    assert logits.grad is not None and torch.equal(logits.grad[1], torch.zeros(2))
    assert logits.grad[0].abs().sum() > 0 and logits.grad[2].abs().sum() > 0


def test_multilabel_masks_each_entry() -> None:
    logits = torch.zeros(2, 2, requires_grad=True)
    target = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    got = masked_task_loss("multilabel", logits, target)
    assert got is not None and got.item() == pytest.approx(math.log(2))  # BCE at p = ½ on three entries
    got.backward()
    assert logits.grad is not None and logits.grad[0, 1].item() == 0.0
    assert logits.grad[0, 0].item() == pytest.approx(-0.5 / 3) and logits.grad[1, 0].item() == pytest.approx(0.5 / 3)


def test_no_label_in_batch_is_none() -> None:
    assert masked_task_loss("regression", torch.zeros(2, 1), torch.full((2,), float("nan"))) is None
    assert masked_task_loss("classification", torch.zeros(2, 3), torch.tensor([-1, -1])) is None
    with pytest.raises(ConfigError, match="task kind 'ordinal'"):
        masked_task_loss("ordinal", torch.zeros(2, 1), torch.zeros(2))
