"""The self-supervised methods: losses against hand-computed values, the momentum update, conformance."""

from __future__ import annotations

import math

import pytest
import torch

from eotransfer import pretrain
from eotransfer.bands import BandSet
from eotransfer.errors import ConfigError
from eotransfer.models.backbones import create_backbone
from eotransfer.pretrain.base import METHODS, SSLModel, get_method
from eotransfer.pretrain.byol import byol_loss
from eotransfer.strategies.base import make_params

pretrain.load_all()

SMALL = {"hidden_dim": 32, "proj_dim": 16, "batch_size": 4}


def _model(method_name: str, **params: object) -> tuple[SSLModel, object]:
    bands = BandSet.parse("sentinel2-l1c:B02,B03,B04,B08")
    bb = create_backbone("resnet18", bands, None, img_size=16, seed=0, verbose=False)
    model = SSLModel(bb.module, bb.num_features, len(bands))
    cls = get_method(method_name)
    method = cls(make_params(cls, {**SMALL, **params}), patch_size=16)
    method.build(model)
    return model, method


def test_registry_and_unknown_name() -> None:
    assert {"moco", "byol"} <= set(METHODS)
    with pytest.raises(ConfigError, match="unknown pre-training method 'mocco'.*moco"):
        get_method("mocco")


def test_byol_loss_values() -> None:
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert byol_loss(p, p * 3).item() == pytest.approx(0.0, abs=1e-6)
    assert byol_loss(p, -p).item() == pytest.approx(4.0)
    assert byol_loss(p, torch.tensor([[0.0, 1.0], [1.0, 0.0]])).item() == pytest.approx(2.0)


def test_moco_infonce_matches_hand_value() -> None:
    model, method = _model("moco", temperature=0.5)
    q = torch.eye(4)  # every query matches its own key (cos 1) and is orthogonal to the others (cos 0)
    t = 0.5
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 3)) * 2 * t
    assert method._infonce(model, q, q.clone()).item() == pytest.approx(expected, rel=1e-5)


def test_moco_queue_negatives_and_wraparound() -> None:
    model, method = _model("moco", queue_size=6, temperature=1.0)
    keys = torch.eye(16)[:4, :16]
    method._enqueue(model, keys)
    assert int(model.queue_ptr) == 4
    assert torch.allclose(model.queue[:4], keys)
    method._enqueue(model, keys * 2)  # normalised, and wraps: rows 4, 5, then 0, 1
    assert int(model.queue_ptr) == 2
    assert torch.allclose(model.queue[[4, 5, 0, 1]], keys)
    q = torch.eye(16)[:1]
    loss = method._infonce(model, q, q.clone()).item()
    # queue rows now e2, e3, e2, e3, e0, e1: q = e0 has cosine 1 with its key and row 4, 0 with the other five
    expected = -math.log(math.e / (math.e + math.e + 5)) * 2
    assert loss == pytest.approx(expected, rel=1e-5)


def test_momentum_update_follows_cosine_schedule() -> None:
    model, method = _model("byol", momentum=0.9)
    online = model.backbone.conv1.weight
    target = model.momentum["backbone"].conv1.weight
    with torch.no_grad():
        online.add_(1.0)
    before = target.detach().clone()
    method.after_step(model, 0.0)  # m = base momentum 0.9
    assert torch.allclose(target, 0.9 * before + 0.1 * online.detach(), atol=1e-6)
    before = target.detach().clone()
    method.after_step(model, 1.0)  # m = 1: target frozen at the end
    assert torch.equal(target, before)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_conformance_one_step(name: str) -> None:
    """Every method: a finite loss, gradients reach the online encoder only, the EMA moves the target."""
    model, method = _model(name)
    x = torch.rand(4, 4, 16, 16) * 3000
    gen = torch.Generator().manual_seed(0)
    loss = method.training_loss(model, x, torch.full((4,), -1), gen)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert model.backbone.conv1.weight.grad is not None and model.backbone.conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.momentum.parameters())
    assert method.phases(model)[0].keep_best is False
    assert all(not n.startswith("momentum.") for g in method.phases(model)[0].param_groups for p in g["params"]
               for n, q in model.named_parameters() if q is p)  # fmt: skip
    before = model.momentum["backbone"].conv1.weight.detach().clone()
    with torch.no_grad():
        model.backbone.conv1.weight.add_(0.5)
    method.after_step(model, 0.0)
    assert not torch.equal(before, model.momentum["backbone"].conv1.weight)
    assert "20" in (__import__(type(method).__module__, fromlist=["x"]).__doc__ or "")  # cites a paper (year)
