"""Transfer strategies, one registered file each."""

import importlib
import pkgutil


def load_all() -> None:
    """Import every strategy module so that each registers itself."""
    for mod in pkgutil.iter_modules(__path__):
        if mod.name != "base":
            importlib.import_module(f"{__name__}.{mod.name}")
