"""``coral`` and ``mmd``: source cross-entropy plus alignment with unlabelled target-domain batches."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

import eotransfer
from eotransfer.data.base import open_dataset
from eotransfer.errors import ConfigError
from eotransfer.models.backbones import build_network, get_architecture
from eotransfer.models.model import EOClassifier
from eotransfer.strategies._target import logits_and_features, open_target_pool, target_batch
from eotransfer.strategies.base import get_strategy
from eotransfer.strategies.coral import AlignmentParams, Coral

FAST: dict[str, Any] = {"bands": "eurosat-ms", "labels_per_class": 6, "accelerator": "cpu", "progress": False,
                        "verbose": False, "seed": 0, "patience": 0, "batch_size": 6, "backbone": "resnet10t"}  # fmt: skip


@pytest.mark.parametrize("strategy", ["coral", "mmd"])
def test_fit_end_to_end(strategy: str, eurosat_like: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []
    forward = EOClassifier.forward

    def spy(self: EOClassifier, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            sizes.append(x.shape[0])
        return forward(self, x)

    monkeypatch.setattr(EOClassifier, "forward", spy)
    result = eotransfer.fit(eurosat_like, strategy=strategy, target=str(eurosat_like), target_bands="eurosat-ms",
                            head_epochs=1, epochs=1, **FAST)  # fmt: skip
    assert [row["phase"] for row in result.history] == ["head", "adapt"]
    assert all(math.isfinite(row["train_loss"]) for row in result.history)
    assert sizes and all(n % 2 == 0 for n in sizes)  # source and target batches of equal size, one forward


def test_empty_target_is_refused(eurosat_like: Path) -> None:
    with pytest.raises(ConfigError, match="^--target: .*required"):
        eotransfer.fit(eurosat_like, strategy="coral", head_epochs=1, epochs=1, **FAST)


def test_target_batch_is_deterministic_and_resized(eurosat_like: Path) -> None:
    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    pool = open_target_pool(str(eurosat_like), "eurosat-ms", ds)
    like = torch.zeros(2, 13, 32, 32, dtype=torch.float64)
    a = target_batch(pool, 5, like, torch.Generator().manual_seed(3))
    b = target_batch(pool, 5, like, torch.Generator().manual_seed(3))
    assert a.shape == (5, 13, 32, 32) and a.dtype == torch.float64  # 16 px targets upsampled to the source size
    assert torch.equal(a.nan_to_num(), b.nan_to_num())


def test_logits_and_features_match_the_model() -> None:
    torch.manual_seed(0)
    model = EOClassifier(build_network(get_architecture("resnet10t"), 13, 16), 512, 3, 13).eval()
    x = torch.rand(3, 13, 16, 16)
    logits, features = logits_and_features(model, x)
    with torch.no_grad():
        assert torch.allclose(features, model.features(x)) and torch.allclose(logits, model(x))


def test_alignment_term_is_weighted(eurosat_like: Path) -> None:
    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    torch.manual_seed(0)
    model = EOClassifier(build_network(get_architecture("resnet10t"), 13, 16), 512, 3, 13).eval()
    images, labels = torch.stack([torch.from_numpy(ds.checked_read(i)) for i in range(4)]), torch.zeros(4).long()
    losses = []
    for weight in (0.0, 1000.0):
        strategy = Coral(AlignmentParams(target=str(eurosat_like), target_bands="eurosat-ms", adapt_weight=weight))
        strategy.prepare(ds, None, model)
        losses.append(strategy.training_loss(model, images, labels, torch.Generator().manual_seed(0)).item())
    assert losses[1] > losses[0]


@pytest.mark.parametrize("strategy", ["coral", "mmd", "dann"])
def test_labelled_target_gets_one_note(strategy: str, eurosat_like: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cls = get_strategy(strategy)
    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    cls(cls.Params(target=f"{eurosat_like},{eurosat_like}", target_bands="eurosat-ms")).prepare(ds, None, None)
    err = capsys.readouterr().err
    assert err.count("are ignored") == 1  # one note for the call, naming both labelled sources
    assert f"--target: the labels of {eurosat_like} (3 classes), {eurosat_like} (3 classes) are ignored" in err


def test_unlabelled_target_gets_no_note(eurosat_like: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in sorted(eurosat_like.glob("*/*.tif"))[:4]:
        (flat / f.name).symlink_to(f)
    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    pool = open_target_pool(str(flat), "eurosat-ms", ds)
    assert len(pool) == 4
    assert "ignored" not in capsys.readouterr().err
