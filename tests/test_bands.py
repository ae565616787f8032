"""The band catalogue: lookups, ambiguity, suggestions, band sets and the printable table."""

from __future__ import annotations

import pytest

from eotransfer.bands import (
    EUROSAT_MS_ORDER,
    SAR_C_BAND_NM,
    Band,
    BandSet,
    band_table,
    bands_near,
    find_band,
    resolve_sensor,
    sensor_bands,
)
from eotransfer.errors import BandError


@pytest.mark.parametrize(
    ("name", "sensor", "key"),
    [
        ("B04", "sentinel2-l1c", "sentinel2-l1c:B04"),  # name
        ("b04", "sentinel2-l1c", "sentinel2-l1c:B04"),  # case-insensitive
        ("B4", "sentinel2-l1c", "sentinel2-l1c:B04"),  # alias
        ("B8a", "s2", "sentinel2-l1c:B8A"),  # alias of the sensor alias
        ("swir1", "sentinel2-l2a", "sentinel2-l2a:B11"),  # alias
        ("red", "landsat8", "landsat8:B4"),  # common name
        ("nir08", "landsat8", "landsat8:B5"),  # common name
        ("nir", "landsat8", "landsat8:B5"),  # alias (Landsat 8 has no band with common name nir)
        ("B1", "landsat8", "landsat8:B1"),  # exact name beats the alias B1 of no other band here
        ("VH", "s1", "sentinel1:VH"),
    ],
)
def test_find_band_by_name_alias_common_name(name: str, sensor: str, key: str) -> None:
    assert find_band(name, sensor).key == key


@pytest.mark.parametrize(
    ("spec", "key"),
    [
        ("sentinel2-l1c:B8A", "sentinel2-l1c:B8A"),
        ("landsat8:nir", "landsat8:B5"),
        ("rgbn:N", "rgbn:nir"),
        ("landsat7:red", "landsat7:B3"),
        ("naip:nir", "rgbn:nir"),  # sensor alias in the prefix
    ],
)
def test_find_band_sensor_colon_name(spec: str, key: str) -> None:
    assert find_band(spec).key == key


def test_find_band_returns_catalogue_values() -> None:
    b = find_band("sentinel2-l1c:B04")
    assert (b.common_name, b.wavelength_nm, b.bandwidth_nm, b.gsd_m, b.kind) == ("red", 664.6, 31.0, 10.0, "optical")
    assert find_band("landsat8:B10").kind == "thermal"
    assert find_band("sentinel1:VV").kind == "sar"


def test_ambiguous_name_lists_every_candidate() -> None:
    with pytest.raises(BandError, match="ambiguous") as err:
        find_band("red")
    msg = str(err.value)
    for key in ("sentinel2-l1c:B04", "sentinel2-l2a:B04", "landsat8:B4", "landsat7:B3", "rgb:red", "rgbn:red"):
        assert key in msg
    assert "prefix it with the sensor" in msg


def test_ambiguous_between_l1c_and_l2a() -> None:
    with pytest.raises(BandError) as err:
        find_band("B04")
    assert "sentinel2-l1c:B04" in str(err.value) and "sentinel2-l2a:B04" in str(err.value)


@pytest.mark.parametrize(
    ("name", "sensor", "suggestion"),
    [("nri", "rgbn", "nir"), ("B8AA", "sentinel2-l1c", "B8A"), ("swir-1", "sentinel2-l1c", "swir1")],
)
def test_unknown_band_did_you_mean(name: str, sensor: str, suggestion: str) -> None:
    with pytest.raises(BandError, match=f"unknown band '{name}'") as err:
        find_band(name, sensor)
    assert f"did you mean '{suggestion}'?" in str(err.value)


def test_unknown_sensor_did_you_mean() -> None:
    with pytest.raises(BandError, match="did you mean 'landsat8'"):
        resolve_sensor("landsat-8")
    assert resolve_sensor("S2") == "sentinel2-l1c"
    assert resolve_sensor("l9") == "landsat8"


def test_bands_near_sorted_by_distance() -> None:
    assert [b.key for b in bands_near(560, tolerance_nm=5)] == [
        "sentinel2-l1c:B03",
        "sentinel2-l2a:B03",
        "landsat8:B3",
        "landsat7:B2",
    ]
    near = bands_near(850, "sentinel2-l1c", tolerance_nm=20)
    assert [b.name for b in near] == ["B8A", "B08"]  # 14.7 nm then 17.2 nm away
    assert bands_near(850, "sentinel2-l1c", tolerance_nm=10) == []
    assert [b.key for b in bands_near(SAR_C_BAND_NM, "sentinel1", tolerance_nm=1)] == ["sentinel1:VV", "sentinel1:VH"]


