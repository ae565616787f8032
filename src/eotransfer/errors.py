"""One exception hierarchy for eotransfer.

Every error names the file or parameter at fault, what was wrong and what to do.  The CLI
prints the message of an :class:`EOTransferError` and exits non-zero without a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class EOTransferError(Exception):
    """Base class of every error eotransfer raises on purpose."""


class ConfigError(EOTransferError, ValueError):
    """A parameter, option or configuration file is wrong."""


class BandError(ConfigError):
    """A band name is unknown or a band set cannot be mapped."""


class DataError(EOTransferError):
    """Input data are missing, unreadable, corrupt or inconsistent."""


class WeightError(EOTransferError):
    """A weight is unknown, unreadable or incompatible."""


class OfflineError(WeightError):
    """A download was needed but no network is reachable."""


class CheckpointError(EOTransferError):
    """A checkpoint cannot be resumed (missing, corrupt or from another configuration)."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest of ``choices``, or a list of choices."""
    options = sorted(set(choices))
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    if not close:
        lowered = {o.lower(): o for o in options}
        if name.lower() in lowered:
            close = [lowered[name.lower()]]
    if close:
        return f"; did you mean '{close[0]}'?"
    shown = ", ".join(options[:12]) + (", ..." if len(options) > 12 else "")
    return f"; choose one of: {shown}"
