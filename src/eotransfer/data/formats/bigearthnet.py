"""BigEarthNet patch folders: Sentinel-2 L2A (12 bands) or Sentinel-1 (VV, VH), multi-label.

Layout of Sumbul et al. 2019, "BigEarthNet: A Large-Scale Benchmark Archive for Remote Sensing
Image Understanding" (IGARSS), and of its Sentinel-1 companion (Sumbul et al. 2021, "BigEarthNet-MM",
IEEE GRSM): ``root/<patch>/<patch>_B01.tif … _B8A.tif`` (S2; 10, 20 and 60 m bands of 120×120,
60×60 and 20×20 px) or ``<patch>_VV.tif``/``<patch>_VH.tif`` (S1), plus
``<patch>_labels_metadata.json`` with the CORINE labels, UTM ``coordinates`` and ``projection``.
S2 bands are upsampled to the 10 m grid (``resample="bilinear"`` or ``"nearest"``) and stacked in
the catalogue's ``sentinel2-l2a`` order (B8A between B08 and B09).  The data are multi-label:
:attr:`BigEarthNetDataset.multilabels` is the N×K {0, 1} matrix, and ``labels`` (for the
single-label contract) the index of each patch's first label.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from eotransfer.bands import BandSet
from eotransfer.data.base import EODataset, Location, register_format
from eotransfer.data.io import raster_info, read_pixels, to_lonlat
from eotransfer.errors import ConfigError, DataError

METADATA_SUFFIX = "_labels_metadata.json"
RESAMPLING = ("bilinear", "nearest")


def _load_metadata(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data: dict[str, Any] = json.load(f)
        return data
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable BigEarthNet metadata ({exc}); replace or remove the patch") from None


def upsample(arr: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """Resize a C×h×w array to ``size`` (exact ``np.repeat`` for integer nearest factors)."""
    h, w = arr.shape[1:]
    if (h, w) == size:
        return arr
    if mode == "nearest" and size[0] % h == 0 and size[1] % w == 0:
        return np.repeat(np.repeat(arr, size[0] // h, axis=1), size[1] // w, axis=2)
    kwargs: dict[str, Any] = {"align_corners": False} if mode == "bilinear" else {}
    out = F.interpolate(torch.from_numpy(arr)[None], size=size, mode=mode, **kwargs)
    return np.ascontiguousarray(out[0].numpy(), dtype=np.float32)


@register_format("bigearthnet")
class BigEarthNetDataset(EODataset):
    """BigEarthNet S2 or S1 patches, one folder each."""

    def __init__(
        self,
        root: str | Path,
        bands: str | BandSet | None = None,
        nodata: str = "error",
        resample: str = "bilinear",
        **_: Any,
    ) -> None:
        super().__init__(nodata)
        self.root = Path(root)
        if resample not in RESAMPLING:
            raise ConfigError(f"bigearthnet resample: unknown mode '{resample}'; choose one of {', '.join(RESAMPLING)}")
        self.resample = resample
        self.patch_dirs = sorted(
            d for d in self.root.iterdir() if d.is_dir() and (d / f"{d.name}{METADATA_SUFFIX}").is_file()
        )
        if not self.patch_dirs:
            raise DataError(f"{self.root}: no BigEarthNet patch folders (<patch>/<patch>{METADATA_SUFFIX}) found")
        first = self.patch_dirs[0]
        if (first / f"{first.name}_VV.tif").is_file():
            self.sensor, default = "sentinel1", BandSet.parse("sentinel1")
        elif (first / f"{first.name}_B02.tif").is_file():
            self.sensor, default = "sentinel2", BandSet.parse("sentinel2-l2a")
        else:
            raise DataError(f"{first}: neither Sentinel-1 (_VV.tif) nor Sentinel-2 (_B02.tif) band files found")
        self.bands = BandSet.parse(bands) if bands is not None else default
        self.band_files = [b.name for b in self.bands]  # file suffix of each channel

        metas = [_load_metadata(d / f"{d.name}{METADATA_SUFFIX}") for d in self.patch_dirs]
        self.classes = sorted({str(lab) for m in metas for lab in m.get("labels", [])})
        index = {c: k for k, c in enumerate(self.classes)}
        self.multilabels = np.zeros((len(metas), len(self.classes)), dtype=np.float32)
        labels: list[int] = []
        crs_of_projection: dict[str, str | None] = {}
        for i, (d, meta) in enumerate(zip(self.patch_dirs, metas, strict=True)):
            names = [str(lab) for lab in meta.get("labels", [])]
            if not names:
                raise DataError(f"{d / (d.name + METADATA_SUFFIX)}: the patch has no labels; remove the patch")
            labels.append(index[names[0]])
            self.multilabels[i, [index[n] for n in names]] = 1.0
            self.sources.append(str(d))
            self.locations.append(self._location(d, meta, crs_of_projection))
        self.labels = np.asarray(labels, dtype=np.int64)
        self.patch_names = [d.name for d in self.patch_dirs]

    def class_counts(self) -> dict[str, int]:
        """Multi-label: patches carrying each class among their labels (not only as the first one)."""
        return {c: int(n) for c, n in zip(self.classes, self.multilabels.sum(axis=0), strict=True)}

    def _band_path(self, d: Path, band: str) -> Path:
        path = d / f"{d.name}_{band}.tif"
        if not path.is_file():
            raise DataError(f"{path}: missing band file of a {self.sensor} patch; check --bands or remove the patch")
        return path

    def _location(self, d: Path, meta: dict[str, Any], crs_cache: dict[str, str | None]) -> Location:
        """CRS from the band GeoTIFF (read once per distinct projection), bounds from the metadata."""
        projection = meta.get("projection")
        if isinstance(projection, str) and projection in crs_cache:
            crs = crs_cache[projection]
            info = None
        else:
            info = raster_info(self._band_path(d, self.band_files[0]))
            crs = info.crs
            if isinstance(projection, str):
                crs_cache[projection] = crs
        c = meta.get("coordinates", {})
        lower = c.get("lry", c.get("lly"))  # the S1 metadata spell it "lly"
        if all(v is not None for v in (c.get("ulx"), c.get("uly"), c.get("lrx"), lower)):
            bounds = (float(c["ulx"]), float(lower), float(c["lrx"]), float(c["uly"]))
        else:
            info = info or raster_info(self._band_path(d, self.band_files[0]))
            bounds = info.bounds  # type: ignore[assignment]
        if crs is None or bounds is None:
            return Location()
        lon, lat = to_lonlat(crs, (bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2)
        return Location(lon, lat, crs, bounds)

    def read(self, index: int) -> np.ndarray:
        d = self.patch_dirs[index]
        arrs = [read_pixels(self._band_path(d, b)) for b in self.band_files]
        size = max(a.shape[1] for a in arrs), max(a.shape[2] for a in arrs)
        return np.concatenate([upsample(a, size, self.resample) for a in arrs], axis=0)
