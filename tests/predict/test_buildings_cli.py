"""End to end through the command line: ``eotransfer fit`` on xBD chips, then ``predict --buildings`` to GeoJSON.

The fixture mimics the xBD layout of Gupta et al. 2019 ("xBD: A Dataset for Assessing Building
Damage from Satellite Imagery"): two events, pre/post PNG tiles and label JSONs with each building
in pixel (``xy``) and lon/lat (``lng_lat``) WKT; the post labels carry the damage ``subtype``.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from shapely import wkt

from eotransfer.cli import main
from eotransfer.data.formats.xbd import DAMAGE_CLASSES

XBD = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "xbd"
SIZE = 96
CHIP = 16
TRAIN_TILE = "fire-a_00000001"
PREDICT_TILE = "volcano-b_00000002"
FAST = ["--backbone", "resnet10t", "--no-progress", "--no-verbose", "--batch-size", "16", "--accelerator", "cpu"]


def _square(x0: float, y0: float, w: float) -> str:
    return f"POLYGON (({x0} {y0}, {x0 + w} {y0}, {x0 + w} {y0 + w}, {x0} {y0 + w}, {x0} {y0}))"


def _lonlat(x0: float, y0: float, w: float, lon0: float) -> str:
    # a made-up geographic footprint: 1 px = 1e-5 degree east/south of (lon0, 15)
    return _square(lon0 + x0 * 1e-5, 15 - (y0 + w) * 1e-5, w * 1e-5)


def _write_tile(root: Path, tile: str, buildings: list[tuple[str, int, int, int]], seed: int, lon0: float) -> None:
    """Pre/post PNGs (post red encodes the damage) and label JSONs; buildings are (subtype, x0, y0, width)."""
    rng = np.random.default_rng(seed)
    for phase in ("pre", "post"):
        arr = rng.integers(0, 60, (SIZE, SIZE, 3), dtype=np.uint8)
        xy, lnglat = [], []
        for k, (subtype, x0, y0, w) in enumerate(buildings):
            if phase == "post" and subtype in DAMAGE_CLASSES:
                arr[max(y0, 0) : y0 + w, max(x0, 0) : x0 + w, 0] = 60 * DAMAGE_CLASSES.index(subtype) + 40
            props = {"feature_type": "building", "uid": f"{tile}-{k}"}
            if phase == "post":
                props["subtype"] = subtype
            xy.append({"properties": props, "wkt": _square(x0, y0, w)})
            lnglat.append({"properties": props, "wkt": _lonlat(x0, y0, w, lon0)})
        Image.fromarray(arr).save(root / "images" / f"{tile}_{phase}_disaster.png")
        doc = {"features": {"lng_lat": lnglat, "xy": xy}, "metadata": {"img_name": f"{tile}_{phase}_disaster.png"}}
        (root / "labels" / f"{tile}_{phase}_disaster.json").write_text(json.dumps(doc))


#: the tile to predict: one building overhangs the top-left corner, one is un-classified
PREDICT_BUILDINGS = [
    ("no-damage", 10, 12, 8), ("destroyed", -3, -2, 9), ("minor-damage", 50, 20, 7),
    ("major-damage", 30, 70, 8), ("un-classified", 70, 60, 6), ("no-damage", 80, 85, 9), ("destroyed", 60, 40, 10),
]  # fmt: skip


@pytest.fixture(scope="module")
def xbd_two_events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two events: ``fire-a`` (20 buildings, every damage class) to train on, ``volcano-b`` to predict."""
    root = tmp_path_factory.mktemp("xbd")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    train = [(DAMAGE_CLASSES[k % 4], 4 + 18 * (k % 5), 4 + 22 * (k // 5), 9) for k in range(20)]
    _write_tile(root, TRAIN_TILE, train, seed=0, lon0=-122.7)
    _write_tile(root, PREDICT_TILE, PREDICT_BUILDINGS, seed=1, lon0=-90.8)
    return root


@pytest.fixture(scope="module")
def xbd_model(xbd_two_events: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stacked pre+post model fitted through ``eotransfer fit`` (1 epoch, resnet10t, 16 px chips)."""
    out = tmp_path_factory.mktemp("model") / "xbd-model"
    argv = ["fit", str(xbd_two_events), "--format", "xbd", "--patch-size", str(CHIP), "--split", "group",
            "--test-blocks", "volcano-b", "--strategy", "finetune", "--head-epochs", "1", "--epochs", "1",
            "--weights", "none", "--out", str(out), *FAST]  # fmt: skip
    assert _exit_code(argv) == 0
    return out


def _exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return int(exc.value.code or 0)


def _paths(root: Path, tile: str) -> tuple[Path, Path]:
    return root / "images" / f"{tile}_post_disaster.png", root / "labels" / f"{tile}_post_disaster.json"


def test_fit_then_predict_buildings_writes_geojson(
    xbd_two_events: Path, xbd_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card = json.loads((xbd_model / "card.json").read_text())
    classes = card["classes"]
    assert classes == DAMAGE_CLASSES and card["img_size"] == CHIP
    image, labels = _paths(xbd_two_events, PREDICT_TILE)
    out = tmp_path / "pred" / "volcano-b.geojson"
    capsys.readouterr()
    assert _exit_code(["predict", str(xbd_model), str(image), "--buildings", str(labels), "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["path"] == str(out) and summary["n_buildings"] == len(PREDICT_BUILDINGS)

    doc = json.loads(out.read_text())
    label_doc = json.loads(labels.read_text())["features"]
    assert doc["type"] == "FeatureCollection" and doc["classes"] == classes
    assert len(doc["features"]) == len(label_doc["xy"]) == len(PREDICT_BUILDINGS)
    predicted = dict.fromkeys(classes, 0)
    for feat, ll, (subtype, _, _, _) in zip(doc["features"], label_doc["lng_lat"], PREDICT_BUILDINGS, strict=True):
        props = feat["properties"]
        assert feat["type"] == "Feature" and props["uid"] == ll["properties"]["uid"]
        assert props["damage"] in classes and props["label_subtype"] == subtype
        probs = np.array([props["probabilities"][c] for c in classes])
        assert list(props["probabilities"]) == classes
        assert ((probs >= 0) & (probs <= 1)).all() and abs(probs.sum() - 1.0) < 1e-5
        assert 0.0 <= props["probability"] <= 1.0 and props["probability"] == probs.max()
        assert props["damage"] == classes[int(probs.argmax())]
        predicted[props["damage"]] += 1
        # the lon/lat polygon of the label file, vertex for vertex
        assert props["geometry_in"] == "lonlat" and feat["geometry"]["type"] == "Polygon"
        expected = np.asarray(wkt.loads(ll["wkt"]).exterior.coords)
        got = np.asarray(feat["geometry"]["coordinates"][0])
        assert got.shape == expected.shape and np.allclose(got, expected, rtol=0, atol=1e-12)
        assert (got[:, 0] > -91).all() and (got[:, 0] < -90.7).all() and (got[:, 1] > 14.9).all()
    assert summary["predicted"] == predicted
    assert sorted(p.name for p in out.parent.iterdir()) == ["volcano-b.geojson"]  # no temporary file left


def test_predict_buildings_failures_leave_no_partial_output(
    xbd_two_events: Path, xbd_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    root = tmp_path / "copy"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    _write_tile(root, PREDICT_TILE, PREDICT_BUILDINGS, seed=1, lon0=-90.8)
    image, labels = _paths(root, PREDICT_TILE)
    out_dir = tmp_path / "pred"
    out_dir.mkdir()
    out = out_dir / "b.geojson"
    argv = ["predict", str(xbd_model), str(image), "--buildings", str(labels), "--out", str(out)]

    # the label file's tile lacks its pre-disaster image, which the stacked model needs
    (root / "images" / f"{PREDICT_TILE}_pre_disaster.png").unlink()
    capsys.readouterr()
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{PREDICT_TILE}_pre_disaster.png: missing" in err[0]
    assert list(out_dir.iterdir()) == []

    # a corrupt image: an earlier output stays as it was
    _write_tile(root, PREDICT_TILE, PREDICT_BUILDINGS, seed=1, lon0=-90.8)
    out.write_text("earlier run")
    image.write_bytes(b"\x89PNG\r\n\x1a\nnot a png")
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unreadable image" in err[0]
    assert out.read_text() == "earlier run" and sorted(p.name for p in out_dir.iterdir()) == ["b.geojson"]

    # the disk fills up while the GeoJSON is written: neither a partial file nor a temporary one is left
    _write_tile(root, PREDICT_TILE, PREDICT_BUILDINGS, seed=1, lon0=-90.8)
    out.unlink()

    def full(*_: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("eotransfer.card.os.replace", full)
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "disk full while writing the building predictions" in err[0]
    assert list(out_dir.iterdir()) == []


def test_model_fitted_on_reordered_bands_is_refused(
    xbd_two_events: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # post bands only, blue first: chips of the post image come in file order (red first), so predicting
    # with this model used to feed it red as blue, silently
    model = tmp_path / "bgr"
    argv = ["fit", str(xbd_two_events), "--format", "xbd", "--patch-size", str(CHIP), "--split", "group",
            "--test-blocks", "volcano-b", "--strategy", "linear-probe", "--epochs", "1", "--use-bands",
            "rgb:blue,rgb:green,rgb:red", "--weights", "none", "--out", str(model), *FAST]  # fmt: skip
    assert _exit_code(argv) == 0
    assert [b["name"] for b in json.loads((model / "card.json").read_text())["bands"]] == ["blue", "green", "red"]
    image, labels = _paths(xbd_two_events, PREDICT_TILE)
    out = tmp_path / "bgr.geojson"
    capsys.readouterr()
    assert _exit_code(["predict", str(model), str(image), "--buildings", str(labels), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "post-disaster bands are not the image's" in err[0] and "--use-bands" in err[0]
    assert not out.exists()


@pytest.mark.integration
@pytest.mark.skipif(not XBD.is_dir(), reason=f"no xBD data at {XBD}")
def test_real_xbd_santa_rosa_model_predicts_guatemala_buildings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # three Santa Rosa tiles (no-damage and destroyed buildings) and one Guatemala tile, linked, not copied:
    # the xbd format keeps 4 decoded tiles, so shuffled batches over these do not decode a tile per chip
    root = tmp_path / "xbd"
    tiles = [f"santa-rosa-wildfire_{n:08d}" for n in (12, 66, 242)] + ["guatemala-volcano_00000009"]
    for sub, ext in (("images", "png"), ("labels", "json")):
        (root / sub).mkdir(parents=True)
        for tile in tiles:
            for phase in ("pre", "post"):
                name = f"{tile}_{phase}_disaster.{ext}"
                (root / sub / name).symlink_to(XBD / sub / name)
    model = tmp_path / "model"
    argv = ["fit", str(root), "--format", "xbd", "--patch-size", "16", "--split", "group", "--test-blocks",
            "guatemala-volcano", "--strategy", "linear-probe", "--epochs", "1", "--weights", "none", "--out",
            str(model), *FAST]  # fmt: skip
    assert _exit_code(argv) == 0
    classes = json.loads((model / "card.json").read_text())["classes"]
    for tile in ("guatemala-volcano_00000009", "guatemala-volcano_00000021"):
        image, labels = _paths(XBD, tile)
        out = tmp_path / f"{tile}.geojson"
        assert _exit_code(["predict", str(model), str(image), "--buildings", str(labels), "--out", str(out)]) == 0
        xy = json.loads(labels.read_text())["features"]["xy"]
        feats = json.loads(out.read_text())["features"]
        assert len(feats) == len(xy) > 0
        assert {f["properties"]["uid"]: f["properties"]["label_subtype"] for f in feats} == {
            b["properties"]["uid"]: b["properties"]["subtype"] for b in xy
        }
        assert all(f["properties"]["damage"] in classes for f in feats)
        lon, lat = np.concatenate([np.asarray(f["geometry"]["coordinates"][0]) for f in feats]).T
        assert ((lon > -91.2) & (lon < -90.6) & (lat > 14.2) & (lat < 14.7)).all()  # Volcán de Fuego, Guatemala
