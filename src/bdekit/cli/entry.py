"""The console script's first code: an interrupt at any moment ends quietly.

Python turns SIGINT into ``KeyboardInterrupt`` from its first instruction, and importing the
command line (click, cryptography, numpy, every command module) takes a while: a Ctrl-C then
would print a traceback. :func:`main` installs a handler that exits at once with
``bdekit: interrupted`` (status 130) *before* anything else is imported, puts Python's own
handler back for the command itself (which reports an interrupt the same way and cleans up
its partial output), and the quiet handler again once the command returns, for the
interpreter's shutdown.

Once the command has returned, :func:`_exit` ends the process without the interpreter's
teardown (freeing every module and object one by one, about 10 ms after a decrypt): it runs
the ``atexit`` handlers (logging's flush and close among them), flushes stdout and stderr and
calls ``os._exit`` with the command's status. Every file bdekit writes is closed by then.
When another thread still runs, or a stream cannot be flushed, the interpreter exits the
usual way instead.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
from types import FrameType

EXIT_INTERRUPTED = 130


def _quiet_exit(signum: int, frame: FrameType | None) -> None:
    try:
        os.write(2, b"bdekit: interrupted\n")
    finally:
        os._exit(EXIT_INTERRUPTED)


def main(argv: list[str] | None = None) -> None:
    signal.signal(signal.SIGINT, _quiet_exit)
    from bdekit.cli.main import main as cli_main  # noqa: PLC0415 - after the handler

    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        cli_main(argv)
        status: object = 0
    except SystemExit as exc:
        status = exc.code
    finally:
        signal.signal(signal.SIGINT, _quiet_exit)
    if argv is not None:  # called from Python with its own arguments: a plain SystemExit
        raise SystemExit(status)
    _exit(status)


def _exit(status: object) -> None:
    """End the process with ``status`` (see the module docstring); returns only by raising
    ``SystemExit`` when the usual exit must be taken."""
    if status is None:
        status = 0
    if not isinstance(status, int) or threading.active_count() > 1:
        raise SystemExit(status)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        raise SystemExit(status) from None
    atexit._run_exitfuncs()
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(status)
