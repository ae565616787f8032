"""Building-level damage prediction for xBD-style inputs, written as GeoJSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image
from pyproj import Transformer

from eotransfer.data.formats.xbd import DAMAGE_CLASSES, XBDDataset
from eotransfer.errors import ConfigError, DataError
from eotransfer.predict.buildings import model_phases, phase_images, predict_buildings

SIZE = 128
TILE = "fire-a_00000001"
#: (subtype, x0, y0, width) in pixels; one overhangs the bottom-left corner, one is un-classified
BUILDINGS = [
    ("no-damage", 36, 26, 9), ("destroyed", 0, 118, 10), ("minor-damage", 60, 60, 8),
    ("major-damage", 20, 90, 8), ("un-classified", 80, 80, 6), ("no-damage", 100, 10, 12),
]  # fmt: skip


def _square(x0: float, y0: float, w: float) -> str:
    return f"POLYGON (({x0} {y0}, {x0 + w} {y0}, {x0 + w} {y0 + w}, {x0} {y0 + w}, {x0} {y0}))"


def _lonlat_square(x0: float, y0: float, w: float) -> str:
    # a made-up geographic footprint: 1 px = 1e-5 degree east/south of (10, 45)
    return _square(10 + x0 * 1e-5, 45 - (y0 + w) * 1e-5, w * 1e-5)


@pytest.fixture
def xbd_root(tmp_path: Path) -> Path:
    """One xBD tile: pre/post PNGs whose post red channel is bright where buildings are damaged."""
    root = tmp_path / "xbd"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for phase in ("pre", "post"):
        arr = rng.integers(0, 60, (SIZE, SIZE, 3), dtype=np.uint8)
        xy, lnglat = [], []
        for k, (subtype, x0, y0, w) in enumerate(BUILDINGS):
            if phase == "post" and subtype in DAMAGE_CLASSES:
                arr[y0 : y0 + w, x0 : x0 + w, 0] = 60 * DAMAGE_CLASSES.index(subtype) + 40
            props = {"feature_type": "building", "uid": f"b{k}"}
            if phase == "post":
                props["subtype"] = subtype
            xy.append({"properties": props, "wkt": _square(x0, y0, w)})
            lnglat.append({"properties": props, "wkt": _lonlat_square(x0, y0, w)})
        Image.fromarray(arr).save(root / "images" / f"{TILE}_{phase}_disaster.png")
        doc = {"features": {"lng_lat": lnglat, "xy": xy}, "metadata": {"img_name": f"{TILE}_{phase}_disaster.png"}}
        (root / "labels" / f"{TILE}_{phase}_disaster.json").write_text(json.dumps(doc))
    return root


class RedPredictor:
    """Damage from the mean post-disaster red (channel 3 of a stacked chip) in the chip's central 4×4."""

    def __init__(self) -> None:
        self.chips: list[np.ndarray] = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.chips.extend(x)
        c = x.shape[-1] // 2
        red = x[:, 3, c - 2 : c + 2, c - 2 : c + 2].mean(axis=(1, 2))
        logits = -np.abs(red[:, None] - (60 * np.arange(4) + 40)[None, :]) / 10.0
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def test_chips_are_the_training_chips_and_geojson_carries_damage(xbd_root: Path, tmp_path: Path) -> None:
    post = xbd_root / "images" / f"{TILE}_post_disaster.png"
    labels = xbd_root / "labels" / f"{TILE}_post_disaster.json"
    images = phase_images(post, model_phases(["rgb-pre:pre_red", "rgb-pre:pre_green", "rgb-pre:pre_blue",
                                              "rgb:red", "rgb:green", "rgb:blue"]))  # fmt: skip
    assert [p.name for p in images] == [f"{TILE}_pre_disaster.png", f"{TILE}_post_disaster.png"]
    pred = RedPredictor()
    out = tmp_path / "out" / "buildings.geojson"
    summary = predict_buildings(images, labels, pred, DAMAGE_CLASSES, chip_size=16, out_path=out)

    # every building is predicted, the un-classified one too; chips equal the xbd format's training chips
    assert summary["n_buildings"] == len(BUILDINGS) and len(pred.chips) == len(BUILDINGS)
    ds = XBDDataset(xbd_root, chip_size=16, mode="stack")
    classified = [k for k, b in enumerate(BUILDINGS) if b[0] in DAMAGE_CLASSES]
    assert len(ds) == len(classified)
    for i, k in enumerate(classified):
        np.testing.assert_array_equal(pred.chips[k], ds.read(i))
    assert (pred.chips[1][:, 13:, :] == 0).all() and (pred.chips[1][:, :, :3] == 0).all()  # zero-padded overhang

    doc = json.loads(out.read_text())
    assert doc["type"] == "FeatureCollection" and doc["classes"] == DAMAGE_CLASSES
    assert [f["properties"]["uid"] for f in doc["features"]] == [f"b{k}" for k in range(len(BUILDINGS))]
    for (subtype, x0, y0, w), feat in zip(BUILDINGS, doc["features"], strict=True):
        props = feat["properties"]
        assert props["geometry_in"] == "lonlat" and feat["geometry"]["type"] == "Polygon"
        ring = np.asarray(feat["geometry"]["coordinates"][0])
        assert np.allclose(ring.min(axis=0), [10 + x0 * 1e-5, 45 - (y0 + w) * 1e-5])
        assert props["label_subtype"] == subtype
        assert props["chip_centre_row_col"] == [int(y0 + w / 2), int(x0 + w / 2)]
        probs = np.array([props["probabilities"][c] for c in DAMAGE_CLASSES])
        assert props["damage"] == DAMAGE_CLASSES[int(probs.argmax())]
        assert props["probability"] == pytest.approx(probs.max()) and probs.sum() == pytest.approx(1.0, abs=1e-5)
        if subtype in DAMAGE_CLASSES:
            assert props["damage"] == subtype  # the red level encodes the damage
    assert summary["agreement"] == 1.0
    assert summary["predicted"] == {"no-damage": 3, "minor-damage": 1, "major-damage": 1, "destroyed": 1}
    assert sorted(p.name for p in out.parent.iterdir()) == ["buildings.geojson"]


