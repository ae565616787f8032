"""The class-folder format on the generated GeoTIFFs: pixels, labels, locations, bands and bad inputs."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from PIL import Image
from pyproj import Transformer

from eotransfer.bands import BandSet
from eotransfer.data.base import Subset, open_dataset
from eotransfer.data.formats.folder import ClassFolderDataset
from eotransfer.data.normalization import Normalizer
from eotransfer.errors import BandError, ConfigError, DataError
from eotransfer.models.model import Normalize


@pytest.fixture(scope="module")
def ds(eurosat_like: Path) -> ClassFolderDataset:
    d = open_dataset(eurosat_like, bands="eurosat-ms")
    assert isinstance(d, ClassFolderDataset)
    return d


def test_samples_labels_and_classes(ds: ClassFolderDataset, fixture_spec: ModuleType) -> None:
    assert ds.format_name == "folder"
    assert len(ds) == 36
    assert ds.classes == sorted(fixture_spec.CLASSES)
    assert ds.class_counts() == dict.fromkeys(sorted(fixture_spec.CLASSES), 12)
    assert ds.bands == BandSet.parse("eurosat-ms")
    for i in (0, 13, 35):
        assert Path(ds.sources[i]).parent.name == ds.classes[ds.labels[i]]
    sample = ds[13]
    assert sample["label"] == 1 and sample["index"] == 13
    img = sample["image"]
    assert isinstance(img, torch.Tensor) and img.dtype == torch.float32
    assert tuple(img.shape) == (13, 16, 16)
    with rasterio.open(ds.sources[13]) as src:
        assert np.array_equal(img.numpy(), src.read().astype(np.float32))


def test_band_order_carries_the_class_signature(ds: ClassFolderDataset, fixture_spec: ModuleType) -> None:
    """Per-class band means follow the fixture's spectra, so the bands are read in EuroSAT-MS order."""
    for c, name in enumerate(fixture_spec.CLASSES):
        k = ds.classes.index(name)
        means = np.mean([ds.read(i).mean(axis=(1, 2)) for i in np.flatnonzero(ds.labels == k)], axis=0)
        expected = fixture_spec.BASE_SPECTRUM + fixture_spec.CLASS_OFFSETS[c]
        np.testing.assert_allclose(means, expected, atol=40)  # 12 files x 256 px of the fixture's noise


def test_locations_crs_bounds_lonlat(ds: ClassFolderDataset) -> None:
    crs_seen = set()
    for i, loc in enumerate(ds.locations):
        with rasterio.open(ds.sources[i]) as src:
            assert loc.crs == src.crs.to_string()
            b = src.bounds
            assert loc.bounds == (b.left, b.bottom, b.right, b.top)
        assert loc.bounds[2] - loc.bounds[0] == 160.0  # 16 px of 10 m
        lon, lat = Transformer.from_crs(loc.crs, "EPSG:4326", always_xy=True).transform(
            (loc.bounds[0] + loc.bounds[2]) / 2, (loc.bounds[1] + loc.bounds[3]) / 2
        )
        assert (loc.lon, loc.lat) == pytest.approx((lon, lat), abs=1e-9)
        crs_seen.add(loc.crs)
    assert crs_seen == {"EPSG:32631", "EPSG:32632"}
    ll = ds.lonlat()
    assert ll.shape == (36, 2) and not np.isnan(ll).any()
    assert len({tuple(p) for p in ll.round(6)}) == 36  # every file its own place
    zone31 = np.array([loc.crs == "EPSG:32631" for loc in ds.locations])
    assert (ll[zone31, 0] < 6).all() and (ll[~zone31, 0] >= 6).all()  # inside their UTM zones


def test_thirteen_unnamed_bands_are_not_guessed(eurosat_like: Path) -> None:
    with pytest.raises(BandError, match="13 band\\(s\\) with no band names.*--bands") as err:
        open_dataset(eurosat_like)
    assert "cropland_00.tif" in str(err.value)


