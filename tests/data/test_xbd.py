"""The xBD format: one chip per building of the post-disaster labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import eotransfer.data.formats.xbd as xbd_module
from eotransfer.data.base import open_dataset
from eotransfer.data.formats.xbd import XBDDataset
from eotransfer.errors import ConfigError, DataError

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SIZE = 128


def _square(x0: float, y0: float, w: float) -> str:
    return f"POLYGON (({x0} {y0}, {x0 + w} {y0}, {x0 + w} {y0 + w}, {x0} {y0 + w}, {x0} {y0}))"


def _write_tile(root: Path, tile: str, buildings: list[tuple[str, float, float, float]], seed: int) -> None:
    """Pre/post PNGs of random pixels and label JSONs; buildings are (subtype, x0, y0, width) in pixels."""
    rng = np.random.default_rng(seed)
    for phase in ("pre", "post"):
        arr = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / "images" / f"{tile}_{phase}_disaster.png")
        xy, lnglat = [], []
        for k, (subtype, x0, y0, w) in enumerate(buildings):
            props = {"feature_type": "building", "uid": f"{tile}-{k}"}
            if phase == "post":
                props["subtype"] = subtype
            xy.append({"properties": props, "wkt": _square(x0, y0, w)})
            # a made-up geographic footprint: 1 px = 1e-5 degree east/south of (10, 45)
            lnglat.append({"properties": props, "wkt": _square(10 + x0 * 1e-5, 45 - (y0 + w) * 1e-5, w * 1e-5)})
        doc = {
            "features": {"lng_lat": lnglat, "xy": xy},
            "metadata": {"img_name": f"{tile}_{phase}_disaster.png"},
        }
        (root / "labels" / f"{tile}_{phase}_disaster.json").write_text(json.dumps(doc))


@pytest.fixture
def xbd_root(tmp_path: Path) -> Path:
    root = tmp_path / "xbd"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    _write_tile(
        root,
        "fire-a_00000001",
        [("no-damage", 36, 26, 9), ("destroyed", 0, 118, 10), ("un-classified", 80, 80, 6)],
        seed=1,
    )
    _write_tile(root, "flood-b_00000002", [("minor-damage", 60, 60, 8), ("major-damage", 20, 90, 8)], seed=2)
    return root


def _image(root: Path, tile: str, phase: str) -> np.ndarray:
    return np.asarray(Image.open(root / "images" / f"{tile}_{phase}_disaster.png")).transpose(2, 0, 1)


def test_chips_labels_and_classes(xbd_root: Path) -> None:
    ds = open_dataset(xbd_root, chip_size=16)
    assert isinstance(ds, XBDDataset)
    assert ds.classes == ["no-damage", "minor-damage", "major-damage", "destroyed"]
    assert ds.labels.tolist() == [0, 3, 1, 2]  # un-classified excluded
    assert ds.labels.dtype == np.int64
    assert ds.events == ["fire-a", "fire-a", "flood-b", "flood-b"]
    assert len(ds.bands) == 6
    assert ds.bands.keys[3:] == ["rgb:red", "rgb:green", "rgb:blue"]
    assert ds.bands.keys[:3] == ["rgb-pre:pre_red", "rgb-pre:pre_green", "rgb-pre:pre_blue"]
    assert [b.wavelength_nm for b in ds.bands][:3] == [b.wavelength_nm for b in ds.bands][3:]
    item = ds[0]
    assert tuple(item["image"].shape) == (6, 16, 16) and item["label"] == 0
    # building 0: square x 36..45, y 26..35 -> centroid (40.5, 30.5) -> centre pixel row 30, col 40
    chip = ds.read(0)
    pre, post = _image(xbd_root, "fire-a_00000001", "pre"), _image(xbd_root, "fire-a_00000001", "post")
    np.testing.assert_array_equal(chip[:3], pre[:, 22:38, 32:48])
    np.testing.assert_array_equal(chip[3:], post[:, 22:38, 32:48])
    assert chip.dtype == np.float32


def test_chip_at_tile_border_is_zero_padded(xbd_root: Path) -> None:
    ds = XBDDataset(xbd_root, chip_size=16)
    chip = ds.read(1)  # centroid (5, 123): rows 115..130, cols -3..12
    post = _image(xbd_root, "fire-a_00000001", "post")
    assert chip.shape == (6, 16, 16)
    np.testing.assert_array_equal(chip[3:, :13, 3:], post[:, 115:128, 0:13])
    assert not chip[:, 13:, :].any() and not chip[:, :, :3].any()


def test_unclassified_included_when_asked(xbd_root: Path) -> None:
    ds = XBDDataset(xbd_root, include_unclassified=True)
    assert ds.classes[-1] == "un-classified" and len(ds.classes) == 5
    assert sorted(ds.labels.tolist()) == [0, 1, 2, 3, 4]


def test_modes_events_and_locations(xbd_root: Path) -> None:
    post = XBDDataset(xbd_root, mode="post", chip_size=8)
    assert post.read(0).shape == (3, 8, 8) and post.bands.keys == ["rgb:red", "rgb:green", "rgb:blue"]
    pre = XBDDataset(xbd_root, mode="pre", chip_size=8)
    np.testing.assert_array_equal(pre.read(0), _image(xbd_root, "fire-a_00000001", "pre")[:, 26:34, 36:44])
    only_b = XBDDataset(xbd_root, events=["flood-b"])
    assert only_b.events == ["flood-b", "flood-b"] and only_b.labels.tolist() == [1, 2]
    only_b.check_classes()  # empty damage classes are allowed: the class order is fixed
    loc = post.locations[0]
    assert loc.crs == "EPSG:4326"
    assert loc.lon == pytest.approx(10 + 40.5e-5) and loc.lat == pytest.approx(45 - 30.5e-5)
    with pytest.raises(ConfigError, match="flood-b"):
        XBDDataset(xbd_root, events=["quake-c"])
    with pytest.raises(ConfigError, match="mode"):
        XBDDataset(xbd_root, mode="both")


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The paths the xbd format decodes from now on, in order."""
    calls: list[Path] = []
    real = xbd_module.read_pixels

    def counting(path: Path, window: object = None) -> np.ndarray:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(xbd_module, "read_pixels", counting)
    return calls


