"""``freeze`` and ``progressive-unfreeze``: stages partition every backbone, frozen means bitwise unchanged,
the unfreezing schedule changes the trainable sets at the right epochs with the right learning rates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import eotransfer
from eotransfer.data.base import EODataset, Subset, open_dataset
from eotransfer.data.normalization import Normalizer
from eotransfer.engine.loop import Engine, EngineConfig
from eotransfer.errors import ConfigError
from eotransfer.models.backbones import ARCHITECTURES, build_network, create_backbone
from eotransfer.models.model import EOClassifier
from eotransfer.models.stages import backbone_stages, match_params, stage_of, trainable_table
from eotransfer.strategies.freeze import Freeze, FreezeParams
from eotransfer.strategies.progressive_unfreeze import ProgressiveUnfreeze, ProgressiveUnfreezeParams

RESNET = ["stem", "layer1", "layer2", "layer3", "layer4"]
EXPECTED_STAGES = {
    "resnet": RESNET,
    "convnext": ["stem", "stages.0", "stages.1", "stages.2", "stages.3", "head"],
    "regnet": ["stem", "s1", "s2", "s3", "s4"],
    "vit": ["stem", *(f"blocks.{i}" for i in range(12)), "norm"],
}
FAST: dict[str, Any] = {"labels_per_class": 3, "progress": False, "verbose": False, "accelerator": "cpu", "patience": 0}


@pytest.fixture(scope="module")
def ds(eurosat_like: Path) -> EODataset:
    return open_dataset(eurosat_like, bands="eurosat-ms")


def resnet18(ds: EODataset, seed: int = 0) -> EOClassifier:
    bb = create_backbone("resnet18", ds.bands, None, img_size=16, seed=seed, verbose=False)
    return EOClassifier(bb.module, bb.num_features, len(ds.classes), len(ds.bands))


def stages_of(model: nn.Module, group: dict) -> set[str]:
    """The backbone stages (or 'head') whose parameters ``group`` holds, checking it holds each one whole."""
    stages = backbone_stages(model.backbone)  # type: ignore[arg-type]

    def part(name: str) -> str:
        return "head" if name.startswith("head.") else stage_of(stages, name.removeprefix("backbone."))

    found = {part(n) for n, p in model.named_parameters() if any(p is q for q in group["params"])}
    whole = {id(p) for n, p in model.named_parameters() if part(n) in found}
    assert whole == {id(p) for p in group["params"]}
    return found


@pytest.mark.parametrize("name", sorted(n for n, a in ARCHITECTURES.items() if a.family != "statistics"))
def test_stages_partition_every_parameter(name: str) -> None:  # band-stats has no parameter to partition
    arch = ARCHITECTURES[name]
    with torch.device("meta"):  # the structure is all that matters: no memory, no initialisation
        backbone = build_network(arch, 3, 32)
    stages = backbone_stages(backbone)
    assert [s for s, _ in stages] == EXPECTED_STAGES[arch.family]
    for pname, _ in backbone.named_parameters():
        owners = [s for s, prefixes in stages for p in prefixes if pname == p or pname.startswith(p + ".")]
        assert len(owners) == 1, f"{name}: {pname} belongs to {owners}"
    first_two = [n for n, _ in backbone.named_parameters() if stage_of(stages, n) in EXPECTED_STAGES[arch.family][:2]]
    assert match_params(backbone, [":2"]) == first_two  # the default of --freeze is valid for every family


def test_match_params_and_table(ds: EODataset) -> None:
    backbone = resnet18(ds).backbone
    assert match_params(backbone, ["stem"]) == ["conv1.weight", "bn1.weight", "bn1.bias"]
    assert match_params(backbone, [":2"]) == match_params(backbone, ["stem", "layer1"])  # the default of --freeze
    assert match_params(backbone, ["-1:"]) == match_params(backbone, ["layer4"])
    assert match_params(backbone, ["layer4.1"]) == [
        n for n, _ in backbone.named_parameters() if n.startswith("layer4.1.")
    ]
    assert match_params(backbone, ["*.bn2.bias"]) == [f"layer{i}.{j}.bn2.bias" for i in range(1, 5) for j in (0, 1)]
    assert match_params(backbone, ["conv1"]) == [
        n for n, _ in backbone.named_parameters() if n.endswith("conv1.weight")
    ]
    with pytest.raises(ConfigError, match="^--freeze: '7:' matches no parameter"):
        match_params(backbone, ["7:"])
    with pytest.raises(ConfigError, match="'bn' matches no parameter.*did you mean 'bn1'"):  # whole dotted parts only
        match_params(backbone, ["bn"])
    with pytest.raises(
        ConfigError, match=r"^--freeze: 'layr1' matches no parameter.*stem, layer1.*; did you mean 'layer1'\?"
    ):
        match_params(backbone, ["stem", "layr1"])
    table = trainable_table(resnet18(ds))
    assert all(f"backbone.{s}" in table for s in RESNET) and "head" in table and "total" in table


def test_freeze_leaves_frozen_parameters_bitwise_unchanged(eurosat_like: Path, ds: EODataset) -> None:
    initial = resnet18(ds).backbone.state_dict()
    result = eotransfer.fit(eurosat_like, bands="eurosat-ms", backbone="resnet18", strategy="freeze",
                            freeze="stem,layer1", head_epochs=1, epochs=1, **FAST)  # fmt: skip
    trained = result.model.backbone.state_dict()  # type: ignore[union-attr]
    frozen = [k for k in initial if k.startswith(("conv1.", "bn1.", "layer1."))]
    assert frozen and all(torch.equal(trained[k], initial[k]) for k in frozen)  # BatchNorm statistics included
    changed = [k for k in initial if k not in frozen and not torch.equal(trained[k], initial[k])]
    assert any(k.startswith("layer4.") and k.endswith("weight") for k in changed)
    assert [row["phase"] for row in result.history] == ["head", "partly-frozen"]


def test_freeze_refuses_patterns_that_match_nothing_or_everything(eurosat_like: Path, ds: EODataset) -> None:
    with pytest.raises(ConfigError, match="^--freeze: 'layer5' matches no parameter.*stem, layer1, layer2"):
        eotransfer.fit(eurosat_like, bands="eurosat-ms", strategy="freeze", freeze="stem,layer5", **FAST)
    with pytest.raises(ConfigError, match="^--freeze: no stage"):
        Freeze(FreezeParams(freeze=" , "))
    with pytest.raises(ConfigError, match="^--freeze: .*whole backbone.*linear-probe"):
        Freeze(FreezeParams(freeze=",".join(RESNET))).phases(resnet18(ds))


def test_gradual_schedule_phases_and_learning_rates(ds: EODataset) -> None:
    model = resnet18(ds)
    params = ProgressiveUnfreezeParams(head_epochs=2, head_lr=0.01, unfreeze_every=3, epochs=4, lr=1e-3, lr_decay=0.5)
    phases = ProgressiveUnfreeze(params).phases(model)
    assert [(ph.name, ph.epochs) for ph in phases] == [("head", 2), ("unfreeze:layer4", 3), ("unfreeze:layer3", 3),
                                                       ("unfreeze:layer2", 3), ("unfreeze:layer1", 3), ("unfreeze:stem", 4)]  # fmt: skip
    assert phases[0].frozen_backbone and phases[0].param_groups[0]["lr"] == 0.01
    assert stages_of(model, phases[0].param_groups[0]) == {"head"}
    depth = {"head": 0, "layer4": 1, "layer3": 2, "layer2": 3, "layer1": 4, "stem": 5}
    for k, phase in enumerate(phases[1:], start=1):
        rates = {s: g["lr"] for g in phase.param_groups for s in stages_of(model, g)}
        assert set(rates) == {"head", *["layer4", "layer3", "layer2", "layer1", "stem"][:k]}
        assert rates == pytest.approx({s: 1e-3 * 0.5 ** depth[s] for s in rates})
    two = ProgressiveUnfreeze(ProgressiveUnfreezeParams(head_epochs=0, stages_per_step=2)).phases(model)
    assert [ph.name for ph in two] == ["unfreeze:layer4,layer3", "unfreeze:layer2,layer1", "unfreeze:stem"]


def test_llrd_trains_every_stage_at_decayed_rates(ds: EODataset) -> None:
    model = resnet18(ds)
    phases = ProgressiveUnfreeze(ProgressiveUnfreezeParams(mode="llrd", head_epochs=0, epochs=7, lr=2e-3,
                                                           lr_decay=0.8)).phases(model)  # fmt: skip
    assert [(ph.name, ph.epochs) for ph in phases] == [("llrd", 7)]
    rates = {s: g["lr"] for g in phases[0].param_groups for s in stages_of(model, g)}
    expected = {"head": 2e-3, "layer4": 1.6e-3, "layer3": 1.28e-3, "layer2": 1.024e-3, "layer1": 8.192e-4,
                "stem": 6.5536e-4}  # fmt: skip
    assert rates == pytest.approx(expected)


class Recording(ProgressiveUnfreeze):
    """Records, after every optimiser step, which backbone stages the engine let train, and the first conv."""

    def __init__(self, params: ProgressiveUnfreezeParams) -> None:
        super().__init__(params)
        self.steps: list[set[str]] = []
        self.conv1: list[torch.Tensor] = []

    def after_step(self, model: nn.Module, progress: float) -> None:
        stages = backbone_stages(model.backbone)  # type: ignore[arg-type]
        names = model.backbone.named_parameters()  # type: ignore[union-attr]
        self.steps.append({stage_of(stages, n) for n, p in names if p.requires_grad})
        self.conv1.append(model.get_parameter("backbone.conv1.weight").detach().clone())


def test_engine_changes_trainable_sets_at_the_right_epochs(ds: EODataset) -> None:
    train = np.arange(0, 36, 4)  # 3 per class, one batch: one step per epoch
    model = resnet18(ds)
    model.normalize.set_from(Normalizer.fit(ds.checked_read, train, ds.bands))
    initial = model.get_parameter("backbone.conv1.weight").detach().clone()
    strategy = Recording(ProgressiveUnfreezeParams(head_epochs=1, unfreeze_every=2, stages_per_step=2, epochs=1))
    history = Engine(EngineConfig(accelerator="cpu", progress=False)).fit(model, strategy, Subset(ds, train), None)
    assert [row["phase"] for row in history] == ["head"] + ["unfreeze:layer4,layer3"] * 2 + [
        "unfreeze:layer2,layer1"] * 2 + ["unfreeze:stem"]  # fmt: skip
    top2, top4 = {"layer4", "layer3"}, {"layer4", "layer3", "layer2", "layer1"}
    assert strategy.steps == [top2, top2, top4, top4, {*top4, "stem"}]
    # the stem stays bitwise unchanged until its own phase, whose one step moves it
    assert [torch.equal(w, initial) for w in strategy.conv1] == [True] * 4 + [False]


def test_progressive_unfreeze_fits_end_to_end(eurosat_like: Path) -> None:
    result = eotransfer.fit(eurosat_like, bands="eurosat-ms", backbone="resnet18", strategy="progressive-unfreeze",
                            head_epochs=1, epochs=1, stages_per_step=2, **FAST)  # fmt: skip
    assert 0.0 <= result.metrics["test"]["overall_accuracy"] <= 1.0
    assert [row["phase"] for row in result.history] == ["head", "unfreeze:layer4,layer3", "unfreeze:layer2,layer1",
                                                        "unfreeze:stem"]  # fmt: skip
    assert all(np.isfinite(row["train_loss"]) for row in result.history)
