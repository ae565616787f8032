"""``distill`` and its loss: the loss by hand, a distilled student's accuracy, and clear refusals of bad teachers."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import eotransfer
from eotransfer.data.base import open_dataset
from eotransfer.errors import BandError, ConfigError, EOTransferError
from eotransfer.losses import distillation_loss
from eotransfer.models.backbones import build_network, get_architecture
from eotransfer.models.model import EOClassifier
from eotransfer.models.weights import WEIGHT_FILE
from eotransfer.strategies.distill import Distill, DistillParams

FAST: dict[str, Any] = {"bands": "eurosat-ms", "labels_per_class": 6, "accelerator": "cpu", "progress": False,
                        "verbose": False, "seed": 0, "patience": 0, "batch_size": 6}  # fmt: skip
#: what the resnet10t student must reach on the 15 test samples (it reaches 1.0 at seed 0)
STUDENT_MIN_ACCURACY = 0.8


def test_loss_by_hand() -> None:
    s, t, y, temp, alpha = [1.0, 2.0, 0.0], [0.0, 1.0, 3.0], 1, 2.0, 0.5

    def softmax(z: list[float]) -> list[float]:
        e = [math.exp(v) for v in z]
        return [v / sum(e) for v in e]

    ps, pt = softmax([v / temp for v in s]), softmax([v / temp for v in t])
    kl = sum(b * math.log(b / a) for a, b in zip(ps, pt, strict=True))
    ce = -math.log(softmax(s)[y])
    expected = alpha * temp**2 * kl + (1 - alpha) * ce
    got = distillation_loss(torch.tensor([s]), torch.tensor([t]), torch.tensor([y]), temp, alpha)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_loss_limits() -> None:
    g = torch.Generator().manual_seed(0)
    s, t, y = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g), torch.tensor([0, 1, 2, 3, 0])
    ce = torch.nn.functional.cross_entropy(s, y)
    assert torch.allclose(distillation_loss(s, t, y, temperature=3.0, alpha=0.0), ce)
    assert float(distillation_loss(s, s.clone(), y, temperature=3.0, alpha=1.0)) == pytest.approx(0.0, abs=1e-6)
    # the KL term is a batch mean: duplicating the batch leaves the loss unchanged
    both = distillation_loss(torch.cat([s, s]), torch.cat([t, t]), torch.cat([y, y]), 2.0, 0.7)
    assert torch.allclose(distillation_loss(s, t, y, 2.0, 0.7), both)


@pytest.fixture(scope="module")
def teacher(eurosat_like: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("distill") / "teacher"
    result = eotransfer.fit(eurosat_like, strategy="finetune", backbone="resnet18", head_epochs=5, epochs=3, out=str(out),
                            **FAST)  # fmt: skip
    assert result.metrics["test"]["overall_accuracy"] >= 0.9
    return out


def test_distilled_student_is_accurate_and_saved_alone(eurosat_like: Path, teacher: Path, tmp_path: Path) -> None:
    out = tmp_path / "student"
    result = eotransfer.fit(eurosat_like, strategy="distill", backbone="resnet10t", teacher=str(teacher), epochs=5,
                            out=str(out), **FAST)  # fmt: skip
    assert result.metrics["test"]["n"] == 15
    assert result.metrics["test"]["overall_accuracy"] >= STUDENT_MIN_ACCURACY
    assert result.card["arch"] == "resnet10t" and result.card["strategy"]["params"]["teacher"] == str(teacher)
    # the saved student holds exactly a resnet10t classifier's weights: nothing of the teacher
    saved = set(load_file(str(out / WEIGHT_FILE)))
    arch = get_architecture("resnet10t")
    with torch.device("meta"):
        fresh = EOClassifier(build_network(arch, 13, 16), result.card["num_features"], 3, 13)
    assert saved == set(fresh.state_dict())
    assert eotransfer.evaluate(out, eurosat_like, bands="eurosat-ms")["overall_accuracy"] >= STUDENT_MIN_ACCURACY


def test_missing_or_unreadable_teacher(eurosat_like: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="^--teacher: distill needs a teacher"):
        eotransfer.fit(eurosat_like, strategy="distill", backbone="resnet10t", epochs=1, **FAST)
    with pytest.raises(ConfigError, match="^--teacher: .*not an eotransfer model directory"):
        eotransfer.fit(eurosat_like, strategy="distill", backbone="resnet10t", teacher=str(tmp_path), epochs=1, **FAST)


def test_teacher_with_other_bands(eurosat_like: Path, teacher: Path) -> None:
    with pytest.raises(BandError, match="^--teacher: .*other bands.*only in the teacher: sentinel2-l1c:B01"):
        eotransfer.fit(eurosat_like, strategy="distill", backbone="resnet10t", teacher=str(teacher), epochs=1,
                       use_bands="B02,B03,B04", **FAST)  # fmt: skip


def test_teacher_with_other_classes(eurosat_like: Path, teacher: Path, tmp_path: Path) -> None:
    for c in ("cropland", "forest"):
        shutil.copytree(eurosat_like / c, tmp_path / c)
    with pytest.raises(ConfigError, match="^--teacher: .*other classes.*only in the teacher: water"):
        eotransfer.fit(tmp_path, strategy="distill", backbone="resnet10t", teacher=str(teacher), epochs=1, **FAST)


def test_student_larger_than_teacher_warns(eurosat_like: Path, teacher: Path) -> None:
    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    with torch.device("meta"):  # only the parameter count matters
        student = EOClassifier(build_network(get_architecture("resnet34"), 13, 16), 512, 3, 13)
    strategy = Distill(DistillParams(teacher=str(teacher)))
    with pytest.warns(UserWarning, match=r"student \(21,[0-9,]+ parameters\) is larger than the teacher resnet18"):
        strategy.prepare(ds, None, student)
    assert strategy.teacher is not None and not any(p.requires_grad for p in strategy.teacher.parameters())


def test_unlabelled_transfer_set(eurosat_like: Path, teacher: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The eurosat_like folder as unlabelled imagery (its labels ignored): 4 extra images per step."""
    labelled: list[int] = []
    seen: list[int] = []
    prepare, training_loss = Distill.prepare, Distill.training_loss

    def spy_prepare(self: Distill, dataset: Any, split: Any, model: torch.nn.Module) -> None:
        prepare(self, dataset, split, model)
        assert self.teacher is not None
        self.teacher.register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[0]))

    def spy_loss(self: Distill, model: torch.nn.Module, images: torch.Tensor, *rest: Any) -> torch.Tensor:
        labelled.append(images.shape[0])
        return training_loss(self, model, images, *rest)

    monkeypatch.setattr(Distill, "prepare", spy_prepare)
    monkeypatch.setattr(Distill, "training_loss", spy_loss)
    result = eotransfer.fit(eurosat_like, strategy="distill", backbone="resnet10t", teacher=str(teacher), epochs=2,
                            unlabelled=str(eurosat_like), unlabelled_bands="eurosat-ms", unlabelled_per_batch=4,
                            **FAST)  # fmt: skip
    assert labelled and seen[: len(labelled)] == [n + 4 for n in labelled]
    losses = [row["train_loss"] for row in result.history if "train_loss" in row]
    assert losses and all(math.isfinite(v) for v in losses)


