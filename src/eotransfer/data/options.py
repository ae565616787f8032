"""The options that open a labelled data set: one definition for ``fit``, ``evaluate``, ``advise`` and YAML.

Every command that reads labelled data takes the same keys, so a raster-plus-vector task (a scene and
its digitised polygons) or an xBD folder at a chosen chip size opens the same way everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from eotransfer.errors import ConfigError
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
    merge_classes: str | None = param(
        None, "merge classes, e.g. damaged=minor-damage+major-damage+destroyed (groups separated by ';')"
    )


def parse_class_merge(spec: str) -> dict[str, list[str]]:
    """``"new=a+b;other=c+d"`` → ``{"new": ["a", "b"], "other": ["c", "d"]}``, with errors naming ``--merge-classes``."""
    groups: dict[str, list[str]] = {}
    for part in (p.strip() for p in spec.split(";")):
        if not part:
            continue
        new, eq, olds = part.partition("=")
        names = [o.strip() for o in olds.split("+") if o.strip()]
        if not eq or not new.strip() or not names:
            raise ConfigError(f"--merge-classes: '{part}' is not NEW=CLASS+CLASS (e.g. damaged=minor-damage+destroyed)")
        if new.strip() in groups:
            raise ConfigError(f"--merge-classes: the group '{new.strip()}' is given twice")
        groups[new.strip()] = names
    if not groups:
        raise ConfigError("--merge-classes: empty; give NEW=CLASS+CLASS groups separated by ';'")
    return groups


#: the :class:`DataOptions` keys :func:`eotransfer.api.load_data` passes to the data set's reader
DATA_KEYS = ("bands", "format", "vector", "label_field", "patch_size", "scale", "offset", "nodata")
#: every data option a config may give (``merge_classes`` is applied after reading)
DATA_OPTION_KEYS = (*DATA_KEYS, "merge_classes")
