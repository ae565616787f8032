"""``dann``: source cross-entropy plus a domain discriminator behind the gradient reversal layer."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import eotransfer
from eotransfer.card import load_model
from eotransfer.data.base import open_dataset
from eotransfer.losses import grl_lambda
from eotransfer.models.backbones import build_network, get_architecture
from eotransfer.models.model import EOClassifier
from eotransfer.strategies.dann import DANN, DANNParams

FAST: dict[str, Any] = {"bands": "eurosat-ms", "labels_per_class": 6, "accelerator": "cpu", "progress": False,
                        "verbose": False, "seed": 0, "patience": 0, "batch_size": 6, "backbone": "resnet10t"}  # fmt: skip


def small_model() -> EOClassifier:
    torch.manual_seed(0)
    return EOClassifier(build_network(get_architecture("resnet10t"), 13, 16), 512, 3, 13)


def test_adapt_phase_trains_the_discriminator_and_the_head_phase_does_not() -> None:
    model = small_model()
    strategy = DANN(DANNParams(target="unused", head_epochs=2, epochs=3, lr=0.01, discriminator_hidden=16))
    head, adapt = strategy.phases(model)
    assert head.name == "head" and adapt.name == "adapt" and not adapt.frozen_backbone
    disc = {id(p) for p in strategy.adversarial.parameters()}  # type: ignore[union-attr]
    assert len(disc) == 6  # three linear layers, weights and biases
    assert not disc & {id(p) for g in head.param_groups for p in g["params"]}
    groups = [{id(p) for p in g["params"]} for g in adapt.param_groups]
    assert disc in groups and adapt.param_groups[groups.index(disc)]["lr"] == 0.01
    assert not disc & {id(p) for p in model.parameters()}  # not part of the classifier


def test_lambda_follows_ganin_schedule_over_the_phase() -> None:
    model = small_model()
    strategy = DANN(DANNParams(target="unused", grl_gamma=10.0))
    strategy.phases(model)
    assert strategy.adversarial is not None and strategy.adversarial.lambd == 0.0  # before the first step
    for p in (0.1, 0.5, 1.0):
        strategy.after_step(model, p)
        assert strategy.adversarial.lambd == pytest.approx(2 / (1 + math.exp(-10 * p)) - 1)
    strategy.after_step(model, 0.3)
    assert strategy.adversarial.lambd == pytest.approx(grl_lambda(0.3))


def test_backbone_gets_the_reversed_domain_gradient(eurosat_like: Path) -> None:
    """With cross-entropy off (a zero-weight head), the backbone's gradient is -λ times that of plain BCE."""
    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    images = torch.stack([torch.from_numpy(ds.checked_read(i)) for i in range(4)])
    labels = torch.zeros(4, dtype=torch.long)
    grads = {}
    for lambd in (0.5, -1.0):  # -1: the layer passes the gradient unchanged (plain minimisation)
        model = small_model().eval()
        torch.nn.init.zeros_(model.head.weight)
        torch.nn.init.zeros_(model.head.bias)  # constant logits: the cross-entropy has no backbone gradient
        strategy = DANN(DANNParams(target=str(eurosat_like), target_bands="eurosat-ms", discriminator_hidden=8))
        strategy.prepare(ds, None, model)
        torch.manual_seed(1)
        strategy.phases(model)
        strategy.adversarial.lambd = lambd  # type: ignore[union-attr]
        strategy.training_loss(model, images, labels, torch.Generator().manual_seed(0)).backward()
        grads[lambd] = model.backbone.conv1[0].weight.grad.clone()  # type: ignore[index,union-attr]
    assert grads[-1.0].abs().sum() > 0
    assert torch.allclose(grads[0.5], -0.5 * grads[-1.0], rtol=1e-4, atol=1e-7)


def test_fit_end_to_end_schedule_and_saved_weights(eurosat_like: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = tmp_path / "model"
    result = eotransfer.fit(eurosat_like, strategy="dann", target=str(eurosat_like), target_bands="eurosat-ms",
                            head_epochs=1, epochs=2, discriminator_hidden=16, out=str(out), **FAST)  # fmt: skip
    assert [row["phase"] for row in result.history] == ["head", "adapt", "adapt"]
    assert all(math.isfinite(row["train_loss"]) for row in result.history)
    # the discriminator is not in the classifier's weights: the saved keys are the model's own
    saved_keys = set(load_file(str(out / "weights.safetensors")))
    assert saved_keys == set(result.model.state_dict())
    assert not any("discriminator" in k for k in saved_keys)
    card = json.loads((out / "card.json").read_text())
    assert card["strategy"]["name"] == "dann" and card["strategy"]["params"]["discriminator_hidden"] == 16
    assert load_model(out).classes == result.card["classes"]
    assert capsys.readouterr().err.count("are ignored") == 1  # a labelled target: one note


def test_discriminator_weights_change_in_training(eurosat_like: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[DANN] = []
    init = DANN.__init__

    def spy(self: DANN, params: Any) -> None:
        init(self, params)
        made.append(self)

    monkeypatch.setattr(DANN, "__init__", spy)
    before: list[torch.Tensor] = []
    phases = DANN.phases

    def keep(self: DANN, model: torch.nn.Module) -> Any:
        out = phases(self, model)
        before.extend(p.detach().clone() for p in self.adversarial.parameters())  # type: ignore[union-attr]
        return out

    monkeypatch.setattr(DANN, "phases", keep)
    eotransfer.fit(eurosat_like, strategy="dann", target=str(eurosat_like), target_bands="eurosat-ms",
                   head_epochs=1, epochs=1, discriminator_hidden=8, **FAST)  # fmt: skip
    after = list(made[-1].adversarial.parameters())  # type: ignore[union-attr]
    assert any(not torch.equal(a.detach(), b) for a, b in zip(after, before, strict=True))
    assert made[-1].adversarial.lambd == pytest.approx(grl_lambda(1.0))  # type: ignore[union-attr]


def test_resume_continues_with_the_saved_discriminator(eurosat_like: Path, resume_matches_uninterrupted: Any) -> None:
    """A run killed in the adapt phase (after 4 of its 3-batch epochs' steps) and resumed ends as an uninterrupted one."""
    resume_matches_uninterrupted(eurosat_like, DANN, "alignment", 4, **{**FAST, "strategy": "dann", "target": str(eurosat_like),
                                 "target_bands": "eurosat-ms", "head_epochs": 1, "epochs": 3, "discriminator_hidden": 8})  # fmt: skip
