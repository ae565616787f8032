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
from eotransfer.errors import ConfigError, DataError, did_you_mean

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
        if self._select is not None:
            arr = arr[self._select]
        if self.nodata == "error" and np.isnan(arr).any():
            frac = float(np.isnan(arr).mean())
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
