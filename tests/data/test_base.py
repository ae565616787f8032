"""EODataset band handling: selection, mapping to another sensor's bands, masked (missing) bands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from eotransfer.bands import BandSet
from eotransfer.data.base import open_dataset
from eotransfer.errors import BandError, ConfigError


def test_map_bands_to_reorders_and_masks_missing(eurosat_like: Path) -> None:
    full = open_dataset(eurosat_like, bands="eurosat-ms")
    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    ds.select_bands(["B04", "B03", "B02"])  # an RGB-only view of the same files
    mapping = ds.map_bands_to(full.bands, missing="mask")
    assert ds.bands.keys == full.bands.keys
    assert sorted(mapping.unmatched) == sorted(set(full.bands.keys) - {f"sentinel2-l1c:B0{i}" for i in (2, 3, 4)})
    got, ref = ds.checked_read(0), full.checked_read(0)
    present = [full.bands.index(b) for b in ("B02", "B03", "B04")]
    np.testing.assert_array_equal(got[present], ref[present])
    missing = [i for i in range(len(full.bands)) if i not in present]
    assert np.isnan(got[missing]).all()
    assert ds[0]["image"].shape == ref.shape  # the nodata check ignores the masked bands


def test_map_bands_to_by_common_name_across_sensors(eurosat_like: Path) -> None:
    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    ds.select_bands(["B04", "B03", "B02", "B08"])
    target = BandSet.parse("landsat8:B2,B3,B4,B5")  # blue, green, red, nir in Landsat 8 names
    mapping = ds.map_bands_to(target)
    assert [m.source for m in mapping.matches] == [f"sentinel2-l1c:{b}" for b in ("B02", "B03", "B04", "B08")]
    ref = open_dataset(eurosat_like, bands="eurosat-ms").checked_read(1)
    idx = [BandSet.parse("eurosat-ms").index(b) for b in ("B02", "B03", "B04", "B08")]
    np.testing.assert_array_equal(ds.checked_read(1), ref[idx])


def test_map_bands_to_refuses_missing_bands_unless_masked(eurosat_like: Path) -> None:
    ds = open_dataset(eurosat_like, bands="eurosat-ms")
    ds.select_bands(["B04"])
    with pytest.raises(BandError, match="the model's band\\(s\\) .*B02.* pass --missing-bands mask"):
        ds.map_bands_to(BandSet.parse("sentinel2-l1c:B02,B04"))
    with pytest.raises(ConfigError, match="--missing-bands: unknown policy 'drop'"):
        ds.map_bands_to(BandSet.parse("sentinel2-l1c:B02,B04"), missing="drop")
    with pytest.raises(BandError, match="none of its bands"):
        ds.map_bands_to(BandSet.parse("sentinel1:VV,VH"), missing="mask")


def test_merge_classes_relabels_and_records_the_merge(eurosat_like: Path) -> None:
    from eotransfer.api import FitConfig, load_data

    ds = load_data(FitConfig(data=str(eurosat_like), bands="eurosat-ms"))
    before = ds.labels.copy()
    assert ds.classes == ["cropland", "forest", "water"]
    merged = load_data(FitConfig(data=str(eurosat_like), bands="eurosat-ms", merge_classes="land=forest+cropland"))
    assert merged.classes == ["land", "water"]  # the group sits where its first member was
    assert np.array_equal(merged.labels, np.where(before == 2, 1, 0))
    assert merged.class_counts() == {"land": int((before < 2).sum()), "water": int((before == 2).sum())}
    assert merged.provenance()["merged_classes"] == {"land": ["cropland", "forest"], "water": ["water"]}
    assert np.array_equal(merged.read(0), ds.read(0))  # pixels untouched


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("land=forest+crop", "'crop' is not a class"),
        ("land=forest+cropland;wet=water+forest", "'forest' is in both 'land' and 'wet'"),
        ("water=forest+cropland", "clashes with a kept class"),
        ("land", r"is not NEW=CLASS\+CLASS"),
        (" ; ", "empty"),
    ],
)
def test_merge_classes_bad_specs(eurosat_like: Path, spec: str, message: str) -> None:
    from eotransfer.api import FitConfig, load_data

    with pytest.raises(ConfigError, match=message):
        load_data(FitConfig(data=str(eurosat_like), bands="eurosat-ms", merge_classes=spec))
