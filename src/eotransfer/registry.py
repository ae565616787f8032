"""A named registry of classes (strategies, pre-training methods), as timm registers its models.

Entries register themselves with a decorator when their module is imported; a look-up first imports
every module of the package (``load``), then refuses an unknown name with a suggestion.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from eotransfer.errors import ConfigError, did_you_mean

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    """``name → class``; ``what`` and ``option`` phrase the error (``--strategy: unknown strategy 'x'``)."""

    def __init__(self, what: str, option: str, load: Callable[[], None]) -> None:
        super().__init__()
        self.what, self.option, self._load = what, option, load

    def register(self, cls: Any) -> Any:
        """Class decorator: register ``cls`` under ``cls.name``."""
        self[cls.name] = cls
        return cls

    def lookup(self, name: str) -> T:
        self._load()
        if name not in self:
            raise ConfigError(f"{self.option}: unknown {self.what} '{name}'" + did_you_mean(name, self))
        return self[name]
