"""The packed format: a data set in one .npz, opened without rasterio and without pickle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from eotransfer.bands import BandSet
from eotransfer.data.base import EODataset, Location, open_dataset
from eotransfer.data.formats.packed import PackedDataset, pack_dataset
from eotransfer.errors import DataError

REPO = Path(__file__).resolve().parents[2]


class Toy(EODataset):
    """In-memory samples, with optional xBD-like ``events`` or raster-vector-like ``groups``."""

    format_name = "toy"

    def __init__(self, images: list[np.ndarray], labels: list[int], **attrs: Any) -> None:
        super().__init__("mask")
        self.images = images
        self.bands = BandSet.parse("sentinel2-l2a:B02,B03")
        self.classes = ["a", "b"]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.locations = [Location(10.0 + i, 45.0, "EPSG:4326") for i in range(len(images))]
        self.sources = [f"toy/{i}" for i in range(len(images))]
        for k, v in attrs.items():
            setattr(self, k, v)

    def read(self, index: int) -> np.ndarray:
        return self.images[index].astype(np.float32)


def _jpeg_folder(root: Path, n_per_class: int = 4, size: int = 24) -> Path:
    rng = np.random.default_rng(0)
    for c, cls in enumerate(("damage", "no_damage")):
        (root / cls).mkdir(parents=True)
        for i in range(n_per_class):
            arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / cls / f"{-95 + c + i * 0.01:.4f}_{29.5 + i * 0.01:.4f}.jpeg", quality=90)
    return root


def test_multispectral_round_trip(eurosat_like: Path, tmp_path: Path) -> None:
    src = open_dataset(eurosat_like, bands="eurosat-ms")
    out = pack_dataset(src, tmp_path / "eurosat.npz", progress=False)
    assert out == tmp_path / "eurosat.npz" and sorted(p.name for p in tmp_path.iterdir()) == ["eurosat.npz"]
    with np.load(out, allow_pickle=False) as npz:
        assert npz["images"].dtype == np.uint16 and npz["images"].shape == (36, 13, 16, 16)
        assert "encoded" not in npz.files
    ds = open_dataset(out, format="packed")
    assert isinstance(ds, PackedDataset) and ds.format_name == "packed"
    assert ds.bands == src.bands == BandSet.parse("eurosat-ms")
    assert ds.classes == src.classes
    assert np.array_equal(ds.labels, src.labels) and ds.labels.dtype == np.int64
    np.testing.assert_array_equal(ds.lonlat(), src.lonlat())
    assert ds.sources == src.sources
    for i in range(len(src)):
        assert np.array_equal(ds.read(i), src.read(i))
    item = ds[5]
    assert item["image"].dtype.is_floating_point and item["label"] == int(src.labels[5])
    prov = ds.provenance()
    assert prov["format"] == "packed" and prov["source_format"] == "folder"
    assert prov["source"]["root"] == str(eurosat_like) and prov["classes"] == src.class_counts()
    assert ds.groups is None and ds.events is None


def test_scale_offset_and_band_selection(eurosat_like: Path, tmp_path: Path) -> None:
    src = open_dataset(eurosat_like, bands="eurosat-ms", scale=1e-4, offset=0.5)
    src.select_bands(["B04", "B03", "B02"])
    ds = PackedDataset(pack_dataset(src, tmp_path / "rgb.npz", indices=[0, 13, 30], progress=False))
    assert ds._images is not None and ds._images.dtype == np.uint16  # raw values kept
    assert (ds.scale, ds.offset) == (1e-4, 0.5)
    assert ds.bands.keys == ["sentinel2-l1c:B04", "sentinel2-l1c:B03", "sentinel2-l1c:B02"]
    assert ds.labels.tolist() == src.labels[[0, 13, 30]].tolist()
    for k, i in enumerate((0, 13, 30)):
        assert np.array_equal(ds.read(k), src.checked_read(i))


def test_jpeg_folder_keeps_file_bytes(tmp_path: Path) -> None:
    src = open_dataset(_jpeg_folder(tmp_path / "chips"))
    out = pack_dataset(src, tmp_path / "chips.npz", progress=False)
    total = sum(Path(s).stat().st_size for s in src.sources)
    assert total < out.stat().st_size < total + 8192  # the files' bytes plus a fixed header (meta, names)
    ds = open_dataset(out, format="packed")
    assert isinstance(ds, PackedDataset) and ds.encoded and ds._encoded is not None and len(ds._encoded) == total
    assert ds.bands == BandSet.parse("rgb") and ds.classes == ["damage", "no_damage"]
    assert ds.labels.tolist() == [0] * 4 + [1] * 4
    np.testing.assert_array_equal(ds.lonlat(), src.lonlat())
    assert Path(src.sources[0]).name == "-94.9700_29.5300.jpeg" and ds.lonlat()[0].tolist() == [-94.97, 29.53]
    for i in range(len(src)):
        assert ds.encoded_bytes(i) == Path(src.sources[i]).read_bytes()
        assert np.array_equal(ds.read(i), src.read(i))
    # re-packing a subset of a packed file copies the bytes again
    sub = PackedDataset(pack_dataset(ds, tmp_path / "sub.npz", indices=[1, 6], progress=False))
    assert sub.encoded and sub.encoded_bytes(1) == ds.encoded_bytes(6) and sub.labels.tolist() == [0, 1]
    # without keep_encoded the pixels are stored as uint8
    arr = PackedDataset(pack_dataset(src, tmp_path / "arr.npz", keep_encoded=False, progress=False))
    assert arr._images is not None and arr._images.dtype == np.uint8
    assert np.array_equal(arr.read(3), src.read(3))


def test_groups_events_and_nan(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 4000, (2, 4, 4)).astype(np.float32) for _ in range(4)]
    images[2][0, 0, 0] = np.nan  # nodata
    toy = Toy(images, [0, 1, 0, 1], groups=np.array([7, 7, 9, 3]))
    ds = PackedDataset(pack_dataset(toy, tmp_path / "groups.npz", progress=False))
    assert ds.groups is not None and ds.groups.tolist() == [7, 7, 9, 3] and ds.events is None
    assert ds._images is not None and ds._images.dtype == np.float32
    assert np.isnan(ds.read(2)[0, 0, 0]) and np.array_equal(ds.read(2), images[2], equal_nan=True)
    with pytest.raises(DataError, match="NaN"):
        ds.checked_read(2)  # the packed file's nodata policy is its own (default "error")

    toy = Toy(images[:3], [0, 1, 1], events=["santa-rosa", "guatemala", "santa-rosa"])
    ds = PackedDataset(pack_dataset(toy, tmp_path / "events.npz", progress=False))
    assert ds.events == ["santa-rosa", "guatemala", "santa-rosa"]
    assert ds.group_names == ["guatemala", "santa-rosa"] and ds.groups is not None
    assert ds.groups.tolist() == [1, 0, 1]


def test_xbd_events_preserved(tmp_path: Path) -> None:
    root = tmp_path / "xbd"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(2)
    for tile, subtype in (("fire-a_00000001", "destroyed"), ("flood-b_00000002", "no-damage")):
        for phase in ("pre", "post"):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                root / "images" / f"{tile}_{phase}_disaster.png"
            )
            props = {"uid": tile, "subtype": subtype}
            feat = {"properties": props, "wkt": "POLYGON ((10 10, 20 10, 20 20, 10 20, 10 10))"}
            doc = {"features": {"xy": [feat], "lng_lat": [{"properties": props, "wkt": "POINT (10 45)"}]}}
            (root / "labels" / f"{tile}_{phase}_disaster.json").write_text(json.dumps(doc))
    src = open_dataset(root, mode="post", chip_size=8)
    ds = open_dataset(pack_dataset(src, tmp_path / "xbd.npz", progress=False), format="packed")
    assert isinstance(ds, PackedDataset)
    assert ds.events == src.events == ["fire-a", "flood-b"]  # type: ignore[attr-defined]
    assert ds.classes == src.classes and ds.labels.tolist() == [3, 0]
    assert ds.class_counts()["minor-damage"] == 0  # xBD's fixed classes may be empty
    assert ds._images is not None and ds._images.dtype == np.uint8
    assert np.array_equal(ds.read(1), src.read(1))
    assert ds.provenance()["source_format"] == "xbd"


def test_sizes_must_match_unless_encoded(tmp_path: Path) -> None:
    toy = Toy([np.zeros((2, 4, 4)), np.zeros((2, 5, 4))], [0, 1])
    with pytest.raises(DataError, match=r"toy/1: is 2×5×4 but toy/0 is 2×4×4"):
        pack_dataset(toy, tmp_path / "x.npz", progress=False)
    assert not list(tmp_path.iterdir())


def _write_npz(path: Path, **arrays: Any) -> Path:
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def test_bad_files(eurosat_like: Path, tmp_path: Path) -> None:
    good = pack_dataset(open_dataset(eurosat_like, bands="eurosat-ms"), tmp_path / "good.npz", progress=False)
    with np.load(good, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}

    junk = tmp_path / "junk.npz"
    junk.write_bytes(os.urandom(2000))
    with pytest.raises(DataError, match=r"junk\.npz: not a NumPy \.npz file"):
        open_dataset(junk, format="packed")

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match=r"truncated\.npz"):
        open_dataset(truncated, format="packed")

    objects = _write_npz(tmp_path / "objects.npz", **{**arrays, "sources": np.array(["a", 1], dtype=object)})
    with pytest.raises(DataError, match=r"objects\.npz: array 'sources' is an object array that needs pickle"):
        open_dataset(objects, format="packed")

    missing = _write_npz(tmp_path / "missing.npz", **{k: v for k, v in arrays.items() if k not in ("images", "lonlat")})
    with pytest.raises(DataError, match=r"missing\.npz: .*missing array\(s\) lonlat, images \(or encoded \+ offsets\)"):
        open_dataset(missing, format="packed")

    src = open_dataset(_jpeg_folder(tmp_path / "chips"))
    with np.load(pack_dataset(src, tmp_path / "chips.npz", progress=False), allow_pickle=False) as npz:
        enc = {k: npz[k] for k in npz.files}
    offsets = enc["offsets"].copy()
    offsets[-1] += 10
    bad = _write_npz(tmp_path / "offsets.npz", **{**enc, "offsets": offsets})
    with pytest.raises(DataError, match=r"offsets\.npz: 'offsets' are inconsistent"):
        open_dataset(bad, format="packed")

    single = tmp_path / "single.npz"
    with open(single, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(DataError, match=r"single\.npz: holds a single \.npy array"):
        open_dataset(single, format="packed")

    with zipfile.ZipFile(good) as z:
        assert all(not n.endswith(".pkl") for n in z.namelist())


def test_opens_without_rasterio(eurosat_like: Path, tmp_path: Path) -> None:
    """On a machine without rasterio the packed format still imports and reads (others are listed)."""
    out = pack_dataset(open_dataset(eurosat_like, bands="eurosat-ms"), tmp_path / "e.npz", progress=False)
    code = (
        "import sys; sys.modules['rasterio'] = None\n"
        "import eotransfer.data.formats as f\n"
        "from eotransfer.data.base import open_dataset\n"
        f"ds = open_dataset({str(out)!r}, format='packed')\n"
        "assert 'rasterio' not in [m for m, v in sys.modules.items() if v is not None]\n"
        "print(len(ds), ds[3]['image'].shape, f.UNAVAILABLE['folder'])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "36 torch.Size([13, 16, 16]) needs rasterio (pip install rasterio)"
