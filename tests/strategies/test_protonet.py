"""``protonet``: episodes from the base classes only, a nearest-prototype head, clear errors, resumable."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import eotransfer
from eotransfer.card import load_model
from eotransfer.data.base import open_dataset
from eotransfer.data.splits import make_split
from eotransfer.engine import loop
from eotransfer.errors import ConfigError
from eotransfer.losses.prototypes import prototype_logits, prototypes
from eotransfer.strategies.protonet import Protonet, ProtonetParams

OPTS: dict[str, Any] = dict(bands="eurosat-ms", strategy="protonet", backbone="resnet18", batch_size=8, seed=3,
                            accelerator="cpu", progress=False, verbose=False)  # fmt: skip


class Crash(Exception):
    pass


def test_episodes_never_draw_a_novel_class(eurosat_like: Path) -> None:
    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    split = make_split("stratified", ds.labels, seed=0)
    strategy = Protonet(ProtonetParams(novel_classes="water", shots=2, queries=3))
    strategy.prepare(ds, split, torch.nn.Linear(1, 1))
    seen: list[int] = []
    strategy._image = lambda i: (seen.append(i), torch.zeros(13, 16, 16))[1]  # type: ignore[method-assign]

    class Features(torch.nn.Module):  # embeds an image as its position in the episode: loss is finite
        def features(self, x: torch.Tensor) -> torch.Tensor:
            return torch.arange(len(x), dtype=torch.float32).unsqueeze(1)

    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        loss = strategy.training_loss(Features(), torch.zeros(2, 13, 16, 16), torch.zeros(2), gen)
        assert torch.isfinite(loss)
    water = ds.classes.index("water")
    assert len(seen) == 10 * 2 * (2 + 3)  # 2 ways (the base classes) x (2 shots + 3 queries)
    assert set(seen) <= set(split.train.tolist())
    assert water not in set(ds.labels[seen].tolist())
    assert set(ds.labels[seen].tolist()) == set(range(3)) - {water}


def test_fit_saves_a_nearest_prototype_head(eurosat_like: Path, tmp_path: Path) -> None:
    res = eotransfer.fit(eurosat_like, novel_classes="water", epochs=2, out=str(tmp_path / "m"), **OPTS)
    assert [row["phase"] for row in res.history] == ["episodic", "episodic"]
    assert all(np.isfinite(row["train_loss"]) and "val_accuracy" in row for row in res.history)
    saved = load_model(tmp_path / "m")
    assert saved.card["strategy"]["params"]["novel_classes"] == "water"
    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    # the head is the prototype classifier of the training split (every class, 'water' included)
    with torch.no_grad():
        saved.network.eval()
        train = np.stack([ds[int(i)]["image"].numpy() for i in res.split.train])
        feats = saved.network.features(torch.from_numpy(train))
        protos = prototypes(feats, torch.from_numpy(ds.labels[res.split.train]), len(ds.classes))
        test = np.stack([ds[int(i)]["image"].numpy() for i in res.split.test])
        expected = prototype_logits(saved.network.features(torch.from_numpy(test)), protos).softmax(1)
    np.testing.assert_allclose(saved.predict_proba(test), expected.numpy(), atol=1e-4)
    metrics = eotransfer.evaluate(tmp_path / "m", eurosat_like, split="stratified", seed=3)
    assert metrics["n"] == len(res.split.test) and 0.0 <= metrics["overall_accuracy"] <= 1.0


def test_same_seed_same_weights(eurosat_like: Path) -> None:
    a = eotransfer.fit(eurosat_like, epochs=1, **OPTS)
    b = eotransfer.fit(eurosat_like, epochs=1, **OPTS)
    assert all(torch.equal(a.model.state_dict()[k], v) for k, v in b.model.state_dict().items())


def test_resume_equals_uninterrupted(eurosat_like: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full = eotransfer.fit(eurosat_like, epochs=2, out=str(tmp_path / "full"), **OPTS)
    count = {"saves": 0, "steps": 0}
    real_save, real_loss = loop.atomic_torch_save, Protonet.training_loss

    def save(obj: Any, path: Path) -> None:
        real_save(obj, path)
        count["saves"] += 1

    def training_loss(self: Protonet, *args: Any) -> torch.Tensor:
        if count["saves"] >= 1:  # crash in the second epoch, after its first step
            count["steps"] += 1
            if count["steps"] > 1:
                raise Crash
        return real_loss(self, *args)

    with monkeypatch.context() as m:
        m.setattr(loop, "atomic_torch_save", save)
        m.setattr(Protonet, "training_loss", training_loss)
        with pytest.raises(Crash):
            eotransfer.fit(eurosat_like, epochs=2, out=str(tmp_path / "m"), **OPTS)
    resumed = eotransfer.fit(eurosat_like, epochs=2, out=str(tmp_path / "m"), resume=True, **OPTS)
    state = full.model.state_dict()
    assert [k for k, v in resumed.model.state_dict().items() if not torch.equal(state[k], v)] == []


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"ways": 3, "novel_classes": "water"},
            r"^--ways: 3 ways but only 2 classes are available \(cropland, forest\)",
        ),
        ({"shots": 7}, r"^--shots: 7 shots leave no query sample in class '\w+' \(7 training samples\)"),
        (
            {"shots": 4, "queries": 4},
            r"^--shots/--queries: 4 shots \+ 4 queries = 8 samples per class, but class '\w+' has only 7",
        ),  # fmt: skip
        ({"ways": 1}, r"^--ways: 1 way is no classification task"),
        ({"novel_classes": "watr"}, r"^--novel-classes: unknown class 'watr'; did you mean 'water'"),
        ({"novel_classes": "water,forest"}, r"^--novel-classes: leaves 1 base class\(es\)"),
        ({"base_classes": "water", "novel_classes": "forest"}, r"^--novel-classes/--base-classes: give one"),
    ],
)
def test_impossible_episodes_are_refused(eurosat_like: Path, params: dict[str, Any], message: str) -> None:
    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    split = make_split("stratified", ds.labels, seed=0)  # 7 training samples per class
    assert set(np.bincount(ds.labels[split.train])) == {7}
    with pytest.raises(ConfigError, match=message):
        Protonet(ProtonetParams(**params)).prepare(ds, split, torch.nn.Linear(1, 1))


def test_defaults_adapt_to_the_data(eurosat_like: Path) -> None:
    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    split = make_split("stratified", ds.labels, seed=0)
    s = Protonet(ProtonetParams(base_classes="cropland,forest", episodes_per_epoch=7, batch_size=8))
    s.prepare(ds, split, torch.nn.Linear(1, 1))
    assert s.sampler is not None
    assert (s.sampler.ways, s.sampler.shots, s.sampler.queries) == (2, 5, 2)  # 2 base classes; 7 - 5 queries
    assert s.per_step == 3  # 21 training samples / 8 = 3 steps; ceil(7 / 3)
    assert dataclasses.asdict(s.params)["ways"] == 0  # the card records what was asked
