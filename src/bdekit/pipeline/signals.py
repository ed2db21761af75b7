"""Termination signals handled like Ctrl-C, so that cleanup runs whichever way a job is stopped.

:func:`terminate_as_interrupt` turns SIGTERM (``kill``, a batch system) and SIGHUP (a dropped
SSH connection, a closed terminal) into :class:`Terminated`, a ``KeyboardInterrupt``, for the
duration of a ``with`` block, in the main thread only. The code that removes a partial output,
keeps a journal or deletes a temporary file on an interrupt then runs for them too, and the
command exits 130 as for Ctrl-C.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled like SIGINT."""


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`Terminated` inside the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated()

    old: dict[int, Any] = {}
    try:
        for signum in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
            if signum is not None:
                old[signum] = signal.signal(signum, handler)
    except (ValueError, OSError):
        pass
    try:
        yield
    finally:
        for signum, previous in old.items():
            signal.signal(signum, previous)


__all__ = ["Terminated", "terminate_as_interrupt"]
