"""Train/validation/test splits: stratified, k labelled samples per class, and spatial.

Spatial splits keep every location on one side only, because neighbouring EO patches are
correlated and random splits overstate accuracy (Roberts et al. 2017, "Cross-validation strategies
for data with temporal, spatial, hierarchical, or phylogenetic structure", Ecography; Ploton et
al. 2020, Nature Communications).  Blocks are longitude/latitude cells or UTM zones; a block goes
whole to one side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from eotransfer.errors import ConfigError, DataError

SPLIT_KINDS = ("stratified", "k-per-class", "utm-zone", "lonlat-block", "group")
#: splits whose test samples come from places (or events) no training sample comes from
GEOGRAPHIC_SPLITS = ("utm-zone", "lonlat-block", "group")


@dataclass
class Split:
    """Indices of the training, validation and test samples, and how they were drawn.

    ``unlabelled``: training-side samples whose labels a k-per-class restriction set aside
    (:func:`restrict_to_k_per_class`); their images may still be used without labels (``distill
    --unlabelled @unlabelled``).  Empty for every other split.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    unlabelled: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def to_dict(self) -> dict[str, Any]:
        return {"n_train": len(self.train), "n_val": len(self.val), "n_test": len(self.test), **self.info}


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed))


def _carve_val(
    train: np.ndarray, labels: np.ndarray, val_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Take a stratified validation fraction out of ``train`` (at least one per class with ≥ 2 samples)."""
    if val_fraction <= 0:
        return np.sort(train), np.zeros(0, dtype=np.int64)
    val: list[int] = []
    keep: list[int] = []
    for c in np.unique(labels[train]):
        idx = rng.permutation(train[labels[train] == c])
        n_val = int(round(len(idx) * val_fraction))
        n_val = min(max(n_val, 1), len(idx) - 1) if len(idx) >= 2 else 0
        val.extend(idx[:n_val])
        keep.extend(idx[n_val:])
    return np.sort(np.asarray(keep, dtype=np.int64)), np.sort(np.asarray(val, dtype=np.int64))


def stratified_split(labels: np.ndarray, test_fraction: float = 0.3, val_fraction: float = 0.1, seed: int = 0) -> Split:
    """Random split with every class in the same proportion on each side."""
    if not 0 < test_fraction < 1:
        raise ConfigError(f"--test-fraction: {test_fraction} must lie strictly between 0 and 1")
    rng = _rng(seed)
    train: list[int] = []
    test: list[int] = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = min(max(int(round(len(idx) * test_fraction)), 1), len(idx) - 1) if len(idx) > 1 else 0
        test.extend(idx[:n_test])
        train.extend(idx[n_test:])
    tr, va = _carve_val(np.asarray(train, dtype=np.int64), labels, val_fraction, rng)
    return Split(tr, va, np.sort(np.asarray(test, dtype=np.int64)), {"kind": "stratified", "seed": seed})


def k_per_class_split(
    labels: np.ndarray,
    k: int,
    seed: int = 0,
    val_per_class: int = 0,
    classes: list[str] | None = None,
    min_test: int = 1,
) -> Split:
    """``k`` labelled samples per class for training (and ``val_per_class`` for validation); the rest is test.

    Reproducible: the same seed gives the same samples, and the k-sample set for a larger ``k``
    contains the one for a smaller ``k`` (nested draws, as label-efficiency curves need).
    """
    if k < 1:
        raise ConfigError(f"--labels-per-class: {k} must be at least 1")
    rng = _rng(seed)
    train: list[int] = []
    val: list[int] = []
    test: list[int] = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        need = k + val_per_class + min_test
        if len(idx) < need:
            name = classes[c] if classes else str(c)
            where = "" if min_test else " on the training side of the split"
            raise DataError(
                f"--labels-per-class: class '{name}' has {len(idx)} samples{where}, fewer than the {k} shots"
                f"{f' + {val_per_class} validation' if val_per_class else ''}"
                f"{f' + {min_test} test sample' if min_test else ''} asked for; "
                f"lower --labels-per-class to at most {max(len(idx) - val_per_class - min_test, 0)}"
            )
        val.extend(idx[:val_per_class])
        train.extend(idx[val_per_class : val_per_class + k])
        test.extend(idx[val_per_class + k :])
    tr, va, te = (np.sort(np.asarray(a, dtype=np.int64)) for a in (train, val, test))
    return Split(tr, va, te, {"kind": "k-per-class", "k": k, "seed": seed})


def utm_zone(lon: float, lat: float) -> str:
    """UTM zone label of a point, e.g. ``'32N'``."""
    zone = int((lon + 180) // 6) % 60 + 1
    return f"{zone}{'N' if lat >= 0 else 'S'}"


def block_ids(lonlat: np.ndarray, kind: str, block_deg: float = 1.0) -> np.ndarray:
    """A block label per sample: its UTM zone, or its ``block_deg`` lon/lat cell."""
    if np.isnan(lonlat).any():
        n = int(np.isnan(lonlat).any(axis=1).sum())
        raise DataError(
            f"--split {kind}: {n} sample(s) have no known location (no CRS in the file, no lon_lat in "
            "the name); use --split stratified or k-per-class for this data set"
        )
    if kind == "utm-zone":
        return np.array([utm_zone(lo, la) for lo, la in lonlat])
    if block_deg <= 0:
        raise ConfigError(f"--block-deg: {block_deg} must be positive")
    cells = np.floor(lonlat / block_deg).astype(np.int64)
    return np.array([f"{a}_{b}" for a, b in cells])


def spatial_block_split(
    lonlat: np.ndarray,
    labels: np.ndarray,
    kind: str = "lonlat-block",
    block_deg: float = 1.0,
    test_fraction: float = 0.3,
    val_fraction: float = 0.1,
    seed: int = 0,
    test_blocks: list[str] | None = None,
    blocks: np.ndarray | None = None,
) -> Split:
    """Whole blocks (UTM zones or lon/lat cells) go to the test side until ``test_fraction`` is reached.

    ``test_blocks`` names the test blocks explicitly (e.g. ``['31N']``), or is ``['east']`` /
    ``['west']``: the easternmost (westernmost) blocks by their samples' mean longitude, until
    ``test_fraction`` is reached, so that a model is scored on a region beyond the one it learnt
    from (geographic extrapolation rather than interpolation).  The validation set is
    also made of whole blocks when there are enough, so early stopping does not leak either.
    ``blocks`` gives the block of each sample directly (``--split group``: xBD events, the
    polygon a raster-vector patch came from), in which case ``lonlat`` is ignored.
    """
    blocks = np.asarray(blocks).astype(str) if blocks is not None else block_ids(lonlat, kind, block_deg)
    unique = np.unique(blocks)
    if len(unique) < 2:
        raise DataError(
            f"--split {kind}: all samples fall in one block ({unique[0]}); use a smaller --block-deg or another split"
        )
    rng = _rng(seed)
    if test_blocks is not None and len(test_blocks) == 1 and test_blocks[0] in ("east", "west"):
        test_blocks = _edge_blocks(lonlat, blocks, unique, test_blocks[0], test_fraction, kind)
    if test_blocks is not None:
        unknown = sorted(set(test_blocks) - set(unique))
        if unknown:
            raise ConfigError(
                f"--test-blocks: unknown block(s) {', '.join(unknown)}; the data have {', '.join(unique)}"
            )
        chosen = set(test_blocks)
    else:
        chosen = set()
        for b in rng.permutation(unique):
            if np.isin(blocks, list(chosen)).mean() >= test_fraction:
                break
            if len(chosen) < len(unique) - 1:
                chosen.add(str(b))
    is_test = np.isin(blocks, list(chosen))
    rest_blocks = [b for b in rng.permutation(unique) if b not in chosen]
    val_blocks: set[str] = set()
    if val_fraction > 0 and len(rest_blocks) >= 3:
        for b in rest_blocks:
            if np.isin(blocks, list(val_blocks)).sum() >= val_fraction * (~is_test).sum():
                break
            if len(val_blocks) >= len(rest_blocks) - 1:
                break  # keep at least one block for training, whatever the validation fraction
            val_blocks.add(str(b))
    is_val = np.isin(blocks, list(val_blocks))
    train = np.flatnonzero(~is_test & ~is_val)
    val = np.flatnonzero(is_val)
    if len(val) == 0 and val_fraction > 0:
        train, val = _carve_val(train, labels, val_fraction, rng)  # too few blocks: random validation
    info = {
        "kind": kind,
        "seed": seed,
        "block_deg": block_deg,
        "test_blocks": sorted(chosen),
        "val_blocks": sorted(val_blocks),
    }
    return Split(train, val, np.flatnonzero(is_test), info)


def _edge_blocks(
    lonlat: np.ndarray, blocks: np.ndarray, unique: np.ndarray, side: str, test_fraction: float, kind: str
) -> list[str]:
    """The blocks at the ``side`` ('east'/'west') edge, by mean longitude, holding ``test_fraction`` of the samples."""
    if kind == "group" or np.isnan(lonlat).any():
        raise ConfigError(
            f"--test-blocks {side}: needs the samples' locations (--split utm-zone or lonlat-block); name the "
            "test groups instead (e.g. --test-blocks guatemala-volcano)"
        )
    mean_lon = np.array([lonlat[blocks == b, 0].mean() for b in unique])
    order = np.argsort(-mean_lon if side == "east" else mean_lon, kind="stable")
    chosen: list[str] = []
    for i in order[: len(unique) - 1]:  # at least one block stays for training
        chosen.append(str(unique[i]))
        if np.isin(blocks, chosen).mean() >= test_fraction:
            break
    return chosen


def spatial_block_folds(
    lonlat: np.ndarray, n_folds: int = 5, block_deg: float = 1.0, kind: str = "lonlat-block", seed: int = 0
) -> list[np.ndarray]:
    """Spatial block cross-validation: the test indices of each fold, blocks assigned round-robin by size."""
    blocks = block_ids(lonlat, kind, block_deg)
    unique, counts = np.unique(blocks, return_counts=True)
    if len(unique) < n_folds:
        raise DataError(f"--folds: {n_folds} folds need at least {n_folds} blocks, the data have {len(unique)}")
    rng = _rng(seed)
    order = rng.permutation(len(unique))
    order = order[np.argsort(-counts[order], kind="stable")]
    sizes = np.zeros(n_folds, dtype=np.int64)
    fold_of: dict[str, int] = {}
    for i in order:
        f = int(np.argmin(sizes))
        fold_of[str(unique[i])] = f
        sizes[f] += counts[i]
    fold = np.array([fold_of[str(b)] for b in blocks])
    return [np.flatnonzero(fold == f) for f in range(n_folds)]


def make_split(kind: str, labels: np.ndarray, lonlat: np.ndarray | None = None, seed: int = 0, **kw: Any) -> Split:
    """Dispatch by name (the ``--split`` option)."""
    if kind == "stratified":
        return stratified_split(labels, kw.get("test_fraction", 0.3), kw.get("val_fraction", 0.1), seed)
    if kind == "k-per-class":
        return k_per_class_split(labels, int(kw["k"]), seed, kw.get("val_per_class", 0), kw.get("classes"))
    if kind in ("utm-zone", "lonlat-block"):
        assert lonlat is not None
        return spatial_block_split(
            lonlat, labels, kind, kw.get("block_deg", 1.0), kw.get("test_fraction", 0.3),
            kw.get("val_fraction", 0.1), seed, kw.get("test_blocks"),
        )  # fmt: skip
    if kind == "group":
        if kw.get("groups") is None:
            raise ConfigError("--split group: this data set has no groups (xBD events or raster-vector polygons)")
        return spatial_block_split(
            np.zeros((len(labels), 2)), labels, kind, 1.0, kw.get("test_fraction", 0.3), kw.get("val_fraction", 0.1),
            seed, kw.get("test_blocks"), blocks=np.asarray(kw["groups"]),
        )  # fmt: skip
    raise ConfigError(f"--split: unknown split '{kind}'; choose one of {', '.join(SPLIT_KINDS)}")


def restrict_to_k_per_class(
    split: Split, labels: np.ndarray, k: int, seed: int = 0, classes: list[str] | None = None
) -> Split:
    """Keep ``k`` labelled training samples per class of a (spatial) split; validation and test unchanged.

    The training samples left out go to the split's ``unlabelled`` side: their images, never their labels.
    """
    if not len(split.train):
        raise DataError("the training side of the split is empty; use a smaller --test-fraction")
    absent = sorted(set(np.unique(labels)) - set(np.unique(labels[split.train])))
    if absent:
        import warnings

        names = [classes[c] if classes else str(c) for c in absent]
        warnings.warn(f"class(es) {', '.join(names)} have no sample on the training side of the split", stacklevel=2)
    sub = k_per_class_split(labels[split.train], k, seed, 0, classes, min_test=0)
    train = split.train[np.concatenate([sub.train])]
    unlabelled = np.union1d(np.setdiff1d(split.train, train), split.unlabelled).astype(np.int64)
    return Split(np.sort(train), split.val, split.test, {**split.info, "k": k}, unlabelled)


def without_classes(split: Split, labels: np.ndarray, held_out: list[int], classes: list[str] | None = None) -> Split:
    """``split`` with the training and validation samples of the classes ``held_out`` moved to its unlabelled side.

    Their images stay usable without labels; the test side keeps them: the protocol of generalised
    zero-shot learning (Xian et al. 2018, "Zero-Shot Learning — A Comprehensive Evaluation of the Good,
    the Bad and the Ugly", TPAMI), where unseen classes have no labelled sample in training and
    every class is scored at test time.
    """
    labels = np.asarray(labels)
    gone = np.asarray(sorted(set(held_out)), dtype=np.int64)
    if len(gone) >= len(np.unique(labels)):
        raise DataError("unseen classes: at least one class must keep its labels")
    keep_train, keep_val = ~np.isin(labels[split.train], gone), ~np.isin(labels[split.val], gone)
    if not keep_train.any():
        raise DataError("unseen classes: no labelled training sample is left; hold out fewer classes")
    moved = np.concatenate([split.train[~keep_train], split.val[~keep_val]])
    unlabelled = np.union1d(split.unlabelled, moved).astype(np.int64)
    names = [classes[c] if classes else str(c) for c in gone]
    return Split(split.train[keep_train], split.val[keep_val], split.test, {**split.info, "unseen_classes": names},
                 unlabelled)  # fmt: skip
