"""Every registered strategy on every light backbone: it fits, reports sane metrics, and validates its Params.

A new strategy file is picked up here without editing this test.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import eotransfer
from eotransfer.data.formats.folder import ClassFolderDataset
from eotransfer.errors import ConfigError
from eotransfer.models.backbones import ARCHITECTURES, STATISTICS_STRATEGIES
from eotransfer.strategies import load_all
from eotransfer.strategies.base import STRATEGIES, CommonParams, Strategy, get_strategy, make_params

load_all()
STRATEGY_NAMES = sorted(STRATEGIES)
# The heavy architectures (resnet50, convnext_tiny, vit_small_patch16_224) share their family and code path with
# a light one tested here (resnet18/34, convnext_atto, vit_tiny_patch16_224); they are left out for speed.
# tests/models/test_backbones.py still builds every architecture and runs it forward.
HEAVY = {"resnet50", "convnext_tiny", "vit_small_patch16_224"}
BACKBONES = [name for name in ARCHITECTURES if name not in HEAVY]


class Upsampled(ClassFolderDataset):
    """The 16 px fixture at 32 px (each pixel repeated 2x2): ConvNeXt needs 32 px inputs."""

    def read(self, index: int) -> np.ndarray:
        return np.repeat(np.repeat(super().read(index), 2, axis=1), 2, axis=2)


@pytest.fixture(scope="module")
def data32(eurosat_like: Path) -> Upsampled:
    return Upsampled(eurosat_like, bands="eurosat-ms")


def short_params(cls: type[Strategy]) -> dict[str, Any]:
    """Every ``*epochs`` parameter at its smallest useful value: 1 epoch per phase."""
    out: dict[str, Any] = {"patience": 0, "batch_size": 8}
    for f in dataclasses.fields(cls.Params):
        if f.name.endswith("epochs"):
            out[f.name] = 1
    return out


def test_registry_is_complete() -> None:
    assert {"linear-probe", "finetune"} <= set(STRATEGIES)
    for name, cls in STRATEGIES.items():
        assert cls.name == name and cls.summary
        assert issubclass(cls.Params, CommonParams)


@pytest.fixture(scope="module")
def teacher(data32: Upsampled, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A saved model on ``data32``, for strategies whose Params take a ``teacher`` (distillation)."""
    out = tmp_path_factory.mktemp("teacher") / "model"
    eotransfer.fit(data32, strategy="linear-probe", backbone="resnet18", epochs=1, accelerator="cpu", progress=False,
                   verbose=False, out=str(out))  # fmt: skip
    return str(out)


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_short_fit(strategy: str, backbone: str, data32: Upsampled, request: pytest.FixtureRequest) -> None:
    cls = get_strategy(strategy)
    if ARCHITECTURES[backbone].family == "statistics" and strategy not in STATISTICS_STRATEGIES:
        with pytest.raises(ConfigError, match=f"^--backbone {backbone} has no parameters to train or adapt"):
            eotransfer.fit(data32, strategy=strategy, backbone=backbone, accelerator="cpu", progress=False,
                           verbose=False, **short_params(cls))  # fmt: skip
        pytest.skip(f"{backbone} has no parameters: {strategy} is refused with a ConfigError")
    families = getattr(cls, "architectures", None)  # a strategy may declare the backbone families it supports
    if families is not None and ARCHITECTURES[backbone].family not in families:
        with pytest.raises(ConfigError, match="^--backbone: "):
            eotransfer.fit(data32, strategy=strategy, backbone=backbone, accelerator="cpu", progress=False,
                           verbose=False, **short_params(cls))  # fmt: skip
        pytest.skip(f"{strategy} supports {', '.join(families)} backbones; it refuses {backbone} with a ConfigError")
    params = short_params(cls)
    if "teacher" in {f.name for f in dataclasses.fields(cls.Params)}:
        params["teacher"] = request.getfixturevalue("teacher")
    if "target" in {f.name for f in dataclasses.fields(cls.Params)}:  # domain adaptation: unlabelled target data
        params["target"] = str(request.getfixturevalue("eurosat_like"))
        params["target_bands"] = "eurosat-ms"
    result = eotransfer.fit(data32, strategy=strategy, backbone=backbone, seed=0, accelerator="cpu",
                            progress=False, verbose=False, **params)  # fmt: skip
    test = result.metrics["test"]
    assert 0.0 <= test["overall_accuracy"] <= 1.0 and 0.0 <= test["macro_f1"] <= 1.0
    assert test["n"] == len(result.split.test) > 0
    assert result.card["strategy"]["name"] == strategy
    assert result.card["strategy"]["params"] == dataclasses.asdict(cls.Params(**params))
    assert result.card["arch"] == backbone and result.card["img_size"] == 32
    n_phases = len(cls(cls.Params(**params)).phases(result.model))
    assert len(result.history) == n_phases  # one epoch per phase, no early stopping
    assert all(np.isfinite(row["train_loss"]) for row in result.history)


def _out_of_range(f: dataclasses.Field[Any]) -> Any:
    lo, hi, choices = f.metadata.get("min"), f.metadata.get("max"), f.metadata.get("choices")
    if choices is not None:
        return "no-such-choice"
    if lo is not None:
        return type(f.default)(lo) - 1 if isinstance(f.default, int) else lo / 10 - 1
    return hi * 10 + 1


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_params_validate_with_the_option_name(strategy: str) -> None:
    cls = get_strategy(strategy)
    cls(cls.Params())  # the defaults are valid
    checked = 0
    for f in dataclasses.fields(cls.Params):
        meta = f.metadata
        if meta.get("min") is None and meta.get("max") is None and meta.get("choices") is None:
            continue
        bad = _out_of_range(f)
        option = "--" + f.name.replace("_", "-")
        with pytest.raises(ConfigError, match=f"^{option}: "):
            cls(cls.Params(**{f.name: bad}))
        checked += 1
    assert checked >= 4  # epochs, lr, weight_decay, batch_size, patience at least


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_params_above_maximum_and_unknown_keys(strategy: str) -> None:
    cls = get_strategy(strategy)
    with pytest.raises(ConfigError, match="^--lr: 100.0 is above the maximum 10.0"):
        cls(cls.Params(lr=100.0))
    with pytest.raises(ConfigError, match=f"'lrate' is not a parameter of strategy '{strategy}'; did you mean 'lr'"):
        make_params(cls, {"lrate": 0.1})


def test_fit_refuses_bad_values(eurosat_like: Path) -> None:
    with pytest.raises(ConfigError, match="^--epochs: 0 is below the minimum 1"):
        eotransfer.fit(eurosat_like, bands="eurosat-ms", strategy="linear-probe", epochs=0, progress=False,
                       verbose=False)  # fmt: skip
    with pytest.raises(ConfigError, match="--strategy: unknown strategy 'fine-tune'; did you mean 'finetune'"):
        get_strategy("fine-tune")
