"""Dataset formats; importing this package registers every one of them."""

from eotransfer.data.formats import bigearthnet, folder, raster_vector, xbd  # noqa: F401
