"""The options that open a labelled data set: one definition for ``fit``, ``evaluate``, ``advise`` and YAML.

Every command that reads labelled data takes the same keys, so a raster-plus-vector task (a scene and
its digitised polygons) or an xBD folder at a chosen chip size opens the same way everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from eotransfer.strategies.base import param


@dataclass
class DataOptions:
    """The data set and how to read it (CLI options and YAML keys)."""

    data: str = param("", "data set: a folder of class folders, an xBD folder, or a raster (with --vector)")
    bands: str | None = param(None, "the data's bands, e.g. eurosat-ms, sentinel2-l2a, landsat8:B2,B3,B4")
    format: str | None = param(None, "data format (folder, xbd, raster-vector, bigearthnet); detected if omitted")
    vector: str | None = param(None, "labelled polygons/points (GeoPackage/GeoJSON) for a raster")
    label_field: str = param("name", "attribute of --vector holding the class")
    patch_size: int | None = param(None, "patch/chip size for xBD and raster-vector data", 8, 4096)
    scale: float = param(1.0, "multiply raw pixel values by this (e.g. DN → reflectance)")
    offset: float = param(0.0, "then add this")
    nodata: str = param("error", "NaN/nodata pixels: error | mask", choices=("error", "mask"))


#: the :class:`DataOptions` keys :func:`eotransfer.api.load_data` passes to the data set's reader
DATA_KEYS = ("bands", "format", "vector", "label_field", "patch_size", "scale", "offset", "nodata")