def test_geojson_polygons_on_a_georeferenced_geotiff(tmp_path: Path) -> None:
    transform = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5400000.0)
    rng = np.random.default_rng(1)
    data = rng.integers(0, 255, (3, 64, 64)).astype(np.uint8)
    image = tmp_path / "post.tif"
    with rasterio.open(image, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=transform) as dst:  # fmt: skip
        dst.write(data)
    # a building over columns 30.2..39.6 and rows 20.2..29.6 (centroid pixel row 24, col 34), given in lon/lat
    to_ll = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    ring = [transform @ (c, r) for c, r in ((30.2, 20.2), (39.6, 20.2), (39.6, 29.6), (30.2, 29.6), (30.2, 20.2))]
    coords = [list(to_ll.transform(x, y)) for x, y in ring]
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {"uid": "house-1"}, "geometry": {"type": "Polygon", "coordinates": [coords]}},
    ]}  # fmt: skip
    polygons = tmp_path / "houses.geojson"
    polygons.write_text(json.dumps(fc))
    seen: list[np.ndarray] = []

    def predictor(x: np.ndarray) -> np.ndarray:
        seen.extend(x)
        return np.tile(np.array([[0.1, 0.7, 0.2]], np.float32), (len(x), 1))

    out = tmp_path / "houses_pred.geojson"
    summary = predict_buildings([image], polygons, predictor, ["a", "b", "c"], 8, out, scale=0.5, offset=1.0)
    feat = json.loads(out.read_text())["features"][0]
    assert feat["properties"]["chip_centre_row_col"] == [24, 34]
    assert feat["properties"]["uid"] == "house-1" and feat["properties"]["damage"] == "b"
    assert feat["properties"]["probability"] == pytest.approx(0.7)
    np.testing.assert_allclose(feat["geometry"]["coordinates"][0], coords, atol=1e-9)
    np.testing.assert_allclose(seen[0], data[:, 20:28, 30:38].astype(np.float32) * 0.5 + 1.0)
    assert summary["agreement"] is None

    png = tmp_path / "plain.png"
    Image.fromarray(data.transpose(1, 2, 0)).save(png)
    with pytest.raises(DataError, match=r"plain\.png: not georeferenced.*houses\.geojson"):
        predict_buildings([png], polygons, predictor, ["a", "b", "c"], 8, out)


def test_phases_and_bad_inputs(xbd_root: Path, tmp_path: Path) -> None:
    assert model_phases(["rgb:red", "rgb:green", "rgb:blue"]) == ("post",)
    pre = ["rgb-pre:pre_red", "rgb-pre:pre_green", "rgb-pre:pre_blue"]
    assert model_phases(pre) == ("pre",)
    assert model_phases([*pre, "rgb:red", "rgb:green", "rgb:blue"]) == ("pre", "post")
    assert model_phases(["landsat8:B4", "landsat8:B3"]) == ("post",)  # not xBD's bands: left to the shape check
    # a subset or a reordering of an image's bands (--use-bands) would be fed the image's channels in file order
    for keys in (["rgb-pre:pre_red"], ["rgb:blue", "rgb:green", "rgb:red"], [*pre, "rgb:red"], pre[::-1]):
        with pytest.raises(ConfigError, match="--use-bands"):
            model_phases(keys)
    with pytest.raises(ConfigError, match="--buildings"):
        model_phases(["rgb:red", "rgb-pre:pre_red"])
    lone = tmp_path / "scene.png"
    lone.write_bytes(b"")
    with pytest.raises(DataError, match=r"scene\.png.*pre-disaster"):
        phase_images(lone, ("pre", "post"))
    post = xbd_root / "images" / f"{TILE}_post_disaster.png"
    (xbd_root / "images" / f"{TILE}_pre_disaster.png").unlink()
    with pytest.raises(DataError, match=r"fire-a_00000001_pre_disaster\.png: missing"):
        phase_images(post, ("pre", "post"))
    with pytest.raises(DataError, match=r"--buildings .*nope\.json: no such file"):
        predict_buildings([post], tmp_path / "nope.json", RedPredictor(), DAMAGE_CLASSES, 16, tmp_path / "o.geojson")
