"""Sliding-window prediction of a raster of any size into a georeferenced class map.

A patch classifier (``N×C×h×w`` pixels in, ``N×K`` class probabilities out) is slid over the raster
with a stride of ``max(1, round(patch_size * (1 - overlap)))``; a last window is aligned to the right
and bottom edges so that every pixel is covered.  Each window's probability vector is blended into
the pixels it covers with a separable triangular weight that is positive everywhere inside the
window, and every pixel receives ``sum(w·p) / sum(w)`` over the windows that cover it.

:func:`predict_raster` produces its output block by block: for each ``block_size`` block it reads
only the input pixels under the windows that touch the block, predicts the windows not predicted
yet (each window's K-vector is kept while its row of windows can still touch a later block, so no
window goes to the predictor twice), blends them into the block and writes the block.  The next blocks'
input is read and decoded on a background thread meanwhile (``read_ahead``).  Peak memory
thus depends on ``block_size``, ``patch_size`` and ``batch_size``, not on the raster's size (the
probability cache holds K floats per window of one block row).  :func:`predict_array` runs the very
same window, weight and blending code on an in-memory array.

Pixels that are nodata (NaN, the raster's nodata value or masked) in every band fed to the model
are nodata in the output, and windows made only of such pixels are never sent to the predictor.
"""

from __future__ import annotations

import math
import numbers
import os
import tempfile
import warnings
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window
from tqdm import tqdm

from eotransfer.errors import ConfigError, DataError
from eotransfer.predict.cog import GDAL_CACHE_MB, CogWriter, overview_factors, write_errors

#: float32 N×C×h×w raw pixel values (NaN = nodata) → float32 N×K class probabilities.
PatchPredictor = Callable[[np.ndarray], np.ndarray]

#: Value of the class band (and of the probability bands) where the input has no data.
NODATA = 255
#: What to do with a raster in another CRS than the model's training data.
CRS_POLICIES = ("refuse", "reproject")
#: Longest side, in pixels, of the class map drawn in the PNG preview (larger maps are decimated).
PREVIEW_MAX_SIDE = 1024

_Key = tuple[int, int]  # (row, col) of a window's top-left pixel
_Rect = tuple[int, int, int, int]  # row0, row1, col0, col1 (half-open)


@dataclass(frozen=True)
class _Pixels:
    """A rectangle of model input: float32 C×h×w pixels (NaN = nodata) and where every band is nodata."""

    rect: _Rect
    data: np.ndarray
    empty: np.ndarray  # h×w bool: NaN in every band

    @classmethod
    def of(cls, rect: _Rect, data: np.ndarray) -> _Pixels:
        return cls(rect, data, np.isnan(data).all(axis=0))

    def crop(self, rect: _Rect) -> tuple[np.ndarray, np.ndarray]:
        """The pixels and the empty mask of ``rect``, which must lie inside this rectangle."""
        r0, r1, c0, c1 = self.rect
        if not (r0 <= rect[0] <= rect[1] <= r1 and c0 <= rect[2] <= rect[3] <= c1):
            raise AssertionError(f"rectangle {rect} is not inside the pixels read, {self.rect}")
        rows, cols = slice(rect[0] - r0, rect[1] - r0), slice(rect[2] - c0, rect[3] - c0)
        return self.data[:, rows, cols], self.empty[rows, cols]


_Reader = Callable[[_Rect], _Pixels]  # rect -> its pixels (NaN for nodata)


# --------------------------------------------------------------------------- windows and blending


def _starts(length: int, patch: int, stride: int) -> np.ndarray:
    """Window starts along one axis: every ``stride``, plus one aligned to the far edge."""
    starts = list(range(0, length - patch + 1, stride))
    if starts[-1] != length - patch:
        starts.append(length - patch)
    return np.asarray(starts, dtype=np.int64)


