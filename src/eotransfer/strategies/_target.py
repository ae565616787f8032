"""Unlabelled target-domain imagery for domain-adaptation strategies (``coral``, ``mmd``, …).

:func:`open_target_pool` opens the target data (data sets, folders or rasters, labels ignored) as a
:class:`~eotransfer.data.pool.PatchPool` in the training data's bands; :func:`target_batch` draws a
batch of it from the epoch's seeded generator, at the source images' size, so that source and target
go through the backbone in one forward pass (:func:`logits_and_features`).  The same pattern as
``distill --unlabelled``.

Target data sets that carry labels (class folders, say) are accepted: the methods are unsupervised,
so the labels are ignored, and :func:`open_target_pool` says so once.  Score the adapted model on
the labelled target with ``eotransfer evaluate``.

``--target @test`` names the images of the fit's own test side (for instance the eastern blocks of
``--split lonlat-block --test-blocks east``), labels unused: the transductive protocol of Ganin et
al. 2016, where the unlabelled target images seen in training are the ones scored.  It lets a
benchmark grid with a spatial split score every adaptation method on places no label came from.
A single large raster as target gives many random windows (:data:`RASTER_TARGET_WINDOWS`), not one.

``@unlabelled`` names the training side's images whose labels a k-per-class restriction set aside
(``--labels-per-class`` on a spatial split, or a benchmark grid's k): the unlabelled imagery a user
with few labels usually holds, from the training places.  ``distill --unlabelled @unlabelled`` uses
it as the transfer set; where no label was set aside (every label used) it holds no image, and
:func:`open_target_pool` says so and leaves it out (``allow_empty``) or refuses.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from eotransfer.data.base import EODataset
from eotransfer.errors import BandError, ConfigError, DataError, EOTransferError

#: ``--target`` value naming the fit's own test-side images (labels unused; transductive adaptation)
TEST_SIDE = "@test"
#: value naming the training side's images whose labels were set aside (``Split.unlabelled``)
UNLABELLED_SIDE = "@unlabelled"
#: value naming the labelled training images themselves, their labels unused (with ``@unlabelled``: the whole
#: training side, an inductive pool that holds every class in the proportions the training region has)
TRAIN_SIDE = "@train"
#: random windows drawn from a target that holds a single raster scene (one window per sample otherwise)
RASTER_TARGET_WINDOWS = 2048


class HeldOutImages(EODataset):
    """Images of a data set, with their labels hidden: its test side (``--target @test``) or its
    training side's unlabelled samples (``@unlabelled``)."""

    format_name = "test-side"

    def __init__(self, dataset: EODataset, indices: np.ndarray, side: str = TEST_SIDE) -> None:
        super().__init__("mask")
        self.dataset, self.indices = dataset, np.asarray(indices, dtype=np.int64)
        self.bands = dataset.bands
        self.classes = ["unlabelled"]
        self.labels = np.zeros(len(self.indices), dtype=np.int64)
        self.sources = [dataset.sources[int(i)] for i in self.indices]
        self.locations = [dataset.locations[int(i)] for i in self.indices] if dataset.locations else []
        what = {TEST_SIDE: "the test side's images", TRAIN_SIDE: "the labelled training images, labels unused"}.get(
            side, "the training side's images without their labels"
        )
        self.root = Path(f"{dataset.root} ({side}: {what})")

    def read(self, index: int) -> np.ndarray:
        return self.dataset.checked_read(int(self.indices[index]))


