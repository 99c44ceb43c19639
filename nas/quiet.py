"""Silencing the model exporters (torch.export, the ONNX exporter, coremltools), which print and warn freely.

``nas export`` and ``nas profile --runtime onnxruntime`` both call them; their
errors still raise, only their progress prints, warnings and log lines go.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator

__all__ = ["quiet_exporters"]

_EXPORTER_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "coremltools", "onnxscript")


@contextlib.contextmanager
def quiet_exporters() -> Iterator[None]:
    """Within the block: exporter loggers at ERROR, warnings ignored, stdout and stderr swallowed."""
    loggers = [logging.getLogger(name) for name in _EXPORTER_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
