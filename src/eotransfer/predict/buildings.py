"""Building-level damage prediction for xBD-style inputs, written as a GeoJSON FeatureCollection.

Each building polygon gets one chip cut exactly as :class:`eotransfer.data.formats.xbd.XBDDataset`
cuts its training chips (Gupta et al. 2019, "xBD: A Dataset for Assessing Building Damage from
Satellite Imagery"): ``chip_size`` pixels centred on the pixel under the polygon's centroid
(``floor`` of its pixel coordinates), zero-padded where it overhangs the image, from the
pre-disaster image, the post-disaster image or both stacked (pre then post), whichever the model
was trained on.  So a model sees at prediction the same kind of chip it was trained on.

Building polygons come from an xBD label JSON (``features.xy``: WKT in pixels, ``features.lng_lat``:
WKT in lon/lat, matched by ``uid``) or from a GeoJSON/GeoPackage of polygons in any CRS (then the
image must be a georeferenced GeoTIFF).  Output features carry the lon/lat polygon (RFC 7946) when
it is known, else the pixel polygon (``"geometry_in": "pixel"``), with the predicted damage class,
its probability, every class's probability, and the label file's own damage ``subtype`` if any.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window
from shapely import affinity, wkt
from shapely.errors import ShapelyError
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

from eotransfer.errors import ConfigError, DataError
from eotransfer.predict.cog import write_errors

PatchPredictor = Callable[[np.ndarray], np.ndarray]
PHASE_SUFFIX = {"pre": "_pre_disaster", "post": "_post_disaster"}


@dataclass(frozen=True)
class Building:
    """One building: its id, pixel polygon, lon/lat polygon (if known) and label-file damage subtype."""

    uid: str
    pixels: BaseGeometry
    lonlat: BaseGeometry | None = None
    subtype: str | None = None


def _native_keys() -> dict[str, list[str]]:
    """The band keys of an xBD image, in file order, per phase (as :class:`XBDDataset` names them)."""
    from eotransfer.bands import BandSet
    from eotransfer.data.formats.xbd import pre_disaster_bands

    return {"pre": list(pre_disaster_bands().keys), "post": list(BandSet.parse("rgb").keys)}


def model_phases(band_keys: Sequence[str]) -> tuple[str, ...]:
    """Which xBD images a model's bands come from: pre (``rgb-pre:*``), post (other bands), or both in order.

    A model fitted on a subset or a reordering of an image's xBD bands (``--use-bands``) is refused:
    building chips hold every band of each image in file order, as the training chips did.
    """
    pre = [k.startswith("rgb-pre:") for k in band_keys]
    phases: tuple[str, ...]
    if all(pre):
        phases = ("pre",)
    elif not any(pre):
        phases = ("post",)
    else:
        first_post = pre.index(False)
        if any(pre[first_post:]) or first_post == 0:
            raise ConfigError(
                f"model bands {', '.join(band_keys)} mix pre- and post-disaster bands in an order xBD chips never "
                "have (pre bands first, then post); --buildings needs a model trained on xBD chips"
            )
        phases = ("pre", "post")
    parts = {"pre": list(band_keys[: pre.count(True)]), "post": list(band_keys[pre.count(True) :])}
    natives = _native_keys()
    for phase in phases:
        native, part = natives[phase], parts[phase]
        sensor = native[0].split(":")[0]
        if all(k.split(":")[0] == sensor for k in part) and part != native:
            # chips are cut with all of an image's bands in file order: a subset or reordering would feed
            # the model the wrong channels (or too many)
            raise ConfigError(
                f"model bands {', '.join(band_keys)}: the {phase}-disaster bands are not the image's "
                f"{', '.join(native)} in that order (a model fitted with --use-bands?); --buildings cuts chips "
                "with every band of each image, so refit the model without --use-bands"
            )
    return phases


def phase_images(image: Path, phases: Sequence[str]) -> list[Path]:
    """The pre/post images a model needs, found beside ``image`` by the xBD names ``*_{pre,post}_disaster.*``."""
    stem = image.stem
    base = next((stem[: -len(s)] for s in PHASE_SUFFIX.values() if stem.endswith(s)), None)
    if base is None:
        if len(phases) == 1:
            return [image]
        raise DataError(
            f"{image}: the model takes pre- and post-disaster images stacked, but this file is not named "
            "like xBD's <tile>_post_disaster.png, so its pre-disaster image cannot be found; rename the pair"
        )
    paths = [image.with_name(f"{base}{PHASE_SUFFIX[p]}{image.suffix}") for p in phases]
    for p in paths:
        if not p.is_file():
            raise DataError(f"{p}: missing; the model needs the {', '.join(phases)}-disaster image(s) of {base}")
    return paths


def _parse_wkt(text: Any, where: str) -> BaseGeometry:
    try:
        return wkt.loads(text)
    except (TypeError, ShapelyError):
        raise DataError(f"{where}: a building has no valid 'wkt' polygon; fix the file") from None


def read_xbd_labels(path: Path) -> list[Building]:
    """Buildings of an xBD label JSON: pixel WKT from ``features.xy``, lon/lat WKT from ``features.lng_lat``."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable building file ({exc}); give an xBD label JSON or a GeoJSON") from None
    feats = doc.get("features", {}) if isinstance(doc, dict) else {}
    xy, lnglat = feats.get("xy", []), feats.get("lng_lat", [])
    by_uid = {f.get("properties", {}).get("uid"): f.get("wkt") for f in lnglat}
    buildings = []
    for i, feat in enumerate(xy):
        props = feat.get("properties", {})
        geom = _parse_wkt(feat.get("wkt"), str(path))
        if geom.is_empty:
            continue
        uid = str(props.get("uid", i))
        ll = by_uid.get(props.get("uid")) or (lnglat[i].get("wkt") if i < len(lnglat) else None)
        buildings.append(Building(uid, geom, _parse_wkt(ll, str(path)) if ll else None, props.get("subtype")))
    return buildings


