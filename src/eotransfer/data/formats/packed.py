"""A whole data set packed into one NumPy ``.npz`` file, readable without rasterio/GDAL and without pickle.

:func:`pack_dataset` writes any :class:`~eotransfer.data.base.EODataset` (on a machine that can read
its GeoTIFFs) into one uncompressed ``.npz``; :class:`PackedDataset` (format ``packed``) opens it
with nothing but NumPy and Pillow, on a GPU machine without rasterio, say.  The file holds:

- ``images``: N×C×H×W pixels in the smallest exact type (uint8, uint16, else float32; float32
  whenever the source marked nodata, which stays NaN), *or* ``encoded`` (one flat uint8 buffer
  of JPEG/PNG files) with ``offsets`` (int64, N+1): sample ``i`` is ``encoded[offsets[i]:offsets[i+1]]``,
  decoded with Pillow on read.  A folder of JPEG/PNG chips keeps its files' own bytes, so the
  19,237 Hurricane Harvey chips stay ~80 MB instead of ~1 GB of pixels;
- ``labels`` (int64), ``lonlat`` (float64 N×2, NaN where unknown), ``sources`` (unicode; relative
  to the source root when every source lies under it), optional ``groups`` (int64: xBD events,
  raster-vector polygons) and ``multilabels`` (uint8 N×K, BigEarthNet);
- ``meta``: a 0-d unicode array of JSON with the band set (:meth:`BandSet.to_list`), the classes,
  ``scale``/``offset`` (pixels are stored raw and scaled on read, as the source did), the names of
  the groups and the source's provenance.

Nothing here imports rasterio, directly or through :mod:`eotransfer.data.io`.
"""

from __future__ import annotations

import io
import json
import os
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from eotransfer.bands import BandSet
from eotransfer.data.base import EODataset, Location, register_format
from eotransfer.errors import ConfigError, DataError

FORMAT_VERSION = 1
ENCODED_SUFFIXES = {".jpg", ".jpeg", ".png"}
REQUIRED_KEYS = ("labels", "lonlat", "sources", "meta")
_MODES_TO_RGB = ("P", "CMYK", "RGBA")