def test_tiles_decoded_once(xbd_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_reads(monkeypatch)
    ds = XBDDataset(xbd_root, include_unclassified=True)
    for i in range(len(ds)):
        ds.read(i)
    for i in range(len(ds)):
        ds.read(i)
    assert len(calls) == 4  # pre + post of each of the two tiles


def test_shuffled_reading_of_many_tiles_decodes_each_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "xbd"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for t in range(10):  # more tiles than a small cache would hold
        _write_tile(root, f"fire-a_{t:08d}", [("no-damage", 20, 20, 8), ("destroyed", 60, 60, 8)], seed=t)
    calls = _count_reads(monkeypatch)
    ds = XBDDataset(root, chip_size=8)
    rng = np.random.default_rng(0)
    chips = {}
    for _ in range(3):  # three shuffled epochs
        for i in rng.permutation(len(ds)):
            chip = ds.read(int(i))
            assert chip.dtype == np.float32
            chips.setdefault(int(i), chip)
            assert np.array_equal(chips[int(i)], chip)
    assert len(calls) == 20  # pre + post of each tile, once
    t0 = ds.tile_pixels(0)
    assert t0.dtype == np.uint8  # 8-bit PNGs are cached as 8 bits
    pre = _image(root, "fire-a_00000000", "pre")
    assert np.array_equal(chips[0][:3], pre[:, 20:28, 20:28].astype(np.float32))  # chip centred on (24, 24)


def test_missing_partner_files(xbd_root: Path) -> None:
    (xbd_root / "images" / "flood-b_00000002_pre_disaster.png").unlink()
    with pytest.raises(DataError, match="flood-b_00000002_pre_disaster.png"):
        XBDDataset(xbd_root)
    assert len(XBDDataset(xbd_root, mode="post")) == 4  # post-only does not need the pre image
    (xbd_root / "labels" / "fire-a_00000001_post_disaster.json").unlink()
    with pytest.raises(DataError, match="fire-a_00000001_post_disaster.json"):
        XBDDataset(xbd_root, mode="post")


def test_no_buildings(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    _write_tile(root, "fire-a_00000001", [("un-classified", 10, 10, 5)], seed=0)
    with pytest.raises(DataError, match="no buildings"):
        XBDDataset(root)


@pytest.mark.integration
def test_real_xbd() -> None:
    root = SHARED / "xbd"
    if not root.is_dir():
        pytest.skip("shared xBD data not available")
    ds = open_dataset(root)
    assert ds.format_name == "xbd"
    assert ds.classes == ["no-damage", "minor-damage", "major-damage", "destroyed"]
    assert all(n > 0 for n in ds.class_counts().values())
    assert set(ds.events) == {"santa-rosa-wildfire", "guatemala-volcano"}  # type: ignore[attr-defined]
    item = ds[len(ds) - 1]
    assert tuple(item["image"].shape) == (6, 64, 64)
    lon, lat = ds.lonlat()[0]
    assert -180 <= lon <= 180 and -90 <= lat <= 90
