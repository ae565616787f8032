"""Reading rasters and images with errors that name the file, and locating them on Earth."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from PIL import Image, UnidentifiedImageError
from pyproj import Transformer
from rasterio.errors import RasterioError

from eotransfer.errors import DataError

RASTER_SUFFIXES = {".tif", ".tiff"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
ALL_SUFFIXES = RASTER_SUFFIXES | IMAGE_SUFFIXES


@dataclass(frozen=True)
class RasterInfo:
    """Header of a raster: what can be known without reading its pixels."""

    path: Path
    count: int
    height: int
    width: int
    crs: str | None
    bounds: tuple[float, float, float, float] | None
    descriptions: tuple[str | None, ...]
    nodata: float | None


def raster_info(path: Path) -> RasterInfo:
    """Read a raster's header (GeoTIFF through rasterio, JPEG/PNG through Pillow)."""
    try:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            with Image.open(path) as im:
                count = len(im.getbands())
                return RasterInfo(path, count, im.height, im.width, None, None, (None,) * count, None)
        with rasterio.open(path) as src:
            crs = src.crs.to_string() if src.crs else None
            b = src.bounds
            return RasterInfo(
                path, src.count, src.height, src.width, crs,
                (b.left, b.bottom, b.right, b.top) if crs else None,
                tuple(src.descriptions), src.nodata,
            )  # fmt: skip
    except (RasterioError, UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: unreadable or corrupt raster ({exc}); replace or remove the file") from None


def read_pixels(path: Path, window: Any = None) -> np.ndarray:
    """Pixels of a file as float32 C×H×W, with the raster's nodata value (and NaN) set to NaN."""
    try:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB") if im.mode in ("P", "CMYK", "RGBA") else im)
            arr = arr[:, :, None] if arr.ndim == 2 else arr
            return np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)
        with rasterio.open(path) as src:
            data = src.read(window=window).astype(np.float32)
            if src.nodata is not None and not np.isnan(src.nodata):
                data[data == np.float32(src.nodata)] = np.nan
            return data
    except (RasterioError, UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable or corrupt raster ({exc}); replace or remove the file") from None


_TO_WGS84: dict[str, Transformer] = {}


def to_lonlat(crs: str, x: float, y: float) -> tuple[float, float]:
    """Reproject a point from ``crs`` to WGS84 longitude/latitude."""
    if crs not in _TO_WGS84:
        _TO_WGS84[crs] = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lon, lat = _TO_WGS84[crs].transform(x, y)
    return float(lon), float(lat)


def parse_lonlat_name(stem: str) -> tuple[float, float] | None:
    """``-93.5285_30.9874`` (the Hurricane Harvey chip naming) → (lon, lat); None if not that form."""
    parts = stem.split("_")
    if len(parts) != 2:
        return None
    try:
        lon, lat = float(parts[0]), float(parts[1])
    except ValueError:
        return None
    if -180 <= lon <= 180 and -90 <= lat <= 90:
        return lon, lat
    return None