def test_declared_band_count_must_match(eurosat_like: Path) -> None:
    with pytest.raises(DataError, match="has 13 bands but --bands declares 12"):
        open_dataset(eurosat_like, bands="sentinel2-l2a")


def test_bands_inferred_from_descriptions(bad: Path, fixture_spec: ModuleType) -> None:
    d = open_dataset(bad / "nan", nodata="mask")
    assert d.bands.keys == list(fixture_spec.NAN_BANDS)


def test_differing_band_counts_name_the_file(bad: Path) -> None:
    with pytest.raises(DataError, match="b_12bands.tif: has 12 bands but a_00.tif has 13"):
        open_dataset(bad / "band_count", bands="eurosat-ms")


def test_empty_class_folder(bad: Path) -> None:
    with pytest.raises(DataError, match="empty class folder") as err:
        open_dataset(bad / "empty_class", bands="eurosat-ms")
    assert str(bad / "empty_class" / "b") in str(err.value)


def test_corrupt_raster_names_the_file(bad: Path) -> None:
    with pytest.raises(DataError, match="unreadable or corrupt raster") as err:
        open_dataset(bad / "corrupt", bands="eurosat-ms")
    assert str(bad / "corrupt" / "b" / "broken.tif") in str(err.value)


def test_nan_pixels_with_nodata_error(bad: Path) -> None:
    d = open_dataset(bad / "nan", nodata="error")
    i = next(i for i, s in enumerate(d.sources) if s.endswith("b_nan.tif"))
    for j in range(len(d)):
        if j != i:
            assert np.isfinite(d[j]["image"].numpy()).all()
    with pytest.raises(DataError, match="b_nan.tif: 6.2% of its pixels are NaN.*--nodata mask"):
        d[i]


def test_nan_pixels_with_nodata_mask_become_zero(bad: Path, fixture_spec: ModuleType) -> None:
    d = open_dataset(bad / "nan", nodata="mask")
    i = next(i for i, s in enumerate(d.sources) if s.endswith("b_nan.tif"))
    raw = d[i]["image"]
    nan = torch.isnan(raw)
    k = fixture_spec.NAN_BLOCK
    assert nan[:, :k, :k].all() and int(nan.sum()) == 4 * k * k
    norm = Normalizer.fit(d.checked_read, np.arange(len(d)), d.bands)
    assert np.isfinite(norm.mean).all()  # NaN pixels are left out of the statistics
    out = norm(raw)
    assert torch.isfinite(out).all()
    assert torch.count_nonzero(out[nan]) == 0
    assert torch.count_nonzero(out[~nan]) == int((~nan).sum())
    module = Normalize(len(d.bands))
    module.set_from(norm)
    via_model = module(raw[None])[0]
    assert torch.count_nonzero(via_model[nan]) == 0
    torch.testing.assert_close(via_model, out)


