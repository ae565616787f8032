"""Dataset formats; importing this package registers every one whose dependencies are installed.

Most formats read GeoTIFFs through rasterio (GDAL); a machine without it (a GPU box that trains on
packed ``.npz`` files) can still import this package and open ``packed`` data sets.  A format that
could not be imported is listed in :data:`UNAVAILABLE` with what it needs, for error messages.
"""

from __future__ import annotations

import importlib

#: module of each format, by format name
MODULES = {
    "bigearthnet": "bigearthnet",
    "folder": "folder",
    "raster-vector": "raster_vector",
    "xbd": "xbd",
    "packed": "packed",
}

#: pip package of an import name, where the two differ
_PIP_NAMES = {"PIL": "pillow", "yaml": "pyyaml", "sklearn": "scikit-learn", "osgeo": "gdal"}

#: format name → why it cannot be used here, e.g. "needs rasterio (pip install rasterio)"
UNAVAILABLE: dict[str, str] = {}


def _register_all() -> None:
    for name, module in MODULES.items():
        try:
            importlib.import_module(f"{__name__}.{module}")
        except ImportError as exc:
            missing = (exc.name or "").split(".")[0]
            if not missing or missing == "eotransfer":
                raise  # a bug of ours, not a missing dependency
            UNAVAILABLE[name] = f"needs {missing} (pip install {_PIP_NAMES.get(missing, missing)})"


_register_all()
