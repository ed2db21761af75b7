"""journal: split from bdekit.engine (TODO docstring)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from bdekit.errors import UsageError
from bdekit.image.ranges import Damage, merge_damage
from bdekit.pipeline.output import _fsync_dir, is_device

log = logging.getLogger(__name__)


JOURNAL_SUFFIX = ".bdekit-journal"


class Journal:
    """Progress of one job, kept beside the output (see the module docstring)."""

    def __init__(self, path: str, params: dict[str, Any]) -> None:
        self.path = path
        self.params = params
        self.state: dict[str, Any] = {}

    def load(self) -> dict[str, Any] | None:
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
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(self.state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        _fsync_dir(os.path.dirname(os.path.abspath(self.path)))

    def remove(self) -> None:
        for name in (self.path, self.path + ".tmp"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)


def journal_path_for(output: str) -> str:
    """``OUTPUT.bdekit-journal``; for a device, in the current directory."""
    if is_device(output):
        return os.path.abspath(os.path.basename(output) + JOURNAL_SUFFIX)
    return output + JOURNAL_SUFFIX

