"""The dataset contract every format follows, and the registry of formats.

A dataset yields ``{"image": float32 tensor C×H×W, "label": int, "index": int}``; it knows its
:class:`~eotransfer.bands.BandSet`, class names, every sample's label and location (CRS, bounds,
lon/lat) *without* reading the pixels, so that splits (random, k-shot, spatial) are computed
before any image is loaded.  Formats register themselves with :func:`register_format`, as timm's
models do, and :func:`open_dataset` is the one door in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from eotransfer.bands import BandSet
from eotransfer.errors import BandError, ConfigError, DataError, did_you_mean

NODATA_POLICIES = ("error", "mask")


@dataclass(frozen=True)
class Location:
    """Where a sample lies: its CRS and bounds where known, and its centre in WGS84 lon/lat."""

    lon: float | None = None
    lat: float | None = None
    crs: str | None = None
    bounds: tuple[float, float, float, float] | None = None


class EODataset(Dataset[dict[str, Any]]):
    """Base class of every dataset format.

    Subclasses fill ``bands``, ``classes``, ``labels`` (int64, one per sample), ``locations`` and
    ``sources`` (a file name per sample for messages), and implement :meth:`read`.
    """

    format_name = "base"

    def __init__(self, nodata: str = "error") -> None:
        if nodata not in NODATA_POLICIES:
            raise ConfigError(f"--nodata: unknown policy '{nodata}'; choose one of {', '.join(NODATA_POLICIES)}")
        self.nodata = nodata
        self.bands: BandSet
        self.classes: list[str] = []
        self.labels = np.zeros(0, dtype=np.int64)
        self.merged_from: dict[str, list[str]] = {}  # new class → the classes merged into it (--merge-classes)
        self.locations: list[Location] = []
        self.sources: list[str] = []
        self.root: Path = Path(".")
        self.transform: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._select: np.ndarray | None = None
        self._all_bands: BandSet | None = None

    def select_bands(self, names: Sequence[str]) -> None:
        """Keep only the named bands, in the order given (``--use-bands``)."""
        full = self._all_bands or self.bands
        chosen = full.subset(names)
        self._select = np.asarray([full.index(b.key) for b in chosen], dtype=np.int64)
        self._all_bands = full
        self.bands = chosen

    def map_bands_to(self, target: BandSet, missing: str = "error") -> Any:
        """Present the data in ``target``'s bands and order (a model trained on another sensor).

        Bands are matched by name, then common name, then wavelength
        (:func:`eotransfer.models.band_mapping.map_bands`).  A target band the data lack is an error,
        or, with ``missing="mask"``, filled with NaN: the model's normalisation turns it into the
        band's training mean, which is what a model trained with ``--band-dropout`` has learnt to
        expect.  Returns the mapping (printable with ``.table()``).
        """
        from eotransfer.models.band_mapping import map_bands

        if missing not in ("error", "mask"):
            raise ConfigError(f"--missing-bands: unknown policy '{missing}'; choose error or mask")
        mapping = map_bands(self.bands, target, policy="zero")
        if mapping.unmatched and missing == "error":
            raise BandError(
                f"{self.root}: the model's band(s) {', '.join(mapping.unmatched)} have no counterpart among the "
                f"data's ({self.bands.describe()}); pass --missing-bands mask to apply the model with them masked "
                "(each filled with its training mean), or fine-tune the model on these bands (fit --weights MODEL)"
            )
        picks = np.asarray([-1 if m.source_index is None else m.source_index for m in mapping.matches])
        if (picks < 0).all():
            raise BandError(f"{self.root}: none of its bands ({self.bands.describe()}) matches {target.describe()}")
        current = self._select if self._select is not None else np.arange(len(self.bands))
        self._select = np.where(picks >= 0, current[np.maximum(picks, 0)], -1)
        self._all_bands = self._all_bands or self.bands
        self.bands = target
        return mapping

    def select_channels(self, arr: np.ndarray) -> np.ndarray:
        """``arr`` (every band of the file) in the data set's bands: selected (``--use-bands``), reordered,
        and NaN for bands the data lack (:meth:`map_bands_to`)."""
        picks = self._select
        if picks is None:
            return arr
        if (picks >= 0).all():
            return arr[picks]
        out = np.full((len(picks), *arr.shape[1:]), np.nan, dtype=np.float32)
        out[picks >= 0] = arr[picks[picks >= 0]]
        return out

    def __len__(self) -> int:
        return len(self.labels)

    def read(self, index: int) -> np.ndarray:
        """Pixels of sample ``index`` as float32 C×H×W; NaN marks masked (nodata) pixels."""
        raise NotImplementedError

    def checked_read(self, index: int) -> np.ndarray:
        """:meth:`read` with the band count and nodata policy enforced."""
        arr = self.read(index)
        expected = self._all_bands if self._all_bands is not None else self.bands
        if arr.ndim != 3 or arr.shape[0] != len(expected):
            raise DataError(
                f"{self.sources[index]}: has {arr.shape[0] if arr.ndim == 3 else '?'} bands but the data set "
                f"declares {len(expected)} ({expected.describe()}); check --bands or remove the file"
            )
        arr = self.select_channels(arr)
        present = slice(None) if self._select is None else self._select >= 0
        if self.nodata == "error" and np.isnan(arr[present]).any():
            frac = float(np.isnan(arr[present]).mean())
            raise DataError(
                f"{self.sources[index]}: {frac:.1%} of its pixels are NaN or nodata; pass --nodata mask to "
                "fill them with the band mean after normalisation, or remove the file"
            )
        return arr

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = torch.from_numpy(self.checked_read(index))
        if self.transform is not None:
            image = self.transform(image)
        return {"image": image, "label": int(self.labels[index]), "index": index}

    # -- metadata ---------------------------------------------------------------------------
    def lonlat(self) -> np.ndarray:
        """N×2 array of lon/lat (NaN where unknown)."""
        return np.array(
            [
                [np.nan if loc.lon is None else loc.lon, np.nan if loc.lat is None else loc.lat]
                for loc in self.locations
            ],
            dtype=np.float64,
        ).reshape(-1, 2)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, counts, strict=True)}

    def merge_classes(self, groups: dict[str, list[str]]) -> None:
        """Relabel: each ``new: [old, ...]`` group becomes one class, placed where its first member was.

        Classes named in no group keep their names.  For sparse schemes, e.g. xBD's four damage levels
        with a handful of minor/major examples, merged into ``damaged`` (the binary task many damage
        studies report).  An unknown name, a class in two groups or a new name that clashes is an error.
        """
        if getattr(self, "multilabels", None) is not None:
            raise ConfigError(f"{self.root}: --merge-classes applies to single-label data sets, not multi-label ones")
        owner: dict[str, str] = {}
        for new, olds in groups.items():
            if not olds:
                raise ConfigError(f"--merge-classes: group '{new}' names no class; write {new}=classA+classB")
            for old in olds:
                if old not in self.classes:
                    raise ConfigError(
                        f"--merge-classes: '{old}' is not a class of {self.root}" + did_you_mean(old, self.classes)
                    )
                if old in owner:
                    raise ConfigError(f"--merge-classes: '{old}' is in both '{owner[old]}' and '{new}'")
                owner[old] = new
        merged: list[str] = []
        for c in self.classes:
            name = owner.get(c, c)
            if c not in owner and c in groups:
                raise ConfigError(f"--merge-classes: the new class '{c}' clashes with a kept class of that name")
            if name not in merged:
                merged.append(name)
        lookup = np.asarray([merged.index(owner.get(c, c)) for c in self.classes], dtype=np.int64)
        self.labels = lookup[self.labels] if len(self.labels) else self.labels
        self.merged_from = {m: [c for c in self.classes if owner.get(c, c) == m] for m in merged}
        self.classes = merged

    def check_classes(self) -> None:
        """Refuse a data set with an empty class (a class folder without images, say)."""
        empty = [c for c, n in self.class_counts().items() if n == 0]
        if empty:
            raise DataError(
                f"{self.root}: class(es) {', '.join(empty)} have no samples; add images or remove the class"
            )

    def provenance(self) -> dict[str, Any]:
        return {
            "format": self.format_name,
            "root": str(self.root),
            "n_samples": len(self),
            "classes": self.class_counts(),
            "bands": self.bands.keys,
            **({"merged_classes": self.merged_from} if self.merged_from else {}),
        }


class Subset(Dataset[dict[str, Any]]):
    """A view on some samples of an :class:`EODataset`, keeping its metadata."""

    def __init__(self, dataset: EODataset, indices: Sequence[int] | np.ndarray) -> None:
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.dataset[int(self.indices[i])]

    @property
    def labels(self) -> np.ndarray:
        return self.dataset.labels[self.indices]


FORMATS: dict[str, type[EODataset]] = {}


def register_format(name: str) -> Callable[[type[EODataset]], type[EODataset]]:
    """Class decorator registering a dataset format under ``name``."""

    def deco(cls: type[EODataset]) -> type[EODataset]:
        cls.format_name = name
        FORMATS[name] = cls
        return cls

    return deco


def open_dataset(path: str | Path, format: str | None = None, **kwargs: Any) -> EODataset:
    """Open a data set, detecting its format when ``format`` is None.

    Detection: a folder holding ``images/`` and ``labels/`` is xBD; a raster file with a
    ``vector=`` argument is raster+vector; a folder of class folders is ``folder``.
    """
    from eotransfer.data import formats  # noqa: F401  (registers the formats)

    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder; check the data path")
    if format is None:
        if p.is_dir() and (p / "images").is_dir() and (p / "labels").is_dir():
            format = "xbd"
        elif p.is_file() and p.suffix.lower() == ".npz":
            format = "packed"
        elif p.is_file() and kwargs.get("vector"):
            format = "raster-vector"
        elif p.is_dir() and any(next((d for d in sorted(p.iterdir()) if d.is_dir()), p).glob("*_labels_metadata.json")):
            format = "bigearthnet"
        elif p.is_dir():
            format = "folder"
        else:
            raise DataError(f"{p}: cannot tell the data format; pass --format ({', '.join(sorted(FORMATS))})")
    if format in formats.UNAVAILABLE:
        raise ConfigError(f"--format: the '{format}' format {formats.UNAVAILABLE[format]}")
    if format not in FORMATS:
        raise ConfigError(f"--format: unknown data format '{format}'" + did_you_mean(format, FORMATS))
    ds = FORMATS[format](p, **kwargs)  # type: ignore[arg-type]
    ds.check_classes()
    return ds
