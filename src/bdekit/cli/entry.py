"""The console script's first code: an interrupt at any moment ends quietly.

Python turns SIGINT into ``KeyboardInterrupt`` from its first instruction, and importing the
command line (click, cryptography, numpy, every command module) takes a while: a Ctrl-C then
would print a traceback. :func:`main` installs a handler that exits at once with
``bdekit: interrupted`` (status 130) *before* anything else is imported, puts Python's own
handler back for the command itself (which reports an interrupt the same way and cleans up
its partial output), and the quiet handler again once the command returns, for the
interpreter's shutdown.
"""

from __future__ import annotations

import os
import signal
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
    finally:
        signal.signal(signal.SIGINT, _quiet_exit)


if __name__ == "__main__":  # pragma: no cover
    main()
