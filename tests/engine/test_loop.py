"""The training loop: frozen means unchanged, resume equals an uninterrupted run, config checks, early stopping."""

from __future__ import annotations

import copy
import filecmp
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import eotransfer
import eotransfer.engine.loop as loop
from eotransfer.data.base import EODataset, Subset, open_dataset
from eotransfer.data.normalization import Normalizer
from eotransfer.engine.checkpoint import config_hash, load_checkpoint
from eotransfer.engine.loop import CHECKPOINT_NAME, Engine, EngineConfig, augment_batch
from eotransfer.errors import CheckpointError
from eotransfer.models.backbones import create_backbone
from eotransfer.models.model import EOClassifier
from eotransfer.strategies.finetune import Finetune, FinetuneParams
from eotransfer.strategies.linear_probe import LinearProbe, LinearProbeParams

TRAIN = np.arange(0, 36, 2)  # 6 per class
VAL = np.arange(1, 36, 4)  # 3 per class


class Crash(RuntimeError):
    """Stands in for a killed process."""


class TinyBackbone(nn.Module):
    """conv - BatchNorm - pool: small enough that every epoch and checkpoint takes milliseconds."""

    num_features = 8

    def __init__(self, n_bands: int, batchnorm: bool = True) -> None:
        super().__init__()
        norm = nn.BatchNorm2d(8) if batchnorm else nn.Identity()
        self.body = nn.Sequential(
            nn.Conv2d(n_bands, 8, 3, padding=1), norm, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@pytest.fixture(scope="module")
def ds(eurosat_like: Path) -> EODataset:
    return open_dataset(eurosat_like, bands="eurosat-ms")


@pytest.fixture(scope="module")
def normalizer(ds: EODataset) -> Normalizer:
    return Normalizer.fit(ds.checked_read, TRAIN, ds.bands)


def tiny_model(ds: EODataset, normalizer: Normalizer, seed: int = 0, batchnorm: bool = True) -> EOClassifier:
    torch.manual_seed(seed)
    backbone = TinyBackbone(len(ds.bands), batchnorm)
    model = EOClassifier(backbone, TinyBackbone.num_features, len(ds.classes), len(ds.bands))
    model.normalize.set_from(normalizer)
    return model


def engine(checkpoint_dir: Path | None = None, resume: bool = False, chash: str = "h") -> Engine:
    cfg = EngineConfig(
        seed=0,
        accelerator="cpu",
        progress=False,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        config_hash=chash,
        checkpoint_interval_s=0.0,
    )  # fmt: skip  (a checkpoint every epoch)
    return Engine(cfg)


def finetune(**kw: Any) -> Finetune:
    p = {"head_epochs": 2, "epochs": 3, "batch_size": 4, "lr": 1e-2, "head_lr": 1e-2, "patience": 0} | kw
    return Finetune(FinetuneParams(**p))


def states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """Keys whose tensors differ (empty when bit-identical)."""
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


def crash_after(monkeypatch: pytest.MonkeyPatch, n_saves: int, batches: int = 2) -> None:
    """Raise :class:`Crash` from the loss in the middle of the epoch after the ``n_saves``-th checkpoint."""
    count = {"saves": 0, "batches": 0}
    real_save, real_loss = loop.atomic_torch_save, Finetune.loss

    def save(obj: Any, path: Path) -> None:
        real_save(obj, path)
        count["saves"] += 1
        count["batches"] = 0

    def loss(self: Finetune, model: nn.Module, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if count["saves"] >= n_saves:
            count["batches"] += 1
            if count["batches"] > batches:
                raise Crash(f"killed after checkpoint {n_saves}")
        return real_loss(self, model, logits, labels)

    monkeypatch.setattr(loop, "atomic_torch_save", save)
    monkeypatch.setattr(Finetune, "loss", loss)


# -- (a) a frozen backbone stays bit-identical --------------------------------------------------
@pytest.mark.parametrize("augment", [False, True])
def test_linear_probe_leaves_backbone_identical(ds: EODataset, normalizer: Normalizer, augment: bool) -> None:
    bb = create_backbone("resnet18", ds.bands, seed=0, verbose=False)
    model = EOClassifier(bb.module, bb.num_features, len(ds.classes), len(ds.bands))
    model.normalize.set_from(normalizer)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}  # parameters and BatchNorm buffers
    head_before = model.head.weight.detach().clone()
    strategy = LinearProbe(LinearProbeParams(epochs=3, batch_size=8, augment=augment, patience=0))
    history = engine().fit(model, strategy, Subset(ds, TRAIN), Subset(ds, VAL))
    assert len(history) == 3
    assert states_equal(before, model.backbone.state_dict()) == []
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert not torch.equal(head_before, model.head.weight)  # the head did train


# -- (b) resume reaches the weights of an uninterrupted run -------------------------------------
@pytest.fixture(scope="module")
def uninterrupted(ds: EODataset, normalizer: Normalizer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    model = tiny_model(ds, normalizer)
    history = engine(tmp_path_factory.mktemp("full")).fit(model, finetune(), Subset(ds, TRAIN), Subset(ds, VAL))
    return {"state": {k: v.clone() for k, v in model.state_dict().items()}, "history": history}


@pytest.mark.parametrize(
    "n_saves",
    [1, 2, 4],
    ids=["mid-head-phase", "at-phase-boundary", "mid-end-to-end"],  # head_epochs=2, epochs=3
)
def test_resume_equals_uninterrupted(
    ds: EODataset, normalizer: Normalizer, uninterrupted: dict[str, Any], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, n_saves: int,
) -> None:  # fmt: skip
    with monkeypatch.context() as m:
        crash_after(m, n_saves)
        with pytest.raises(Crash):
            engine(tmp_path).fit(tiny_model(ds, normalizer), finetune(), Subset(ds, TRAIN), Subset(ds, VAL))
    saved = load_checkpoint(tmp_path / CHECKPOINT_NAME, "h")
    assert len(saved["history"]) == n_saves
    resumed = tiny_model(ds, normalizer, seed=99)  # another initialisation: the checkpoint must override it
    history = engine(tmp_path, resume=True).fit(resumed, finetune(), Subset(ds, TRAIN), Subset(ds, VAL))
    assert states_equal(uninterrupted["state"], resumed.state_dict()) == []
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in history]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in uninterrupted["history"]]


