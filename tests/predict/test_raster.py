"""Sliding-window raster prediction: georeferencing, block/whole equivalence, nodata, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image

from eotransfer.errors import ConfigError, DataError
from eotransfer.predict.raster import _Tiling, predict_array, predict_raster

CLASSES = ["water", "forest", "urban"]
WIDTH, HEIGHT = 150, 130  # neither a multiple of the strides used below
TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5400000.0)  # 10 m pixels, UTM 33N
CRS = "EPSG:32633"
NODATA_DN = 0
SCALE, OFFSET = 0.001, -2.0  # DN -> "reflectance"


def reflectance(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """A smooth 3-band field whose dominant class varies over the image."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    b0 = np.sin(x / 11.0) + 0.6 * np.cos(y / 9.0)
    b1 = np.cos((x + y) / 17.0)
    b2 = 0.5 * np.sin(y / 7.0) - 0.3
    return np.stack([b0, b1, b2]).astype(np.float32)


def write_raster(path: Path, refl: np.ndarray, nodata_mask: np.ndarray | None = None) -> Path:
    """Store ``refl`` as uint16 DN (``DN * SCALE + OFFSET == refl``), DN 0 = nodata."""
    dn = np.rint((refl - OFFSET) / SCALE).astype(np.uint16)
    if nodata_mask is not None:
        dn[:, nodata_mask] = NODATA_DN
    with rasterio.open(
        path, "w", driver="GTiff", width=refl.shape[2], height=refl.shape[1], count=refl.shape[0],
        dtype="uint16", crs=CRS, transform=TRANSFORM, nodata=NODATA_DN,
    ) as dst:  # fmt: skip
        dst.write(dn)
    return path


def dn_as_reflectance(refl: np.ndarray) -> np.ndarray:
    """What the predictor sees: the reflectance after the uint16 round trip."""
    return np.rint((refl - OFFSET) / SCALE).astype(np.float32) * np.float32(SCALE) + np.float32(OFFSET)


