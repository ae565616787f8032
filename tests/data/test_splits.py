"""Splits: stratified proportions, nested k-shot draws, spatial blocks that never straddle two sides."""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

from eotransfer.data.base import open_dataset
from eotransfer.data.splits import (
    Split,
    block_ids,
    k_per_class_split,
    make_split,
    restrict_to_k_per_class,
    spatial_block_folds,
    spatial_block_split,
    stratified_split,
    utm_zone,
    without_classes,
)
from eotransfer.errors import ConfigError, DataError

LABELS = np.repeat(np.arange(3), [100, 60, 40])


def _check_partition(split: Split, n: int) -> None:
    sides = [split.train, split.val, split.test]
    for a, b in combinations(sides, 2):
        assert not np.intersect1d(a, b).size
    assert np.array_equal(np.sort(np.concatenate(sides)), np.arange(n))


def _sides_by_block(split: Split, blocks: np.ndarray) -> None:
    named = {"train": set(blocks[split.train]), "val": set(blocks[split.val]), "test": set(blocks[split.test])}
    for (na, a), (nb, b) in combinations(named.items(), 2):
        assert not (a & b), f"block(s) {sorted(a & b)} on both the {na} and {nb} sides"


@pytest.fixture(scope="module")
def fixture_lonlat(eurosat_like: Path) -> tuple[np.ndarray, np.ndarray]:
    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    return ds.lonlat(), ds.labels


def _world(n: int = 600, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lonlat = np.column_stack([rng.uniform(-20, 40, n), rng.uniform(-10, 60, n)])
    return lonlat, rng.integers(0, 4, n)


# -- stratified ------------------------------------------------------------------------------
def test_stratified_proportions() -> None:
    s = stratified_split(LABELS, test_fraction=0.3, val_fraction=0.1, seed=0)
    _check_partition(s, len(LABELS))
    assert np.bincount(LABELS[s.test]).tolist() == [30, 18, 12]
    assert np.bincount(LABELS[s.val]).tolist() == [7, 4, 3]  # round(0.1 x 70, 42, 28)
    assert np.bincount(LABELS[s.train]).tolist() == [63, 38, 25]
    assert s.to_dict() == {"n_train": 126, "n_val": 14, "n_test": 60, "kind": "stratified", "seed": 0}


def test_stratified_reproducible_per_seed() -> None:
    a, b, c = (stratified_split(LABELS, seed=s) for s in (4, 4, 5))
    assert all(np.array_equal(x, y) for x, y in zip((a.train, a.val, a.test), (b.train, b.val, b.test), strict=True))
    assert not np.array_equal(a.test, c.test)


def test_stratified_small_classes_keep_one_on_each_side() -> None:
    labels = np.array([0, 0, 1, 1, 1, 2])
    s = stratified_split(labels, test_fraction=0.1, val_fraction=0.0)
    assert np.bincount(labels[s.test], minlength=3).tolist() == [1, 1, 0]  # a singleton class stays in training
    assert len(s.val) == 0


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.2])
def test_stratified_refuses_bad_fraction(fraction: float) -> None:
    with pytest.raises(ConfigError, match="--test-fraction"):
        stratified_split(LABELS, test_fraction=fraction)


# -- k per class ---------------------------------------------------------------------------------
def test_k_per_class_exact_counts() -> None:
    s = k_per_class_split(LABELS, k=5, seed=0, val_per_class=2)
    _check_partition(s, len(LABELS))
    assert np.bincount(LABELS[s.train]).tolist() == [5, 5, 5]
    assert np.bincount(LABELS[s.val]).tolist() == [2, 2, 2]
    assert np.bincount(LABELS[s.test]).tolist() == [93, 53, 33]
    assert s.info == {"kind": "k-per-class", "k": 5, "seed": 0}


def test_k_per_class_reproducible_and_nested() -> None:
    a = k_per_class_split(LABELS, k=5, seed=7, val_per_class=1)
    b = k_per_class_split(LABELS, k=5, seed=7, val_per_class=1)
    big = k_per_class_split(LABELS, k=10, seed=7, val_per_class=1)
    other = k_per_class_split(LABELS, k=5, seed=8, val_per_class=1)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.test, b.test)
    assert np.isin(a.train, big.train).all()  # the 5 shots are among the 10
    assert np.array_equal(a.val, big.val)  # validation does not move with k
    assert not np.array_equal(a.train, other.train)
    for k in (1, 2, 3, 8):
        assert np.isin(k_per_class_split(LABELS, k, seed=3).train, k_per_class_split(LABELS, k + 1, seed=3).train).all()


