"""Pack the shared real data into ``.npz`` files a GPU machine without rasterio can train on.

Usage: ``.venv/bin/python scripts/pack_device_data.py [--out .device-data] [--harvey-limit 8000]``

Writes (into a git-ignored folder, default ``.device-data/``) one file per data set, opened there
with ``open_dataset(path, format="packed")``:

- ``eurosat.npz``: all of ``eurosat-ms`` (bands ``eurosat-ms``), uint16;
- ``harvey.npz``: Hurricane Harvey chips as their original JPEG bytes (all, or a seeded subset
  stratified by class with ``--harvey-limit N``);
- ``xbd_post.npz``: xBD building chips (mode ``post``, 64 px), uint8, groups = events;
- ``bigearthnet_s2.npz``: the BigEarthNet S2 example patches (multi-label kept);
- ``landsat_patches.npz``: random ``--landsat-size`` windows of the Landsat 8 scene (B2, B3, B4,
  uint16) without fill (0) pixels, unlabelled, lon/lat of each window's centre.

The device tool carries at most 64 MiB in all, so name only the files a run needs in ``carry``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import rasterio

from eotransfer.bands import BandSet
from eotransfer.data.base import EODataset, Location, open_dataset
from eotransfer.data.formats.packed import pack_dataset
from eotransfer.data.io import to_lonlat

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
NAMES = ("eurosat", "harvey", "xbd_post", "bigearthnet_s2", "landsat_patches")


class LandsatWindows(EODataset):
    """Random fill-free windows of one Landsat 8 scene, unlabelled (for self-supervised pre-training)."""

    format_name = "landsat-windows"

    def __init__(self, scene: Path, n: int, size: int, seed: int) -> None:
        super().__init__("error")
        self.root = scene
        with rasterio.open(scene) as src:
            self.pixels = src.read()
            transform, crs = src.transform, src.crs.to_string()
        if self.pixels.shape[0] != 3:
            raise SystemExit(f"{scene}: expected 3 bands (Landsat 8 B2, B3, B4), found {self.pixels.shape[0]}")
        self.bands = BandSet.parse("landsat8:B2,B3,B4")
        self.classes = ["unlabelled"]
        self.size = size
        _, h, w = self.pixels.shape
        valid = (self.pixels != 0).all(axis=0)
        # integral image of the invalid pixels: a window is fill-free when its sum is 0
        bad = np.pad((~valid).astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        rng = np.random.default_rng(seed)
        origins: list[tuple[int, int]] = []
        tries = 0
        while len(origins) < n:
            tries += 1
            if tries > 200 * n:
                raise SystemExit(f"{scene}: found only {len(origins)} fill-free {size}-px windows in {tries} tries")
            r, c = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
            if bad[r + size, c + size] - bad[r, c + size] - bad[r + size, c] + bad[r, c] == 0:
                origins.append((r, c))
        self.origins = np.asarray(origins, dtype=np.int64)
        self.labels = np.zeros(n, dtype=np.int64)
        for r, c in origins:
            x0, y0 = transform * (c, r)
            x1, y1 = transform * (c + size, r + size)
            lon, lat = to_lonlat(crs, (x0 + x1) / 2, (y0 + y1) / 2)
            bounds = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
            self.locations.append(Location(lon, lat, crs, bounds))
            self.sources.append(f"{scene} (window at row {r}, col {c})")

    def read(self, index: int) -> np.ndarray:
        r, c = (int(v) for v in self.origins[index])
        return self.pixels[:, r : r + self.size, c : c + self.size].astype(np.float32)

    def provenance(self) -> dict[str, object]:
        p = super().provenance()
        p.update(format="landsat-windows", window_size=self.size, fill_value=0)
        return p


def stratified_subset(labels: np.ndarray, limit: int, seed: int) -> np.ndarray | None:
    """``limit`` indices drawn per class in proportion to its size (seeded), sorted; None for all."""
    if limit <= 0 or limit >= len(labels):
        return None
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.floor(counts * limit / len(labels)).astype(int)
    for k in np.argsort(-(counts * limit / len(labels) - quota))[: limit - quota.sum()]:
        quota[k] += 1  # largest remainders
    picks = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota, strict=True)]
    return np.sort(np.concatenate(picks))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / ".device-data", help="output folder (git-ignored)")
    ap.add_argument("--shared", type=Path, default=SHARED, help="the shared data folder")
    ap.add_argument("--only", nargs="+", choices=NAMES, default=list(NAMES), help="pack only these")
    ap.add_argument("--harvey-limit", type=int, default=0, help="chips to keep, stratified (0 = all)")
    ap.add_argument("--landsat-n", type=int, default=2000, help="Landsat windows to cut")
    ap.add_argument("--landsat-size", type=int, default=64, help="Landsat window size in pixels")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    ap.add_argument("--compress", action="store_true", help="zip-deflate the arrays (smaller, slower to open)")
    args = ap.parse_args(argv)
    shared, out, progress = args.shared, args.out, not args.quiet

    written: list[tuple[Path, int, float]] = []
    for name in args.only:
        t0 = time.perf_counter()
        indices = None
        ds: EODataset
        if name == "eurosat":
            ds = open_dataset(shared / "eurosat-ms", bands="eurosat-ms")
        elif name == "harvey":
            ds = open_dataset(shared / "hurricane-harvey")
            indices = stratified_subset(ds.labels, args.harvey_limit, args.seed)
        elif name == "xbd_post":
            ds = open_dataset(shared / "xbd", format="xbd", mode="post", chip_size=64)
        elif name == "bigearthnet_s2":
            ds = open_dataset(shared / "bigearthnet-examples" / "BigEarthNet-S2-Example")
        else:
            scenes = sorted((shared / "landsat8-scene").glob("*.TIF"))
            if len(scenes) != 1:
                raise SystemExit(f"{shared / 'landsat8-scene'}: expected one *.TIF scene, found {len(scenes)}")
            ds = LandsatWindows(scenes[0], args.landsat_n, args.landsat_size, args.seed)
        path = pack_dataset(ds, out / f"{name}.npz", indices=indices, progress=progress, compress=args.compress)
        n = len(ds) if indices is None else len(indices)
        written.append((path, n, time.perf_counter() - t0))

    print(f"\n{'file':<22} {'samples':>8} {'MB':>8} {'MiB':>8} {'seconds':>8}")
    for path, n, secs in written:
        size = path.stat().st_size
        print(f"{path.name:<22} {n:>8} {size / 1e6:>8.1f} {size / 2**20:>8.1f} {secs:>8.1f}")
    total = sum(p.stat().st_size for p, _, _ in written)
    print(f"{'total':<22} {'':>8} {total / 1e6:>8.1f} {total / 2**20:>8.1f}   in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
