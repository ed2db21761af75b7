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
new job's is refused (:meth:`Journal.mismatch` names the differing keys). A journal that does
not parse, or whose fields have the wrong types, is refused naming it (:meth:`Journal.load`);
a journal marked complete is believed only when the output has the size it records and,
when it records one, the SHA-256 (:func:`verify_complete`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from bdekit.errors import BdeError, UsageError
from bdekit.image.bounded import read_bounded
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
        """The saved state; None when there is no journal; a UsageError naming the journal
        when it cannot be read or is not a well-formed bdekit journal."""
        if not os.path.lexists(self.path):
            return None
        try:
            data = json.loads(read_bounded(self.path, "journal").decode("utf-8"))
        except BdeError as exc:
            raise UsageError(f"cannot read the journal: {exc.message}; remove it or run "
                             "without --resume", path=self.path) from None
        except (ValueError, RecursionError):
            raise UsageError("the journal is corrupt (not JSON); remove it or run without "
                             "--resume", path=self.path) from None
        if not isinstance(data, dict) or data.get("format") != "bdekit-journal":
            raise UsageError("not a bdekit journal", path=self.path)
        problem = _malformed(data)
        if problem:
            raise UsageError(f"the journal is corrupt ({problem}); remove it or run without "
                             "--resume", path=self.path)
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


def _malformed(data: dict[str, Any]) -> str | None:
    """What is wrong with the fields of a journal, or None."""
    if not isinstance(data.get("params"), dict):
        return "params is not an object"
    done = data.get("done")
    if not isinstance(done, int) or isinstance(done, bool) or done < 0:
        return "done is not a byte count"
    if not isinstance(data.get("partial", ""), str):
        return "partial is not a path"
    if not isinstance(data.get("complete", False), bool):
        return "complete is not true or false"
    if data.get("sha256") is not None and not isinstance(data.get("sha256"), str):
        return "sha256 is not a string"
    damage = data.get("damage")
    if not isinstance(damage, list):
        return "damage is not a list"
    for item in damage:
        if not (isinstance(item, list) and len(item) == 3
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                        for v in item[:2]) and isinstance(item[2], str)):
            return "a damage entry is not [offset, length, reason]"
    return None


def verify_complete(state: dict[str, Any], journal_path: str, output: str, size: int,
                    sha256: Callable[[str], str] | None) -> None:
    """Refuse a journal marked complete whose output does not match it: the size of the
    output must be ``size`` and, when the journal records a SHA-256, ``sha256(output)`` it."""
    try:
        actual = os.stat(output).st_size
    except OSError as exc:
        raise UsageError(f"the journal says the job is complete but the output cannot be "
                         f"read ({exc.strerror}); remove the journal", path=journal_path) from None
    if actual != size:
        raise UsageError(f"the journal says the job is complete but {output} has {actual} "
                         f"bytes, not {size}: remove the journal and run again",
                         path=journal_path)
    recorded = state.get("sha256")
    if recorded and sha256 is not None and sha256(output) != recorded:
        raise UsageError(f"the journal says the job is complete but the SHA-256 of {output} "
                         "differs from the one it records: remove the journal and run again",
                         path=journal_path)


def journal_path_for(output: str) -> str:
    """``OUTPUT.bdekit-journal``; for a device, in the current directory."""
    if is_device(output):
        return os.path.abspath(os.path.basename(output) + JOURNAL_SUFFIX)
    return output + JOURNAL_SUFFIX

