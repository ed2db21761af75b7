"""The ``bdekit`` logger's one handler: lines ``bdekit: LEVEL: message`` on stderr.

Used by the command line (:func:`bdekit.cli.cmdline.setup_logging`, after the verbosity
options) and by each worker process of a local batch, so that every process of a command logs
the same way. Library callers configure logging themselves; nothing here runs on import.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["log_to_stderr"]


def log_to_stderr(level: int) -> None:
    """Send the ``bdekit`` logger's records of ``level`` and above to stderr, and only there."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("bdekit: %(levelname)s: %(message)s"))
    root = logging.getLogger("bdekit")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
