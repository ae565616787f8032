"""xBD building-damage tiles cut into one chip per building.

Layout of Gupta et al. 2019, "xBD: A Dataset for Assessing Building Damage from Satellite Imagery"
(CVPR Workshops): ``root/images/{tile}_{pre,post}_disaster.png`` (1024×1024 RGB) and
``root/labels/{tile}_{pre,post}_disaster.json`` with building polygons in pixel (``xy``) and
lon/lat (``lng_lat``) WKT.  Each building of the *post* label file (which carries the damage
``subtype``) is a sample: a ``chip_size`` chip centred on its centroid, from the pre image, the post
image or both stacked (pre RGB then post RGB).  Chips that overhang the tile are zero-padded.  The
tile name's prefix is the event (``santa-rosa-wildfire``), kept in :attr:`XBDDataset.events` for
event-to-event splits.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from shapely import wkt
from shapely.errors import ShapelyError

from eotransfer.bands import Band, BandSet
from eotransfer.data.base import EODataset, Location, register_format
from eotransfer.data.io import read_pixels
from eotransfer.errors import ConfigError, DataError

DAMAGE_CLASSES = ["no-damage", "minor-damage", "major-damage", "destroyed"]
UNCLASSIFIED = "un-classified"
MODES = ("stack", "post", "pre")
_SUFFIXES = ("_pre_disaster", "_post_disaster")


def pre_disaster_bands() -> BandSet:
    """The RGB bands under a distinct ``rgb-pre`` sensor, so pre and post can share one band set."""
    return BandSet(
        tuple(
            Band("rgb-pre", f"pre_{b.name}", b.common_name, b.wavelength_nm, b.bandwidth_nm, b.gsd_m)
            for b in BandSet.parse("rgb")
        )
    )


def _tile_name(stem: str) -> str | None:
    for suffix in _SUFFIXES:
        if stem.endswith(suffix):
            return stem[: -len(suffix)]
    return None


def _load_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data: dict[str, Any] = json.load(f)
        return data
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable xBD label file ({exc}); replace or remove it") from None


@register_format("xbd")
class XBDDataset(EODataset):
    """One sample per building of the xBD post-disaster label files."""

    def __init__(
        self,
        root: str | Path,
        bands: str | BandSet | None = None,
        nodata: str = "error",
        chip_size: int = 64,
        mode: str = "stack",
        include_unclassified: bool = False,
        events: list[str] | None = None,
        cache_tiles: int = 64,
        **_: Any,
    ) -> None:
        super().__init__(nodata)
        self.root = Path(root)
        if mode not in MODES:
            raise ConfigError(f"xbd mode: unknown mode '{mode}'; choose one of {', '.join(MODES)}")
        if int(chip_size) < 1:
            raise ConfigError(f"xbd chip_size: must be a positive number of pixels, got {chip_size}")
        self.mode, self.chip_size = mode, int(chip_size)
        images, labels = self.root / "images", self.root / "labels"
        for d in (images, labels):
            if not d.is_dir():
                raise DataError(f"{d}: missing; an xBD folder holds images/ and labels/")
        tiles = sorted(
            {t for p in images.glob("*.png") if (t := _tile_name(p.stem))}
            | {t for p in labels.glob("*.json") if (t := _tile_name(p.stem))}
        )
        if not tiles:
            raise DataError(f"{self.root}: no xBD tiles (images/<tile>_post_disaster.png) found")
        all_events = sorted({t.rsplit("_", 1)[0] for t in tiles})
        if events is not None:
            unknown = sorted(set(events) - set(all_events))
            if unknown:
                raise ConfigError(
                    f"xbd events: no tiles for event(s) {', '.join(unknown)} in {self.root}; "
                    f"available: {', '.join(all_events)}"
                )
            tiles = [t for t in tiles if t.rsplit("_", 1)[0] in set(events)]
        self.classes = DAMAGE_CLASSES + ([UNCLASSIFIED] if include_unclassified else [])
        index = {c: k for k, c in enumerate(self.classes)}
        phases = {"stack": ("pre", "post"), "post": ("post",), "pre": ("pre",)}[mode]

        self.tiles: list[str] = []
        self.events: list[str] = []
        self.uids: list[str] = []
        sample_tile: list[int] = []
        centres: list[tuple[int, int]] = []
        labels_: list[int] = []
        for tile in tiles:
            post_json = labels / f"{tile}_post_disaster.json"
            if not post_json.is_file():
                raise DataError(f"{post_json}: missing label file for tile {tile}; add it or remove the tile's images")
            for phase in phases:
                png = images / f"{tile}_{phase}_disaster.png"
                if not png.is_file():
                    raise DataError(f"{png}: missing image for label file {post_json.name}; add it or remove the tile")
            feats = _load_json(post_json).get("features", {})
            xy, lnglat = feats.get("xy", []), feats.get("lng_lat", [])
            ll_by_uid = {f.get("properties", {}).get("uid"): f.get("wkt") for f in lnglat}
            tile_id = len(self.tiles)
            self.tiles.append(tile)
            for i, feat in enumerate(xy):
                props = feat.get("properties", {})
                subtype = props.get("subtype", UNCLASSIFIED)
                if subtype not in index:
                    continue
                try:
                    geom = wkt.loads(feat["wkt"])
                except (KeyError, ShapelyError):
                    raise DataError(f"{post_json}: a building has no valid 'wkt' polygon; fix the file") from None
                if geom.is_empty:
                    continue
                c = geom.centroid
                uid = str(props.get("uid", ""))
                ll_wkt = ll_by_uid.get(uid) or (lnglat[i].get("wkt") if i < len(lnglat) else None)
                lon = lat = None
                if ll_wkt:
                    llc = wkt.loads(ll_wkt).centroid
                    lon, lat = float(llc.x), float(llc.y)
                sample_tile.append(tile_id)
                centres.append((int(np.floor(c.y)), int(np.floor(c.x))))
                labels_.append(index[subtype])
                self.uids.append(uid)
                self.events.append(tile.rsplit("_", 1)[0])
                self.locations.append(Location(lon, lat, "EPSG:4326") if lon is not None else Location())
                self.sources.append(f"{post_json} (building {uid})")
        if not labels_:
            raise DataError(
                f"{self.root}: no buildings of classes {', '.join(self.classes)} in the post-disaster label "
                "files; check the folder (or pass include_unclassified=True)"
            )
        self.labels = np.asarray(labels_, dtype=np.int64)
        self._sample_tile = np.asarray(sample_tile, dtype=np.int64)
        self._centres = np.asarray(centres, dtype=np.int64)
        self._phases = phases
        rgb, pre = BandSet.parse("rgb"), pre_disaster_bands()
        self.bands = {"stack": BandSet(pre.bands + rgb.bands), "post": rgb, "pre": pre}[mode]
        own = [k.lower() for k in self.bands.keys]
        if isinstance(bands, str) and [b.strip().lower() for b in bands.split(",")] == own:
            bands = None  # its own bands by key (a saved model's card, as evaluate passes them)
        if bands is not None:
            declared = BandSet.parse(bands)
            if len(declared) != len(self.bands):
                raise ConfigError(
                    f"--bands: declares {len(declared)} bands ({declared.describe()}) but xBD {mode} chips "
                    f"have {len(self.bands)} ({self.bands.describe()}); drop --bands"
                )
            self.bands = declared
        self._cache_size = max(1, int(cache_tiles))
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def check_classes(self) -> None:
        """Allow empty damage classes: the class order is fixed so that events share one head."""

    def tile_pixels(self, t: int) -> np.ndarray:
        """The decoded (pre, post or both stacked) pixels of tile ``t``, from an LRU cache of ``cache_tiles`` tiles.

        Tiles are kept as uint8 when their pixels are 8-bit (6 MiB per 1024² pre+post pair), so the default
        64 tiles hold at most ~400 MiB and shuffled training over an event decodes each tile once, not once
        per chip.
        """
        if t in self._cache:
            self._cache.move_to_end(t)
            return self._cache[t]
        images = self.root / "images"
        arrs = [read_pixels(images / f"{self.tiles[t]}_{phase}_disaster.png") for phase in self._phases]
        if len({a.shape[1:] for a in arrs}) != 1:
            raise DataError(f"{images}: pre and post images of tile {self.tiles[t]} differ in size")
        arr = np.concatenate(arrs, axis=0)
        if arr.size and np.isfinite(arr).all() and arr.min() >= 0 and arr.max() <= 255 and (arr == arr.round()).all():
            arr = arr.astype(np.uint8)  # 8-bit PNGs: a quarter of the memory, so a whole event's tiles fit the cache
        self._cache[t] = arr
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return arr

    def read(self, index: int) -> np.ndarray:
        tile = self.tile_pixels(int(self._sample_tile[index]))
        size, (row, col) = self.chip_size, self._centres[index]
        r0, c0 = int(row) - size // 2, int(col) - size // 2
        h, w = tile.shape[1:]
        out = np.zeros((tile.shape[0], size, size), dtype=np.float32)
        rs, re, cs, ce = max(r0, 0), min(r0 + size, h), max(c0, 0), min(c0 + size, w)
        if rs < re and cs < ce:
            out[:, rs - r0 : re - r0, cs - c0 : ce - c0] = tile[:, rs:re, cs:ce]
        return out
