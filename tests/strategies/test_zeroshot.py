"""``zero-shot``: unseen classes predicted from their attributes alone, calibrated stacking, the saved model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import eotransfer
from eotransfer.card import load_model
from eotransfer.data.base import Subset
from eotransfer.data.splits import Split
from eotransfer.engine.loop import Engine, EngineConfig
from eotransfer.errors import ConfigError
from eotransfer.models.model import EOClassifier
from eotransfer.strategies.zeroshot import (
    ZeroShot,
    ZeroShotParams,
    calibrated_stacking,
    prior_matching_gamma,
    zeroshot_metrics,
)

# Four seen classes, one attribute each; the two unseen classes combine two attributes each.
ATTRIBUTES = {"a": [1, 0, 0, 0], "b": [0, 1, 0, 0], "c": [0, 0, 1, 0], "d": [0, 0, 0, 1],
              "ab": [1, 1, 0, 0], "cd": [0, 0, 1, 1]}  # fmt: skip
CLASSES = list(ATTRIBUTES)
UNSEEN = ["ab", "cd"]


class Constructed:
    """Images whose per-band means are a fixed linear map of their class's attributes, plus noise."""

    def __init__(self, per_class: int = 12, bands: int = 8, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        mix = rng.normal(size=(bands, 4))
        self.classes = CLASSES
        self.labels = np.repeat(np.arange(len(CLASSES)), per_class)
        means = np.array([mix @ np.array(ATTRIBUTES[c], dtype=float) for c in CLASSES])[self.labels]
        means += 0.05 * rng.normal(size=means.shape)
        self.images = (means[:, :, None, None] + 0.01 * rng.normal(size=(len(means), bands, 4, 4))).astype(np.float32)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": torch.from_numpy(self.images[i]), "label": int(self.labels[i]), "index": i}


def pooled_model(bands: int = 8) -> EOClassifier:
    """A classifier whose 'backbone' is global average pooling: its features are the band means."""
    return EOClassifier(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), bands, len(CLASSES), bands)


def write_attributes(path: Path) -> Path:
    path.write_text("class,x1,x2,x3,x4\n" + "".join(f"{c},{','.join(map(str, v))}\n" for c, v in ATTRIBUTES.items()))
    return path


def split_of(ds: Constructed) -> Split:
    idx = np.arange(len(ds))
    return Split(train=idx[idx % 3 == 0], val=idx[idx % 3 == 1], test=idx[idx % 3 == 2])


@pytest.mark.parametrize("method", ["devise", "eszsl"])
def test_unseen_classes_predicted_from_their_attributes_alone(method: str, tmp_path: Path) -> None:
    ds, model = Constructed(), pooled_model()
    split = split_of(ds)
    strategy = ZeroShot(ZeroShotParams(method=method, attributes=str(write_attributes(tmp_path / "attr.csv")),
                                       unseen_classes=",".join(UNSEEN), epochs=60, lr=0.05, patience=0, batch_size=8))  # fmt: skip
    strategy.prepare(ds, split, model)
    # the unseen classes' training samples exist in the split, but nothing of them may reach training
    assert strategy.record["n_train_seen"] == 4 * 4 and strategy.record["unseen_classes"] == UNSEEN
    if method == "devise":
        history = Engine(EngineConfig(accelerator="cpu", progress=False)).fit(model, strategy, Subset(ds, split.train),
                                                                               Subset(ds, split.val))  # fmt: skip
        assert len(history) == 60 and history[-1]["train_loss"] < 0.1
    else:
        feats = np.stack([ds.images[i].mean((1, 2)) for i in split.train])
        strategy.fit_classifier(feats, ds.labels[split.train], len(CLASSES), 0)
    model.eval()
    with torch.no_grad():
        scores = model(torch.from_numpy(ds.images[split.test])).numpy()  # the plain linear head: what is saved
    y = ds.labels[split.test]
    seen = np.array([c not in UNSEEN for c in CLASSES])
    m = zeroshot_metrics(y, scores, seen)
    assert m["zsl_unseen_accuracy"] == 1.0 and m["chance"] == 0.5 and m["n_unseen"] == 8
    assert m["seen_accuracy"] == 1.0
    if method == "devise":  # generalised, among all six classes (ESZSL needs calibrated stacking for that here)
        assert m["unseen_accuracy"] >= 0.75


def test_unseen_samples_never_reach_the_loss(tmp_path: Path) -> None:
    ds, model = Constructed(per_class=2), pooled_model()
    strategy = ZeroShot(ZeroShotParams(attributes=str(write_attributes(tmp_path / "attr.csv")), unseen_classes="ab"))
    strategy.prepare(ds, split_of(ds), model)
    unseen_only = torch.from_numpy(ds.images[ds.labels == 4])
    loss = strategy.training_loss(model, unseen_only, torch.full((len(unseen_only),), 4), torch.Generator())
    loss.backward()
    assert float(loss.detach()) == 0.0 and strategy.projection.grad is not None and not strategy.projection.grad.any()


