"""The unlabelled pool: sources, band mapping, patch positions, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from eotransfer.bands import BandSet
from eotransfer.data.base import open_dataset
from eotransfer.data.pool import PatchPool, RasterFile, open_pool_source
from eotransfer.errors import BandError, DataError


def _scene(path: Path, h: int = 40, w: int = 50, fill_rows: int = 0) -> Path:
    data = np.arange(3 * h * w, dtype=np.uint16).reshape(3, h, w) + 1
    data[:, :fill_rows] = 0
    with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=3, dtype="uint16", crs="EPSG:32621",
                       transform=from_origin(500_000, 7_000_000, 30, 30)) as dst:  # fmt: skip
        dst.write(data)
    return path


def test_patches_are_reproducible_windows_of_the_scene(tmp_path: Path) -> None:
    src = open_pool_source(_scene(tmp_path / "scene.tif"), bands="landsat8:B2,B3,B4")
    assert isinstance(src, RasterFile)
    pool = PatchPool([src], patch_size=16, patches=10, seed=3)
    assert len(pool) == 10
    full = src.read(0)
    for i in range(10):
        p = pool.read(i)
        assert p.shape == (3, 16, 16)
        y, x = np.argwhere(full[0] == p[0, 0, 0])[0]  # values are unique: locate the window
        np.testing.assert_array_equal(full[:, y : y + 16, x : x + 16], p)
    again = PatchPool([src], patch_size=16, patches=10, seed=3)
    np.testing.assert_array_equal(pool.read(7), again.read(7))
    assert not np.array_equal(pool.read(7), PatchPool([src], 16, 10, seed=4).read(7))


def test_nodata_windows_are_redrawn(tmp_path: Path) -> None:
    src = open_pool_source(_scene(tmp_path / "s.tif", h=60, fill_rows=30), bands="landsat8:B2,B3,B4", nodata_value=0)
    pool = PatchPool([src], patch_size=16, patches=20, seed=0)
    masked = [float(np.isnan(pool.read(i)).all(0).mean()) for i in range(20)]
    assert max(masked) <= 0.05


def test_one_patch_per_sample_and_sources_concatenated(eurosat_like: Path, tmp_path: Path) -> None:
    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    pool = PatchPool([ds, ds], patch_size=8)
    assert len(pool) == 2 * len(ds)
    assert (pool.labels == -1).all()
    rows = pool.describe()
    assert [r["samples"] for r in rows] == [len(ds), len(ds)] and rows[0]["patches"] == len(ds)


def test_mixed_band_sets_need_pool_bands_and_map_by_common_name(eurosat_like: Path, tmp_path: Path) -> None:
    s2 = open_dataset(eurosat_like, bands="eurosat-ms")
    ls = open_pool_source(_scene(tmp_path / "scene.tif"), bands="landsat8:B2,B3,B4")
    with pytest.raises(BandError, match="--pool-bands"):
        PatchPool([s2, ls], patch_size=16)
    target = BandSet.parse("sentinel2-l1c:B02,B03,B04,B08")
    pool = PatchPool([s2, ls], patch_size=16, bands=target)
    p = pool.read(len(s2))  # the Landsat window: blue/green/red filled, NIR masked
    assert np.isnan(p[3]).all() and not np.isnan(p[:3]).any()
    assert pool.describe()[1]["fills"] == ["sentinel2-l1c:B02", "sentinel2-l1c:B03", "sentinel2-l1c:B04"]
    np.testing.assert_array_equal(pool.read(0), s2.read(0)[[1, 2, 3, 7]])


def test_errors(eurosat_like: Path, tmp_path: Path) -> None:
    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    with pytest.raises(DataError, match="smaller than --patch-size 32"):
        PatchPool([ds], patch_size=32)
    with pytest.raises(DataError, match="pool is empty"):
        PatchPool([], patch_size=8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError):
        open_pool_source(tmp_path / "empty")
    (tmp_path / "broken.tif").write_bytes(b"not a tiff")
    with pytest.raises(DataError, match="broken.tif"):
        open_pool_source(tmp_path / "broken.tif", bands="landsat8:B2,B3,B4")
