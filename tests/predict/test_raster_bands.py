"""Mapping a raster's bands (named by --raster-bands) onto a saved model's bands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from eotransfer.bands import BandSet
from eotransfer.errors import BandError, ConfigError
from eotransfer.predict.bands import raster_band_indices

MODEL = BandSet.parse("sentinel2-l1c:B02,B03,B04,B08")


def _raster(path: Path, count: int) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=count, dtype="uint16",
                       crs="EPSG:32632", transform=from_origin(500000, 4200000, 10, 10)) as dst:  # fmt: skip
        dst.write(np.ones((count, 8, 8), dtype="uint16"))
    return path


def test_bands_are_mapped_by_common_name_in_the_model_order(tmp_path: Path) -> None:
    raster = _raster(tmp_path / "l8.tif", 4)
    # Landsat 8 red, green, blue, nir stored in that order -> model order blue, green, red, nir
    assert raster_band_indices(MODEL, "landsat8:B4,B3,B2,B5", raster, verbose=False) == [2, 1, 0, 3]
    assert raster_band_indices(MODEL, None, raster) is None  # same count, no names: taken as they are


def test_unmappable_model_band_names_raster_band_and_option(tmp_path: Path) -> None:
    raster = _raster(tmp_path / "rgb.tif", 3)
    with pytest.raises(BandError, match=r"rgb\.tif.*sentinel2-l1c:B08 \(nir, 833 nm\).*--raster-bands"):
        raster_band_indices(MODEL, "landsat8:B2,B3,B4", raster, verbose=False)
    with pytest.raises(BandError, match=r"rgb\.tif: --raster-bands 'landsat8:B2,B3,B99'"):
        raster_band_indices(MODEL, "landsat8:B2,B3,B99", raster, verbose=False)
    with pytest.raises(ConfigError, match=r"--raster-bands: 2 bands named but .*rgb\.tif has 3"):
        raster_band_indices(MODEL, "landsat8:B2,B3", raster, verbose=False)
    with pytest.raises(ConfigError, match=r"rgb\.tif: 3 bands but the model takes 4.*--raster-bands"):
        raster_band_indices(MODEL, None, raster)
