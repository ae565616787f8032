"""Unlabelled target-domain imagery for domain-adaptation strategies (``coral``, ``mmd``, …).

:func:`open_target_pool` opens the target data (data sets, folders or rasters, labels ignored) as a
:class:`~eotransfer.data.pool.PatchPool` in the training data's bands; :func:`target_batch` draws a
batch of it from the epoch's seeded generator, at the source images' size, so that source and target
go through the backbone in one forward pass (:func:`logits_and_features`).  The same pattern as
``distill --unlabelled``.

Target data sets that carry labels (class folders, say) are accepted: the methods are unsupervised,
so the labels are ignored, and :func:`open_target_pool` says so once.  Score the adapted model on
the labelled target with ``eotransfer evaluate``.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn

from eotransfer.errors import BandError, ConfigError, DataError, EOTransferError


def open_target_pool(paths: str, bands: str | None, dataset: Any, option: str = "--target") -> Any:
    """A :class:`~eotransfer.data.pool.PatchPool` of ``paths`` (comma-separated) in ``dataset``'s bands.

    Patches are cut at the training images' size; target images smaller than that are taken whole
    (and resized by :func:`target_batch`).  Errors name ``option`` and its ``-bands`` companion.
    """
    from eotransfer.data.pool import PatchPool, open_pool_source

    bands_option = f"{option}-bands"
    names = [x.strip() for x in paths.split(",") if x.strip()]
    if not names:
        raise ConfigError(
            f"{option}: the unlabelled target-domain imagery is required; pass data sets, folders or rasters "
            "(comma-separated)"
        )
    h, w = dataset.checked_read(0).shape[-2:]
    sources = []
    for path in names:
        try:
            sources.append(open_pool_source(path, bands=bands))
        except EOTransferError as e:
            where = "" if path in str(e) else f"{path}: "
            hint = f"; declare the target files' bands with {bands_option}" if "--bands" in str(e) else ""
            raise ConfigError(f"{option}: {where}{e}{hint}") from e
    labelled = [f"{path} ({len(src.classes)} classes)" for path, src in zip(names, sources, strict=True)
                if list(src.classes) != ["unlabelled"] and len(src)]  # fmt: skip
    if labelled:
        print(
            f"note: {option}: the labels of {', '.join(labelled)} are ignored (unsupervised domain adaptation sees "
            "only the target's images); score the adapted model on them with `eotransfer evaluate`",
            file=sys.stderr,
        )
    try:
        smallest = min(min(src.read(0).shape[-2:]) for src in sources if len(src))
    except ValueError:
        raise DataError(f"{option}: {paths} holds no images") from None
    try:
        pool = PatchPool(sources, min(h, w, smallest), bands=dataset.bands)
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