@dataclass(frozen=True)
class _Tiling:
    """The windows that tile an image, and the weight each window blends with."""

    height: int
    width: int
    patch: int
    stride: int
    row_starts: np.ndarray
    col_starts: np.ndarray
    ramp: np.ndarray  # patch float32 in (0, 1]: the weight along one axis
    weight: np.ndarray  # patch×patch float32, > 0 everywhere: outer(ramp, ramp)

    @classmethod
    def build(cls, height: int, width: int, patch: int, overlap: float) -> _Tiling:
        stride = max(1, round(patch * (1.0 - overlap)))
        # Triangular ramp sampled at pixel centres: in (0, 1], highest at the centre.
        ramp = (1.0 - np.abs((np.arange(patch) + 0.5) * (2.0 / patch) - 1.0)).astype(np.float32)
        return cls(
            height, width, patch, stride,
            _starts(height, patch, stride), _starts(width, patch, stride), ramp, np.outer(ramp, ramp),
        )  # fmt: skip

    @property
    def n_windows(self) -> int:
        return len(self.row_starts) * len(self.col_starts)

    def touching(self, rect: _Rect) -> tuple[np.ndarray, np.ndarray]:
        """Row and column starts of the windows that overlap ``rect``."""
        row0, row1, col0, col1 = rect
        p, rs, cs = self.patch, self.row_starts, self.col_starts
        return rs[(rs < row1) & (rs + p > row0)], cs[(cs < col1) & (cs + p > col0)]


@dataclass
class _Run:
    """State shared by the blocks of one prediction: the predictor, the cache and the counts."""

    predictor: PatchPredictor
    batch_size: int
    n_classes: int | None
    cache: dict[_Key, np.ndarray | None] = field(default_factory=dict)  # None = all nodata, skipped
    n_predicted: int = 0
    n_skipped: int = 0


def _call_predictor(run: _Run, batch: np.ndarray) -> np.ndarray:
    out = run.predictor(batch)
    try:
        probs = np.asarray(out, dtype=np.float32)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(
            f"predictor returned a {type(out).__name__} that is not convertible to an array ({exc}); "
            "return a float32 numpy array of shape N×K (one probability vector per window)"
        ) from None
    k = run.n_classes
    if probs.ndim != 2 or probs.shape[0] != len(batch) or (k is not None and probs.shape[1] != k):
        expected = f"({len(batch)}, {k if k is not None else 'K'})"
        raise ConfigError(
            f"predictor returned shape {tuple(probs.shape)} for a batch of shape {tuple(batch.shape)}; "
            f"expected {expected}: one probability vector per window, one value per class"
        )
    if not np.isfinite(probs).all():
        raise ConfigError(
            "predictor returned NaN or infinite probabilities; nodata pixels reach the predictor as "
            "NaN, so fill them inside the predictor (e.g. with np.nan_to_num) before the model"
        )
    run.n_classes = probs.shape[1]
    return probs


def _predict_new(tiling: _Tiling, pixels: _Pixels, keys: list[_Key], run: _Run) -> None:
    """Predict the windows of ``keys`` not in the cache yet (all-nodata windows are skipped)."""
    todo = [k for k in keys if k not in run.cache]
    if not todo:
        return
    p = tiling.patch
    r0, c0 = min(r for r, _ in todo), min(c for _, c in todo)
    region, empty = pixels.crop((r0, max(r for r, _ in todo) + p, c0, max(c for _, c in todo) + p))
    # valid pixels under each window from a summed-area table of the valid mask: four lookups per window
    table = np.zeros((empty.shape[0] + 1, empty.shape[1] + 1), dtype=np.int64)
    np.cumsum(np.cumsum(~empty, axis=0), axis=1, out=table[1:, 1:])
    rs = np.fromiter((r - r0 for r, _ in todo), dtype=np.int64, count=len(todo))
    cs = np.fromiter((c - c0 for _, c in todo), dtype=np.int64, count=len(todo))
    n_valid = table[rs + p, cs + p] - table[rs, cs + p] - table[rs + p, cs] + table[rs, cs]
    valid: list[_Key] = []
    for key, n in zip(todo, n_valid.tolist(), strict=True):
        if n == 0:
            run.cache[key] = None
            run.n_skipped += 1
        else:
            valid.append(key)
    for i in range(0, len(valid), run.batch_size):
        chunk = valid[i : i + run.batch_size]
        batch = np.stack([region[:, r - r0 : r - r0 + p, c - c0 : c - c0 + p] for r, c in chunk])
        probs = _call_predictor(run, batch)
        for key, vec in zip(chunk, probs, strict=True):
            run.cache[key] = vec
        run.n_predicted += len(chunk)


