"""Writing a class map as a Cloud-Optimised GeoTIFF, block by block, with nothing partial left behind.

A COG (https://www.cogeo.org, GDAL's ``COG`` driver) is a tiled GeoTIFF whose overviews lie
inside the file and whose header, overviews and full-resolution tiles are ordered so that a
reader fetches any region at any zoom with few range requests.  GDAL writes that layout only by
copying a finished source, and builds one overview resampling for all bands of a dataset; the
class band needs ``nearest`` (an average of class indices is no class) and the probability bands
``average``.  So the blocks go to two temporary tiled GeoTIFFs (the class band; the probability
bands), each gets its own overviews, a VRT stacks them (GDAL exposes the sources' overviews as the
VRT's), and the COG driver copies that VRT with its existing overviews (``OVERVIEWS=FORCE_USE_EXISTING``).
Every step streams tiles, so memory stays bounded by GDAL's block cache (``GDAL_CACHEMAX``).  The
temporary parts are ZSTD-compressed at level 1 (they are read back twice: overviews, COG copy; DEFLATE
took 2.3× longer for the whole stage on a 4,000² map, ``benchmarks/README.md``); the COG itself is
DEFLATE, which every GeoTIFF reader decodes.

All temporary files live in one hidden folder beside the output and are removed whatever happens;
the COG is moved onto the output path only when complete.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.windows import Window

from eotransfer.errors import DataError

#: GDAL's block cache while predicting and writing, in MB (GDAL's default is 5 % of the RAM).
GDAL_CACHE_MB = 256


def overview_factors(height: int, width: int, tile: int) -> list[int]:
    """Decimation factors 2, 4, 8 … until an overview fits in one tile (GDAL's COG default rule)."""
    factors: list[int] = []
    f = 2
    while max(height, width) / (f // 2) > tile:
        factors.append(f)
        f *= 2
    return factors


def is_disk_full(exc: BaseException) -> bool:
    """True for an ``ENOSPC`` from Python or GDAL (GDAL's errors carry only the C library's message)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "no space left on device" in str(exc).lower() or "disk quota exceeded" in str(exc).lower()


@contextmanager
def write_errors(path: Path, what: str, size_hint_bytes: int | None = None) -> Iterator[None]:
    """Turn a failure to write ``path`` into a :class:`DataError` that names it (disk full said so)."""
    try:
        yield
    except (RasterioError, OSError) as exc:
        if is_disk_full(exc):
            need = (
                f"; it needs up to about {size_hint_bytes / 2**30:.2f} GiB free while writing"
                if size_hint_bytes else ""
            )  # fmt: skip
            raise DataError(
                f"disk full while writing {what} {path} ({exc}); nothing partial was left behind{need}: "
                "free some space or choose an output on another disk"
            ) from None
        raise DataError(
            f"{path}: cannot write {what} ({exc}); check that the folder is writable and the disk has room"
        ) from None


class CogWriter:
    """Blocks of a (1 + K)-band uint8 class map in; a COG with per-band overviews out.

    Band 1 is the class index, bands 2..K+1 one value per class; ``nodata`` marks no data in every
    band.  Use as a context manager: the temporary folder is removed on exit, finished or not.
    """

    def __init__(
        self, out_path: Path, classes: Sequence[str], height: int, width: int, crs: Any, transform: Any,
        nodata: int, tile: int,
    ) -> None:  # fmt: skip
        self.out_path, self.classes = out_path, list(classes)
        self.height, self.width, self.tile, self.nodata = height, width, tile, nodata
        self.what = "the class map"
        # the uncompressed size of the two parts plus the COG: an upper bound for the message
        self.size_hint = 2 * (len(self.classes) + 1) * height * width * 4 // 3
        with self.errors():
            out_path.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent))
        profile = {
            "driver": "GTiff", "dtype": "uint8", "width": width, "height": height, "crs": crs,
            "transform": transform, "nodata": nodata, "tiled": True, "blockxsize": tile, "blockysize": tile,
            "compress": "zstd", "zstd_level": 1, "num_threads": "ALL_CPUS", "BIGTIFF": "IF_SAFER",
        }  # fmt: skip  # temporary parts: ZSTD level 1 writes and reads back ~2x faster than DEFLATE (benchmarks/)
        self.class_path, self.prob_path = self.tmp / "class.tif", self.tmp / "probability.tif"
        self._parts: list[Any] = []
        with self.errors():
            self._parts.append(rasterio.open(self.class_path, "w", count=1, **profile))
            self._parts.append(
                rasterio.open(self.prob_path, "w", count=len(self.classes), interleave="pixel", **profile)
            )

    def errors(self) -> Any:
        return write_errors(self.out_path, self.what, self.size_hint)

    def __enter__(self) -> CogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        for part in self._parts:
            with suppress(RasterioError, OSError):  # already failing, or removed below anyway
                part.close()
        self._parts = []
        shutil.rmtree(self.tmp, ignore_errors=True)

    def write(self, block: np.ndarray, row0: int, col0: int) -> None:
        """Write a (1 + K)×h×w uint8 block whose top-left pixel is (``row0``, ``col0``)."""
        window = Window(col0, row0, block.shape[2], block.shape[1])
        with self.errors():
            self._parts[0].write(block[:1], window=window)
            self._parts[1].write(block[1:], window=window)

    def _vrt(self) -> str:
        """A VRT stacking the class band and the probability bands, with descriptions and class names."""
        with rasterio.open(self.class_path) as src:
            gt = ",".join(repr(v) for v in src.transform.to_gdal())
            srs = f"<SRS>{escape(src.crs.to_wkt())}</SRS>" if src.crs else ""
        bands = [(self.class_path, 1, "class")]
        bands += [(self.prob_path, i + 1, f"p_{name}") for i, name in enumerate(self.classes)]
        parts = [
            f'<VRTDataset rasterXSize="{self.width}" rasterYSize="{self.height}">{srs}',
            f"<GeoTransform>{gt}</GeoTransform>",
            f'<Metadata><MDI key="classes">{escape(json.dumps(self.classes))}</MDI></Metadata>',
        ]
        for i, (path, band, description) in enumerate(bands):
            parts.append(
                f'<VRTRasterBand dataType="Byte" band="{i + 1}"><Description>{escape(description)}</Description>'
                f"<NoDataValue>{self.nodata}</NoDataValue><SimpleSource>"
                f'<SourceFilename relativeToVRT="0">{escape(str(path))}</SourceFilename>'
                f"<SourceBand>{band}</SourceBand></SimpleSource></VRTRasterBand>"
            )
        parts.append("</VRTDataset>")
        return "".join(parts)

    def close_parts(self) -> None:
        """Build each part's overviews (class: nearest, probabilities: average) and close it."""
        factors = overview_factors(self.height, self.width, self.tile)
        with self.errors(), rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):  # overviews computed on every core
            for part, resampling in zip(self._parts, (Resampling.nearest, Resampling.average), strict=True):
                if factors:
                    part.build_overviews(factors, resampling)
                part.close()
        self._parts = []

    def finish(self) -> None:
        """Close the parts, copy their stack to a COG and move it onto ``out_path`` (atomic)."""
        if self._parts:
            self.close_parts()
        with self.errors():
            vrt = self.tmp / "stack.vrt"
            vrt.write_text(self._vrt())
            cog = self.tmp / "out.tif"
            copy_to_cog(vrt, cog, self.tile)
            os.replace(cog, self.out_path)


def copy_to_cog(src: Path, dst: Path, tile: int) -> None:
    """GDAL's COG driver: copy ``src`` (with its overviews) tile by tile."""
    rasterio.shutil.copy(
        src, dst, driver="COG", BLOCKSIZE=tile, COMPRESS="DEFLATE", OVERVIEWS="FORCE_USE_EXISTING",
        BIGTIFF="IF_SAFER", NUM_THREADS="ALL_CPUS",
    )  # fmt: skip