def test_interrupted_run_differs_without_resume(
    ds: EODataset, normalizer: Normalizer, uninterrupted: dict[str, Any], tmp_path: Path
) -> None:
    """Control: a run with fewer epochs does not reach the same weights, so the equality above means something."""
    model = tiny_model(ds, normalizer)
    engine(tmp_path).fit(model, finetune(epochs=2), Subset(ds, TRAIN), Subset(ds, VAL))
    assert states_equal(uninterrupted["state"], model.state_dict()) != []


# -- (c) a checkpoint of another configuration is refused ---------------------------------------
def test_resume_with_another_config_hash(ds: EODataset, normalizer: Normalizer, tmp_path: Path) -> None:
    engine(tmp_path, chash="aaaa").fit(tiny_model(ds, normalizer), finetune(epochs=1, head_epochs=0),
                                       Subset(ds, TRAIN), None)  # fmt: skip
    with pytest.raises(CheckpointError, match="different configuration \\(hash aaaa vs bbbb\\)"):
        engine(tmp_path, resume=True, chash="bbbb").fit(tiny_model(ds, normalizer), finetune(), Subset(ds, TRAIN), None)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        engine(tmp_path / "nothing", resume=True).fit(tiny_model(ds, normalizer), finetune(), Subset(ds, TRAIN), None)
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"truncated")
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        engine(tmp_path, resume=True, chash="aaaa").fit(tiny_model(ds, normalizer), finetune(), Subset(ds, TRAIN), None)


