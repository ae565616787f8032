"""eotransfer: transfer learning for Earth-observation imagery.

The Python API mirrors the command line: :func:`fit`, :func:`evaluate`, :func:`predict`.
"""

__version__ = "0.1.0"

from eotransfer.api import FitConfig, FitResult, evaluate, fit, predict  # noqa: E402

__all__ = ["FitConfig", "FitResult", "__version__", "evaluate", "fit", "predict"]
