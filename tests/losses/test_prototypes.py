"""Prototypes and nearest-prototype logits against a hand-computed example (Snell et al. 2017)."""

from __future__ import annotations

import pytest
import torch

from eotransfer.errors import DataError
from eotransfer.losses.prototypes import prototype_linear, prototype_logits, prototypes


def test_prototypes_and_logits_by_hand() -> None:
    # class 0: (0, 0) and (2, 0) -> prototype (1, 0); class 1: (0, 2), (0, 4), (3, 3) -> prototype (1, 3)
    feats = torch.tensor([[0.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 4.0], [3.0, 3.0]])
    labels = torch.tensor([0, 1, 0, 1, 1])
    protos = prototypes(feats, labels, 2)
    assert torch.equal(protos, torch.tensor([[1.0, 0.0], [1.0, 3.0]]))
    # query (1, 1): distances² 0 + 1 = 1 and 0 + 4 = 4; query (4, 3): 9 + 9 = 18 and 9 + 0 = 9
    query = torch.tensor([[1.0, 1.0], [4.0, 3.0]])
    logits = prototype_logits(query, protos)
    assert torch.allclose(logits, torch.tensor([[-1.0, -4.0], [-18.0, -9.0]]))
    assert logits.argmax(1).tolist() == [0, 1]
    # p(y=0 | (1,1)) = e^-1 / (e^-1 + e^-4)
    expected = torch.exp(torch.tensor(-1.0)) / (torch.exp(torch.tensor(-1.0)) + torch.exp(torch.tensor(-4.0)))
    assert torch.isclose(torch.softmax(logits, 1)[0, 0], expected)


def test_linear_form_ranks_as_the_distances() -> None:
    protos = torch.tensor([[1.0, 0.0], [1.0, 3.0]])
    w, b = prototype_linear(protos)
    assert torch.equal(w, torch.tensor([[2.0, 0.0], [2.0, 6.0]])) and torch.equal(b, torch.tensor([-1.0, -10.0]))
    q = torch.randn(50, 2, generator=torch.Generator().manual_seed(0)) * 3
    linear = q @ w.T + b
    # differs from -distance² by ‖q‖² only, the same for every class
    assert torch.allclose(linear - (q * q).sum(1, keepdim=True), prototype_logits(q, protos), atol=1e-4)
    assert torch.allclose(torch.softmax(linear, 1), torch.softmax(prototype_logits(q, protos), 1), atol=1e-5)


def test_gradients_flow_to_the_features() -> None:
    feats = torch.randn(6, 4, requires_grad=True)
    logits = prototype_logits(feats[4:], prototypes(feats[:4], torch.tensor([0, 0, 1, 1]), 2))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1])).backward()
    assert feats.grad is not None and bool((feats.grad.abs().sum(1) > 0).all())


def test_a_class_without_support_is_refused() -> None:
    with pytest.raises(DataError, match=r"class\(es\) \[1\] have no support samples"):
        prototypes(torch.zeros(3, 2), torch.tensor([0, 0, 2]), 3)