def test_config_hash_is_stable_and_sensitive() -> None:
    a = config_hash({"fit": {"lr": 0.1, "bands": "eurosat-ms"}, "strategy": {"epochs": 3}})
    assert a == config_hash({"strategy": {"epochs": 3}, "fit": {"bands": "eurosat-ms", "lr": 0.1}})
    assert a != config_hash({"fit": {"lr": 0.2, "bands": "eurosat-ms"}, "strategy": {"epochs": 3}})
    assert len(a) == 16


def test_api_resume_and_config_change(eurosat_like: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through ``eotransfer.fit``: the checkpoint folder beside --out, the hash of the settings, and resume."""
    opts: dict[str, Any] = dict(bands="eurosat-ms", strategy="finetune", backbone="resnet18", head_epochs=1, epochs=2,
                                batch_size=8, seed=1, accelerator="cpu", progress=False, verbose=False)  # fmt: skip
    full = eotransfer.fit(eurosat_like, out=str(tmp_path / "full"), **opts)
    assert not (tmp_path / ".full.checkpoints").exists()  # removed once the model is saved
    with monkeypatch.context() as m:
        crash_after(m, n_saves=2, batches=1)
        with pytest.raises(Crash):
            eotransfer.fit(eurosat_like, out=str(tmp_path / "m"), **opts)
    ckpt_dir = tmp_path / ".m.checkpoints"
    assert (ckpt_dir / CHECKPOINT_NAME).is_file() and not (tmp_path / "m").exists()
    backup = tmp_path / "backup"
    shutil.copytree(ckpt_dir, backup)
    with pytest.raises(CheckpointError, match="different configuration"):
        eotransfer.fit(eurosat_like, out=str(tmp_path / "m"), resume=True, **(opts | {"lr": 5e-4}))
    with pytest.raises(CheckpointError, match="different configuration"):
        eotransfer.fit(eurosat_like, out=str(tmp_path / "m"), resume=True, **(opts | {"seed": 2}))
    assert filecmp.cmp(backup / CHECKPOINT_NAME, ckpt_dir / CHECKPOINT_NAME, shallow=False)  # refused, untouched
    resumed = eotransfer.fit(eurosat_like, out=str(tmp_path / "m"), resume=True, **opts)
    assert states_equal(full.model.state_dict(), resumed.model.state_dict()) == []
    assert resumed.metrics == full.metrics


# -- (d) early stopping --------------------------------------------------------------------------
class Frozen(Finetune):
    """A strategy whose loss has no gradient: the weights, hence validation, never change.

    (Used with a model without BatchNorm, whose running statistics would change validation.)
    """

    def loss(self, model: nn.Module, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (logits * 0.0).sum()


@pytest.mark.parametrize("patience", [1, 3])
def test_early_stopping(ds: EODataset, normalizer: Normalizer, tmp_path: Path, patience: int) -> None:
    params = FinetuneParams(head_epochs=0, epochs=20, batch_size=8, weight_decay=0.0, patience=patience)
    train, val = Subset(ds, TRAIN), Subset(ds, VAL)
    history = engine(tmp_path).fit(tiny_model(ds, normalizer, batchnorm=False), Frozen(params), train, val)
    assert len(history) == 1 + patience  # the first epoch improves on nothing, then `patience` flat epochs
    assert len({row["val_accuracy"] for row in history}) == 1
    # the checkpoint marks the phase as finished, so a resume does not train on
    assert load_checkpoint(tmp_path / CHECKPOINT_NAME, "h")["epoch"] == 19
    again = engine(tmp_path, resume=True).fit(tiny_model(ds, normalizer, batchnorm=False), Frozen(params), train, val)
    assert len(again) == len(history)


def test_no_early_stopping_without_patience_or_validation(ds: EODataset, normalizer: Normalizer) -> None:
    train, val = Subset(ds, TRAIN), Subset(ds, VAL)
    params = FinetuneParams(head_epochs=0, epochs=5, batch_size=8, weight_decay=0.0, patience=0)
    history = engine().fit(tiny_model(ds, normalizer, batchnorm=False), Frozen(params), train, val)
    assert len(history) == 5
    params = FinetuneParams(head_epochs=0, epochs=5, batch_size=8, weight_decay=0.0, patience=1)
    history = engine().fit(tiny_model(ds, normalizer, batchnorm=False), Frozen(params), train, None)
    assert len(history) == 5


class Ascent(Finetune):
    """Gradient ascent: validation only gets worse, so the best epoch is the first."""

    def loss(self, model: nn.Module, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return -super().loss(model, logits, labels)


def _best_epoch(history: list[dict[str, Any]]) -> int:
    scores = [(row["val_accuracy"], -row["val_loss"]) for row in history]
    return max(range(len(scores)), key=lambda i: scores[i])  # the first of the best, as the loop keeps it


def test_best_validation_state_is_restored(
    ds: EODataset, normalizer: Normalizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved: list[dict[str, torch.Tensor]] = []
    monkeypatch.setattr(loop, "atomic_torch_save", lambda obj, path: saved.append(copy.deepcopy(obj["model"])))
    model = tiny_model(ds, normalizer)
    strategy = Ascent(FinetuneParams(head_epochs=0, epochs=4, batch_size=4, lr=0.05, patience=0))
    history = engine(Path("unused")).fit(model, strategy, Subset(ds, TRAIN), Subset(ds, VAL))
    assert _best_epoch(history) == 0 and len(saved) == 4
    assert states_equal(saved[0], model.state_dict()) == []
    assert states_equal(saved[-1], model.state_dict()) != []  # the last epoch's weights were not kept


def test_resume_keeps_the_best_state_from_before_the_interruption(
    ds: EODataset, normalizer: Normalizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def strategy() -> Ascent:
        return Ascent(FinetuneParams(head_epochs=0, epochs=4, batch_size=4, lr=0.05, patience=0))

    full = tiny_model(ds, normalizer)
    history = engine(tmp_path / "full").fit(full, strategy(), Subset(ds, TRAIN), Subset(ds, VAL))
    assert _best_epoch(history) == 0
    with monkeypatch.context() as m:
        crash_after(m, n_saves=2)  # in epoch 2, long after the best epoch
        with pytest.raises(Crash):
            engine(tmp_path / "run").fit(tiny_model(ds, normalizer), strategy(), Subset(ds, TRAIN), Subset(ds, VAL))
    resumed = tiny_model(ds, normalizer)
    engine(tmp_path / "run", resume=True).fit(resumed, strategy(), Subset(ds, TRAIN), Subset(ds, VAL))
    assert states_equal(full.state_dict(), resumed.state_dict()) == []


def test_augment_batch_is_dihedral_and_seeded() -> None:
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4).repeat(8, 1, 1, 1)
    a = augment_batch(x, torch.Generator().manual_seed(0))
    b = augment_batch(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    for i in range(len(x)):  # every output is one of the 8 flips/rotations of its input
        variants = [torch.rot90(x[i], k, dims=(-2, -1)) for k in range(4)]
        variants += [torch.flip(v, dims=(-1,)) for v in variants]
        assert any(torch.equal(a[i], v) for v in variants)
    assert not torch.equal(a, x)


def test_checkpoints_are_rate_limited(
    ds: EODataset, normalizer: Normalizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the default interval, cheap epochs are not each written: first and last epoch of the phase only."""
    saved: list[int] = []
    monkeypatch.setattr(loop, "atomic_torch_save", lambda obj, path: saved.append(int(obj["epoch"])))
    cfg = EngineConfig(seed=0, accelerator="cpu", progress=False, checkpoint_dir=tmp_path, config_hash="h",
                       checkpoint_interval_s=3600.0)  # fmt: skip
    strategy = LinearProbe(LinearProbeParams(epochs=6, patience=0))
    Engine(cfg).fit(tiny_model(ds, normalizer), strategy, Subset(ds, TRAIN), Subset(ds, VAL))
    assert saved == [0, 5]
