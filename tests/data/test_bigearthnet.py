"""The BigEarthNet format: S2 (12 bands on the 10 m grid) and S1 patch folders, multi-label."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from pyproj import CRS, Transformer
from rasterio.transform import Affine

from eotransfer.bands import BandSet
from eotransfer.data.base import open_dataset
from eotransfer.data.formats.bigearthnet import BigEarthNetDataset
from eotransfer.errors import DataError

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
S2_GSD = {"B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20, "B08": 10}
S2_GSD |= {"B8A": 20, "B09": 60, "B11": 20, "B12": 20}
ULX, ULY, PX = 400000.0, 5000000.0, 12  # 12 px of 10 m, like BigEarthNet's 120 px scaled down


def _band(path: Path, data: np.ndarray, res: float, dtype: str = "uint16") -> None:
    profile = {"driver": "GTiff", "height": data.shape[0], "width": data.shape[1], "count": 1, "dtype": dtype}
    with rasterio.open(path, "w", crs="EPSG:32633", transform=Affine(res, 0, ULX, 0, -res, ULY), **profile) as dst:
        dst.write(data[None])


def _meta(labels: list[str], lower_key: str = "lry") -> dict[str, object]:
    coords = {"ulx": ULX, "uly": ULY, "lrx": ULX + PX * 10, lower_key: ULY - PX * 10}
    return {"labels": labels, "coordinates": coords, "projection": CRS.from_epsg(32633).to_wkt()}


def _patch(root: Path, name: str, labels: list[str], bands: dict[str, np.ndarray], res: dict[str, float]) -> None:
    d = root / name
    d.mkdir(parents=True)
    for band, arr in bands.items():
        _band(d / f"{name}_{band}.tif", arr, res[band], "float32" if band in ("VV", "VH") else "uint16")
    lower = "lly" if "VV" in bands else "lry"  # the real S1 metadata spell it "lly"
    (d / f"{name}_labels_metadata.json").write_text(json.dumps(_meta(labels, lower)))


@pytest.fixture
def s2_root(tmp_path: Path) -> Path:
    root = tmp_path / "s2"
    rng = np.random.default_rng(0)
    for name, labels in [("S2A_p1", ["Pastures", "Mixed forest"]), ("S2A_p2", ["Water bodies"])]:
        bands = {}
        for b, gsd in S2_GSD.items():
            n = PX * 10 // gsd
            bands[b] = rng.integers(1, 10000, (n, n)).astype(np.uint16)
        _patch(root, name, labels, bands, {b: float(g) for b, g in S2_GSD.items()})
    return root


@pytest.fixture
def s1_root(tmp_path: Path) -> Path:
    root = tmp_path / "s1"
    for name, labels in [("S1A_p1", ["Pastures"]), ("S1A_p2", ["Water bodies", "Pastures"])]:
        bands = {"VV": np.full((PX, PX), -10.0, np.float32), "VH": np.full((PX, PX), -17.0, np.float32)}
        _patch(root, name, labels, bands, {"VV": 10.0, "VH": 10.0})
    return root


def _file(root: Path, patch: str, band: str) -> np.ndarray:
    with rasterio.open(root / patch / f"{patch}_{band}.tif") as src:
        return src.read(1).astype(np.float32)


def test_s2_bands_resampling_and_labels(s2_root: Path) -> None:
    ds = open_dataset(s2_root, resample="nearest")
    assert isinstance(ds, BigEarthNetDataset)
    assert ds.sensor == "sentinel2"
    assert ds.bands.keys == BandSet.parse("sentinel2-l2a").keys and len(ds.bands) == 12
    assert ds.bands.names[8] == "B8A"
    img = ds.read(0)
    assert img.shape == (12, PX, PX) and img.dtype == np.float32
    np.testing.assert_array_equal(img[1], _file(s2_root, "S2A_p1", "B02"))
    np.testing.assert_array_equal(img[4], np.repeat(np.repeat(_file(s2_root, "S2A_p1", "B05"), 2, 0), 2, 1))
    np.testing.assert_array_equal(img[0], np.repeat(np.repeat(_file(s2_root, "S2A_p1", "B01"), 6, 0), 6, 1))
    np.testing.assert_array_equal(img[8], np.repeat(np.repeat(_file(s2_root, "S2A_p1", "B8A"), 2, 0), 2, 1))
    assert ds.classes == ["Mixed forest", "Pastures", "Water bodies"]
    assert ds.labels.tolist() == [1, 2] and ds.labels.dtype == np.int64
    np.testing.assert_array_equal(ds.multilabels, [[1, 1, 0], [0, 0, 1]])
    assert ds.multilabels.dtype == np.float32
    assert tuple(ds[1]["image"].shape) == (12, PX, PX)


def test_s2_bilinear_and_band_subset(s2_root: Path) -> None:
    ds = BigEarthNetDataset(s2_root)  # bilinear by default
    img = ds.read(0)
    b05 = _file(s2_root, "S2A_p1", "B05")
    assert img.shape == (12, PX, PX)
    assert img[4].min() >= b05.min() and img[4].max() <= b05.max()
    np.testing.assert_array_equal(img[1], _file(s2_root, "S2A_p1", "B02"))  # 10 m bands untouched
    sub = BigEarthNetDataset(s2_root, bands="sentinel2-l2a:B04,B03,B02")
    np.testing.assert_array_equal(sub.read(0)[0], _file(s2_root, "S2A_p1", "B04"))


def test_location(s2_root: Path, s1_root: Path) -> None:
    lon, lat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform(ULX + 60, ULY - 60)
    for root in (s2_root, s1_root):
        loc = BigEarthNetDataset(root).locations[0]
        assert loc.crs == "EPSG:32633"
        assert loc.bounds == pytest.approx((ULX, ULY - 120, ULX + 120, ULY))
        assert loc.lon == pytest.approx(lon) and loc.lat == pytest.approx(lat)


def test_s1(s1_root: Path) -> None:
    ds = open_dataset(s1_root)
    assert ds.format_name == "bigearthnet" and ds.sensor == "sentinel1"  # type: ignore[attr-defined]
    assert ds.bands.keys == ["sentinel1:VV", "sentinel1:VH"]
    img = ds.read(1)
    assert img.shape == (2, PX, PX)
    assert np.all(img[0] == -10.0) and np.all(img[1] == -17.0)
    assert ds.classes == ["Pastures", "Water bodies"] and ds.labels.tolist() == [0, 1]


def test_errors(s2_root: Path, tmp_path: Path) -> None:
    (s2_root / "S2A_p2" / "S2A_p2_B11.tif").unlink()
    ds = BigEarthNetDataset(s2_root)
    with pytest.raises(DataError, match="S2A_p2_B11.tif"):
        ds.read(1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no BigEarthNet patch folders"):
        BigEarthNetDataset(tmp_path / "empty")
    odd = tmp_path / "odd" / "x"
    odd.mkdir(parents=True)
    (odd / "x_labels_metadata.json").write_text(json.dumps(_meta(["a"])))
    with pytest.raises(DataError, match="neither Sentinel-1"):
        open_dataset(tmp_path / "odd")


@pytest.mark.integration
@pytest.mark.parametrize("kind, n_bands", [("S2", 12), ("S1", 2)])
def test_real_examples(kind: str, n_bands: int) -> None:
    root = SHARED / "bigearthnet-examples" / f"BigEarthNet-{kind}-Example"
    if not root.is_dir():
        pytest.skip("shared BigEarthNet examples not available")
    ds = open_dataset(root)
    assert ds.format_name == "bigearthnet"
    assert len(ds) == 6 and len(ds.bands) == n_bands
    multilabels = ds.multilabels  # type: ignore[attr-defined]
    assert multilabels.shape == (6, len(ds.classes)) and multilabels.sum() >= 6
    img = ds[0]["image"]
    assert tuple(img.shape) == (n_bands, 120, 120)
    loc = ds.locations[0]
    assert loc.crs == "EPSG:32633" and loc.bounds == pytest.approx((404400, 5341200, 405600, 5342400))
    assert 10 < loc.lon < 15 and 45 < loc.lat < 50  # type: ignore[operator]