def read_vector_buildings(path: Path, image: Path) -> list[Building]:
    """Buildings of a GeoJSON/GeoPackage: polygons reprojected onto the image's CRS, then into its pixels."""
    import geopandas as gpd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(image) as src:
            crs, transform = src.crs, src.transform
    if crs is None:
        raise DataError(
            f"{image}: not georeferenced, so the polygons of {path} cannot be placed on it; give a GeoTIFF with "
            "a CRS, or an xBD label JSON with pixel ('xy') polygons"
        )
    try:
        gdf = gpd.read_file(path)
    except Exception as exc:  # noqa: BLE001 - pyogrio raises several unrelated types
        raise DataError(f"{path}: unreadable building file ({exc}); give a GeoJSON/GeoPackage of polygons") from None
    gdf = gdf[~gdf.geometry.is_empty & gdf.geometry.notna()]
    if gdf.crs is None:
        gdf = gdf.set_crs("EPSG:4326")  # RFC 7946: GeoJSON coordinates are lon/lat
    inv = ~transform
    to_pixels = [inv.a, inv.b, inv.d, inv.e, inv.xoff, inv.yoff]
    lonlat = gdf.to_crs("EPSG:4326").geometry
    in_image = gdf.to_crs(crs).geometry
    uid_col = next((c for c in ("uid", "id") if c in gdf.columns), None)
    sub_col = next((c for c in ("subtype", "damage") if c in gdf.columns), None)
    return [
        Building(
            str(gdf[uid_col].iloc[i]) if uid_col else str(i),
            affinity.affine_transform(in_image.iloc[i], to_pixels),
            lonlat.iloc[i],
            str(gdf[sub_col].iloc[i]) if sub_col and gdf[sub_col].iloc[i] is not None else None,
        )
        for i in range(len(gdf))
    ]


def read_buildings(path: Path, image: Path) -> list[Building]:
    """xBD label JSON (detected by its ``features.xy``) or any vector file of polygons."""
    if not path.is_file():
        raise DataError(f"--buildings {path}: no such file; give an xBD label JSON or a GeoJSON of polygons")
    if path.suffix.lower() == ".json":
        head = path.read_text(encoding="utf-8", errors="replace")
        try:
            is_xbd = isinstance(json.loads(head).get("features"), dict)
        except (json.JSONDecodeError, AttributeError):
            raise DataError(f"{path}: not valid JSON; give an xBD label JSON or a GeoJSON of polygons") from None
        if is_xbd:
            return read_xbd_labels(path)
    return read_vector_buildings(path, image)


def chip_centre(polygon: BaseGeometry) -> tuple[int, int]:
    """(row, col) of the pixel under the centroid: the centre of the xBD training chip."""
    c = polygon.centroid
    return int(math.floor(c.y)), int(math.floor(c.x))


