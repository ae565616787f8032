"""Generate the tiny, seeded GeoTIFF fixtures the tests use, into ``tests/_generated/`` (git-ignored).

Run ``python tests/data/make_fixtures.py`` (the Makefile does, before pytest); ``tests/conftest.py``
calls :func:`ensure` so that a single test run alone regenerates them when they are missing or were
written by an older version of this script (a stamp holds the script's SHA-256).

What is written:

- ``eurosat_like/<class>/*.tif``: 3 classes x 12 GeoTIFFs, 13 bands in EuroSAT-MS order, 16x16 px,
  uint16, no band descriptions; half in EPSG:32631 and half in EPSG:32632, every file at its own
  place on a grid that spans several 1-degree lon/lat blocks in each zone.  Class ``c`` adds its own
  offset to the mean spectrum (:data:`CLASS_OFFSETS`), so a linear probe separates the classes.
- ``bad/band_count``: class ``b`` holds one 12-band file (``b/b_12bands.tif``) among 13-band ones.
- ``bad/empty_class``: class ``b`` is an empty folder.
- ``bad/corrupt``: ``b/broken.tif`` is random bytes.
- ``bad/nan``: 4-band float32 GeoTIFFs whose descriptions name their bands
  (:data:`NAN_BANDS`); ``b/b_nan.tif`` has NaN in its top-left :data:`NAN_BLOCK` x :data:`NAN_BLOCK` pixels
  of every band.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "_generated"
STAMP = ".stamp"
SEED = 20240601

SIZE = 16
N_PER_CLASS = 12
CLASSES = ("cropland", "forest", "water")
ZONES = ("EPSG:32631", "EPSG:32632")
N_BANDS = 13
#: A plausible uint16 reflectance spectrum (x 10^4) in EuroSAT-MS order B01..B12, B8A.
BASE_SPECTRUM = np.array([1200, 1000, 900, 800, 1100, 1800, 2100, 2300, 800, 50, 1700, 1100, 2400], dtype=np.float64)
#: What each class adds to the base spectrum: a clear, linearly separable signature.
CLASS_OFFSETS = np.array(
    [
        [0] * 13,
        [0, 0, 0, 0, 0, 700, 900, 900, 0, 0, 0, 0, 900],  # brighter in the red edge and NIR
        [300, 600, 600, 600, 0, 0, 0, 0, 0, 0, -600, -600, 0],  # brighter visible, darker SWIR
    ],
    dtype=np.float64,
)
PIXEL_NOISE = 60.0
FILE_NOISE = 40.0
#: Grid of tile origins well inside each UTM zone (its 6 degrees span ~490 km here): eastings ~1.1 degrees
#: apart, northings ~1.4 degrees apart, so the files fall in many 1-degree lon/lat blocks.
EASTINGS = (280_000, 370_000, 460_000, 550_000, 640_000, 720_000)
NORTHINGS = (4_700_000, 4_850_000, 5_000_000)

NAN_BANDS = ("sentinel2-l2a:B02", "sentinel2-l2a:B03", "sentinel2-l2a:B04", "sentinel2-l2a:B08")
NAN_BLOCK = 4


def _write(path: Path, data: np.ndarray, crs: str, x: float, y: float, descriptions: tuple[str, ...] = ()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    count, height, width = data.shape
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": Affine(10.0, 0.0, x, 0.0, -10.0, y),  # 10 m pixels, origin top-left
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, d in enumerate(descriptions, start=1):
            dst.set_band_description(i, d)


def _spectrum_image(rng: np.random.Generator, mean: np.ndarray, n_bands: int = N_BANDS) -> np.ndarray:
    file_mean = mean[:n_bands] + rng.normal(0, FILE_NOISE, n_bands)
    img = file_mean[:, None, None] + rng.normal(0, PIXEL_NOISE, (n_bands, SIZE, SIZE))
    return np.clip(np.rint(img), 0, 65535).astype(np.uint16)


def write_eurosat_like(root: Path, rng: np.random.Generator) -> None:
    # Every file gets its own grid cell: per zone, 18 cells for the 18 files of that zone (6 per class).
    cells = [(e, n) for n in NORTHINGS for e in EASTINGS]
    order = {zone: list(rng.permutation(len(cells))) for zone in ZONES}
    for c, name in enumerate(CLASSES):
        mean = BASE_SPECTRUM + CLASS_OFFSETS[c]
        for i in range(N_PER_CLASS):
            zone = ZONES[i % 2]
            e, n = cells[order[zone].pop()]
            _write(root / name / f"{name}_{i:02d}.tif", _spectrum_image(rng, mean), zone, e, n)


def write_bad(root: Path, rng: np.random.Generator) -> None:
    def good(path: Path, n_bands: int = N_BANDS, k: int = 0) -> None:
        _write(path, _spectrum_image(rng, BASE_SPECTRUM, n_bands), ZONES[0], EASTINGS[k % 6], NORTHINGS[0])

    # a class folder with one file of another band count
    good(root / "band_count" / "a" / "a_00.tif", k=0)
    good(root / "band_count" / "a" / "a_01.tif", k=1)
    good(root / "band_count" / "b" / "b_00.tif", k=2)
    good(root / "band_count" / "b" / "b_12bands.tif", n_bands=12, k=3)
    # an empty class folder
    good(root / "empty_class" / "a" / "a_00.tif", k=0)
    good(root / "empty_class" / "a" / "a_01.tif", k=1)
    (root / "empty_class" / "b").mkdir(parents=True)
    # a corrupt raster: random bytes with a .tif name
    good(root / "corrupt" / "a" / "a_00.tif", k=0)
    good(root / "corrupt" / "b" / "b_00.tif", k=1)
    (root / "corrupt" / "b" / "broken.tif").write_bytes(rng.integers(0, 256, 2048, dtype=np.uint8).tobytes())
    # NaN pixels in a float32 GeoTIFF whose band descriptions name the bands
    for k, rel in enumerate(("a/a_00.tif", "a/a_01.tif", "b/b_00.tif", "b/b_nan.tif")):
        img = _spectrum_image(rng, BASE_SPECTRUM[[1, 2, 3, 7]], n_bands=len(NAN_BANDS)).astype(np.float32) / 10_000
        if rel.endswith("_nan.tif"):
            img[:, :NAN_BLOCK, :NAN_BLOCK] = np.nan
        _write(root / "nan" / rel, img, ZONES[0], EASTINGS[k], NORTHINGS[1], NAN_BANDS)


def script_hash() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def is_current(out: Path = OUT) -> bool:
    stamp = out / STAMP
    return stamp.is_file() and stamp.read_text().strip() == script_hash()


def main(out: Path = OUT) -> Path:
    """(Re)write every fixture under ``out``, atomically: a temporary sibling renamed into place."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")  # not mkdtemp, whose folder is private (0700)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write_eurosat_like(tmp / "eurosat_like", rng)
        write_bad(tmp / "bad", rng)
        (tmp / STAMP).write_text(script_hash() + "\n")
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def ensure(out: Path = OUT) -> Path:
    """The fixture folder, generated first when missing or stale."""
    return out if is_current(out) else main(out)


if __name__ == "__main__":
    print(f"fixtures written to {main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)}")
