"""Integration on the real data in ../shared/data (EuroSAT-MS, Hurricane Harvey); skipped where it is absent."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import eotransfer
from eotransfer.bands import BandSet
from eotransfer.card import SavedModel, load_model, save_model
from eotransfer.data.base import EODataset, Subset, open_dataset
from eotransfer.data.splits import block_ids, spatial_block_split

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EUROSAT = SHARED_DATA / "eurosat-ms"
HARVEY = SHARED_DATA / "hurricane-harvey"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not EUROSAT.is_dir() or not HARVEY.is_dir(), reason=f"no shared data at {SHARED_DATA}"),
]


@pytest.fixture(scope="module")
def eurosat() -> EODataset:
    return open_dataset(EUROSAT, bands="eurosat-ms")


def test_eurosat_copy_is_intact() -> None:
    sums = {}
    for line in (SHARED_DATA / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        if name.startswith("./eurosat-ms/"):
            sums[name[2:]] = digest
    assert len(sums) == 206
    bad = [n for n, d in sums.items() if hashlib.sha256((SHARED_DATA / n).read_bytes()).hexdigest() != d]
    assert not bad, f"damaged copy of {bad[:3]}"


def test_eurosat_ms_loads(eurosat: EODataset) -> None:
    assert len(eurosat) == 206
    assert len(eurosat.classes) == 10 and eurosat.classes[0] == "AnnualCrop" and eurosat.classes[-1] == "SeaLake"
    assert eurosat.bands == BandSet.parse("eurosat-ms") and len(eurosat.bands) == 13
    sample = eurosat[0]
    assert tuple(sample["image"].shape) == (13, 64, 64)
    assert sum(eurosat.class_counts().values()) == 206 and min(eurosat.class_counts().values()) >= 15
    crs = {loc.crs for loc in eurosat.locations}
    assert len(crs) > 2 and all(c.startswith("EPSG:326") for c in crs)


def test_eurosat_utm_zone_split(eurosat: EODataset) -> None:
    lonlat = eurosat.lonlat()
    zones = block_ids(lonlat, "utm-zone")
    # the zone of each patch's centre mostly agrees with its file's CRS (EPSG:326zz); Sentinel-2 tiles reach
    # past their zone's edge, so a few do not
    agree = np.mean([z == loc.crs[-2:] + "N" for z, loc in zip(zones, eurosat.locations, strict=True)])
    assert agree > 0.85
    split = spatial_block_split(lonlat, eurosat.labels, "utm-zone", test_fraction=0.3, seed=0)
    sides = {"train": split.train, "val": split.val, "test": split.test}
    assert len(split.train) and len(split.test)
    assert not set(zones[split.train]) & set(zones[split.test])
    assert not set(zones[split.val]) & set(zones[split.test])
    files = {k: {eurosat.sources[i] for i in v} for k, v in sides.items()}
    assert not files["train"] & files["test"] and not files["val"] & files["test"] and not files["train"] & files["val"]
    assert sum(len(v) for v in files.values()) == 206


def test_eurosat_few_shot_fit_and_round_trip(eurosat: EODataset, tmp_path: Path) -> None:
    # without out=: the loop would checkpoint the whole network after each of the 50 cheap head epochs (~8 s);
    # tests/test_card.py covers fit(out=...), here the model is saved as fit saves it
    result: Any = eotransfer.fit(
        eurosat, strategy="linear-probe", backbone="resnet18", labels_per_class=5, epochs=50, seed=0,
        accelerator="cpu", progress=False, verbose=False,
    )  # fmt: skip
    out = save_model(tmp_path / "eurosat", result.model, result.card)
    assert np.bincount(eurosat.labels[result.split.train]).tolist() == [5] * 10
    acc = result.metrics["test"]["overall_accuracy"]
    assert acc > 0.15, f"test accuracy {acc:.3f} is not above chance (0.10)"
    test = Subset(eurosat, result.split.test)
    images = np.stack([test[i]["image"].numpy() for i in range(len(test))])
    probs = load_model(out).predict_proba(images)
    in_memory = SavedModel(result.model.cpu(), result.card, out).predict_proba(images)  # same batching
    assert np.array_equal(probs, in_memory)
    assert float((probs.argmax(1) == test.labels).mean()) == pytest.approx(acc)


def test_harvey_lonlat_block_split() -> None:
    ds = open_dataset(HARVEY)
    assert ds.classes == ["damage", "no_damage"] and ds.bands == BandSet.parse("rgb")
    assert len(ds) == 19_237
    rng = np.random.default_rng(0)
    subset = np.sort(rng.choice(len(ds), 300, replace=False))
    lonlat = ds.lonlat()[subset]
    assert not np.isnan(lonlat).any()
    assert (lonlat[:, 0] > -100).all() and (lonlat[:, 0] < -90).all() and (lonlat[:, 1] > 25).all()  # Texas
    blocks = block_ids(lonlat, "lonlat-block", 0.1)
    assert len(set(blocks)) >= 5
    split = spatial_block_split(lonlat, ds.labels[subset], "lonlat-block", block_deg=0.1, seed=0)
    assert len(split.train) and len(split.test)
    assert not set(blocks[split.train]) & set(blocks[split.test])
    assert not set(blocks[split.val]) & set(blocks[split.test])
    assert not set(blocks[split.train]) & set(blocks[split.val]) or not split.info["val_blocks"]
    sample = Subset(ds, subset)[0]
    assert tuple(sample["image"].shape) == (3, 128, 128)