def read_chip(sources: Sequence[Any], centre: tuple[int, int], size: int) -> np.ndarray:
    """A ``size`` chip of the stacked images centred on ``centre``, zero outside the image, nodata as NaN."""
    row, col = centre
    r0, c0 = row - size // 2, col - size // 2
    parts = []
    for src in sources:
        out = np.zeros((src.count, size, size), dtype=np.float32)
        rs, re, cs, ce = max(r0, 0), min(r0 + size, src.height), max(c0, 0), min(c0 + size, src.width)
        if rs < re and cs < ce:
            data = src.read(window=Window(cs, rs, ce - cs, re - rs), out_dtype="float32")
            if src.nodata is not None and not np.isnan(src.nodata):
                data[data == np.float32(src.nodata)] = np.nan
            out[:, rs - r0 : re - r0, cs - c0 : ce - c0] = data
        parts.append(out)
    return np.concatenate(parts, axis=0)


def predict_buildings(
    images: Sequence[str | Path],
    buildings: str | Path,
    predictor: PatchPredictor,
    classes: Sequence[str],
    chip_size: int,
    out_path: str | Path,
    scale: float = 1.0,
    offset: float = 0.0,
    batch_size: int = 128,
) -> dict[str, Any]:
    """Predict every building of ``buildings`` from chips of ``images`` (stacked in order) into a GeoJSON.

    ``predictor`` takes float32 N×C×``chip_size``×``chip_size`` raw pixels (``* scale + offset``)
    and returns N×K class probabilities.  The GeoJSON is written atomically.  Returns a summary:
    ``path``, ``n_buildings``, ``predicted`` (count per class) and, where the file holds damage
    subtypes among ``classes``, ``agreement`` (share of those buildings predicted as labelled).
    """
    from eotransfer.card import atomic_write_text

    paths, out_path, classes = [Path(p) for p in images], Path(out_path), [str(c) for c in classes]
    if chip_size < 1:
        raise ConfigError(f"chip_size must be a positive number of pixels, got {chip_size}")
    blds = read_buildings(Path(buildings), paths[-1])
    if not blds:
        raise DataError(f"{buildings}: no building polygons; nothing to predict")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # xBD PNGs carry no georeferencing
        try:
            sources = [rasterio.open(p) for p in paths]
        except (RasterioError, OSError) as exc:
            raise DataError(f"{paths}: unreadable image ({exc}); replace it") from None
        try:
            if len({(s.height, s.width) for s in sources}) != 1:
                raise DataError(f"{', '.join(map(str, paths))}: pre and post images differ in size")
            probs = []
            for s in range(0, len(blds), batch_size):
                chunk = blds[s : s + batch_size]
                x = np.stack([read_chip(sources, chip_centre(b.pixels), chip_size) for b in chunk])
                probs.append(np.asarray(predictor(x * np.float32(scale) + np.float32(offset)), dtype=np.float32))
        finally:
            for src in sources:
                src.close()
    p = np.concatenate(probs)
    if p.shape != (len(blds), len(classes)):
        raise ConfigError(f"predictor returned shape {p.shape}; expected ({len(blds)}, {len(classes)})")
    features, counts = [], dict.fromkeys(classes, 0)
    agree = labelled = 0
    for b, vec in zip(blds, p, strict=True):
        k = int(np.argmax(vec))
        counts[classes[k]] += 1
        if b.subtype in classes:
            labelled += 1
            agree += int(b.subtype == classes[k])
        geom = b.lonlat if b.lonlat is not None else b.pixels
        features.append({
            "type": "Feature",
            "geometry": mapping(geom),
            "properties": {
                "uid": b.uid, "damage": classes[k], "probability": round(float(vec[k]), 6),
                "probabilities": {c: round(float(v), 6) for c, v in zip(classes, vec, strict=True)},
                "label_subtype": b.subtype, "chip_centre_row_col": list(chip_centre(b.pixels)),
                "geometry_in": "lonlat" if b.lonlat is not None else "pixel",
            },
        })  # fmt: skip
    doc = {"type": "FeatureCollection", "classes": classes, "features": features}
    with write_errors(out_path, "the building predictions"):
        atomic_write_text(out_path, json.dumps(doc))
    return {
        "path": str(out_path),
        "n_buildings": len(blds),
        "predicted": counts,
        "agreement": agree / labelled if labelled else None,
    }
