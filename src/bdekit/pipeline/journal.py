"""The journal of a job: what lets ``--resume`` continue an interrupted decrypt or repair.

With a :class:`Journal` (``repair`` always keeps one), progress is recorded in
``OUTPUT.bdekit-journal`` (for a device: ``NAME.bdekit-journal`` in the current directory), a
JSON file replaced atomically (:func:`~bdekit.image.files.write_atomic`)::

    {"format": "bdekit-journal", "version": 1,
     "params": {...what must match to resume: input, sizes, key fingerprint, ...},
     "partial": "OUTPUT.bdekit-partial", "done": <bytes of output complete>,
     "damage": [[offset, length, reason], ...],   # found in [0, done)
     "complete": false, "sha256": null, "saved": <time>}

Writes are in order, so completed work is the prefix ``[0, done)``. The decrypt loop fsyncs
the data before it records ``done`` (every ``Pace.journal_interval`` seconds), so a run killed
at any point (SIGKILL included) can be resumed from there. When the job finishes, the journal
is marked complete (with the SHA-256 and the damage list) before the rename; the caller removes
it after writing its own products (mapfile, report). A journal whose ``params`` differ from the
new job's is refused (:meth:`Journal.mismatch` names the differing keys).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from bdekit.errors import UsageError
from bdekit.image.files import TMP_SUFFIX, write_atomic
from bdekit.image.ranges import Damage, merge_damage
from bdekit.pipeline.output import is_device

log = logging.getLogger(__name__)


JOURNAL_SUFFIX = ".bdekit-journal"


class Journal:
    """Progress of one job, kept beside the output (see the module docstring)."""

    def __init__(self, path: str, params: dict[str, Any]) -> None:
        self.path = path
        self.params = params
        self.state: dict[str, Any] = {}

    def load(self) -> dict[str, Any] | None:
        """The saved state; None when there is no journal; a UsageError when unreadable."""
        try:
            with open(self.path, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read the journal: {exc}", path=self.path) from None
        if not isinstance(data, dict) or data.get("format") != "bdekit-journal":
            raise UsageError("not a bdekit journal", path=self.path)
        return data

    def mismatch(self, data: dict[str, Any]) -> list[str]:
        """The ``params`` keys whose values differ between ``data`` and this job."""
        old = data.get("params", {})
        return sorted(k for k in set(old) | set(self.params) if old.get(k) != self.params.get(k))

    def save(self, *, partial: str, done: int, damage: Sequence[Damage],
             complete: bool = False, sha256: str | None = None) -> None:
        self.state = {
            "format": "bdekit-journal", "version": 1, "params": self.params,
            "partial": partial, "done": done,
            "damage": [[d.offset, d.length, d.reason] for d in merge_damage(damage)],
            "complete": complete, "sha256": sha256, "saved": time.time(),
        }
        write_atomic(self.path, json.dumps(self.state))

    def remove(self) -> None:
        for name in (self.path, self.path + TMP_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)


def journal_path_for(output: str) -> str:
    """``OUTPUT.bdekit-journal``; for a device, in the current directory."""
    if is_device(output):
        return os.path.abspath(os.path.basename(output) + JOURNAL_SUFFIX)
    return output + JOURNAL_SUFFIX

