"""Band mapping: name, common name, wavelength, explicit policies, kernel scale and serialisation."""

from __future__ import annotations

import json
import math

import pytest
import torch

from eotransfer.bands import BandSet
from eotransfer.errors import BandError
from eotransfer.models.band_mapping import BandMapping, adapt_first_layer_weight, map_bands

S2 = BandSet.parse("sentinel2-l1c")


def _weight(n_in: int, out: int = 4, k: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(out, n_in, k, k, generator=torch.Generator().manual_seed(seed))


def test_identity_mapping() -> None:
    m = map_bands(S2, S2)
    assert [x.source_index for x in m.matches] == list(range(13))
    assert {x.method for x in m.matches} == {"name"}
    assert m.scale == 1.0
    assert m.is_identity(13)
    w = _weight(13)
    assert torch.equal(adapt_first_layer_weight(w, m), w)


def test_l1c_to_l2a_drops_b10() -> None:
    l2a = BandSet.parse("sentinel2-l2a")
    m = map_bands(S2, l2a)
    # the sensors differ, so keys never match; the identical common names carry every band, 0 nm apart
    assert [x.source for x in m.matches] == [f"sentinel2-l1c:{n}" for n in l2a.names]
    assert [x.source_index for x in m.matches] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12]
    assert {x.method for x in m.matches} == {"common_name"}
    assert all(x.delta_nm == 0.0 for x in m.matches)
    assert m.scale == pytest.approx(13 / 12)
    assert not m.is_identity(13)
    w = _weight(13)
    new = adapt_first_layer_weight(w, m)
    assert new.shape == (4, 12, 3, 3)
    assert torch.equal(new[:, 10], w[:, 11] * (13 / 12))  # B11
    assert torch.equal(new[:, 9], w[:, 9] * (13 / 12))  # B09


def test_eurosat_order_to_catalogue_order_by_name() -> None:
    m = map_bands(BandSet.parse("eurosat-ms"), S2)
    # the catalogue puts B8A 9th; EuroSAT files keep it last (index 12)
    assert m.matches[8].target == "sentinel2-l1c:B8A" and m.matches[8].source_index == 12
    assert m.matches[9].source_index == 8  # B09
    assert {x.method for x in m.matches} == {"name"}
    assert m.scale == 1.0


def test_sentinel2_to_landsat8_by_common_name() -> None:
    m = map_bands(S2, BandSet.parse("landsat8:B2,B3,B4"))
    assert [(x.target, x.source, x.source_index, x.method) for x in m.matches] == [
        ("landsat8:B2", "sentinel2-l1c:B02", 1, "common_name"),
        ("landsat8:B3", "sentinel2-l1c:B03", 2, "common_name"),
        ("landsat8:B4", "sentinel2-l1c:B04", 3, "common_name"),
    ]
    assert [x.delta_nm for x in m.matches] == pytest.approx([10.4, 1.6, 10.0])
    assert m.scale == pytest.approx(13 / 3)
    w = _weight(13)
    new = adapt_first_layer_weight(w, m)
    assert new.shape == (4, 3, 3, 3)
    for j, i in enumerate((1, 2, 3)):
        assert torch.equal(new[:, j], w[:, i] * (13 / 3))


def test_wavelength_fallback_nearest_overlapping_band() -> None:
    # rgbn 'nir' (820 nm, 80 nm wide) and Landsat 8 B5 (common name nir08, 864.7 nm) overlap in wavelength
    m = map_bands(BandSet.parse("landsat8"), BandSet.parse("rgbn:nir"))
    (x,) = m.matches
    assert (x.source, x.source_index, x.method) == ("landsat8:B5", 4, "wavelength")
    assert x.delta_nm == pytest.approx(44.7)
    # among several overlapping candidates the nearest centre wins: B07 (782.8 nm) over B8A (864.7 nm)
    source = BandSet.parse("sentinel2-l1c:B02,B03,B04,B07,B8A")
    (y,) = map_bands(source, BandSet.parse("rgbn:nir")).matches
    assert (y.source, y.source_index, y.method) == ("sentinel2-l1c:B07", 3, "wavelength")
    assert y.delta_nm == pytest.approx(37.2)