def test_k_per_class_too_many_shots() -> None:
    labels = np.repeat([0, 1], [30, 12])
    with pytest.raises(DataError) as err:
        k_per_class_split(labels, k=11, val_per_class=1, classes=["forest", "river"])
    msg = str(err.value)
    assert "class 'river' has 12 samples, fewer than the 11 shots + 1 validation + 1 test sample" in msg
    assert "lower --labels-per-class to at most 10" in msg
    k_per_class_split(labels, k=10, val_per_class=1)  # exactly enough
    with pytest.raises(ConfigError, match="must be at least 1"):
        k_per_class_split(labels, k=0)


# -- spatial ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("lon", "lat", "zone"), [(3.0, 45.0, "31N"), (6.0, 45.0, "32N"), (5.999, -1, "31S"),
                                                  (-180.0, 0, "1N"), (179.9, 0, "60N"), (-93.5, 30.9, "15N")])  # fmt: skip
def test_utm_zone(lon: float, lat: float, zone: str) -> None:
    assert utm_zone(lon, lat) == zone


def test_block_ids() -> None:
    ll = np.array([[0.5, 0.5], [0.99, 0.2], [1.01, 0.5], [-0.5, -0.5], [2.4, 0.1]])
    assert block_ids(ll, "lonlat-block", 1.0).tolist() == ["0_0", "0_0", "1_0", "-1_-1", "2_0"]
    assert block_ids(ll, "lonlat-block", 2.0).tolist() == ["0_0", "0_0", "0_0", "-1_-1", "1_0"]
    assert block_ids(ll, "utm-zone").tolist() == ["31N", "31N", "31N", "30S", "31N"]
    with pytest.raises(ConfigError, match="--block-deg"):
        block_ids(ll, "lonlat-block", 0.0)
    ll[1] = np.nan
    with pytest.raises(DataError, match="1 sample\\(s\\) have no known location"):
        block_ids(ll, "utm-zone")


def test_utm_zone_split_on_the_fixture(fixture_lonlat: tuple[np.ndarray, np.ndarray]) -> None:
    lonlat, labels = fixture_lonlat
    zones = block_ids(lonlat, "utm-zone")
    assert sorted(set(zones)) == ["31N", "32N"]
    for seed in range(4):
        s = spatial_block_split(lonlat, labels, "utm-zone", seed=seed)
        _check_partition(s, len(labels))
        assert set(zones[s.test]) in ({"31N"}, {"32N"}) and s.info["test_blocks"] == sorted(set(zones[s.test]))
        assert not set(zones[s.test]) & set(zones[s.train]) and not set(zones[s.test]) & set(zones[s.val])
        assert len(s.val) > 0  # with two zones, validation is carved at random from the training zone


def test_explicit_test_blocks(fixture_lonlat: tuple[np.ndarray, np.ndarray]) -> None:
    lonlat, labels = fixture_lonlat
    s = spatial_block_split(lonlat, labels, "utm-zone", test_blocks=["31N"])
    assert len(s.test) == 18 and set(block_ids(lonlat[s.test], "utm-zone")) == {"31N"}
    with pytest.raises(ConfigError, match="unknown block\\(s\\) 33N; the data have 31N, 32N"):
        spatial_block_split(lonlat, labels, "utm-zone", test_blocks=["33N"])


def test_lonlat_block_split_on_the_fixture(fixture_lonlat: tuple[np.ndarray, np.ndarray]) -> None:
    lonlat, labels = fixture_lonlat
    blocks = block_ids(lonlat, "lonlat-block", 2.0)
    assert 5 <= len(set(blocks)) < 36  # several files per 2-degree block
    for seed in range(5):
        s = spatial_block_split(lonlat, labels, "lonlat-block", block_deg=2.0, seed=seed)
        _check_partition(s, len(labels))
        _sides_by_block(s, blocks)
        assert s.info["test_blocks"] == sorted(set(blocks[s.test]))