class FakePredictor:
    """Softmax over [mean b0, mean b1, -mean b0] of each patch; records every batch it is given."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.batches: list[np.ndarray] = []
        self.fail_after = fail_after

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.fail_after is not None and len(self.batches) >= self.fail_after:
            raise RuntimeError("model exploded")
        assert x.dtype == np.float32 and x.ndim == 4
        self.batches.append(x.copy())
        m0 = np.nanmean(x[:, 0], axis=(1, 2))
        m1 = np.nanmean(x[:, 1], axis=(1, 2))
        logits = 3.0 * np.stack([m0, m1, -m0], axis=1)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

    @property
    def n_windows(self) -> int:
        return sum(len(b) for b in self.batches)


def read_out(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as src:
        return src.read(), {
            "crs": src.crs, "transform": src.transform, "width": src.width, "height": src.height,
            "descriptions": src.descriptions, "tags": src.tags(), "profile": src.profile,
            "block_shapes": src.block_shapes, "nodata": src.nodata, "dtypes": src.dtypes,
        }  # fmt: skip


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


# ----------------------------------------------------------------------------------- tests


def test_windows_cover_edges_and_weight_is_positive() -> None:
    t = _Tiling.build(HEIGHT, WIDTH, 16, 0.5)
    assert t.stride == 8
    assert t.row_starts[0] == 0 and t.row_starts[-1] == HEIGHT - 16
    assert t.col_starts[-1] == WIDTH - 16
    assert np.all(np.diff(t.row_starts) <= t.stride) and np.all(np.diff(t.row_starts) > 0)
    assert t.weight.shape == (16, 16) and t.weight.min() > 0
    assert _Tiling.build(20, 20, 8, 0.99).stride == 1  # stride never reaches 0
    assert _Tiling.build(20, 20, 8, 0.0).stride == 8


def test_output_is_georeferenced_like_input(tmp_path: Path) -> None:
    raster = write_raster(tmp_path / "scene.tif", reflectance())
    out = tmp_path / "out" / "classes.tif"
    summary = predict_raster(
        raster, FakePredictor(), out, CLASSES, patch_size=16, scale=SCALE, offset=OFFSET, progress=False
    )
    data, meta = read_out(out)
    assert meta["crs"].to_string() == CRS
    assert meta["transform"] == TRANSFORM
    assert (meta["width"], meta["height"]) == (WIDTH, HEIGHT)
    assert data.shape == (len(CLASSES) + 1, HEIGHT, WIDTH)
    assert set(meta["dtypes"]) == {"uint8"} and meta["nodata"] == 255
    assert data[0].max() < len(CLASSES)
    assert set(np.unique(data[0])) == {0, 1, 2}  # the field really produces every class
    assert data[1:].max() <= 100
    assert np.abs(data[1:].astype(int).sum(axis=0) - 100).max() <= 2  # percentages sum to ~100
    assert meta["descriptions"] == ("class", "p_water", "p_forest", "p_urban")
    assert json.loads(meta["tags"]["classes"]) == CLASSES
    assert meta["profile"]["tiled"] and meta["profile"]["compress"] == "deflate"
    assert meta["block_shapes"][0] in ((256, 256), (512, 512))

    assert summary["path"] == str(out) and summary["crs"] == CRS
    assert (summary["width"], summary["height"]) == (WIDTH, HEIGHT)
    assert summary["classes"] == CLASSES
    counts = np.bincount(data[0].ravel(), minlength=3)
    for i, c in enumerate(CLASSES):
        assert summary["class_fractions"][c] == pytest.approx(counts[i] / data[0].size)
    assert leftovers(out.parent) == []


def test_blocks_equal_whole_image_and_no_window_is_predicted_twice(tmp_path: Path) -> None:
    refl = reflectance()
    raster = write_raster(tmp_path / "scene.tif", refl)
    out = tmp_path / "classes.tif"
    pred = FakePredictor()
    summary = predict_raster(
        raster, pred, out, CLASSES, patch_size=16, overlap=0.5, batch_size=7, block_size=40,
        scale=SCALE, offset=OFFSET, progress=False,
    )  # fmt: skip
    data, _ = read_out(out)

    ref = predict_array(dn_as_reflectance(refl), FakePredictor(), patch_size=16, overlap=0.5, batch_size=64)
    assert ref.shape == (3, HEIGHT, WIDTH) and np.isfinite(ref).all()
    assert np.allclose(ref.sum(axis=0), 1.0, atol=1e-5)
    # uint8 percent: rounding only
    assert np.abs(data[1:].astype(np.float64) / 100.0 - ref).max() <= 0.005 + 1e-4
    top2 = np.sort(ref, axis=0)[-2:]
    clear = (top2[1] - top2[0]) > 0.02
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(data[0][clear], np.argmax(ref, axis=0)[clear])

    # 4×4 blocks of 40 px, yet every window reached the predictor exactly once
    tiling = _Tiling.build(HEIGHT, WIDTH, 16, 0.5)
    assert summary["n_windows"] == pred.n_windows == tiling.n_windows
    assert max(len(b) for b in pred.batches) <= 7


def test_nodata_region_is_255_and_never_predicted(tmp_path: Path) -> None:
    refl = reflectance()
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[:70, :80] = True  # a large nodata corner: many windows lie entirely inside it
    raster = write_raster(tmp_path / "scene.tif", refl, mask)
    # one band missing elsewhere does not make a pixel nodata
    with rasterio.open(raster, "r+") as dst:
        band = dst.read(2)
        band[100:105, 120:125] = NODATA_DN
        dst.write(band, 2)
    out = tmp_path / "classes.tif"
    pred = FakePredictor()
    summary = predict_raster(
        raster, pred, out, CLASSES, patch_size=16, block_size=48, scale=SCALE, offset=OFFSET,
        progress=False,
    )  # fmt: skip
    data, _ = read_out(out)
    assert (data[:, mask] == 255).all()
    assert (data[:, ~mask] != 255).all()
    assert (data[0, 100:105, 120:125] < 3).all()

    for batch in pred.batches:
        assert not np.isnan(batch).all(axis=(1, 2, 3)).any()  # no all-nodata window was sent
    assert any(np.isnan(b).any() for b in pred.batches)  # partly-nodata windows were, with NaN
    tiling = _Tiling.build(HEIGHT, WIDTH, 16, 0.5)
    inside = sum(1 for r in tiling.row_starts for c in tiling.col_starts if r + 16 <= 70 and c + 16 <= 80)
    assert summary["n_skipped_windows"] == inside > 0
    assert summary["n_windows"] == pred.n_windows == tiling.n_windows - inside
    assert summary["valid_pixels"] == int((~mask).sum())
    assert sum(summary["class_fractions"].values()) == pytest.approx(1.0)


def test_edges_are_covered(tmp_path: Path) -> None:
    raster = write_raster(tmp_path / "scene.tif", reflectance())
    out = tmp_path / "classes.tif"
    # stride round(32 * 0.75) = 24: 150 - 32 and 130 - 32 are not multiples of 24
    predict_raster(
        raster, FakePredictor(), out, CLASSES, patch_size=32, overlap=0.25, block_size=64,
        scale=SCALE, offset=OFFSET, progress=False,
    )  # fmt: skip
    data, _ = read_out(out)
    assert (data != 255).all()
    assert (data[0, -1, :] < 3).all() and (data[0, :, -1] < 3).all()


def test_band_indices_select_and_order_bands(tmp_path: Path) -> None:
    refl = reflectance()
    raster = write_raster(tmp_path / "scene.tif", refl)
    pred = FakePredictor()
    predict_raster(
        raster, pred, tmp_path / "c.tif", CLASSES, patch_size=16, band_indices=[2, 0],
        scale=SCALE, offset=OFFSET, progress=False,
    )  # fmt: skip
    first = pred.batches[0][0]
    assert first.shape == (2, 16, 16)
    np.testing.assert_allclose(first[0], dn_as_reflectance(refl)[2, :16, :16], atol=1e-6)
    np.testing.assert_allclose(first[1], dn_as_reflectance(refl)[0, :16, :16], atol=1e-6)


def test_raster_smaller_than_patch_is_refused(tmp_path: Path) -> None:
    raster = write_raster(tmp_path / "tiny.tif", reflectance(12, 40))
    with pytest.raises(DataError, match=r"tiny\.tif.*40×12.*patch_size 16"):
        predict_raster(raster, FakePredictor(), tmp_path / "c.tif", CLASSES, patch_size=16, progress=False)
    assert not (tmp_path / "c.tif").exists()
    with pytest.raises(DataError, match="patch_size 16"):
        predict_array(reflectance(12, 40), FakePredictor(), patch_size=16)


def test_bad_inputs_name_the_culprit(tmp_path: Path) -> None:
    raster = write_raster(tmp_path / "scene.tif", reflectance())
    out = tmp_path / "c.tif"
    with pytest.raises(ConfigError, match=r"band_indices.*3 band"):
        predict_raster(raster, FakePredictor(), out, CLASSES, 16, band_indices=[0, 3], progress=False)
    for overlap in (1.0, -0.1, float("nan")):
        with pytest.raises(ConfigError, match="overlap"):
            predict_raster(raster, FakePredictor(), out, CLASSES, 16, overlap=overlap, progress=False)
    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00 definitely not a tiff")
    with pytest.raises(DataError, match=r"corrupt\.tif"):
        predict_raster(corrupt, FakePredictor(), out, CLASSES, 16, progress=False)
    with pytest.raises(DataError, match=r"missing\.tif"):
        predict_raster(tmp_path / "missing.tif", FakePredictor(), out, CLASSES, 16, progress=False)
    with pytest.raises(ConfigError, match=r"predictor returned shape \(\d+, 2\)"):
        predict_raster(raster, lambda x: np.full((len(x), 2), 0.5, np.float32), out, CLASSES, 16, progress=False)
    assert not out.exists() and leftovers(tmp_path) == []


def test_failing_predictor_leaves_nothing_behind(tmp_path: Path) -> None:
    raster = write_raster(tmp_path / "scene.tif", reflectance())
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out, png = out_dir / "classes.tif", out_dir / "classes.png"
    with pytest.raises(RuntimeError, match="model exploded"):
        predict_raster(
            raster, FakePredictor(fail_after=3), out, CLASSES, patch_size=16, batch_size=8,
            block_size=40, preview_png=png, progress=False,
        )  # fmt: skip
    assert list(out_dir.iterdir()) == []

    # an existing result stays untouched when a new run fails
    out.write_bytes(b"previous result")
    with pytest.raises(RuntimeError):
        predict_raster(raster, FakePredictor(fail_after=1), out, CLASSES, patch_size=16, block_size=40, progress=False)
    assert out.read_bytes() == b"previous result"
    assert [p.name for p in out_dir.iterdir()] == ["classes.tif"]


def test_preview_png(tmp_path: Path) -> None:
    raster = write_raster(tmp_path / "scene.tif", reflectance())
    out, png = tmp_path / "classes.tif", tmp_path / "previews" / "classes.png"
    summary = predict_raster(
        raster, FakePredictor(), out, CLASSES, patch_size=16, scale=SCALE, offset=OFFSET,
        preview_png=png, progress=False,
    )  # fmt: skip
    assert summary["preview"] == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as im:
        im.verify()
    with Image.open(png) as im:
        assert im.width > 100 and im.height > 100
    assert leftovers(tmp_path) == [] and leftovers(png.parent) == []


def test_predict_array_nan_pixels_and_output_shape() -> None:
    img = reflectance(40, 50)
    img[:, :10, :] = np.nan
    pred = FakePredictor()
    probs = predict_array(img, pred, patch_size=8, overlap=0.5, batch_size=5)
    assert probs.shape == (3, 40, 50) and probs.dtype == np.float32
    assert np.isnan(probs[:, :10]).all()
    assert np.isfinite(probs[:, 10:]).all()
    assert max(len(b) for b in pred.batches) <= 5
    with pytest.raises(DataError, match="nothing to predict"):
        predict_array(np.full((2, 20, 20), np.nan, np.float32), pred, patch_size=8)


# ------------------------------------------------------------------- COG, CRS policy, full disk


def test_output_is_a_cog_with_per_band_overviews(tmp_path: Path) -> None:
    refl = reflectance(300, 260)
    raster = write_raster(tmp_path / "scene.tif", refl)
    out = tmp_path / "classes.tif"
    summary = predict_raster(
        raster, FakePredictor(), out, CLASSES, patch_size=16, overlap=0.0, block_size=64, scale=SCALE,
        offset=OFFSET, progress=False,
    )  # fmt: skip
    assert summary["overviews"] == [2]  # 300 px > one 256 px tile, 150 px fits
    with rasterio.open(out) as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.profile["tiled"] and src.block_shapes == [(256, 256)] * 4
        assert [src.overviews(b) for b in range(1, 5)] == [[2]] * 4
        assert src.crs.to_string() == CRS and src.transform == TRANSFORM
        assert src.descriptions == ("class", "p_water", "p_forest", "p_urban")
        assert json.loads(src.tags()["classes"]) == CLASSES
        full = src.read()
    cls, probs = full[0], full[1:].astype(int)
    assert probs.max() <= 100 and np.abs(probs.sum(axis=0) - 100).max() <= 2
    top2 = np.sort(probs, axis=0)[-2:]
    unique_max = top2[1] > top2[0]
    assert unique_max.mean() > 0.9
    np.testing.assert_array_equal(cls[unique_max], np.argmax(probs, axis=0)[unique_max])

    with rasterio.open(out, overview_level=0) as ovr:
        assert (ovr.width, ovr.height) == (130, 150)
        small = ovr.read()
    # class band: nearest, i.e. one of the four pixels of each 2×2 block (never an average of classes)
    blocks = cls.reshape(150, 2, 130, 2)
    assert ((blocks == small[0][:, None, :, None]).any(axis=(1, 3))).all()
    assert np.array_equal(small[0], cls[::2, ::2]) or np.array_equal(small[0], cls[1::2, 1::2])
    # probability bands: the average of each 2×2 block
    mean = probs.reshape(3, 150, 2, 130, 2).mean(axis=(2, 4))
    assert np.abs(small[1:] - mean).max() <= 0.5 + 1e-9


def test_training_crs_is_the_single_crs_of_georeferenced_samples() -> None:
    from eotransfer.data.base import Location
    from eotransfer.predict.raster import training_crs

    b = (0.0, 0.0, 1.0, 1.0)
    assert training_crs([Location(1, 2, "EPSG:32633", b), Location(1, 2, "epsg:32633", b)]) == "EPSG:32633"
    assert training_crs([Location(1, 2, "EPSG:32633", b), Location(1, 2, "EPSG:32632", b)]) is None  # 2 UTM zones
    assert training_crs([Location(1, 2, "EPSG:4326")]) is None  # a lon/lat from a file name: no grid
    assert training_crs([]) is None


def test_crs_policy_refuse_names_raster_both_crs_and_option(tmp_path: Path) -> None:
    raster = write_raster(tmp_path / "scene.tif", reflectance())
    out = tmp_path / "c.tif"
    with pytest.raises(DataError, match=r"scene\.tif.*EPSG:32633.*EPSG:32632.*--crs-policy reproject"):
        predict_raster(raster, FakePredictor(), out, CLASSES, 16, expected_crs="EPSG:32632", progress=False)
    assert not out.exists() and leftovers(tmp_path) == []
    with pytest.raises(ConfigError, match="--crs-policy"):
        predict_raster(raster, FakePredictor(), out, CLASSES, 16, expected_crs="EPSG:32632", crs_policy="x")
    # the same CRS (spelt otherwise) passes
    predict_raster(raster, FakePredictor(), out, CLASSES, 16, expected_crs="epsg:32633", progress=False)
    assert out.exists()


def test_crs_policy_reproject_warps_onto_the_training_crs(tmp_path: Path) -> None:
    from rasterio.warp import transform_bounds

    refl = reflectance()
    raster = write_raster(tmp_path / "scene.tif", refl)
    out = tmp_path / "c.tif"
    pred = FakePredictor()
    summary = predict_raster(
        raster, pred, out, CLASSES, 16, expected_crs="EPSG:32632", crs_policy="reproject", block_size=48,
        scale=SCALE, offset=OFFSET, progress=False,
    )  # fmt: skip
    assert summary["reprojected"] and summary["crs"] == "EPSG:32632"
    with rasterio.open(out) as src:
        assert src.crs.to_string() == "EPSG:32632"
        bounds = src.bounds
        data = src.read()
    expected = transform_bounds(CRS, "EPSG:32632", 500000.0, 5400000.0 - 10 * HEIGHT, 500000.0 + 10 * WIDTH, 5400000.0)
    assert np.allclose(bounds, expected, atol=20.0)  # within two pixels
    # the source's footprint is rotated in zone 32: corners outside it are nodata, the inside is predicted
    assert (data[0] == 255).any() and (data[0] < 3).mean() > 0.8
    # warped pixels keep their values (bilinear on a smooth field): the predictor saw reflectance, not DN
    seen = np.concatenate([b[:, 0][np.isfinite(b[:, 0])] for b in pred.batches])
    assert seen.min() >= refl[0].min() - 0.01 and seen.max() <= refl[0].max() + 0.01


def test_full_disk_while_writing_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from eotransfer.predict import cog

    raster = write_raster(tmp_path / "scene.tif", reflectance())
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out, png = out_dir / "classes.tif", out_dir / "classes.png"
    calls = {"n": 0}
    real_write = rasterio.io.DatasetWriter.write

    def write_until_full(self: Any, *args: Any, **kwargs: Any) -> None:  # the GeoTIFF writer itself
        calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(self, *args, **kwargs)

    monkeypatch.setattr(rasterio.io.DatasetWriter, "write", write_until_full)
    with pytest.raises(DataError, match=r"disk full while writing the class map .*classes\.tif.*GiB"):
        predict_raster(raster, FakePredictor(), out, CLASSES, 16, block_size=40, preview_png=png, progress=False)
    assert calls["n"] == 4  # three blocks were written before the disk filled up
    assert list(out_dir.iterdir()) == []
    monkeypatch.undo()

    # GDAL's own ENOSPC (a RasterioError with the C library's message) in the final COG copy
    def copy_full(src: Path, dst: Path, tile: int) -> None:
        dst.write_bytes(b"half a COG")
        raise rasterio.errors.RasterioError(f"{dst}: Write error: No space left on device")

    monkeypatch.setattr(cog, "copy_to_cog", copy_full)
    out.write_bytes(b"previous result")
    with pytest.raises(DataError, match="disk full while writing"):
        predict_raster(raster, FakePredictor(), out, CLASSES, 16, preview_png=png, progress=False)
    assert out.read_bytes() == b"previous result"
    assert [p.name for p in out_dir.iterdir()] == ["classes.tif"]


def test_blend_equals_the_weighted_mean_of_the_covering_windows() -> None:
    """The separable matrix-product blend against its definition, pixel by pixel: sum(w p) / sum(w)."""
    refl = reflectance(37, 45)
    refl[:, :20, :18] = np.nan  # windows entirely in here are skipped: they contribute no weight
    patch, overlap = 8, 0.5
    pred = FakePredictor()
    got = predict_array(refl, pred, patch_size=patch, overlap=overlap, batch_size=16)
    tiling = _Tiling.build(37, 45, patch, overlap)
    acc = np.zeros((3, 37, 45))
    wsum = np.zeros((37, 45))
    for r in tiling.row_starts:
        for c in tiling.col_starts:
            window = refl[:, r : r + patch, c : c + patch]
            if np.isnan(window).all():
                continue
            p = FakePredictor()(window[None])[0].astype(np.float64)
            acc[:, r : r + patch, c : c + patch] += p[:, None, None] * tiling.weight
            wsum[r : r + patch, c : c + patch] += tiling.weight
    empty = np.isnan(refl).all(axis=0)
    assert (wsum[~empty] > 0).all()
    np.testing.assert_allclose(got[:, ~empty], (acc / np.where(wsum > 0, wsum, 1))[:, ~empty], atol=2e-6)
    assert np.isnan(got[:, empty]).all()
    n_skipped = sum(
        1 for r in tiling.row_starts for c in tiling.col_starts if np.isnan(refl[:, r : r + 8, c : c + 8]).all()
    )
    assert pred.n_windows == tiling.n_windows - n_skipped and n_skipped > 0


def test_read_ahead_changes_nothing_but_the_thread_that_reads(tmp_path: Path) -> None:
    refl = reflectance()
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[:40, :50] = True
    raster = write_raster(tmp_path / "scene.tif", refl, mask)
    outs = []
    for depth in (0, 1, 3):
        out = tmp_path / f"classes_{depth}.tif"
        pred = FakePredictor()
        summary = predict_raster(
            raster, pred, out, CLASSES, patch_size=16, overlap=0.5, block_size=40, scale=SCALE, offset=OFFSET,
            progress=False, read_ahead=depth,
        )  # fmt: skip
        outs.append((read_out(out)[0], summary["n_windows"], summary["n_skipped_windows"]))
    for data, n, skipped in outs[1:]:
        np.testing.assert_array_equal(data, outs[0][0])
        assert (n, skipped) == outs[0][1:]
    with pytest.raises(ConfigError, match="read_ahead must be a non-negative integer"):
        predict_raster(raster, FakePredictor(), tmp_path / "x.tif", CLASSES, patch_size=16, read_ahead=-1)


def test_read_ahead_keeps_order_bounds_reads_in_flight_and_raises_at_the_failing_rect() -> None:
    import threading

    from eotransfer.predict.raster import _Pixels, _read_ahead

    rects = [(i, i + 1, 0, 1) for i in range(8)]
    started: list[int] = []
    threads: set[str] = set()
    consumed = [0]

    def read(rect: tuple[int, int, int, int]) -> _Pixels:
        started.append(rect[0])
        threads.add(threading.current_thread().name)
        assert rect[0] <= consumed[0] + 2  # depth 2: at most two reads ahead of the block being used
        if rect[0] == 5:
            raise DataError("scene.tif: cannot read pixels 5:6")
        return _Pixels.of(rect, np.full((1, 1, 1), float(rect[0]), dtype=np.float32))

    got = []
    with pytest.raises(DataError, match="cannot read pixels 5:6"):
        for pixels in _read_ahead(read, rects, depth=2):
            got.append(pixels.data.item())
            consumed[0] += 1
    assert got == [0.0, 1.0, 2.0, 3.0, 4.0]  # in order, and everything before the failing one
    assert started[:6] == [0, 1, 2, 3, 4, 5]
    assert len(threads) == 1 and threading.current_thread().name not in threads
    threads.clear()
    assert [p.data.item() for p in _read_ahead(read, rects[:5], depth=0)] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert threads == {threading.current_thread().name}  # depth 0 reads in the caller's thread


def test_closing_the_read_ahead_waits_for_the_running_read_and_cancels_the_rest() -> None:
    """The source is closed after the generator: no read may outlive it (a GDAL read of a closed dataset crashes)."""
    import time
    from contextlib import closing

    from eotransfer.predict.raster import _Pixels, _read_ahead

    running, done = [0], []

    def slow_read(rect: tuple[int, int, int, int]) -> _Pixels:
        running[0] += 1
        time.sleep(0.05)
        running[0] -= 1
        done.append(rect[0])
        return _Pixels.of(rect, np.zeros((1, 1, 1), dtype=np.float32))

    reads = closing(_read_ahead(slow_read, [(i, i + 1, 0, 1) for i in range(20)], depth=3))
    with pytest.raises(RuntimeError, match="model exploded"), reads as inputs:
        for _ in inputs:
            raise RuntimeError("model exploded")  # the consumer fails on the first block
    assert running[0] == 0  # nothing still reading once closed
    assert len(done) <= 5  # the first, at most the three ahead and one started: the rest were cancelled


@pytest.mark.parametrize(("patch", "overlap", "block"), [(16, 0.5, 8), (16, 0.75, 24), (12, 0.25, 40), (16, 0.0, 16)])
def test_each_block_reads_only_what_its_new_windows_need_and_still_equals_the_whole_image(
    tmp_path: Path, patch: int, overlap: float, block: int
) -> None:
    """Blocks smaller or larger than a window, strides that do not divide them: windows starting above or left
    of a block were cached with an earlier block, so its read starts at its own corner (or the crop fails)."""
    refl = reflectance(70, 90)
    raster = write_raster(tmp_path / "scene.tif", refl)
    out = tmp_path / "classes.tif"
    pred = FakePredictor()
    summary = predict_raster(
        raster, pred, out, CLASSES, patch_size=patch, overlap=overlap, block_size=block, scale=SCALE,
        offset=OFFSET, progress=False, read_ahead=1,
    )  # fmt: skip
    data, _ = read_out(out)
    ref = predict_array(dn_as_reflectance(refl), FakePredictor(), patch_size=patch, overlap=overlap)
    assert np.abs(data[1:].astype(np.float64) / 100.0 - ref).max() <= 0.005 + 1e-4
    assert summary["n_windows"] == pred.n_windows == _Tiling.build(70, 90, patch, overlap).n_windows
