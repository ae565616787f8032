"""``adabn``, ``--target-bn`` and ``--target @test``: BatchNorm statistics from the target, weights from the source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin

import eotransfer
from eotransfer.data.base import open_dataset
from eotransfer.data.splits import Split
from eotransfer.errors import ConfigError
from eotransfer.models.batchnorm import reestimate_batchnorm
from eotransfer.strategies._target import RASTER_TARGET_WINDOWS, TEST_SIDE, open_target_pool, pool_batches

FAST: dict[str, Any] = {"bands": "eurosat-ms", "labels_per_class": 6, "accelerator": "cpu", "progress": False,
                        "verbose": False, "seed": 0, "patience": 0, "batch_size": 6, "backbone": "resnet10t",
                        "head_epochs": 1, "epochs": 1}  # fmt: skip


def _split(ds: Any) -> Split:
    idx = np.arange(len(ds))
    return Split(idx[::3], idx[1::3], idx[2::3], {"kind": "test"})


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}


def test_test_side_pool_holds_the_test_images_without_labels(eurosat_like: Path) -> None:
    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    split = _split(ds)
    pool = open_target_pool(TEST_SIDE, None, ds, split=split)
    assert len(pool) == len(split.test)
    for i in (0, len(split.test) - 1):
        assert np.array_equal(pool.read(i), ds.checked_read(int(split.test[i])), equal_nan=True)
    assert (pool.labels == -1).all()


def test_test_side_needs_a_test_side(eurosat_like: Path) -> None:
    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    empty = Split(np.arange(10), np.zeros(0, np.int64), np.zeros(0, np.int64), {"kind": "test"})
    with pytest.raises(ConfigError, match="^--target @test: this fit has no test side"):
        open_target_pool(TEST_SIDE, None, ds, split=empty)
    with pytest.raises(ConfigError, match="^--target @test: "):
        open_target_pool(TEST_SIDE, None, ds)


def test_a_raster_target_gives_many_windows(eurosat_like: Path, tmp_path: Path) -> None:
    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    scene = tmp_path / "scene.tif"
    data = np.random.default_rng(0).integers(1, 3000, (13, 64, 64)).astype(np.uint16)
    with rasterio.open(scene, "w", driver="GTiff", height=64, width=64, count=13, dtype="uint16", crs="EPSG:32631",
                       transform=from_origin(500_000, 5_000_000, 10, 10)) as dst:  # fmt: skip
        dst.write(data)
    pool = open_target_pool(str(scene), "eurosat-ms", ds)
    assert len(pool) == RASTER_TARGET_WINDOWS
    first = {pool.read(i).tobytes() for i in range(20)}
    assert len(first) > 10  # distinct windows of the scene, not one window repeated


def test_adabn_trains_as_finetune_and_takes_the_target_statistics(eurosat_like: Path) -> None:
    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    split = _split(ds)
    opts = {k: v for k, v in FAST.items() if k not in ("bands", "labels_per_class")}
    plain = eotransfer.fit(ds, split_override=split, strategy="finetune", **opts)
    adapted = eotransfer.fit(ds, split_override=split, strategy="adabn", target=TEST_SIDE, **opts)
    a, b = _weights(plain.model), _weights(adapted.model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the same training, step for step
    # the statistics are exactly those of the test images (re-estimated here from the fine-tuned model)
    images = torch.stack([torch.from_numpy(ds.checked_read(int(i))) for i in split.test])
    reestimate_batchnorm(plain.model, [images[s : s + 6] for s in range(0, len(images), 6)])
    pa, pb = plain.model.state_dict(), adapted.model.state_dict()
    stats = [k for k in pa if k.endswith("running_mean")]
    assert stats and all(torch.allclose(pa[k], pb[k], atol=1e-5) for k in stats)
    assert adapted.card["strategy"]["params"]["target"] == TEST_SIDE
    # the card's domain metrics: source-only (before AdaBN) against adapted, on the test side's images
    domain = adapted.metrics["domain"]
    assert domain["target_accuracy_before_adabn"] == pytest.approx(plain.metrics["test"]["overall_accuracy"])
    assert domain["target_accuracy_adapted"] == pytest.approx(adapted.metrics["test"]["overall_accuracy"])
    assert all(0.0 <= domain[k] <= 2.0 for k in ("pad_initial", "pad_before_adabn", "pad_adapted"))
    assert domain["n_target"] == len(split.test) and domain["n_source"] == len(split.train)


@pytest.mark.parametrize("strategy", ["coral", "dann"])
def test_target_bn_changes_only_the_statistics(strategy: str, eurosat_like: Path) -> None:
    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    split = _split(ds)
    opts = {k: v for k, v in FAST.items() if k not in ("bands", "labels_per_class")}
    off = eotransfer.fit(ds, split_override=split, strategy=strategy, target=TEST_SIDE, **opts)
    on = eotransfer.fit(ds, split_override=split, strategy=strategy, target=TEST_SIDE, target_bn=True, **opts)
    a, b = _weights(off.model), _weights(on.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = off.model.state_dict(), on.model.state_dict()
    assert any(not torch.allclose(sa[k], sb[k]) for k in sa if k.endswith("running_var"))


def test_pool_batches_resize_to_the_training_size(eurosat_like: Path) -> None:
    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    pool = open_target_pool(TEST_SIDE, None, ds, split=_split(ds))
    batches = list(pool_batches(pool, 5, torch.zeros(1, 13, 32, 32)))
    assert sum(len(b) for b in batches) == len(pool) and all(b.shape[1:] == (13, 32, 32) for b in batches)


def test_domain_gap_is_zero_for_the_same_images_and_labels_follow_the_sources(eurosat_like: Path) -> None:
    from eotransfer.models.backbones import build_network, get_architecture
    from eotransfer.models.model import EOClassifier
    from eotransfer.strategies._target import DomainGap, target_labels

    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    split = _split(ds)
    same = Split(split.test, split.val, split.test, {"kind": "test"})  # source training images = target images
    torch.manual_seed(0)
    model = EOClassifier(build_network(get_architecture("resnet10t"), 13, 16), 512, 3, 13)
    gap = DomainGap(open_target_pool(TEST_SIDE, None, ds, split=same), ds, same, model)
    assert gap.values["pad_initial"] == pytest.approx(0.0, abs=1e-9)  # indistinguishable: PAD clipped at 0
    labelled = open_target_pool(str(eurosat_like), "eurosat-ms", ds)
    assert np.array_equal(target_labels(labelled, ds.classes), ds.labels)
    assert target_labels(labelled, list(reversed(ds.classes))) is None  # other classes: no target score