def test_rgbn_nir_to_full_sentinel2_uses_b08() -> None:
    (x,) = map_bands(S2, BandSet.parse("rgbn:nir")).matches
    assert (x.source, x.method) == ("sentinel2-l1c:B08", "common_name")


def test_wavelength_tolerance_without_overlap() -> None:
    # landsat8 B1 (443, 16 wide) vs rgb blue (470, 80 wide: 430-510): overlap, so a match even at tolerance 0
    (x,) = map_bands(BandSet.parse("landsat8:B1"), BandSet.parse("rgb:blue"), tolerance_nm=0).matches
    assert x.method == "wavelength"
    # S2 B05 (704.1 +- 7.5) vs rgbn red (630 +- 40): no overlap, 74 nm apart
    with pytest.raises(BandError):
        map_bands(BandSet.parse("sentinel2-l1c:B05"), BandSet.parse("rgbn:red"), tolerance_nm=70)
    (y,) = map_bands(BandSet.parse("sentinel2-l1c:B05"), BandSet.parse("rgbn:red"), tolerance_nm=80).matches
    assert (y.source, y.method) == ("sentinel2-l1c:B05", "wavelength")


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("sentinel2-l1c", "sentinel1:VV"),  # SAR data, optical weights
        ("sentinel1", "sentinel2-l1c:B04"),  # optical data, SAR weights
        ("sentinel2-l1c", "landsat8:B10"),  # thermal is not matched to optical either
    ],
)
def test_sar_and_thermal_never_matched_by_wavelength(source: str, target: str) -> None:
    with pytest.raises(BandError, match="no counterpart"):
        map_bands(BandSet.parse(source), BandSet.parse(target), tolerance_nm=1e12)


def test_sar_to_sar_by_name() -> None:
    m = map_bands(BandSet.parse("sentinel1"), BandSet.parse("sentinel1:VH"))
    assert [(x.source_index, x.method) for x in m.matches] == [(1, "name")]
    assert m.scale == 2.0


def test_unmatched_without_policy_names_band_and_option() -> None:
    with pytest.raises(BandError) as err:
        map_bands(BandSet.parse("rgb"), BandSet.parse("sentinel2-l1c:B04,B12"))
    msg = str(err.value)
    assert "sentinel2-l1c:B12" in msg
    assert "--band-policy" in msg
    assert "rgb:red" in msg  # lists the weights' bands


def test_unknown_policy_refused() -> None:
    with pytest.raises(BandError, match="--band-policy: unknown policy 'ones'"):
        map_bands(S2, S2, policy="ones")


SRC3 = BandSet.parse("sentinel2-l1c:B02,B03,B04")
TGT = BandSet.parse("sentinel2-l1c:B04,sentinel1:VV")


def test_policy_zero() -> None:
    m = map_bands(SRC3, TGT, policy="zero")
    assert [(x.source_index, x.method) for x in m.matches] == [(2, "name"), (None, "policy:zero")]
    assert m.unmatched == ["sentinel1:VV"]
    assert m.scale == 3.0  # 3 source bands, 1 active channel
    w = _weight(3)
    new = adapt_first_layer_weight(w, m)
    assert torch.equal(new[:, 0], w[:, 2] * 3.0)
    assert torch.count_nonzero(new[:, 1]) == 0


def test_policy_mean() -> None:
    m = map_bands(SRC3, TGT, policy="mean")
    assert m.matches[1].method == "policy:mean"
    assert m.scale == 1.5  # 3 source bands, 2 active channels
    w = _weight(3)
    new = adapt_first_layer_weight(w, m)
    assert torch.equal(new[:, 0], w[:, 2] * 1.5)
    torch.testing.assert_close(new[:, 1], w.mean(dim=1) * 1.5, rtol=0, atol=1e-7)