@pytest.mark.parametrize(("kind", "deg"), [("lonlat-block", 1.0), ("lonlat-block", 5.0), ("utm-zone", 1.0)])
def test_spatial_split_many_blocks(kind: str, deg: float) -> None:
    lonlat, labels = _world()
    blocks = block_ids(lonlat, kind, deg)
    s = spatial_block_split(lonlat, labels, kind, block_deg=deg, test_fraction=0.3, val_fraction=0.1, seed=2)
    _check_partition(s, len(labels))
    _sides_by_block(s, blocks)
    assert len(s.val) > 0 and s.info["val_blocks"]  # enough blocks: validation is spatial too
    assert 0.3 <= len(s.test) / len(labels) < 0.6


def test_spatial_split_keeps_training_blocks_with_large_val_fraction() -> None:
    lonlat = np.array([[0.5, 0.5]] * 5 + [[1.5, 0.5]] * 5 + [[2.5, 0.5]] * 5 + [[3.5, 0.5]] * 5)
    labels = np.zeros(20, dtype=np.int64)
    s = spatial_block_split(lonlat, labels, "lonlat-block", test_fraction=0.2, val_fraction=0.9, seed=0)
    _check_partition(s, 20)
    assert len(s.test) == 5 and len(s.train) >= 5  # validation never swallows the whole training side


def test_spatial_split_needs_two_blocks() -> None:
    lonlat = np.array([[10.1, 45.1], [10.2, 45.2], [10.3, 45.3]])
    with pytest.raises(DataError, match="all samples fall in one block \\(10_45\\)"):
        spatial_block_split(lonlat, np.zeros(3, dtype=np.int64), "lonlat-block")


@pytest.mark.parametrize("n_folds", [2, 3, 5])
def test_block_cv_folds_partition(n_folds: int) -> None:
    lonlat, _ = _world()
    blocks = block_ids(lonlat, "lonlat-block", 5.0)
    folds = spatial_block_folds(lonlat, n_folds=n_folds, block_deg=5.0, seed=0)
    assert len(folds) == n_folds
    assert np.array_equal(np.sort(np.concatenate(folds)), np.arange(len(lonlat)))
    for a, b in combinations(folds, 2):
        assert not set(blocks[a]) & set(blocks[b])
    sizes = [len(f) for f in folds]
    assert max(sizes) - min(sizes) <= np.unique(blocks, return_counts=True)[1].max()  # greedy balancing
    again = spatial_block_folds(lonlat, n_folds=n_folds, block_deg=5.0, seed=0)
    assert all(np.array_equal(x, y) for x, y in zip(folds, again, strict=True))


def test_block_cv_folds_on_the_fixture(fixture_lonlat: tuple[np.ndarray, np.ndarray]) -> None:
    lonlat, _ = fixture_lonlat
    folds = spatial_block_folds(lonlat, n_folds=2, kind="utm-zone")
    assert sorted(len(f) for f in folds) == [18, 18]
    with pytest.raises(DataError, match="3 folds need at least 3 blocks, the data have 2"):
        spatial_block_folds(lonlat, n_folds=3, kind="utm-zone")


def test_restrict_to_k_per_class(fixture_lonlat: tuple[np.ndarray, np.ndarray]) -> None:
    lonlat, labels = fixture_lonlat
    s = spatial_block_split(lonlat, labels, "utm-zone", test_blocks=["32N"], val_fraction=0.0)
    r = restrict_to_k_per_class(s, labels, k=3, seed=0)
    assert np.isin(r.train, s.train).all()
    assert np.bincount(labels[r.train]).tolist() == [3, 3, 3]
    assert np.array_equal(r.test, s.test) and np.array_equal(r.val, s.val)
    assert r.info["k"] == 3 and r.info["test_blocks"] == ["32N"]
    # the training samples left out keep their images on the unlabelled side, never the test's or val's
    assert np.array_equal(np.sort(np.concatenate([r.train, r.unlabelled])), np.sort(s.train))
    assert len(r.unlabelled) == len(s.train) - 9 and not len(s.unlabelled)
    # restricting again moves the newly dropped samples there too
    again = restrict_to_k_per_class(r, labels, k=1, seed=0)
    assert np.array_equal(np.sort(np.concatenate([again.train, again.unlabelled])), np.sort(s.train))