def open_target_pool(paths: str, bands: str | None, dataset: Any, option: str = "--target", split: Any = None,
                     allow_empty: bool = False, use: str = "unsupervised domain adaptation") -> Any:  # fmt: skip
    """A :class:`~eotransfer.data.pool.PatchPool` of ``paths`` (comma-separated) in ``dataset``'s bands.

    Patches are cut at the training images' size; target images smaller than that are taken whole
    (and resized by :func:`target_batch`).  :data:`TEST_SIDE` stands for ``split``'s test-side
    images, :data:`UNLABELLED_SIDE` for its unlabelled training-side images, :data:`TRAIN_SIDE` for its labelled
    training images without their labels; an empty
    :data:`UNLABELLED_SIDE` is left out with a note, and with ``allow_empty`` a pool left with no
    source is None.  Errors name ``option`` and its ``-bands`` companion; ``use`` says what sees only
    the images.
    """
    from eotransfer.data.pool import PatchPool, RasterFile, open_pool_source

    bands_option = f"{option}-bands"
    names = [x.strip() for x in paths.split(",") if x.strip()]
    if not names:
        raise ConfigError(
            f"{option}: the unlabelled target-domain imagery is required; pass data sets, folders or rasters "
            "(comma-separated)"
        )
    h, w = dataset.checked_read(0).shape[-2:]
    sources: list[EODataset] = []
    opened: list[str] = []  # the names of ``sources``
    what = "target" if option == "--target" else "unlabelled"
    for path in names:
        if path == TEST_SIDE:
            test = np.zeros(0, np.int64) if split is None else np.asarray(split.test)
            if not len(test):
                raise ConfigError(
                    f"{option} {TEST_SIDE}: this fit has no test side to adapt to; use a split with a test side "
                    "(e.g. --split lonlat-block --test-blocks east) or pass the target imagery's path"
                )
            sources.append(HeldOutImages(dataset, test))
            opened.append(path)
            continue
        if path == TRAIN_SIDE:
            train = np.zeros(0, np.int64) if split is None else np.asarray(split.train)
            if not len(train):
                raise ConfigError(f"{option} {TRAIN_SIDE}: this fit has no training split to take images from")
            sources.append(HeldOutImages(dataset, train, TRAIN_SIDE))
            opened.append(path)
            continue
        if path == UNLABELLED_SIDE:
            spare = np.zeros(0, np.int64) if split is None else np.asarray(split.unlabelled)
            if len(spare):
                sources.append(HeldOutImages(dataset, spare, UNLABELLED_SIDE))
                opened.append(path)
            else:
                print(f"note: {option} {UNLABELLED_SIDE}: no training-side image is without its label (every label "
                      "is used); left out", file=sys.stderr)  # fmt: skip
            continue
        try:
            sources.append(open_pool_source(path, bands=bands))
            opened.append(path)
        except EOTransferError as e:
            where = "" if path in str(e) else f"{path}: "
            hint = f"; declare the {what} files' bands with {bands_option}" if "--bands" in str(e) else ""
            raise ConfigError(f"{option}: {where}{e}{hint}") from e
    if not sources:
        if allow_empty:
            return None
        raise ConfigError(
            f"{option} {UNLABELLED_SIDE}: this fit sets no training label aside; restrict the labels "
            "(--labels-per-class on a spatial split) or pass the unlabelled imagery's path"
        )
    labelled = [f"{path} ({len(src.classes)} classes)" for path, src in zip(opened, sources, strict=True)
                if list(src.classes) != ["unlabelled"] and len(src)]  # fmt: skip
    scenes = any(isinstance(src, RasterFile) for src in sources)
    windows = max(RASTER_TARGET_WINDOWS, sum(len(src) for src in sources)) if scenes else 0
    if labelled:
        print(
            f"note: {option}: the labels of {', '.join(labelled)} are ignored ({use} sees only their images); "
            "score the model on them with `eotransfer evaluate`",
            file=sys.stderr,
        )
    try:
        smallest = min(min(src.read(0).shape[-2:]) for src in sources if len(src))
    except ValueError:
        raise DataError(f"{option}: {paths} holds no images") from None
    try:
        pool = PatchPool(sources, min(h, w, smallest), patches=windows, bands=dataset.bands)
    except BandError as e:
        raise BandError(
            f"{option}: cannot map its bands to the data's ({dataset.bands.describe()}): {e}; "
            f"pass {bands_option} to declare the files' bands, or imagery of the same sensor"
        ) from e
    except EOTransferError as e:
        raise DataError(f"{option}: {e}") from e
    return pool


