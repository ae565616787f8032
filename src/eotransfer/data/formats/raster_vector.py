"""A raster scene plus a vector file of labelled polygons or points, cut into patches.

The classic remote-sensing land-cover set-up (training samples digitised over a scene, as in the
Landsat 8 example of the geowombat package, and the "sampling design" of Olofsson et al. 2014,
"Good practices for estimating area and assessing accuracy of land change", Remote Sensing of
Environment 148): the raster is any GeoTIFF, the vector a GeoPackage/GeoJSON whose ``label_field``
names the class.  The vector is reprojected to the raster's CRS.  A point gives one ``patch_size``
patch centred on it; a polygon gives the patches of a regular grid (stride ``stride``, anchored at
the raster's top-left corner) whose centre pixel lies inside it, or, when no grid centre does (a
polygon smaller than the stride), one patch on its representative point.  Patches that overhang
the raster are dropped.  Pixels are read lazily through a window.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import rasterio
import shapely
from rasterio.errors import RasterioError
from rasterio.windows import Window

from eotransfer.bands import BandSet
from eotransfer.data.base import EODataset, Location, register_format
from eotransfer.data.formats.folder import infer_bandset
from eotransfer.data.io import raster_info, read_pixels, to_lonlat
from eotransfer.errors import ConfigError, DataError


def read_vector(path: Path, layer: str | None) -> Any:
    """A GeoDataFrame of ``path`` (one ``layer`` of it), with errors that name the file."""
    import geopandas as gpd
    import pyogrio

    if not path.is_file():
        raise DataError(f"{path}: no such vector file; check --vector")
    try:
        return gpd.read_file(path, layer=layer)
    except (RuntimeError, OSError, ValueError) as exc:
        try:
            layers = ", ".join(str(row[0]) for row in pyogrio.list_layers(path))
        except (RuntimeError, OSError, ValueError):
            layers = "?"
        raise DataError(f"{path}: cannot read vector layer {layer!r} ({exc}); layers in the file: {layers}") from None


@register_format("raster-vector")
class RasterVectorDataset(EODataset):
    """Patches of one raster labelled by the polygons or points of a vector file."""

    def __init__(
        self,
        root: str | Path,
        vector: str | Path | None = None,
        label_field: str = "name",
        layer: str | None = None,
        bands: str | BandSet | None = None,
        nodata: str = "error",
        patch_size: int = 32,
        stride: int | None = None,
        max_patches_per_polygon: int | None = None,
        scale: float = 1.0,
        offset: float = 0.0,
        **_: Any,
    ) -> None:
        super().__init__(nodata)
        self.root = Path(root)
        if vector is None:
            raise ConfigError(f"{self.root}: the raster-vector format needs --vector (a GeoPackage or GeoJSON)")
        self.vector = Path(vector)
        self.patch_size = int(patch_size)
        self.stride = int(stride) if stride is not None else self.patch_size
        if self.patch_size < 1 or self.stride < 1:
            raise ConfigError(f"patch_size/stride: must be positive, got {patch_size}/{stride}")
        self.scale, self.offset = float(scale), float(offset)

        info = raster_info(self.root)
        self.bands = (
            BandSet.parse(bands)
            if bands is not None
            else infer_bandset(info.descriptions, info.count, False, self.root)
        )
        if info.count != len(self.bands):
            raise DataError(
                f"{self.root}: has {info.count} bands but --bands declares {len(self.bands)} "
                f"({self.bands.describe()}); fix --bands"
            )
        if info.crs is None:
            raise DataError(f"{self.root}: the raster has no CRS, so the vector cannot be placed on it")
        self.crs = info.crs
        try:
            with rasterio.open(self.root) as src:
                self._transform = src.transform
        except (RasterioError, OSError) as exc:
            raise DataError(f"{self.root}: unreadable raster ({exc}); replace the file") from None
        self.height, self.width = info.height, info.width

        gdf = read_vector(self.vector, layer)
        if label_field not in gdf.columns:
            fields = ", ".join(c for c in gdf.columns if c != gdf.geometry.name)
            raise ConfigError(
                f"{self.vector}: no field '{label_field}' for the labels; fields in the file: "
                f"{fields or 'none'}; pass --label-field"
            )
        gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty & gdf[label_field].notna()]
        if gdf.crs is None:
            gdf = gdf.set_crs(self.crs)
        elif not gdf.crs.equals(pyproj.CRS.from_user_input(self.crs)):
            gdf = gdf.to_crs(self.crs)
        gdf = gdf.explode(index_parts=False).reset_index(drop=True)
        extent = shapely.box(*info.bounds) if info.bounds else None
        gdf = gdf[gdf.geometry.intersects(extent)] if extent is not None else gdf
        if len(gdf) == 0:
            raise DataError(
                f"{self.vector}: no labelled feature overlaps the raster {self.root.name} "
                f"(bounds {info.bounds} in {self.crs}); check the files and --layer"
            )
        self.classes = sorted({str(v) for v in gdf[label_field]})
        index = {c: k for k, c in enumerate(self.classes)}

        origins: list[tuple[int, int]] = []
        labels: list[int] = []
        groups: list[int] = []
        half = self.patch_size // 2
        for fid, (geom, value) in enumerate(zip(gdf.geometry, gdf[label_field], strict=True)):
            kind = geom.geom_type
            if kind == "Point":
                cells = [self._pixel(geom.x, geom.y)]
            elif kind == "Polygon":
                cells = self._polygon_cells(geom, max_patches_per_polygon)
            else:
                raise DataError(f"{self.vector}: feature {fid} is a {kind}; only points and polygons are supported")
            for row, col in cells:
                if self._fits(row - half, col - half):
                    origins.append((row - half, col - half))
                    labels.append(index[str(value)])
                    groups.append(fid)
        if not labels:
            raise DataError(
                f"{self.vector}: no {self.patch_size}-px patch around its features fits inside "
                f"{self.root.name}; use a smaller --patch-size"
            )
        self.labels = np.asarray(labels, dtype=np.int64)
        #: index of the vector feature each patch came from (patches of one polygon are correlated).
        self.groups = np.asarray(groups, dtype=np.int64)
        self.origins = np.asarray(origins, dtype=np.int64)
        for (r0, c0), label in zip(origins, labels, strict=True):
            left, top = self._xy(c0, r0)
            right, bottom = self._xy(c0 + self.patch_size, r0 + self.patch_size)
            bounds = (min(left, right), min(top, bottom), max(left, right), max(top, bottom))
            cx, cy = self._xy(c0 + self.patch_size / 2, r0 + self.patch_size / 2)
            lon, lat = to_lonlat(self.crs, cx, cy)
            self.locations.append(Location(lon, lat, self.crs, bounds))
            self.sources.append(f"{self.root} (patch at row {r0}, col {c0}, class {self.classes[label]})")

    def _xy(self, col: Any, row: Any) -> tuple[Any, Any]:
        """Raster (col, row) → CRS (x, y); works on scalars and arrays."""
        t = self._transform
        return t.a * col + t.b * row + t.c, t.d * col + t.e * row + t.f

    def _pixel(self, x: float, y: float) -> tuple[int, int]:
        """CRS (x, y) → the (row, col) of the pixel holding it."""
        t = ~self._transform
        col, row = t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f
        return int(np.floor(row)), int(np.floor(col))

    def _fits(self, r0: int, c0: int) -> bool:
        return 0 <= r0 <= self.height - self.patch_size and 0 <= c0 <= self.width - self.patch_size

    def _polygon_cells(self, geom: Any, cap: int | None) -> list[tuple[int, int]]:
        """Centre pixels of the grid patches inside the raster whose centre lies inside ``geom``."""
        minx, miny, maxx, maxy = geom.bounds
        corners = [self._pixel(x, y) for x in (minx, maxx) for y in (miny, maxy)]
        rows = [min(max(r, 0), self.height - 1) for r, _ in corners]
        cols = [min(max(c, 0), self.width - 1) for _, c in corners]
        half, s = self.patch_size // 2, self.stride
        # grid centres are at k * stride + half; keep those in the polygon's pixel bounding box
        k_rows = np.arange(max(0, (min(rows) - half) // s), (max(rows) - half) // s + 1)
        k_cols = np.arange(max(0, (min(cols) - half) // s), (max(cols) - half) // s + 1)
        grid_r, grid_c = np.meshgrid(k_rows * s + half, k_cols * s + half, indexing="ij")
        rr, cc = grid_r.ravel(), grid_c.ravel()
        xs, ys = self._xy(cc + 0.5, rr + 0.5)
        keep = shapely.contains_xy(geom, xs, ys) & (rr + half <= self.height) & (cc + half <= self.width)
        cells = list(zip(rr[keep].tolist(), cc[keep].tolist(), strict=True))
        if not cells:
            p = geom.representative_point()
            return [self._pixel(p.x, p.y)]
        if cap is not None and len(cells) > cap:
            picks = np.unique(np.round(np.linspace(0, len(cells) - 1, max(int(cap), 0))).astype(int))
            cells = [cells[i] for i in picks]
        return cells

    def read(self, index: int) -> np.ndarray:
        r0, c0 = (int(v) for v in self.origins[index])
        arr = read_pixels(self.root, window=Window(c0, r0, self.patch_size, self.patch_size))
        if self.scale != 1.0 or self.offset != 0.0:
            arr = arr * np.float32(self.scale) + np.float32(self.offset)
        return arr
