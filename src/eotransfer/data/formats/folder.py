"""Per-class folders of GeoTIFFs or JPEG/PNG chips (EuroSAT, Hurricane Harvey, UC Merced...).

``root/<class>/<file>``.  GeoTIFFs keep their CRS and bounds; chips named ``LON_LAT.ext`` (the
Hurricane Harvey layout of Cao & Choe 2018) get their location from the name.  The band set is
declared (``bands=``) or inferred from what the files say of themselves (GeoTIFF band
descriptions that name catalogue bands; JPEG/PNG are RGB by definition); a 13-band GeoTIFF
without descriptions is refused rather than guessed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from eotransfer.bands import BandSet
from eotransfer.data.base import EODataset, Location, register_format
from eotransfer.data.io import (
    ALL_SUFFIXES,
    IMAGE_SUFFIXES,
    parse_lonlat_name,
    raster_info,
    read_pixels,
    to_lonlat,
)
from eotransfer.errors import BandError, DataError, EOTransferError


def infer_bandset(descriptions: tuple[str | None, ...], count: int, is_image: bool, where: Path) -> BandSet:
    """The band set a file declares, or an error asking the user to declare it."""
    if is_image and count == 3:
        return BandSet.parse("rgb")
    if descriptions and all(descriptions):
        try:
            return BandSet.from_names([d for d in descriptions if d])
        except EOTransferError:
            pass
    raise BandError(
        f"{where}: {count} band(s) with no band names in the file; declare them with --bands "
        "(e.g. --bands eurosat-ms, --bands sentinel2-l2a, --bands sentinel2-l1c:B02,B03,B04)"
    )


@register_format("folder")
class ClassFolderDataset(EODataset):
    """Images in one folder per class."""

    def __init__(
        self,
        root: str | Path,
        bands: str | BandSet | None = None,
        nodata: str = "error",
        scale: float = 1.0,
        offset: float = 0.0,
        classes: list[str] | None = None,
        cache: bool = True,
        unlabelled: bool = False,
        **_: Any,
    ) -> None:
        super().__init__(nodata)
        self.root = Path(root)
        self.scale, self.offset = float(scale), float(offset)
        class_dirs = sorted(d for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if classes is not None:
            missing = sorted(set(classes) - {d.name for d in class_dirs})
            if missing:
                raise DataError(f"{self.root}: no folder for class(es) {', '.join(missing)}")
            class_dirs = [self.root / c for c in classes]
        if unlabelled and not class_dirs:  # a flat folder of patches to predict
            class_dirs = [self.root]
        if not class_dirs:
            raise DataError(f"{self.root}: no class folders found; expected {self.root}/<class>/<image files>")
        self.classes = ["unlabelled"] if class_dirs == [self.root] else [d.name for d in class_dirs]
        files: list[Path] = []
        labels: list[int] = []
        for k, d in enumerate(class_dirs):
            found = sorted(f for f in d.iterdir() if f.suffix.lower() in ALL_SUFFIXES)
            if not found:
                raise DataError(f"{d}: empty class folder (no .tif/.jpg/.png); add images or remove the folder")
            files.extend(found)
            labels.extend([k] * len(found))
        self.files = files
        self.sources = [str(f) for f in files]
        self.labels = np.asarray(labels, dtype=np.int64)

        first = raster_info(files[0])
        is_image = files[0].suffix.lower() in IMAGE_SUFFIXES
        self.bands = (
            BandSet.parse(bands)
            if bands is not None
            else infer_bandset(first.descriptions, first.count, is_image, files[0])
        )
        if first.count != len(self.bands):
            raise DataError(
                f"{files[0]}: has {first.count} bands but --bands declares {len(self.bands)} "
                f"({self.bands.describe()}); fix --bands"
            )
        self.locations = []
        for f in files:
            if f.suffix.lower() in IMAGE_SUFFIXES:
                ll = parse_lonlat_name(f.stem)
                self.locations.append(Location(*ll, crs="EPSG:4326") if ll else Location())
                continue
            info = raster_info(f)
            if info.count != first.count:
                raise DataError(
                    f"{f}: has {info.count} bands but {files[0].name} has {first.count}; "
                    "all files of a data set must share one band set"
                )
            if info.crs and info.bounds:
                cx, cy = (info.bounds[0] + info.bounds[2]) / 2, (info.bounds[1] + info.bounds[3]) / 2
                lon, lat = to_lonlat(info.crs, cx, cy)
                self.locations.append(Location(lon, lat, info.crs, info.bounds))
            else:
                self.locations.append(Location())
        self._cache: dict[int, np.ndarray] | None = {} if cache else None

    def read(self, index: int) -> np.ndarray:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        arr = read_pixels(self.files[index])
        if self.scale != 1.0 or self.offset != 0.0:
            arr = arr * np.float32(self.scale) + np.float32(self.offset)
        if self._cache is not None:
            self._cache[index] = arr
        return arr
