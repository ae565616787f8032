"""The raster-vector format: patches of a GeoTIFF labelled by a reprojected vector file."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from pyproj import Transformer
from rasterio.transform import Affine
from shapely.geometry import Point, box

from eotransfer.data.base import open_dataset
from eotransfer.data.formats.raster_vector import RasterVectorDataset
from eotransfer.errors import BandError, ConfigError, DataError

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
H, W = 100, 78
X0, Y0, RES = 500000.0, 5000000.0, 10.0
BANDS = "sentinel2-l2a:B02,B03,B04"
TO_WGS84 = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)


def _utm(col: float, row: float) -> tuple[float, float]:
    return X0 + col * RES, Y0 - row * RES


def _pixel_box(c0: float, r0: float, c1: float, r1: float) -> object:
    (x0, y1), (x1, y0) = _utm(c0, r0), _utm(c1, r1)
    return box(x0, y0, x1, y1)


@pytest.fixture
def scene(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    rows, cols = np.mgrid[0:H, 0:W]
    data = np.stack([b * 10000 + rows * 100 + cols for b in range(3)]).astype(np.uint16)  # pixel = its address
    tif = tmp_path / "scene.tif"
    profile = {"driver": "GTiff", "height": H, "width": W, "count": 3, "dtype": "uint16"}
    with rasterio.open(tif, "w", crs="EPSG:32633", transform=Affine(RES, 0, X0, 0, -RES, Y0), **profile) as dst:
        dst.write(data)
    features = [
        ("water", "lake", _pixel_box(0, 0, 40, 40)),  # 25 grid centres (rows/cols 4, 12, ..., 36)
        ("crop", "field", _pixel_box(60, 50, 78, 70)),  # centre cols 60, 68 (76 overhangs), rows 52, 60, 68
        ("tree", "pt", Point(*_utm(20.5, 85.5))),  # pixel row 85, col 20
        ("tree", "edge", Point(*_utm(1.5, 1.5))),  # patch overhangs the raster: dropped
        ("tree", "far", Point(*_utm(5000, 5000))),  # outside the raster
    ]
    geoms = [shapely.transform(g, TO_WGS84.transform, interleaved=False) for _, _, g in features]
    gdf = gpd.GeoDataFrame(
        {"name": [f[0] for f in features], "kind": [f[1] for f in features]}, geometry=geoms, crs="EPSG:4326"
    )
    vec = tmp_path / "labels.geojson"
    gdf.to_file(vec, driver="GeoJSON")
    return tif, vec, data.astype(np.float32)


def test_patches_classes_and_reprojection(scene: tuple[Path, Path, np.ndarray]) -> None:
    tif, vec, data = scene
    ds = open_dataset(tif, vector=vec, bands=BANDS, patch_size=8)
    assert isinstance(ds, RasterVectorDataset)
    assert ds.classes == ["crop", "tree", "water"]
    assert ds.class_counts() == {"crop": 6, "tree": 1, "water": 25}
    assert ds.labels.dtype == np.int64
    (point,) = np.flatnonzero(ds.labels == 1)
    patch = ds.read(int(point))
    assert patch.shape == (3, 8, 8) and patch.dtype == np.float32
    np.testing.assert_array_equal(patch, data[:, 81:89, 16:24])
    assert patch[0, 4, 4] == 85 * 100 + 20  # the point's own pixel sits at the patch centre
    water = [int(i) for i in np.flatnonzero(ds.labels == 2)]
    assert {tuple(ds.origins[i]) for i in water} == {(r, c) for r in range(0, 40, 8) for c in range(0, 40, 8)}
    crop = np.flatnonzero(ds.labels == 0)
    assert sorted({int(c) for c in ds.origins[crop][:, 1]}) == [56, 64]
    assert len(set(ds.groups[water].tolist())) == 1
    item = ds[water[0]]
    assert tuple(item["image"].shape) == (3, 8, 8)


def test_locations(scene: tuple[Path, Path, np.ndarray]) -> None:
    tif, vec, _ = scene
    ds = RasterVectorDataset(tif, vector=vec, bands=BANDS, patch_size=8)
    (i,) = np.flatnonzero(ds.labels == 1)
    loc = ds.locations[int(i)]
    assert loc.crs == "EPSG:32633"
    assert loc.bounds == pytest.approx((X0 + 160, Y0 - 890, X0 + 240, Y0 - 810))
    lon, lat = TO_WGS84.transform(X0 + 200, Y0 - 850)
    assert loc.lon == pytest.approx(lon) and loc.lat == pytest.approx(lat)


def test_stride_cap_scale_and_small_polygons(scene: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    tif, vec, data = scene
    capped = RasterVectorDataset(tif, vector=vec, bands=BANDS, patch_size=8, max_patches_per_polygon=5)
    assert capped.class_counts() == {"crop": 5, "tree": 1, "water": 5}
    dense = RasterVectorDataset(tif, vector=vec, bands=BANDS, patch_size=8, stride=4)
    assert dense.class_counts()["water"] == 81  # centres 4, 8, ..., 36 on both axes
    scaled = RasterVectorDataset(tif, vector=vec, bands=BANDS, patch_size=8, scale=0.5, offset=1.0)
    r0, c0 = scaled.origins[0]
    np.testing.assert_allclose(scaled.read(0), data[:, r0 : r0 + 8, c0 : c0 + 8] * 0.5 + 1.0)
    # a polygon smaller than the grid still gives one patch, on its representative point
    small = gpd.GeoDataFrame({"name": ["hut"]}, geometry=[_pixel_box(50, 50, 53, 53)], crs="EPSG:32633")
    small.to_file(tmp_path / "small.gpkg", layer="huts")
    ds = RasterVectorDataset(tif, vector=tmp_path / "small.gpkg", layer="huts", bands=BANDS, patch_size=16)
    assert len(ds) == 1 and ds.read(0)[0, 8, 8] == 51 * 100 + 51


def test_nodata_becomes_nan(tmp_path: Path) -> None:
    tif = tmp_path / "nd.tif"
    data = np.ones((1, 20, 20), dtype=np.float32)
    data[0, 5, 5] = -9999
    profile = {"driver": "GTiff", "height": 20, "width": 20, "count": 1, "dtype": "float32", "nodata": -9999}
    with rasterio.open(tif, "w", crs="EPSG:32633", transform=Affine(RES, 0, X0, 0, -RES, Y0), **profile) as dst:
        dst.write(data)
    gdf = gpd.GeoDataFrame({"name": ["a"]}, geometry=[Point(*_utm(5.5, 5.5))], crs="EPSG:32633")
    gdf.to_file(tmp_path / "p.geojson", driver="GeoJSON")
    ds = RasterVectorDataset(tif, vector=tmp_path / "p.geojson", bands="sentinel2-l2a:B04", patch_size=4)
    assert np.isnan(ds.read(0)[0, 2, 2]) and np.isnan(ds.read(0)).sum() == 1
    with pytest.raises(DataError, match="nodata"):
        ds[0]


def test_errors(scene: tuple[Path, Path, np.ndarray], tmp_path: Path) -> None:
    tif, vec, _ = scene
    with pytest.raises(ConfigError, match="fields in the file: name, kind"):
        RasterVectorDataset(tif, vector=vec, bands=BANDS, label_field="class")
    with pytest.raises(DataError, match="has 3 bands but --bands declares 2"):
        RasterVectorDataset(tif, vector=vec, bands="sentinel2-l2a:B02,B03")
    with pytest.raises(BandError, match="declare them with --bands"):
        RasterVectorDataset(tif, vector=vec)
    with pytest.raises(ConfigError, match="--vector"):
        RasterVectorDataset(tif, bands=BANDS)
    far = gpd.GeoDataFrame({"name": ["x"]}, geometry=[Point(0.0, 0.0)], crs="EPSG:4326")
    far.to_file(tmp_path / "far.geojson", driver="GeoJSON")
    with pytest.raises(DataError, match="no labelled feature overlaps"):
        RasterVectorDataset(tif, vector=tmp_path / "far.geojson", bands=BANDS)
    with pytest.raises(DataError, match="missing.gpkg"):
        RasterVectorDataset(tif, vector=tmp_path / "missing.gpkg", bands=BANDS)


@pytest.mark.integration
@pytest.mark.parametrize("kind, n_min", [("polygons", 4), ("points", 6)])
def test_real_landsat_scene(kind: str, n_min: int) -> None:
    scene_dir = SHARED / "landsat8-scene"
    if not scene_dir.is_dir():
        pytest.skip("shared Landsat scene not available")
    stem = "LC08_L1TP_224078_20200518_20200518_01_RT"
    ds = open_dataset(
        scene_dir / f"{stem}.TIF",
        vector=scene_dir / f"{stem}_{kind}.gpkg",
        layer="land_cover",
        label_field="name",
        bands="landsat8:B2,B3,B4",
    )
    assert ds.format_name == "raster-vector"
    assert ds.classes == ["crop", "developed", "tree", "water"]
    assert len(ds) >= n_min and all(n > 0 for n in ds.class_counts().values())
    img = ds[0]["image"]
    assert tuple(img.shape) == (3, 32, 32) and float(img.mean()) > 0
    assert ds.locations[0].crs == "EPSG:32621"
    lon, lat = ds.lonlat()[0]
    assert -56 < lon < -53 and -27 < lat < -24  # southern Brazil
    if kind == "polygons":
        dense = open_dataset(
            scene_dir / f"{stem}.TIF",
            vector=scene_dir / f"{stem}_{kind}.gpkg",
            layer="land_cover",
            bands="landsat8:B2,B3,B4",
            patch_size=4,
        )
        assert len(dense) > len(ds)