def test_raster_nodata_value_becomes_nan(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        data = np.full((3, 8, 8), 500, dtype=np.uint16)
        data[:, 0, :] = 0  # the declared nodata value
        (tmp_path / cls).mkdir()
        with rasterio.open(
            tmp_path / cls / "x.tif", "w", driver="GTiff", width=8, height=8, count=3, dtype="uint16",
            crs="EPSG:32633", transform=Affine(10, 0, 500000, 0, -10, 5000000), nodata=0,
        ) as dst:  # fmt: skip
            dst.write(data)
    d = open_dataset(tmp_path, bands="rgb", nodata="mask")
    img = d[0]["image"].numpy()
    assert np.isnan(img[:, 0]).all() and (img[:, 1:] == 500).all()
    with pytest.raises(DataError, match="x.tif: 12.5% of its pixels are NaN"):
        open_dataset(tmp_path, bands="rgb", nodata="error")[0]


def test_select_bands(ds: ClassFolderDataset, eurosat_like: Path) -> None:
    d = open_dataset(eurosat_like, bands="eurosat-ms")
    full = d[5]["image"]
    d.select_bands(["B04", "green", "sentinel2-l1c:B02"])
    assert d.bands.keys == ["sentinel2-l1c:B04", "sentinel2-l1c:B03", "sentinel2-l1c:B02"]
    assert torch.equal(d[5]["image"], full[[3, 2, 1]])
    d.select_bands(["B8A", "B08"])  # selects again from the full set, not from the previous selection
    assert torch.equal(d[5]["image"], full[[12, 7]])
    assert d.provenance()["bands"] == ["sentinel2-l1c:B8A", "sentinel2-l1c:B08"]
    with pytest.raises(BandError, match="not in this band set"):
        d.select_bands(["VV"])


def test_scale_offset_and_classes(eurosat_like: Path, ds: ClassFolderDataset) -> None:
    d = open_dataset(eurosat_like, bands="eurosat-ms", scale=1e-4, offset=-0.1, classes=["water", "forest"])
    assert d.classes == ["water", "forest"] and len(d) == 24
    assert Path(d.sources[0]).parent.name == "water" and d.labels[0] == 0
    j = ds.sources.index(d.sources[0])
    np.testing.assert_allclose(d[0]["image"].numpy(), ds[j]["image"].numpy() * 1e-4 - 0.1, rtol=1e-6, atol=1e-6)
    with pytest.raises(DataError, match="no folder for class\\(es\\) desert"):
        open_dataset(eurosat_like, bands="eurosat-ms", classes=["desert"])


def test_subset_keeps_labels(ds: ClassFolderDataset) -> None:
    sub = Subset(ds, [0, 12, 24])
    assert len(sub) == 3 and sub.labels.tolist() == [0, 1, 2]
    assert sub[2]["index"] == 24


def test_jpeg_chips_with_lonlat_names(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    names = {"damage": ["-95.1_29.7", "-95.2_29.8"], "no_damage": ["-94.9_30.1", "not_a_place"]}
    for cls, stems in names.items():
        (tmp_path / cls).mkdir()
        for s in stems:
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / cls / f"{s}.jpeg")
    d = open_dataset(tmp_path)
    assert d.bands == BandSet.parse("rgb")
    assert d[0]["image"].shape == (3, 8, 8)
    ll = d.lonlat()
    np.testing.assert_array_equal(ll[:3], [[-95.1, 29.7], [-95.2, 29.8], [-94.9, 30.1]])
    assert np.isnan(ll[3]).all()
    assert d.locations[0].crs == "EPSG:4326"


def test_open_dataset_errors(tmp_path: Path, eurosat_like: Path) -> None:
    with pytest.raises(DataError, match="no such file or folder"):
        open_dataset(tmp_path / "missing")
    with pytest.raises(DataError, match="no class folders"):
        open_dataset(tmp_path)
    with pytest.raises(ConfigError, match="--format: unknown data format 'foldr'; did you mean 'folder'"):
        open_dataset(eurosat_like, format="foldr")
    with pytest.raises(ConfigError, match="--nodata: unknown policy 'skip'"):
        open_dataset(eurosat_like, bands="eurosat-ms", nodata="skip")


def test_fixtures_are_reproducible(generated: Path, tmp_path: Path, fixture_spec: ModuleType) -> None:
    again = fixture_spec.main(tmp_path / "again")
    files = sorted(p.relative_to(generated) for p in generated.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert len([f for f in files if f.parts[0] == "eurosat_like"]) == 36
    for rel in files:
        if rel.suffix == ".tif" and rel.name != "broken.tif":
            with rasterio.open(generated / rel) as a, rasterio.open(again / rel) as b:
                assert np.array_equal(a.read(), b.read(), equal_nan=True) and a.transform == b.transform
        else:
            assert (generated / rel).read_bytes() == (again / rel).read_bytes()