def test_policy_random_is_bounded_and_seeded() -> None:
    m = map_bands(SRC3, TGT, policy="random")
    assert m.matches[1].method == "policy:random" and m.scale == 1.5
    w = _weight(3, out=16)
    a = adapt_first_layer_weight(w, m, torch.Generator().manual_seed(1))
    b = adapt_first_layer_weight(w, m, torch.Generator().manual_seed(1))
    c = adapt_first_layer_weight(w, m, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.equal(a[:, 1], c[:, 1])
    assert torch.equal(a[:, 0], w[:, 2] * 1.5)
    bound = math.sqrt(3.0 / (2 * 9)) * 1.5  # Kaiming-uniform (a=1) over fan-in 2 channels x 3 x 3, then scaled
    assert float(a[:, 1].abs().max()) <= bound
    assert float(a[:, 1].abs().max()) > 0.8 * bound  # 144 uniform draws reach near the bound
    assert abs(float(a[:, 1].mean())) < 0.25 * bound


@pytest.mark.parametrize(
    ("source", "target", "policy", "scale"),
    [
        ("sentinel2-l1c", "rgb", None, 13 / 3),
        ("rgb", "sentinel2-l1c:B04,B03,B02,B08", "zero", 3 / 3),
        ("rgb", "sentinel2-l1c:B04,B03,B02,B08", "mean", 3 / 4),
        ("rgb", "sentinel2-l1c:B04,B03,B02,B08,B11", "random", 3 / 5),
        ("sentinel2-l1c:B02", "sentinel2-l1c:B02,B11,B12", "zero", 1.0),
        ("sentinel2-l1c:B11", "sentinel2-l1c:B02,B03", "zero", 1.0),  # nothing active: no division by zero
    ],
)
def test_kernel_scale_is_n_source_over_n_active(source: str, target: str, policy: str | None, scale: float) -> None:
    assert map_bands(BandSet.parse(source), BandSet.parse(target), policy=policy).scale == pytest.approx(scale)


def test_mapping_dict_round_trip() -> None:
    m = map_bands(S2, BandSet.parse("landsat8:B2,B3,B4,B10"), policy="mean")
    d = json.loads(json.dumps(m.to_dict()))  # as stored in a card
    again = BandMapping.from_dict(d)
    assert again == m
    assert again.unmatched == ["landsat8:B10"]
    assert d["matches"][3] == {
        "target": "landsat8:B10",
        "source": None,
        "source_index": None,
        "method": "policy:mean",
        "delta_nm": None,
    }
    table = again.table().splitlines()
    assert len(table) == 1 + 4 + 1 and table[-1] == f"kernel scale: {13 / 4:.3f}"


def test_shared_kernels_of_a_pre_post_stack() -> None:
    """xBD's pre/post RGB stack on Sentinel-2 weights: each weight band fills two data bands."""
    from eotransfer.data.formats.xbd import pre_disaster_bands

    stack = BandSet(pre_disaster_bands().bands + BandSet.parse("rgb").bands)
    m = map_bands(S2, stack)
    assert m.shared_kernels == {
        "sentinel2-l1c:B04": ["rgb-pre:pre_red", "rgb:red"],
        "sentinel2-l1c:B03": ["rgb-pre:pre_green", "rgb:green"],
        "sentinel2-l1c:B02": ["rgb-pre:pre_blue", "rgb:blue"],
    }
    assert m.shared_share == 1.0
    lines = m.table(kernels=True).splitlines()
    assert len(lines) == 1 + 6 + 1 + 3 and lines[-3].startswith(
        "shared kernel: sentinel2-l1c:B04 fills rgb-pre:pre_red"
    )
    assert len(m.table().splitlines()) == 1 + 6 + 1  # a data -> model mapping says nothing of kernels
    # the first layer applies one kernel to both dates and adds them: swapping pre and post changes nothing
    w = adapt_first_layer_weight(_weight(13), m)
    x = torch.randn(2, 6, 8, 8)
    conv = torch.nn.functional.conv2d
    assert torch.allclose(conv(x, w), conv(x[:, [3, 4, 5, 0, 1, 2]], w), atol=1e-5)


def test_no_shared_kernels_one_band_each() -> None:
    m = map_bands(S2, BandSet.parse("rgb"))
    assert m.shared_kernels == {} and m.shared_share == 0.0
    # Sentinel-2 B08 and B8A both nearest Landsat 8's B5 (nir): a partial share
    partial = map_bands(BandSet.parse("landsat8"), BandSet.parse("sentinel2-l1c:B04,B08,B8A"))
    shared = partial.shared_kernels
    assert len(shared) == 1 and sorted(next(iter(shared.values()))) == ["sentinel2-l1c:B08", "sentinel2-l1c:B8A"]
    assert partial.shared_share == pytest.approx(2 / 3)