def _ramps(starts: np.ndarray, first: int, length: int, ramp: np.ndarray) -> np.ndarray:
    """len(starts)×length matrix: the blending ramp of the window starting at each of ``starts``, sampled at
    pixels ``first .. first + length - 1`` (0 outside the window)."""
    d = np.arange(first, first + length)[None, :] - starts[:, None]
    inside = (d >= 0) & (d < len(ramp))
    return np.where(inside, ramp[np.clip(d, 0, len(ramp) - 1)], 0.0).astype(np.float32)


def _blend_block(tiling: _Tiling, pixels: _Pixels, rect: _Rect, run: _Run) -> np.ndarray | None:
    """Blended K×h×w float32 probabilities of ``rect`` (NaN where the input has no data).

    The weight is separable (``outer(ramp, ramp)``), so the blend of the block's R×C windows is two matrix
    products per class: ``Wr.T @ P_k @ Wc`` with ``P_k`` the R×C grid of the windows' class-k probabilities
    (0 for skipped windows) and ``Wr``, ``Wc`` each window row's and column's ramp over the block's rows
    and columns; the weight sum is the same with the 0/1 grid of predicted windows.

    None when no window has been predicted yet and the number of classes is therefore unknown
    (only possible when ``run.n_classes`` was not given and everything so far was nodata).
    """
    rows, cols = tiling.touching(rect)
    _predict_new(tiling, pixels, [(int(r), int(c)) for r in rows for c in cols], run)
    if run.n_classes is None:
        return None
    row0, row1, col0, col1 = rect
    grid = np.zeros((run.n_classes, len(rows), len(cols)), dtype=np.float32)
    predicted = np.zeros((len(rows), len(cols)), dtype=np.float32)
    for i, r in enumerate(rows.tolist()):
        for j, c in enumerate(cols.tolist()):
            vec = run.cache[(r, c)]
            if vec is not None:
                grid[:, i, j] = vec
                predicted[i, j] = 1.0
    w_rows = _ramps(rows, row0, row1 - row0, tiling.ramp)
    w_cols = _ramps(cols, col0, col1 - col0, tiling.ramp)
    acc = w_rows.T @ (grid @ w_cols)
    wsum = w_rows.T @ (predicted @ w_cols)
    nodata = pixels.crop(rect)[1] | (wsum <= 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        probs = acc / wsum
    probs[:, nodata] = np.nan
    return probs


def _check_params(patch_size: int, overlap: float, batch_size: int) -> None:
    if isinstance(patch_size, bool) or not isinstance(patch_size, int | np.integer) or patch_size < 1:
        raise ConfigError(f"patch_size must be a positive integer, got {patch_size!r}")
    if not (isinstance(overlap, numbers.Real) and math.isfinite(overlap) and 0 <= overlap < 1):
        raise ConfigError(
            f"overlap must be a fraction of patch_size with 0 <= overlap < 1, got {overlap!r}; "
            "use e.g. 0.5 (half-overlapping windows) or 0 (abutting windows)"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")


def predict_array(
    image: np.ndarray,
    predictor: PatchPredictor,
    patch_size: int,
    overlap: float = 0.5,
    batch_size: int = 64,
) -> np.ndarray:
    """Blend a patch classifier's probabilities over an in-memory C×H×W image.

    The same windows, weights and blending as :func:`predict_raster` (which applies ``scale`` and
    ``offset`` first; do that yourself here).  Returns float32 K×H×W probabilities, NaN where the
    pixel is NaN in every band.  Meant for small images and as a whole-image reference.
    """
    _check_params(patch_size, overlap, batch_size)
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim != 3:
        raise ConfigError(f"image must be a C×H×W array, got shape {arr.shape}; add a band axis first")
    _, height, width = arr.shape
    if height < patch_size or width < patch_size:
        raise DataError(
            f"image is {width}×{height} pixels (width×height), smaller than patch_size {patch_size}; "
            "use a smaller patch_size or a larger image"
        )
    tiling = _Tiling.build(height, width, patch_size, overlap)
    run = _Run(predictor, batch_size, n_classes=None)
    whole = (0, height, 0, width)
    probs = _blend_block(tiling, _Pixels.of(whole, arr), whole, run)
    if probs is None:
        raise DataError("image: every pixel is NaN (nodata) in every band; there is nothing to predict")
    return probs


# --------------------------------------------------------------------------- rasters


def _temp_path(final: Path, suffix: str) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".tmp{suffix}", dir=final.parent)
    os.close(fd)
    return Path(name)


def _remove(path: Path | None) -> None:
    if path is not None:
        with suppress(FileNotFoundError):
            path.unlink()


def _encode_block(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """K×h×w probabilities (NaN = nodata) → (K+1)×h×w uint8 output block, and per-class pixel counts."""
    k = probs.shape[0]
    nodata = np.isnan(probs[0])
    filled = np.nan_to_num(probs, nan=0.0)
    out = np.empty((k + 1, *nodata.shape), dtype=np.uint8)
    cls = np.argmax(filled, axis=0)
    out[0] = cls
    np.rint(np.clip(filled * 100.0, 0.0, 100.0), out=filled)
    out[1:] = filled
    if nodata.any():
        out[:, nodata] = NODATA
        cls = cls[~nodata]
    return out, np.bincount(cls.ravel(), minlength=k)


def _open_raster(raster: Path) -> Any:
    if not raster.exists():
        raise DataError(f"{raster}: raster does not exist; check the path")
    try:
        return rasterio.open(raster)
    except (RasterioError, OSError) as exc:
        raise DataError(f"{raster}: unreadable or corrupt raster ({exc}); replace or remove the file") from None


def _write_preview(class_tif: Path, png: Path, classes: Sequence[str], title: str) -> None:
    """Draw the class map of ``class_tif`` (band 1) with a legend into ``png``."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    with rasterio.open(class_tif) as src:
        f = max(1, math.ceil(max(src.height, src.width) / PREVIEW_MAX_SIDE))
        shape = (max(1, math.ceil(src.height / f)), max(1, math.ceil(src.width / f)))
        cls_map = src.read(1, out_shape=shape, resampling=Resampling.nearest)
    k = len(classes)
    if k <= 10:
        colours = [matplotlib.colormaps["tab10"](i) for i in range(k)]
    elif k <= 20:
        colours = [matplotlib.colormaps["tab20"](i) for i in range(k)]
    else:
        colours = [matplotlib.colormaps["turbo"](i / (k - 1)) for i in range(k)]
    cmap = ListedColormap(colours).with_extremes(bad=(1.0, 1.0, 1.0, 0.0))
    norm = BoundaryNorm(np.arange(k + 1) - 0.5, k)
    shown = np.ma.masked_equal(cls_map, NODATA)

    aspect = shape[1] / shape[0]
    fig = Figure(figsize=(min(12.0, max(4.0, 6.0 * aspect)) + 2.5, 6.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(shown, cmap=cmap, norm=norm, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_axis_off()
    handles = [Patch(facecolor=colours[i], edgecolor="black", label=name) for i, name in enumerate(classes)]
    handles.append(Patch(facecolor="white", edgecolor="black", label="no data"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    fig.savefig(png, format="png", bbox_inches="tight")


def _check_raster_params(
    raster: Path,
    out_path: Path,
    png_path: Path | None,
    classes: list[str],
    patch_size: int,
    overlap: float,
    batch_size: int,
    block_size: int,
) -> None:
    _check_params(patch_size, overlap, batch_size)
    if isinstance(block_size, bool) or not isinstance(block_size, int | np.integer) or block_size < 1:
        raise ConfigError(f"block_size must be a positive integer, got {block_size!r}; 512 is a good value")
    if not 1 <= len(classes) <= NODATA:
        raise ConfigError(
            f"classes lists {len(classes)} names; give between 1 and {NODATA} "
            f"(the class band is uint8 and {NODATA} marks nodata)"
        )
    if len(set(classes)) != len(classes):
        dup = sorted({c for c in classes if classes.count(c) > 1})
        raise ConfigError(f"classes lists a name twice: {', '.join(dup)}; class names must be unique")
    if out_path.resolve() == raster.resolve():
        raise ConfigError(f"out_path {out_path} is the input raster; choose another output path")
    if png_path is not None and png_path.resolve() in (out_path.resolve(), raster.resolve()):
        raise ConfigError(f"preview_png {png_path} is the input raster or out_path; choose another path")


def _band_indexes(raster: Path, count: int, band_indices: Sequence[int] | None) -> list[int]:
    """rasterio's 1-based band indexes for 0-based ``band_indices`` (all bands when None)."""
    if band_indices is None:
        return list(range(1, count + 1))
    bad = [
        i for i in band_indices
        if isinstance(i, bool) or not isinstance(i, int | np.integer) or not 0 <= i < count
    ]  # fmt: skip
    if bad or not band_indices:
        raise ConfigError(
            f"band_indices {list(band_indices)} do not fit {raster}, which has {count} band(s); "
            f"give 0-based indices between 0 and {count - 1}"
        )
    return [int(i) + 1 for i in band_indices]


def _raster_reader(
    src: Any, raster: Path, indexes: list[int], scale: np.ndarray, offset: np.ndarray, nodata: float | None = None
) -> _Reader:
    """Read a rectangle of ``indexes`` as float32, nodata/masked → NaN, then ``* scale + offset`` (per band)."""

    def read(rect: _Rect) -> _Pixels:
        row0, row1, col0, col1 = rect
        try:
            data = src.read(
                indexes, window=Window(col0, row0, col1 - col0, row1 - row0), masked=True, out_dtype="float32"
            )
        except (RasterioError, OSError, ValueError) as exc:
            raise DataError(
                f"{raster}: cannot read pixels {row0}:{row1}, {col0}:{col1} ({exc}); "
                "the file may be truncated or corrupt, replace it"
            ) from None
        pixels = np.ma.filled(data, np.nan).astype(np.float32, copy=False)
        if nodata is not None:
            pixels[pixels == np.float32(nodata)] = np.nan
        return _Pixels.of(rect, pixels * scale + offset)

    return read


def _extent(tiling: _Tiling, rect: _Rect) -> _Rect:
    """The input rectangle a block needs: ``rect`` and the windows touching it that start in it or beyond.

    Blocks go row by row, left to right, so a touching window that starts above ``rect`` also touched the
    block above (same columns), and one that starts to its left the block to its left: both are predicted
    and cached by then (:func:`_predict_blocks` keeps them).  Their pixels are not read again.
    """
    rows, cols = tiling.touching(rect)
    p = tiling.patch
    return rect[0], max(rect[1], int(rows[-1]) + p), rect[2], max(rect[3], int(cols[-1]) + p)


def _read_ahead(read: _Reader, rects: Sequence[_Rect], depth: int) -> Generator[_Pixels, None, None]:
    """``read(rect)`` for each of ``rects`` in order, with up to ``depth`` reads running ahead on one thread.

    GDAL decodes (and the reader scales) the next blocks while the caller predicts and writes the current
    one; rasterio releases the GIL while GDAL reads, and the source is only ever touched by that one thread
    (a GDAL dataset must not be used by two threads at once).  ``depth`` 0 reads in the caller's thread.
    A reader's error is raised when its rectangle is reached.  Close the generator (``contextlib.closing``)
    before closing the source: closing cancels the reads not started and waits for the one running.
    """
    if depth <= 0:
        yield from (read(rect) for rect in rects)
        return
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eotransfer-read")
    try:
        pending: deque[Future[_Pixels]] = deque()
        todo = iter(rects)
        for rect in todo:
            pending.append(pool.submit(read, rect))
            if len(pending) > depth:
                break
        while pending:
            pixels = pending.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(read, nxt))
            yield pixels
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _predict_blocks(
    tiling: _Tiling, read: _Reader, run: _Run, writer: CogWriter, n_classes: int, block_size: int, desc: str,
    progress: bool, read_ahead: int = 0,
) -> np.ndarray:  # fmt: skip
    """Predict and write every block of the output; return the per-class pixel counts.

    Each block's input is read once, as the rectangle under every window touching it (:func:`_extent`),
    ``read_ahead`` blocks ahead of the one being predicted (:func:`_read_ahead`).
    """
    height, width = tiling.height, tiling.width
    rects = [
        (r, min(r + block_size, height), c, min(c + block_size, width))
        for r in range(0, height, block_size)
        for c in range(0, width, block_size)
    ]
    counts = np.zeros(n_classes, dtype=np.int64)
    current_row = -1
    # closed here, whatever happens: no read may still be running once the caller closes the source
    with closing(_read_ahead(read, [_extent(tiling, rect) for rect in rects], read_ahead)) as inputs:
        for rect, pixels in tqdm(zip(rects, inputs, strict=True), total=len(rects), desc=desc, unit="block",
                                 disable=not progress):  # fmt: skip
            if rect[0] != current_row:  # forget the windows that cannot touch this block row or a later one
                current_row = rect[0]
                run.cache = {key: v for key, v in run.cache.items() if key[0] + tiling.patch > current_row}
            probs = _blend_block(tiling, pixels, rect, run)
            assert probs is not None  # run.n_classes is known
            out, block_counts = _encode_block(probs)
            counts += block_counts
            writer.write(out, rect[0], rect[2])
    return counts


def training_crs(locations: Sequence[Any]) -> str | None:
    """The one CRS of the georeferenced training samples, or None (none known, or several, e.g. UTM zones).

    Only samples with bounds count: a lon/lat parsed from a file name says where, not on which grid.
    """
    spelt = {str(loc.crs) for loc in locations if getattr(loc, "crs", None) and getattr(loc, "bounds", None)}
    crss = {CRS.from_user_input(s).to_string() for s in spelt}
    return crss.pop() if len(crss) == 1 else None


def _checked_source(src: Any, raster: Path, expected_crs: str | None, crs_policy: str, nodata: float | None) -> Any:
    """``src`` itself, or a :class:`~rasterio.vrt.WarpedVRT` onto ``expected_crs`` under ``reproject``.

    The warped view is computed window by window as blocks are read, so memory stays bounded.
    """
    if crs_policy not in CRS_POLICIES:
        raise ConfigError(f"--crs-policy: unknown policy '{crs_policy}'; choose one of {', '.join(CRS_POLICIES)}")
    if expected_crs is None:
        return src
    target = CRS.from_user_input(expected_crs)
    if src.crs is None:
        warnings.warn(
            f"{raster}: the raster has no CRS, so it cannot be checked against the model's training CRS "
            f"{target.to_string()}; predicting it as it is",
            stacklevel=3,
        )
        return src
    if src.crs == target:
        return src
    if crs_policy == "refuse":
        raise DataError(
            f"{raster}: the raster's CRS {src.crs.to_string()} differs from the CRS of the model's training data "
            f"{target.to_string()}; pass --crs-policy reproject to warp it on the fly (bilinear, block by block), "
            "or reproject the raster yourself (e.g. gdalwarp -t_srs)"
        )
    return WarpedVRT(
        src, crs=target, resampling=Resampling.bilinear, dtype="float32", nodata=np.nan,
        src_nodata=src.nodata if src.nodata is not None else nodata,
    )  # fmt: skip


def predict_raster(
    raster: str | Path,
    predictor: PatchPredictor,
    out_path: str | Path,
    classes: Sequence[str],
    patch_size: int,
    band_indices: Sequence[int] | None = None,
    overlap: float = 0.5,
    batch_size: int = 64,
    block_size: int = 512,
    scale: float | Sequence[float] = 1.0,
    offset: float | Sequence[float] = 0.0,
    preview_png: str | Path | None = None,
    progress: bool = True,
    nodata: float | None = None,
    expected_crs: str | None = None,
    crs_policy: str = "refuse",
    read_ahead: int = 0,
) -> dict[str, Any]:
    """Predict a raster window by window into a Cloud-Optimised GeoTIFF class map on the raster's grid.

    ``predictor`` receives float32 N×C×``patch_size``×``patch_size`` pixels (the bands
    ``band_indices``, 0-based, in that order; all bands when None), multiplied by ``scale`` plus
    ``offset`` (scalars, or one value per selected band), with NaN where the raster has no data
    (its nodata value, its mask, or ``nodata`` when the file declares none, e.g. Landsat's 0 fill),
    and returns N×K class probabilities.

    ``read_ahead`` blocks are read and decoded on a background thread while the current block is predicted
    and written (0: all in the calling thread); it changes the speed, never the output.

    ``expected_crs`` is the CRS of the model's training data (None: not checked).  A raster in
    another CRS is refused (``crs_policy="refuse"``, a :class:`DataError`) or warped onto it on the
    fly (``"reproject"``, bilinear); the output then lies on the warped grid.

    ``out_path`` is a COG (GDAL's COG layout: tiled, deflate, internal overviews) of uint8 bands with
    the input's CRS, transform, width and height: band 1 is the class index (argmax of the blended
    probabilities; overviews by ``nearest``) and bands 2..K+1 the blended probability of each class
    in **percent** (0-100; overviews by ``average``); 255 marks nodata in every band.  Its band
    descriptions are ``class``, ``p_<class>``... and its tag ``classes`` holds the class names as a
    JSON list.  ``preview_png`` gets a picture of the class map with a legend.  Both are written to
    temporary files beside them and moved into place only when everything succeeded; a full disk
    raises a :class:`DataError` that says so and leaves nothing behind.

    Returns a summary: ``path``, ``width``, ``height``, ``classes``, ``class_fractions`` (each class's
    share of the valid pixels), ``n_windows`` (windows sent to the predictor), ``n_skipped_windows``
    (windows of nodata only), ``valid_pixels``, ``crs``, ``reprojected``, ``overviews`` and ``preview``.
    """
    raster, out_path = Path(raster), Path(out_path)
    png_path = Path(preview_png) if preview_png is not None else None
    classes = [str(c) for c in classes]
    _check_raster_params(raster, out_path, png_path, classes, patch_size, overlap, batch_size, block_size)
    if isinstance(read_ahead, bool) or not isinstance(read_ahead, int | np.integer) or read_ahead < 0:
        raise ConfigError(f"read_ahead must be a non-negative integer (blocks read ahead), got {read_ahead!r}")
    scale_arr = np.asarray(scale, dtype=np.float32).reshape(-1, 1, 1)
    offset_arr = np.asarray(offset, dtype=np.float32).reshape(-1, 1, 1)
    if not (np.isfinite(scale_arr).all() and np.isfinite(offset_arr).all()):
        raise ConfigError(f"scale and offset must be finite numbers, got scale={scale!r}, offset={offset!r}")

    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), _open_raster(raster) as opened:
        indexes = _band_indexes(raster, opened.count, band_indices)
        src = _checked_source(opened, raster, expected_crs, crs_policy, nodata)
        try:
            height, width = src.height, src.width
            if height < patch_size or width < patch_size:
                raise DataError(
                    f"{raster}: raster is {width}×{height} pixels (width×height), smaller than patch_size "
                    f"{patch_size}; use a smaller patch_size or a larger raster"
                )
            tiling = _Tiling.build(height, width, patch_size, overlap)
            for name, arr in (("scale", scale_arr), ("offset", offset_arr)):
                if len(arr) not in (1, len(indexes)):
                    raise ConfigError(f"{name}: {len(arr)} values for {len(indexes)} bands; give one, or one per band")
            read = _raster_reader(src, raster, indexes, scale_arr, offset_arr, nodata)
            run = _Run(predictor, batch_size, n_classes=len(classes))
            crs = src.crs.to_string() if src.crs else None
            tile = 512 if block_size >= 512 else 256
            tmp_png: Path | None = None
            with CogWriter(out_path, classes, height, width, src.crs, src.transform, NODATA, tile) as writer:
                counts = _predict_blocks(
                    tiling, read, run, writer, len(classes), block_size, desc=f"predict {raster.name}",
                    progress=progress, read_ahead=read_ahead,
                )  # fmt: skip
                try:
                    if png_path is not None:
                        with write_errors(png_path, "the preview"):
                            png_path.parent.mkdir(parents=True, exist_ok=True)
                            tmp_png = _temp_path(png_path, ".png")
                            writer.close_parts()
                            _write_preview(
                                writer.class_path, tmp_png, classes, title=f"{raster.name}: predicted classes"
                            )
                    writer.finish()
                    if png_path is not None and tmp_png is not None:
                        with write_errors(png_path, "the preview"):
                            os.replace(tmp_png, png_path)
                        tmp_png = None
                finally:
                    _remove(tmp_png)
        finally:
            if src is not opened:
                src.close()

    n_valid = int(counts.sum())
    return {
        "path": str(out_path),
        "width": width,
        "height": height,
        "classes": classes,
        "class_fractions": {c: (float(counts[i]) / n_valid if n_valid else 0.0) for i, c in enumerate(classes)},
        "n_windows": run.n_predicted,
        "n_skipped_windows": run.n_skipped,
        "valid_pixels": n_valid,
        "crs": crs,
        "reprojected": src is not opened,
        "overviews": overview_factors(height, width, tile),
        "preview": str(png_path) if png_path is not None else None,
    }