def test_make_split_dispatch(fixture_lonlat: tuple[np.ndarray, np.ndarray]) -> None:
    lonlat, labels = fixture_lonlat
    assert make_split("k-per-class", labels, k=2).info["kind"] == "k-per-class"
    assert make_split("utm-zone", labels, lonlat, test_blocks=["32N"]).info["test_blocks"] == ["32N"]
    assert np.array_equal(make_split("stratified", labels, seed=3).test, stratified_split(labels, seed=3).test)
    with pytest.raises(ConfigError, match="--split: unknown split 'random'"):
        make_split("random", labels)


def test_restrict_to_k_per_class_uses_every_training_sample_it_may() -> None:
    """On a spatial split, k shots need only k training samples per class (no test sample is carved there)."""
    from eotransfer.data.splits import Split, restrict_to_k_per_class

    labels = np.array([0, 0, 0, 1, 1, 1, 0, 1])
    split = Split(np.array([0, 1, 3, 4]), np.zeros(0, dtype=np.int64), np.array([2, 5, 6, 7]))
    sub = restrict_to_k_per_class(split, labels, 2, seed=0)
    assert sorted(sub.train.tolist()) == [0, 1, 3, 4] and sub.test.tolist() == [2, 5, 6, 7]
    with pytest.raises(DataError, match="on the training side of the split"):
        restrict_to_k_per_class(split, labels, 3, seed=0)


@pytest.mark.parametrize(("side", "expected"), [("east", ["3_0", "2_0"]), ("west", ["0_0", "1_0"])])
def test_east_west_test_blocks(side: str, expected: list[str]) -> None:
    # four 1-degree blocks along the equator, 5 samples each: 40 % of the samples = the two edge blocks
    lonlat = np.array([[0.5 + b, 0.5] for b in range(4) for _ in range(5)])
    labels = np.tile(np.arange(5), 4)
    s = spatial_block_split(lonlat, labels, "lonlat-block", test_fraction=0.4, val_fraction=0.0, seed=0,
                            test_blocks=[side])  # fmt: skip
    assert s.info["test_blocks"] == sorted(expected)
    lon_test, lon_train = lonlat[s.test, 0], lonlat[s.train, 0]
    assert (lon_test.min() > lon_train.max()) if side == "east" else (lon_test.max() < lon_train.min())


def test_east_west_keeps_a_training_block_and_needs_locations() -> None:
    lonlat = np.array([[0.5, 0.5]] * 3 + [[1.5, 0.5]] * 3)
    s = spatial_block_split(lonlat, np.zeros(6, dtype=np.int64), "lonlat-block", test_fraction=0.99,
                            val_fraction=0.0, test_blocks=["east"])  # fmt: skip
    assert s.info["test_blocks"] == ["1_0"] and len(s.train) == 3
    with pytest.raises(ConfigError, match="--test-blocks east: needs the samples' locations"):
        make_split("group", np.zeros(6, dtype=np.int64), groups=np.array(list("aaabbb")), test_blocks=["east"])


def test_without_classes_unlabels_the_held_out_classes_on_the_training_side_only() -> None:
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])
    split = Split(np.array([0, 1, 2, 3, 4, 5]), np.array([6, 7, 8]), np.array([9, 10, 11]), {"k": 2}, np.array([5]))
    out = without_classes(split, labels, [2], ["a", "b", "c"])
    assert out.train.tolist() == [0, 1, 3, 4] and out.val.tolist() == [6, 7]
    assert out.test.tolist() == [9, 10, 11]  # every class is scored
    assert out.unlabelled.tolist() == [2, 5, 8]  # images kept, labels unused (5 was already there)
    assert out.info == {"k": 2, "unseen_classes": ["c"]}
    with pytest.raises(DataError, match="at least one class must keep its labels"):
        without_classes(split, labels, [0, 1, 2])
    with pytest.raises(DataError, match="no labelled training sample is left"):
        without_classes(Split(np.array([2, 5]), np.array([6]), np.array([9])), labels, [2])
