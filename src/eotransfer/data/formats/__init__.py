"""Dataset formats; importing this package registers every one of them."""

from eotransfer.data.formats import folder  # noqa: F401
