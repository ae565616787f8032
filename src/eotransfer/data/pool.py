"""The unlabelled pool of self-supervised pre-training: random patches from data sets and rasters.

Any registered data set format (labels ignored), a packed ``.npz`` or a single large raster (cut
into random windows) can feed the pool.  Every source is brought to one band set: sources that
share the pool's bands are used as they are; with an explicit ``bands`` the other sources are
mapped band by band (name, then common name, then wavelength, as for weights), and bands a source
lacks are masked (NaN, i.e. the band mean after normalisation), which is band dropout by sensor.
Patch positions are drawn from ``(seed, index)``, so a pool is reproducible and a resumed run
sees the same patches.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from eotransfer.bands import BandSet
from eotransfer.data.base import EODataset, Location
from eotransfer.errors import BandError, DataError

RASTER_FILE_SUFFIXES = {".tif", ".tiff"}


class RasterFile(EODataset):
    """One raster file as a one-sample data set (a scene to cut random windows from)."""

    format_name = "raster-file"

    def __init__(
        self, path: str | Path, bands: str | BandSet | None = None, nodata_value: float | None = None,
        scale: float = 1.0, offset: float = 0.0,
    ) -> None:  # fmt: skip
        from eotransfer.data.formats.folder import infer_bandset
        from eotransfer.data.io import raster_info

        super().__init__("mask")
        self.root = Path(path)
        info = raster_info(self.root)
        self.bands = BandSet.parse(bands) if isinstance(bands, str) else bands or infer_bandset(
            info.descriptions, info.count, False, self.root
        )  # fmt: skip
        if len(self.bands) != info.count:
            raise BandError(f"{self.root}: has {info.count} bands but --bands declares {len(self.bands)}; fix --bands")
        self.classes = ["unlabelled"]
        self.labels = np.zeros(1, dtype=np.int64)
        self.sources = [str(self.root)]
        self.locations = [Location(crs=info.crs, bounds=info.bounds)]
        self.nodata_value, self.scale, self.offset = nodata_value, scale, offset
        self._pixels: np.ndarray | None = None

    def read(self, index: int) -> np.ndarray:
        from eotransfer.data.io import read_pixels

        if self._pixels is None:
            arr = read_pixels(self.root)
            if self.nodata_value is not None:
                arr[arr == np.float32(self.nodata_value)] = np.nan
            self._pixels = arr * np.float32(self.scale) + np.float32(self.offset)
        return self._pixels


def open_pool_source(path: str | Path, **options: Any) -> EODataset:
    """A data set in any registered format, or a single raster file."""
    from eotransfer.data.base import open_dataset

    p = Path(path)
    if p.is_file() and p.suffix.lower() in RASTER_FILE_SUFFIXES and not options.get("vector"):
        keep = {k: options[k] for k in ("bands", "nodata_value", "scale", "offset") if options.get(k) is not None}
        return RasterFile(p, **keep)
    options = {k: v for k, v in options.items() if k != "nodata_value" and v is not None}
    options.setdefault("nodata", "mask")
    if p.is_dir() and not (p / "images").is_dir() and options.get("format") in (None, "folder"):
        options.setdefault("unlabelled", True)  # a flat folder of patches is a valid pool
    fmt = options.pop("format", None)
    return open_dataset(p, format=fmt, **options)


class PatchPool(Dataset[dict[str, Any]]):
    """Random ``patch_size`` patches from ``sources``, all in one band set.

    ``patches=0`` takes one patch per source sample (an epoch sees every sample once); ``patches=N``
    draws N samples uniformly over all sources (with replacement: a single scene gives N windows).
    Windows with more than ``max_masked`` of their pixels masked are redrawn (up to 10 times).
    """

    def __init__(
        self, sources: Sequence[EODataset], patch_size: int, patches: int = 0, bands: BandSet | None = None,
        seed: int = 0, max_masked: float = 0.05,
    ) -> None:  # fmt: skip
        if not sources:
            raise DataError("pretrain: the pool is empty; give at least one data set, folder or raster (--data)")
        self.sources = list(sources)
        self.patch_size, self.seed, self.max_masked = int(patch_size), int(seed), float(max_masked)
        self.bands = bands or self.sources[0].bands
        self.maps: list[np.ndarray | None] = []
        for src in self.sources:
            if len(src) == 0:
                raise DataError(f"{src.root}: no samples; the pool needs images")
            self.maps.append(self._band_map(src, bands is not None))
        sizes = np.asarray([len(s) for s in self.sources])
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        total = int(offsets[-1])
        flat = np.random.default_rng([self.seed, 7]).integers(0, total, int(patches)) if patches else np.arange(total)
        self.which = np.searchsorted(offsets, flat, side="right") - 1
        self.sample = flat - offsets[self.which]
        for k, src in enumerate(self.sources):  # refuse a patch size larger than the rasters before training
            h, w = self._raw(k, 0).shape[-2:]
            if min(h, w) < self.patch_size:
                raise DataError(
                    f"{src.sources[0] if src.sources else src.root}: {h}×{w} px is smaller than --patch-size "
                    f"{self.patch_size}; lower --patch-size"
                )
        self.labels = np.full(len(self.which), -1, dtype=np.int64)

    def _band_map(self, src: EODataset, explicit: bool) -> np.ndarray | None:
        if src.bands.keys == self.bands.keys:
            return None
        if not explicit:
            raise BandError(
                f"{src.root}: bands {src.bands.describe()} differ from {self.sources[0].root}'s "
                f"{self.bands.describe()}; pass --pool-bands (e.g. sentinel2-l1c) to map every source to one "
                "band set (bands a source lacks are masked), or pool sources of one sensor"
            )
        from eotransfer.models.band_mapping import map_bands

        mapping = map_bands(src.bands, self.bands, policy="zero")
        index = np.asarray([-1 if m.source_index is None else m.source_index for m in mapping.matches])
        if (index < 0).all():
            raise BandError(f"{src.root}: none of its bands ({src.bands.describe()}) matches --pool-bands")
        return index

    def __len__(self) -> int:
        return len(self.which)

    def describe(self) -> list[dict[str, Any]]:
        """Per source: where, format, samples, patches drawn, and which pool bands it fills."""
        rows = []
        for k, src in enumerate(self.sources):
            m = self.maps[k]
            filled = self.bands.keys if m is None else [b for b, i in zip(self.bands.keys, m, strict=True) if i >= 0]
            rows.append({"path": str(src.root), "format": src.format_name, "samples": len(src),
                         "patches": int((self.which == k).sum()), "bands": src.bands.keys, "fills": filled})  # fmt: skip
        return rows

    def _raw(self, k: int, j: int) -> np.ndarray:
        src = self.sources[k]
        arr = src.read(int(j))
        arr = src.select_channels(arr)
        m = self.maps[k]
        if m is None:
            return arr
        out = np.full((len(m), *arr.shape[1:]), np.nan, dtype=np.float32)
        out[m >= 0] = arr[m[m >= 0]]
        return out

    def read(self, index: int) -> np.ndarray:
        """Patch ``index`` as float32 C×H×W (NaN masked)."""
        k, j = int(self.which[index]), int(self.sample[index])
        arr = self._raw(k, j)
        h, w = arr.shape[-2:]
        p = self.patch_size
        if min(h, w) < p:
            raise DataError(f"{self.sources[k].sources[j]}: {h}×{w} px is smaller than --patch-size {p}")
        rng = np.random.default_rng([self.seed, index])
        best, best_masked = None, 2.0
        for _ in range(10):
            y, x = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
            win = arr[:, y : y + p, x : x + p]
            masked = float(np.isnan(win).all(0).mean())
            if masked < best_masked:
                best, best_masked = win, masked
            if masked <= self.max_masked or (h == p and w == p):
                break
        assert best is not None
        return np.ascontiguousarray(best, dtype=np.float32)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": torch.from_numpy(self.read(index)), "label": -1, "index": index}
