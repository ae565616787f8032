"""Self-supervised pre-training on unlabelled EO imagery: one registered file per method."""

import importlib
import pkgutil


def load_all() -> None:
    """Import every method module so that each registers itself."""
    for mod in pkgutil.iter_modules(__path__):
        if mod.name not in ("base", "run"):
            importlib.import_module(f"{__name__}.{mod.name}")