def test_eurosat_ms_order_has_b8a_last() -> None:
    bs = BandSet.parse("eurosat-ms")
    assert bs.names == ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A"]
    assert bs.names == list(EUROSAT_MS_ORDER)
    assert {b.sensor for b in bs} == {"sentinel2-l1c"}
    assert bs.index("B8A") == 12 and bs.index("nir08") == 12 and bs.index("B10") == 9
    # the catalogue's own order differs: B8A sits between B08 and B09
    assert BandSet.parse("sentinel2-l1c").names.index("B8A") == 8


@pytest.mark.parametrize(
    ("spec", "keys"),
    [
        ("sentinel2-l1c:B04,B03,B02", ["sentinel2-l1c:B04", "sentinel2-l1c:B03", "sentinel2-l1c:B02"]),
        ("landsat8:blue,green,red", ["landsat8:B2", "landsat8:B3", "landsat8:B4"]),
        ("rgb", ["rgb:red", "rgb:green", "rgb:blue"]),
        ("landsat8:B4,sentinel1:VV,VH", ["landsat8:B4", "sentinel1:VV", "sentinel1:VH"]),
        (["sentinel2-l2a:B08", "rgbn:nir"], ["sentinel2-l2a:B08", "rgbn:nir"]),
    ],
)
def test_bandset_parse(spec: str | list[str], keys: list[str]) -> None:
    assert BandSet.parse(spec).keys == keys


def test_parse_round_trips_joined_keys() -> None:
    # api.evaluate/predict pass the card's bands as ",".join(BandSet.keys): every item carries its sensor
    for spec in ("eurosat-ms", "sentinel2-l2a", "landsat8:B2,B3,B4", "sentinel2-l1c:B04,sentinel1:VV,VH"):
        bs = BandSet.parse(spec)
        assert BandSet.parse(",".join(bs.keys)) == bs
    with pytest.raises(BandError, match="unknown band 'bogus' in sensor sentinel2-l1c"):
        BandSet.parse("sentinel2-l1c:B04,bogus")


def test_parse_full_sensors() -> None:
    assert len(BandSet.parse("sentinel2-l1c")) == 13
    assert len(BandSet.parse("sentinel2-l2a")) == 12
    assert "B10" not in BandSet.parse("sentinel2-l2a").names
    assert len(BandSet.parse("landsat8")) == 11
    assert BandSet.parse("s1").names == ["VV", "VH"]


@pytest.mark.parametrize("spec", ["sentinel2-l1c:B02,B02", "sentinel2-l1c:B02,B2", "landsat8:nir,B5"])
def test_duplicates_refused(spec: str) -> None:
    with pytest.raises(BandError, match="twice"):
        BandSet.parse(spec)


def test_empty_bandset_refused() -> None:
    with pytest.raises(BandError, match="at least one band"):
        BandSet(())


def test_subset_and_index() -> None:
    bs = BandSet.parse("eurosat-ms")
    sub = bs.subset(["red", "green", "B2"])
    assert sub.keys == ["sentinel2-l1c:B04", "sentinel2-l1c:B03", "sentinel2-l1c:B02"]
    assert bs.index("sentinel2-l1c:B12") == 11
    with pytest.raises(BandError, match="not in this band set"):
        BandSet.parse("rgb").index("nir")


def test_index_of_a_pre_post_stack_refuses_a_shared_common_name() -> None:
    from eotransfer.data.formats.xbd import pre_disaster_bands

    stack = BandSet(pre_disaster_bands().bands + BandSet.parse("rgb").bands)
    assert stack.index("pre_red") == 0 and stack.index("rgb:red") == 3 and stack.index("rgb-pre:pre_blue") == 2
    with pytest.raises(BandError, match=r"'red' is ambiguous.*rgb-pre:pre_red, rgb:red"):
        stack.index("red")
    assert stack.subset(["rgb:red", "rgb:green", "rgb:blue"]).keys == ["rgb:red", "rgb:green", "rgb:blue"]


def test_bandset_serialisation_round_trip() -> None:
    bs = BandSet.parse("landsat8:B2,B3,B4,B10")
    again = BandSet.from_list(bs.to_list())
    assert again == bs
    assert [b.kind for b in again] == ["optical", "optical", "optical", "thermal"]
    assert Band.from_dict(bs[0].to_dict()) == bs[0]


def test_band_table_sentinel2_l1c() -> None:
    lines = band_table("sentinel2-l1c").splitlines()
    rows = lines[1:]
    assert len(rows) == 13
    assert [r.split()[1] for r in rows] == [b.name for b in sensor_bands("sentinel2-l1c")]
    assert all(r.split()[0] == "sentinel2-l1c" for r in rows)
    b04 = next(r for r in rows if r.split()[1] == "B04").split()
    assert b04[2:6] == ["red", "664.6", "31", "10"]


def test_band_table_sar_shows_c_band_and_all_sensors() -> None:
    assert "C-band" in band_table("sentinel1")
    n_all = sum(
        len(sensor_bands(s)) for s in ("sentinel2-l1c", "sentinel2-l2a", "landsat8", "landsat7", "s1", "rgb", "rgbn")
    )
    assert len(band_table().splitlines()) == 1 + n_all
