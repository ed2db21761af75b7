"""ranges: split from bdekit.engine (TODO docstring)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)


#: Reasons used in damage records (volume / output coordinates).
MISSING = "missing (beyond the end of the image)"


UNREADABLE = "unreadable (I/O error)"


NOT_RESCUED = "not rescued (input mapfile)"


@dataclasses.dataclass(frozen=True, order=True)
class Damage:
    """A range of the output whose plaintext could not be recovered (written as zeros)."""

    offset: int
    length: int
    reason: str

    @property
    def end(self) -> int:
        return self.offset + self.length

    def to_json(self) -> dict[str, Any]:
        return {"offset": self.offset, "length": self.length, "reason": self.reason}


def merge_damage(items: Iterable[Damage]) -> list[Damage]:
    """Sort; merge overlapping ranges, and touching ranges with the same reason."""
    out: list[Damage] = []
    for item in sorted(items, key=lambda d: (d.offset, d.length)):
        if item.length <= 0:
            continue
        if out and (out[-1].end > item.offset
                    or (out[-1].end == item.offset and out[-1].reason == item.reason)):
            last = out[-1]
            if item.end > last.end:
                if last.reason == item.reason or last.end == item.offset:
                    out[-1] = Damage(last.offset, item.end - last.offset, last.reason)
                else:  # overlapping, different reasons: keep the first, clip the second
                    out.append(Damage(last.end, item.end - last.end, item.reason))
            continue
        out.append(item)
    return out


def damage_ranges(items: Iterable[Damage]) -> list[tuple[int, int]]:
    return [(d.offset, d.length) for d in merge_damage(items)]


def _subtract(items: list[Damage], lo: int, hi: int) -> list[Damage]:
    """``items`` without ``[lo, hi)``."""
    out: list[Damage] = []
    for d in items:
        if d.end <= lo or d.offset >= hi:
            out.append(d)
            continue
        if d.offset < lo:
            out.append(Damage(d.offset, lo - d.offset, d.reason))
        if d.end > hi:
            out.append(Damage(hi, d.end - hi, d.reason))
    return out