def test_calibrated_stacking_arithmetic() -> None:
    # classes 0, 1 seen; 2, 3 unseen; hand-computed below
    scores = np.array([[2.0, 1.5, 0.2, 0.1], [0.9, 0.1, 0.8, 0.3], [0.3, 0.2, 0.4, 1.0], [0.1, 1.2, 0.5, 0.6]])
    y, seen = np.array([0, 2, 3, 3]), np.array([True, True, False, False])
    np.testing.assert_allclose(calibrated_stacking(scores, seen, 0.7)[1], [0.2, -0.6, 0.8, 0.3])
    m = zeroshot_metrics(y, scores, seen)  # predictions 0, 0, 3, 1
    assert m["seen_accuracy"] == 1.0 and m["unseen_accuracy"] == pytest.approx((0 / 1 + 1 / 2) / 2)
    assert m["harmonic_mean"] == pytest.approx(2 * 1.0 * 0.25 / 1.25)
    assert m["zsl_unseen_accuracy"] == 1.0 and m["chance"] == 0.5 and (m["n_seen"], m["n_unseen"]) == (1, 3)
    m = zeroshot_metrics(y, calibrated_stacking(scores, seen, 0.7), seen)  # predictions 0, 2, 3, 3
    assert (m["seen_accuracy"], m["unseen_accuracy"], m["harmonic_mean"]) == (1.0, 1.0, 1.0)
    m = zeroshot_metrics(y, calibrated_stacking(scores, seen, 1.95), seen)  # sample 0 now goes to class 2
    assert (m["seen_accuracy"], m["unseen_accuracy"], m["harmonic_mean"]) == (0.0, 1.0, 0.0)


def test_prior_matching_gamma_sends_the_expected_share_to_unseen_classes() -> None:
    # classes 0, 1 seen; 2 unseen. Gaps (best seen − best unseen): 1.8, 0.1, −0.6, 1.0, 0.4
    scores = np.array([[2.0, 1.5, 0.2], [0.9, 0.1, 0.8], [0.3, 0.2, 0.9], [1.2, 0.0, 0.2], [0.5, 0.7, 0.3]])
    seen = np.array([True, True, False])
    gamma = prior_matching_gamma(scores, seen, 0.4)  # the 0.4 quantile of the sorted gaps −0.6, 0.1, 0.4, 1.0, 1.8
    assert gamma == pytest.approx(0.1 + 0.6 * (0.4 - 0.1))
    pred = calibrated_stacking(scores, seen, gamma).argmax(1)
    assert (pred == 2).tolist() == [False, True, True, False, False]  # 2 of 5 rows: the share asked for
    assert prior_matching_gamma(scores, seen, 0.0) == pytest.approx(-0.6)  # no row moves
    with pytest.raises(ConfigError, match="^--calibration-pool: calibration needs seen and unseen classes"):
        prior_matching_gamma(scores, np.ones(3, bool), 0.5)


def test_calibration_pool_chooses_gamma_without_labels(eurosat_like: Path, tmp_path: Path) -> None:
    attributes = tmp_path / "attr.csv"
    attributes.write_text("class,green,wet,bright\ncropland,0.6,0.1,0.7\nforest,1,0.2,0.2\nwater,0,1,0.1\n")
    out = tmp_path / "model"
    common = dict(bands="eurosat-ms", strategy="zero-shot", backbone="resnet10t", attributes=str(attributes),
                  unseen_classes="water", accelerator="cpu", progress=False, verbose=False)  # fmt: skip
    result = eotransfer.fit(eurosat_like, method="eszsl", calibration_pool="@test", out=str(out), **common)
    record = json.loads((out / "zeroshot.json").read_text())
    gamma = record["calibration"]
    assert record["calibration_pool"] == "@test" and record["calibration_pool_images"] == len(result.split.test)
    assert record["unseen_share"] == pytest.approx(1 / 3)
    # a third of the pool (its test images) goes to 'water', up to one image of the quantile's rounding
    assert abs(record["calibration_pool_predicted_unseen"] - 1 / 3) <= 1 / len(result.split.test) + 1e-9
    bias = result.model.head.bias.detach().numpy()
    saved = load_model(out).network.head.bias.detach().numpy()  # the saved head carries the chosen γ
    np.testing.assert_allclose(saved, bias)
    plain = eotransfer.fit(eurosat_like, method="eszsl", **common).model.head.bias.detach().numpy()
    np.testing.assert_allclose(bias, plain - gamma * np.array([1.0, 1.0, 0.0]), atol=1e-5)
    devise = eotransfer.fit(eurosat_like, calibration_pool="@test", unseen_share=0.5, epochs=2, **common)
    cm = np.asarray(devise.metrics["test"]["confusion_matrix"])  # rows: true class; columns: predicted
    n = len(devise.split.test)
    assert cm.sum() == n and abs(cm[:, 2].sum() / n - 0.5) <= 1 / n + 1e-9  # the pool is the test side
    # inductive: the training side's images, labels unused (unseen classes' images included); no test image
    inductive = eotransfer.fit(eurosat_like, method="eszsl", calibration_pool="@train,@unlabelled",
                               out=str(tmp_path / "inductive"), **common)  # fmt: skip
    record = json.loads((tmp_path / "inductive" / "zeroshot.json").read_text())
    n_train = len(inductive.split.train)
    assert record["calibration_pool_images"] == n_train + len(inductive.split.unlabelled) == n_train
    assert abs(record["calibration_pool_predicted_unseen"] - 1 / 3) <= 1 / n_train + 1e-9
    assert record["calibration"] != pytest.approx(gamma)  # another pool, another γ
    with pytest.raises(ConfigError, match="^--calibration-pool: it chooses γ itself"):
        eotransfer.fit(eurosat_like, calibration_pool="@test", calibration=1.0, **common)
    with pytest.raises(ConfigError, match="^--calibration-pool: there is no unseen class"):
        eotransfer.fit(eurosat_like, calibration_pool="@test", **{**common, "unseen_classes": ""})


