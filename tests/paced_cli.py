"""Spawn the bdekit CLI in a child process, optionally with a slowed-down decrypt loop.

Tests that interrupt a job (SIGINT, SIGTERM, SIGKILL) at a chosen point need a real process
and a job slow enough to catch. :func:`spawn` runs this file as a script::

    python tests/paced_cli.py CHUNK_DELAY JOURNAL_INTERVAL bdekit-arguments...

The child sets the decrypt loop's pace (:data:`bdekit.pipeline.decrypt.PACE`: a sleep after
each chunk, the journal interval) and runs the CLI; production code reads no environment
variable for this. SIGINT is reset to Python's default handler in the child, so the tests work
even when pytest itself was started with SIGINT ignored (a child inherits an ignored signal).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve()


def spawn(args: list[str], *, chunk_delay: float = 0.0, journal_interval: float = 1.0,
          env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start ``bdekit ARGS`` (stdout discarded, stderr piped; audit log off)."""
    full = dict(os.environ, BDEKIT_AUDIT_LOG=os.devnull, **(env or {}))
    return subprocess.Popen([sys.executable, str(SCRIPT), str(chunk_delay),
                             str(journal_interval), *args], env=full,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _main() -> None:
    from bdekit.cli.main import main
    from bdekit.pipeline import decrypt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    decrypt.PACE = decrypt.Pace(chunk_delay=float(sys.argv[1]),
                                journal_interval=float(sys.argv[2]))
    sys.argv = ["bdekit", *sys.argv[3:]]
    main(sys.argv[1:])


if __name__ == "__main__":
    _main()