def test_unlabelled_batch_is_deterministic(eurosat_like: Path, teacher: Path) -> None:
    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    strategy = Distill(DistillParams(teacher=str(teacher), unlabelled=str(eurosat_like), unlabelled_bands="eurosat-ms"))
    with torch.device("meta"):
        student = EOClassifier(build_network(get_architecture("resnet10t"), 13, 16), 512, 3, 13)
    strategy.prepare(ds, None, student)
    images = torch.zeros(2, 13, 16, 16)
    a = strategy._unlabelled_batch(images, torch.Generator().manual_seed(3))
    b = strategy._unlabelled_batch(images, torch.Generator().manual_seed(3))
    assert a.shape == (32, 13, 16, 16) and torch.equal(a.nan_to_num(), b.nan_to_num())


def test_unlabelled_missing_path(eurosat_like: Path, teacher: Path, tmp_path: Path) -> None:
    with pytest.raises(EOTransferError, match="^--unlabelled: .*nowhere"):
        eotransfer.fit(eurosat_like, strategy="distill", backbone="resnet10t", teacher=str(teacher), epochs=1,
                       unlabelled=str(tmp_path / "nowhere"), **FAST)  # fmt: skip


def test_unlabelled_side_of_the_split(eurosat_like: Path, teacher: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """``@unlabelled``: the training side's images whose labels the k-per-class restriction set aside, and no other."""
    from eotransfer.data.splits import restrict_to_k_per_class, stratified_split
    from eotransfer.strategies import _target

    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    full = stratified_split(ds.labels, 0.3, 0.0, seed=0)
    split = restrict_to_k_per_class(full, ds.labels, 2, 0, ds.classes)
    assert len(split.train) == 6 and len(split.unlabelled) == len(full.train) - 6
    read: set[int] = set()
    held_read = _target.HeldOutImages.read

    def spy(self: _target.HeldOutImages, index: int) -> Any:
        read.add(int(self.indices[index]))
        return held_read(self, index)

    monkeypatch.setattr(_target.HeldOutImages, "read", spy)
    options = {k: v for k, v in FAST.items() if k not in ("bands", "labels_per_class")}
    result = eotransfer.fit(ds, split_override=split, strategy="distill", backbone="resnet10t", teacher=str(teacher),
                            epochs=2, unlabelled="@unlabelled", unlabelled_per_batch=4, **options)  # fmt: skip
    assert result.metrics["transfer_set"] == {"unlabelled_images": len(split.unlabelled)}
    assert read and read <= set(split.unlabelled.tolist())  # never a test, validation or labelled image
    assert math.isfinite(result.metrics["test"]["overall_accuracy"])
    # every label used: nothing to add, said, and no pool
    strategy = Distill(DistillParams(teacher=str(teacher), unlabelled="@unlabelled"))
    with torch.device("meta"):
        student = EOClassifier(build_network(get_architecture("resnet10t"), 13, 16), 512, 3, 13)
    capsys.readouterr()
    strategy.prepare(ds, full, student)
    assert (
        strategy.pool is None and "@unlabelled: no training-side image is without its label" in capsys.readouterr().err
    )
    assert strategy.after_fit(student, None, {}) == {"transfer_set": {"unlabelled_images": 0}}
    # a DA target with nothing set aside is refused, naming the option
    with pytest.raises(ConfigError, match="^--target @unlabelled: this fit sets no training label aside"):
        _target.open_target_pool("@unlabelled", None, ds, split=full)