def target_batch(pool: Any, n: int, like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """``n`` patches of ``pool`` drawn with ``gen``, on ``like``'s device and dtype and at its H×W."""
    picks = torch.randint(0, len(pool), (n,), generator=gen, device=gen.device).tolist()
    batch = torch.stack([torch.from_numpy(pool.read(i)) for i in picks])
    if batch.shape[-2:] != like.shape[-2:]:  # nearest keeps masked (NaN) pixels from spreading
        batch = nn.functional.interpolate(batch, size=like.shape[-2:], mode="nearest")
    return batch.to(device=like.device, dtype=like.dtype)


def pool_batches(pool: Any, batch_size: int, like: torch.Tensor, limit: int = 4096,
                 indices: Any = None) -> Iterator[torch.Tensor]:  # fmt: skip
    """The pool's patches ``indices`` (default: its first ``limit``, in order), ``batch_size`` at a time, at
    ``like``'s H×W, device and dtype."""
    picks = list(range(min(len(pool), limit))) if indices is None else [int(i) for i in indices]
    for start in range(0, len(picks), batch_size):
        batch = torch.stack([torch.from_numpy(pool.read(i)) for i in picks[start : start + batch_size]])
        if batch.shape[-2:] != like.shape[-2:]:
            batch = nn.functional.interpolate(batch, size=like.shape[-2:], mode="nearest")
        yield batch.to(device=like.device, dtype=like.dtype)


def adapt_batchnorm(model: nn.Module, pool: Any, like: torch.Tensor, batch_size: int, name: str) -> int:
    """AdaBN (:func:`eotransfer.models.batchnorm.reestimate_batchnorm`) on the target pool; says what it did."""
    from eotransfer.models.batchnorm import batchnorm_layers, reestimate_batchnorm

    seen = reestimate_batchnorm(model, pool_batches(pool, max(2, batch_size), like))
    if batchnorm_layers(model) and not seen:
        print(f"note: {name}: the target gave no batch of 2 or more images; BatchNorm statistics left as trained",
              file=sys.stderr)  # fmt: skip
    return seen


def logits_and_features(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits and the backbone features of ``images`` from one forward pass.

    The features are the head's input, caught by a forward hook, so the call goes through the
    model's own ``forward`` (and through the wrappers of a distributed run).
    """
    caught: list[torch.Tensor] = []
    head: nn.Module = model.head  # type: ignore[assignment]
    handle = head.register_forward_hook(lambda _m, args, _out: caught.append(args[0]))
    try:
        logits = model(images)
    finally:
        handle.remove()
    if len(caught) != 1:
        raise RuntimeError(f"logits_and_features: the head ran {len(caught)} times in one forward; expected once")
    return logits, caught[0]


#: at most this many source-training and target images feed a fit's proxy A-distance
DOMAIN_GAP_SAMPLES = 500


def target_labels(pool: Any, classes: list[str]) -> np.ndarray | None:
    """The true class of every pool patch, for scoring only, or None when a target source has no such labels.

    ``@test`` images carry their data set's labels; a labelled target data set counts when its classes
    are the training classes (in the same order); a raster or an unlabelled folder makes it None.
    """
    out = np.full(len(pool), -1, dtype=np.int64)
    for k, src in enumerate(pool.sources):
        where = pool.which == k
        if isinstance(src, HeldOutImages):
            out[where] = src.dataset.labels[src.indices[pool.sample[where]]]
        elif list(src.classes) == list(classes):
            out[where] = src.labels[pool.sample[where]]
        else:
            return None
    return out


def target_accuracy(model: nn.Module, pool: Any, labels: np.ndarray, like: torch.Tensor, batch_size: int) -> float:
    """Overall accuracy of ``model`` on the pool's first :func:`pool_batches` patches against ``labels``."""
    was_training = model.training
    model.eval()
    preds = []
    with torch.no_grad():
        for batch in pool_batches(pool, batch_size, like):
            preds.append(model(batch).argmax(1).cpu().numpy())
    model.train(was_training)
    pred = np.concatenate(preds) if preds else np.zeros(0, np.int64)
    return float((pred == labels[: len(pred)]).mean()) if len(pred) else float("nan")


class DomainGap:
    """The domain gap a fit's adaptation leaves, for the card: the proxy A-distance between the source
    training images' and the target images' backbone features (Ben-David et al. 2007; Ganin et al. 2016
    report it before and after adaptation) for the initial network and for the adapted one, and the
    accuracy on the target where its labels are known (``@test``, or a target data set with the training
    classes; used for this score only).  ``snapshot`` records an intermediate model (before AdaBN)."""

    def __init__(self, pool: Any, dataset: Any, split: Any, model: nn.Module | None, seed: int = 0) -> None:
        from eotransfer.data.base import Subset
        from eotransfer.evaluation.domain import sample_indices

        self.pool, self.seed = pool, seed
        train = np.asarray(split.train) if split is not None else np.arange(len(dataset))
        self.source = Subset(dataset, train[sample_indices(len(train), DOMAIN_GAP_SAMPLES, seed)])
        self.target_idx = sample_indices(len(pool), DOMAIN_GAP_SAMPLES, seed + 1)
        self.labels = target_labels(pool, list(dataset.classes))
        self.size = tuple(dataset.checked_read(int(train[0])).shape[-2:])  # target images are scored at this size
        self.values: dict[str, float] = {}
        if model is not None:
            self.values["pad_initial"] = self.pad(model)

    def pad(self, model: nn.Module) -> float:
        from eotransfer.evaluation.domain import backbone_features, proxy_a_distance

        was_training = model.training
        fs = backbone_features(model, self.source, np.arange(len(self.source)))
        like = torch.zeros(1, 1, *self.size, device=next(model.parameters()).device)
        feats = []
        with torch.no_grad():  # as in training: target patches at the source images' size
            for batch in pool_batches(self.pool, 128, like, indices=self.target_idx):
                feats.append(model.features(batch).float().cpu().numpy())  # type: ignore[operator]
        model.train(was_training)
        return proxy_a_distance(fs, np.concatenate(feats), self.seed)

    def snapshot(self, model: nn.Module, like: torch.Tensor, batch_size: int, name: str) -> None:
        self.values[f"pad_{name}"] = self.pad(model)
        if self.labels is not None:
            self.values[f"target_accuracy_{name}"] = target_accuracy(model, self.pool, self.labels, like, batch_size)

    def metrics(self, model: nn.Module, like: torch.Tensor, batch_size: int) -> dict[str, dict[str, Any]]:
        """``{"domain": {...}}`` for :meth:`Strategy.after_fit`: the recorded values and the final model's."""
        self.snapshot(model, like, batch_size, "adapted")
        return {"domain": {**self.values, "n_source": len(self.source), "n_target": len(self.target_idx)}}


class TargetDomain:
    """Mixin for strategies that adapt to unlabelled target imagery (``--target``, ``--target-bands``).

    ``prepare`` opens the target pool and records the initial domain gap; ``after_training`` applies
    AdaBN when :meth:`uses_adabn` says so (``--target-bn``), after recording the model without it;
    ``after_fit`` puts the :class:`DomainGap` values into the card's ``domain`` metrics.  Put it
    before the :class:`~eotransfer.strategies.base.Strategy` base so that its hooks are the ones used.
    """

    name: ClassVar[str]
    params: Any
    pool: Any = None
    gap: DomainGap | None = None
    like: torch.Tensor | None = None

    def uses_adabn(self) -> bool:
        return bool(getattr(self.params, "target_bn", False))

    def prepare(self, dataset: Any, split: Any, model: nn.Module) -> None:
        self.pool = open_target_pool(self.params.target, self.params.target_bands, dataset, split=split)
        self.gap = DomainGap(self.pool, dataset, split, model)

    def after_training(self, model: nn.Module, engine: Any, train: Any) -> None:
        if self.pool is None or self.gap is None:
            raise RuntimeError(f"{self.name}: the --target data were not opened; fit calls prepare() before training")
        self.like = train[0]["image"][None].to(engine.fabric.device)
        if self.uses_adabn():
            self.gap.snapshot(model, self.like, self.params.batch_size, "before_adabn")
            adapt_batchnorm(model, self.pool, self.like, self.params.batch_size, self.name)

    def after_fit(self, model: nn.Module, engine: Any, subsets: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The card's ``domain`` metrics: proxy A-distance (and target accuracy) before and after adaptation."""
        if self.gap is None or self.like is None:
            return {}
        return self.gap.metrics(model, self.like, self.params.batch_size)