def test_saved_model_predicts_seen_and_unseen_classes(eurosat_like: Path, tmp_path: Path) -> None:
    attributes = tmp_path / "attr.csv"
    attributes.write_text("class,green,wet,bright\ncropland,0.6,0.1,0.7\nforest,1,0.2,0.2\nwater,0,1,0.1\n")
    out = tmp_path / "model"
    result = eotransfer.fit(eurosat_like, bands="eurosat-ms", strategy="zero-shot", backbone="resnet10t",
                            attributes=str(attributes), unseen_classes="water", calibration=2.5, epochs=2,
                            accelerator="cpu", progress=False, verbose=False, out=str(out))  # fmt: skip
    np.testing.assert_allclose(result.model.head.bias.detach().numpy(), [-2.5, -2.5, 0.0])  # γ on the seen classes
    record = json.loads((out / "zeroshot.json").read_text())
    assert record["unseen_classes"] == ["water"] and record["seen_classes"] == ["cropland", "forest"]
    assert record["test"]["n_unseen"] > 0 and record["test"]["n_seen"] + record["test"]["n_unseen"] == len(
        result.split.test
    )
    assert set(record["test"]) >= {"seen_accuracy", "unseen_accuracy", "harmonic_mean", "zsl_unseen_accuracy"}
    assert result.card["metrics"]["test"]["zeroshot"] == record["test"]  # in the card's metrics as well
    saved = load_model(out)
    assert saved.classes == ["cropland", "forest", "water"]
    metrics = eotransfer.evaluate(out, eurosat_like)
    assert metrics["n"] == 36 and set(metrics["per_class"]) == {"cropland", "forest", "water"}


def test_bad_parameters_name_the_option(eurosat_like: Path) -> None:
    with pytest.raises(ConfigError, match="^--unseen-classes: 'watr' is not a class of the data; did you mean 'water'"):
        eotransfer.fit(eurosat_like, bands="eurosat-ms", strategy="zero-shot", backbone="resnet10t",
                       unseen_classes="watr", accelerator="cpu", progress=False, verbose=False)  # fmt: skip
    with pytest.raises(ConfigError, match="^--unseen-classes: at least one class must stay seen"):
        eotransfer.fit(eurosat_like, bands="eurosat-ms", strategy="zero-shot", backbone="resnet10t",
                       unseen_classes="water,forest,cropland", accelerator="cpu", progress=False, verbose=False)  # fmt: skip
    with pytest.raises(ConfigError, match="^--method: 'clip' is not one of devise, eszsl"):
        ZeroShot(ZeroShotParams(method="clip"))


def test_resume_continues_from_the_checkpointed_projection(
    eurosat_like: Path, tmp_path: Path, resume_matches_uninterrupted: Any
) -> None:
    attributes = tmp_path / "attr.csv"
    attributes.write_text("class,green,wet,bright\ncropland,0.6,0.1,0.7\nforest,1,0.2,0.2\nwater,0,1,0.1\n")
    # killed in the second epoch (6 batches per epoch), after the first epoch's checkpoint
    resume_matches_uninterrupted(eurosat_like, ZeroShot, "training_loss", 6, bands="eurosat-ms", strategy="zero-shot",
                                 backbone="resnet10t", attributes=str(attributes), unseen_classes="water", epochs=4,
                                 batch_size=6, patience=0, accelerator="cpu", progress=False, verbose=False)  # fmt: skip