def _decode(buf: bytes | np.ndarray) -> np.ndarray:
    """JPEG/PNG bytes → float32 C×H×W, as :func:`eotransfer.data.io.read_pixels` reads the file."""
    with Image.open(io.BytesIO(bytes(buf))) as im:
        arr = np.asarray(im.convert("RGB") if im.mode in _MODES_TO_RGB else im)
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    return np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of ``path``, loaded without pickle, with errors that name the file."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(
            f"{path}: not a NumPy .npz file ({exc}); packed data sets are written by "
            "eotransfer.data.formats.packed.pack_dataset"
        ) from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: holds a single .npy array, not a packed .npz data set; re-pack it with pack_dataset")
    arrays: dict[str, np.ndarray] = {}
    with loaded as npz:
        for key in npz.files:
            try:
                arrays[key] = npz[key]
            except ValueError as exc:
                if "pickle" in str(exc).lower():
                    raise DataError(
                        f"{path}: array '{key}' is an object array that needs pickle to load; refused "
                        "(a packed data set never needs pickle, and unpickling can run code); "
                        "re-pack it with pack_dataset"
                    ) from None
                raise DataError(f"{path}: array '{key}' is unreadable ({exc}); re-pack the file") from None
            except (OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
                raise DataError(f"{path}: corrupt or truncated .npz (array '{key}': {exc}); re-pack the file") from None
    return arrays


@register_format("packed")
class PackedDataset(EODataset):
    """A data set packed by :func:`pack_dataset` into one ``.npz``."""

    def __init__(
        self,
        root: str | Path,
        bands: str | BandSet | None = None,
        nodata: str = "error",
        **_: Any,
    ) -> None:
        super().__init__(nodata)
        self.root = path = Path(root)
        if not path.is_file():
            raise DataError(f"{path}: not a file; a packed data set is one .npz file written by pack_dataset")
        arrays = _load_arrays(path)
        missing = [k for k in REQUIRED_KEYS if k not in arrays]
        if "images" not in arrays and not {"encoded", "offsets"} <= set(arrays):
            missing.append("images (or encoded + offsets)")
        if missing:
            raise DataError(
                f"{path}: not a packed data set, missing array(s) {', '.join(missing)} "
                f"(found: {', '.join(sorted(arrays)) or 'none'}); re-pack it with pack_dataset"
            )
        meta = self._meta(path, arrays["meta"])
        version = int(meta.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise DataError(
                f"{path}: packed format version {version} is newer than this eotransfer reads "
                f"({FORMAT_VERSION}); update eotransfer"
            )
        try:
            self.bands = BandSet.from_list(meta["bands"])
            self.classes = [str(c) for c in meta["classes"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{path}: meta lacks a valid band set or class list ({exc}); re-pack the file") from None
        if bands is not None:
            declared = BandSet.parse(bands)
            if len(declared) != len(self.bands):
                raise ConfigError(
                    f"--bands: declares {len(declared)} bands ({declared.describe()}) but {path.name} holds "
                    f"{len(self.bands)} ({self.bands.describe()}); drop --bands"
                )
            self.bands = declared
        self.meta = meta
        self.scale = float(meta.get("scale", 1.0))
        self.offset = float(meta.get("offset", 0.0))
        self.source_format = str(meta.get("provenance", {}).get("format", "unknown"))

        labels = arrays["labels"]
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{path}: 'labels' must be a 1-D integer array, got {labels.dtype} {labels.shape}")
        n = len(labels)
        if n and (labels.min() < 0 or labels.max() >= len(self.classes)):
            raise DataError(f"{path}: labels outside 0..{len(self.classes) - 1} ({len(self.classes)} classes)")
        self.labels = labels.astype(np.int64)
        self._check_len(path, arrays, "lonlat", (n, 2))
        self._check_len(path, arrays, "sources", (n,))

        self._images: np.ndarray | None = None
        self._encoded: np.ndarray | None = None
        self._offsets: np.ndarray | None = None
        if "images" in arrays:
            images = arrays["images"]
            if images.ndim != 4 or images.shape[0] != n:
                raise DataError(f"{path}: 'images' must be N×C×H×W with N={n} samples, got shape {images.shape}")
            if images.shape[1] != len(self.bands):
                raise DataError(
                    f"{path}: 'images' has {images.shape[1]} bands but meta declares {len(self.bands)} "
                    f"({self.bands.describe()}); re-pack the file"
                )
            self._images = images
        else:
            encoded, offsets = arrays["encoded"], arrays["offsets"]
            if encoded.ndim != 1 or encoded.dtype != np.uint8:
                raise DataError(f"{path}: 'encoded' must be a flat uint8 buffer, got {encoded.dtype} {encoded.shape}")
            if (
                offsets.shape != (n + 1,)
                or not np.issubdtype(offsets.dtype, np.integer)
                or offsets[0] != 0
                or offsets[-1] != len(encoded)
                or np.any(np.diff(offsets) <= 0)
            ):
                raise DataError(
                    f"{path}: 'offsets' are inconsistent with 'encoded' (need N+1={n + 1} increasing offsets "
                    f"from 0 to {len(encoded)}, got shape {offsets.shape}); the file is damaged, re-pack it"
                )
            self._encoded, self._offsets = encoded, offsets.astype(np.int64)

        root_ = meta.get("source_root")
        rel = [str(s) for s in arrays["sources"].tolist()]
        self.sources = [f"{root_}{os.sep}{s}" for s in rel] if root_ else rel
        self.locations = [
            Location(float(lon), float(lat), "EPSG:4326") if np.isfinite(lon) and np.isfinite(lat) else Location()
            for lon, lat in arrays["lonlat"].astype(np.float64).tolist()
        ]

        self.group_names: list[str] = [str(g) for g in meta.get("group_names", [])]
        self.groups: np.ndarray | None = None
        self.events: list[str] | None = None
        if "groups" in arrays:
            self._check_len(path, arrays, "groups", (n,))
            self.groups = arrays["groups"].astype(np.int64)
            if meta.get("group_kind") == "events":
                if n and (self.groups.min() < 0 or self.groups.max() >= len(self.group_names)):
                    raise DataError(f"{path}: 'groups' index past the {len(self.group_names)} event names in meta")
                self.events = [self.group_names[g] for g in self.groups.tolist()]
        self.multilabels: np.ndarray | None = None
        if "multilabels" in arrays:
            self._check_len(path, arrays, "multilabels", (n, len(self.classes)))
            self.multilabels = arrays["multilabels"].astype(np.float32)
        self._allow_empty_classes = bool(meta.get("allow_empty_classes", False))

    # -- loading helpers ------------------------------------------------------------------------
    @staticmethod
    def _meta(path: Path, arr: np.ndarray) -> dict[str, Any]:
        if arr.shape != () or arr.dtype.kind != "U":
            raise DataError(f"{path}: 'meta' must be a 0-d unicode array of JSON, got {arr.dtype} {arr.shape}")
        try:
            meta = json.loads(str(arr[()]))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: 'meta' is not valid JSON ({exc}); re-pack the file") from None
        if not isinstance(meta, dict):
            raise DataError(f"{path}: 'meta' must be a JSON object; re-pack the file")
        return meta

    @staticmethod
    def _check_len(path: Path, arrays: dict[str, np.ndarray], key: str, shape: tuple[int, ...]) -> None:
        if arrays[key].shape != shape:
            raise DataError(f"{path}: '{key}' has shape {arrays[key].shape}, expected {shape}; re-pack the file")

    # -- the contract ---------------------------------------------------------------------------
    @property
    def encoded(self) -> bool:
        """True when samples are stored as JPEG/PNG bytes."""
        return self._encoded is not None

    def encoded_bytes(self, index: int) -> bytes:
        """The JPEG/PNG file of sample ``index`` (encoded files only)."""
        if self._encoded is None or self._offsets is None:
            raise DataError(f"{self.root}: holds a pixel array, not encoded images")
        return self._encoded[self._offsets[index] : self._offsets[index + 1]].tobytes()

    def read(self, index: int) -> np.ndarray:
        if self._images is not None:
            arr = self._images[index].astype(np.float32)
        else:
            try:
                arr = _decode(self.encoded_bytes(index))
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                raise DataError(
                    f"{self.root}: sample {index} ({self.sources[index]}) is not a decodable JPEG/PNG ({exc}); "
                    "the file is damaged, re-pack it"
                ) from None
        if self.scale != 1.0 or self.offset != 0.0:
            arr = arr * np.float32(self.scale) + np.float32(self.offset)
        return arr

    def class_counts(self) -> dict[str, int]:
        if self.multilabels is None:
            return super().class_counts()
        return {c: int(k) for c, k in zip(self.classes, self.multilabels.sum(axis=0), strict=True)}

    def check_classes(self) -> None:
        if not self._allow_empty_classes:
            super().check_classes()

    def provenance(self) -> dict[str, Any]:
        p = super().provenance()
        p["source_format"] = self.source_format
        p["source"] = self.meta.get("provenance", {})
        p["storage"] = "encoded" if self.encoded else f"array {self._images.dtype if self._images is not None else ''}"
        return p


# -- packing -------------------------------------------------------------------------------------
def _compact_dtype(arr: np.ndarray) -> np.dtype[Any]:
    """uint8 or uint16 when every value is an integer in range (no NaN), else float32."""
    if arr.size == 0 or np.isnan(arr).any() or not np.array_equal(arr, np.round(arr)):
        return np.dtype(np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0 and hi <= 255:
        return np.dtype(np.uint8)
    if lo >= 0 and hi <= 65535:
        return np.dtype(np.uint16)
    return np.dtype(np.float32)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.array_equal(a, b, equal_nan=True))


def _image_channels(buf: bytes, source: str) -> int:
    try:
        with Image.open(io.BytesIO(buf)) as im:
            return 3 if im.mode in _MODES_TO_RGB else len(im.getbands())
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{source}: unreadable or corrupt image ({exc}); replace or remove the file") from None


class _Progress:
    def __init__(self, label: str, total: int, enabled: bool) -> None:
        self.label, self.total, self.enabled = label, total, enabled
        self.step = max(1, total // 20)

    def __call__(self, done: int) -> None:
        if self.enabled and (done % self.step == 0 or done == self.total):
            print(f"packing {self.label}: {done}/{self.total}", file=sys.stderr, flush=True)


def pack_dataset(
    ds: EODataset,
    path: str | Path,
    indices: Sequence[int] | np.ndarray | None = None,
    keep_encoded: bool = True,
    progress: bool = True,
    compress: bool = False,
) -> Path:
    """Write ``ds`` (or the samples ``indices`` of it) to one ``.npz`` at ``path`` (zip-deflated with ``compress``).

    A folder of JPEG/PNG chips with no band selection and no scale/offset keeps each file's own
    bytes (``keep_encoded``); anything else is read with ``ds.read`` (band selection applied) and
    stored as an N×C×H×W array of the smallest exact type; samples must then share one size.
    Raw values are stored and the source's ``scale``/``offset`` recorded when that reproduces the
    source's pixels exactly, else the scaled float32 pixels.  The file is written to a temporary
    sibling and moved into place, so a crash never leaves a half-written ``path``.
    """
    path = Path(path)
    idx = np.arange(len(ds), dtype=np.int64) if indices is None else np.asarray(indices, dtype=np.int64).ravel()
    if len(idx) == 0:
        raise DataError(f"{path}: nothing to pack, the data set (or the indices given) has no samples")
    if idx.min() < 0 or idx.max() >= len(ds):
        raise ConfigError(f"pack_dataset indices: must lie in 0..{len(ds) - 1}, got {idx.min()}..{idx.max()}")
    n = len(idx)
    scale, offset = float(getattr(ds, "scale", 1.0)), float(getattr(ds, "offset", 0.0))
    sources = [str(ds.sources[i]) for i in idx.tolist()]
    expected = ds._all_bands if ds._all_bands is not None else ds.bands
    show = _Progress(path.name, n, progress)
    arrays: dict[str, np.ndarray] = {}

    packed_source = isinstance(ds, PackedDataset) and ds.encoded and ds._select is None
    use_encoded = keep_encoded and (
        packed_source
        or (
            ds.format_name == "folder"
            and ds._select is None
            and scale == 1.0
            and offset == 0.0
            and all(Path(s).suffix.lower() in ENCODED_SUFFIXES for s in sources)
        )
    )
    if use_encoded:
        chunks: list[bytes] = []
        for k, i in enumerate(idx.tolist(), start=1):
            if isinstance(ds, PackedDataset):
                buf = ds.encoded_bytes(i)
            else:
                try:
                    buf = Path(sources[k - 1]).read_bytes()
                except OSError as exc:
                    raise DataError(f"{sources[k - 1]}: unreadable ({exc}); replace or remove the file") from None
            channels = _image_channels(buf, sources[k - 1])
            if channels != len(expected):
                raise DataError(
                    f"{sources[k - 1]}: has {channels} bands but the data set declares {len(expected)} "
                    f"({expected.describe()}); check --bands or remove the file"
                )
            chunks.append(buf)
            show(k)
        lengths = np.asarray([len(c) for c in chunks], dtype=np.int64)
        arrays["encoded"] = np.frombuffer(b"".join(chunks), dtype=np.uint8)
        arrays["offsets"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        stored_scale, stored_offset = (ds.scale, ds.offset) if isinstance(ds, PackedDataset) else (1.0, 0.0)
    else:
        samples: list[np.ndarray] = []
        keep_raw = scale != 1.0 or offset != 0.0  # store raw values + scale/offset while that is exact
        first_shape: tuple[int, ...] | None = None
        for k, i in enumerate(idx.tolist(), start=1):
            arr = np.asarray(ds.read(i), dtype=np.float32)
            if arr.ndim != 3 or arr.shape[0] != len(expected):
                raise DataError(
                    f"{sources[k - 1]}: has {arr.shape[0] if arr.ndim == 3 else '?'} bands but the data set "
                    f"declares {len(expected)} ({expected.describe()}); check --bands or remove the file"
                )
            arr = ds.select_channels(arr)
            if first_shape is None:
                first_shape = arr.shape
            elif arr.shape != first_shape:
                raise DataError(
                    f"{sources[k - 1]}: is {'×'.join(map(str, arr.shape))} but {sources[0]} is "
                    f"{'×'.join(map(str, first_shape))}; samples of different sizes can only be packed as "
                    "JPEG/PNG bytes (a folder of .jpg/.png chips with keep_encoded=True)"
                )
            if keep_raw:
                raw = np.round((arr.astype(np.float64) - offset) / scale).astype(np.float32)
                if _same(raw * np.float32(scale) + np.float32(offset), arr):
                    arr = raw
                else:  # not exactly representable: fall back to scaled pixels for every sample
                    keep_raw = False
                    samples = [s.astype(np.float32) * np.float32(scale) + np.float32(offset) for s in samples]
            samples.append(arr.astype(_compact_dtype(arr)))
            show(k)
        kinds = {s.dtype for s in samples}
        dtype = next(d for d in (np.dtype(np.float32), np.dtype(np.uint16), np.dtype(np.uint8)) if d in kinds)
        images = np.empty((n, *samples[0].shape), dtype=dtype)
        for k, s in enumerate(samples):
            images[k] = s
        arrays["images"] = images
        stored_scale, stored_offset = (scale, offset) if keep_raw else (1.0, 0.0)

    labels = ds.labels[idx].astype(np.int64)
    arrays["labels"] = labels
    arrays["lonlat"] = ds.lonlat()[idx].astype(np.float64).reshape(n, 2)

    root = str(ds.root)
    prefix = root.rstrip(os.sep) + os.sep
    relative = (
        not isinstance(ds, PackedDataset) and root not in ("", ".") and all(s.startswith(prefix) for s in sources)
    )
    arrays["sources"] = np.asarray([s[len(prefix) :] for s in sources] if relative else sources, dtype=np.str_)

    group_names: list[str] = []
    group_kind: str | None = None
    events = getattr(ds, "events", None)
    groups = getattr(ds, "groups", None)
    if events is not None:
        picked = [str(events[i]) for i in idx.tolist()]
        group_names = sorted(set(picked))
        code = {g: c for c, g in enumerate(group_names)}
        arrays["groups"] = np.asarray([code[g] for g in picked], dtype=np.int64)
        group_kind = "events"
    elif groups is not None:
        values = np.asarray(groups)[idx]
        if np.issubdtype(values.dtype, np.integer):
            arrays["groups"] = values.astype(np.int64)
            group_names = [str(g) for g in getattr(ds, "group_names", [])]
        else:
            group_names = sorted({str(v) for v in values.tolist()})
            code = {g: c for c, g in enumerate(group_names)}
            arrays["groups"] = np.asarray([code[str(v)] for v in values.tolist()], dtype=np.int64)
        group_kind = "groups"

    multilabels = getattr(ds, "multilabels", None)
    if multilabels is not None:
        arrays["multilabels"] = (np.asarray(multilabels)[idx] > 0).astype(np.uint8)
        counts = arrays["multilabels"].sum(axis=0)
    else:
        counts = np.bincount(labels, minlength=len(ds.classes))
    allow_empty = bool(getattr(ds, "_allow_empty_classes", type(ds).check_classes is not EODataset.check_classes))
    if not allow_empty and (counts == 0).any():
        empty = [c for c, k in zip(ds.classes, counts, strict=True) if k == 0]
        raise DataError(
            f"{path}: the samples chosen leave class(es) {', '.join(empty)} empty, which {ds.format_name} "
            "data sets refuse; choose indices that keep every class"
        )

    meta = {
        "format_version": FORMAT_VERSION,
        "bands": ds.bands.to_list(),
        "classes": list(ds.classes),
        "scale": stored_scale,
        "offset": stored_offset,
        "group_names": group_names,
        "group_kind": group_kind,
        "allow_empty_classes": allow_empty,
        "source_root": root if relative else None,
        "n_source_samples": len(ds),
        "provenance": ds.provenance(),
    }
    arrays["meta"] = np.asarray(json.dumps(meta, default=str))

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            (np.savez_compressed if compress else np.savez)(f, allow_pickle=False, **arrays)  # type: ignore[operator]
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
