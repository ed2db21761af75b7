"""Byte ranges: merging intervals, and the damage records of an output.

Two spellings of a range are used across bdekit, and both are half-open:

* a *span* ``(start, end)`` covers ``start <= x < end`` (used where code walks boundaries:
  the survey of an image, the read planner);
* an *interval* ``(offset, length)`` covers ``offset <= x < offset + length`` (mapfiles,
  damage lists, reports, manifests).

:func:`merge_spans` is the one implementation of "sort, drop empty ranges, merge overlapping
and touching ones"; :func:`merge_intervals` is the same in ``(offset, length)`` form.
:func:`merge_labelled` merges ``(offset, length, label)`` ranges whose labels matter (the
status of a ddrescue block, the reason of a damage record): ranges with the same label merge
when they overlap or touch; where ranges with different labels overlap, the one that sorts
first keeps the overlap and the other is clipped, so the result never overlaps.

:class:`Damage` is a range of the *output* (volume coordinates) whose plaintext could not be
recovered (written as zeros) or is not proven (a guess, kept as decided); its ``reason`` is one
of :data:`MISSING`, :data:`UNREADABLE`, :data:`NOT_RESCUED`, the ``guessed: ...`` reasons of
sectors whose encryption state was decided by content (:data:`GUESSED_REASONS`), the boot
sector reasons (:data:`BOOT_SECTOR_LOST`, :data:`VISTA_HEADER_LOST`, :data:`BOOT_CODE_LOST`)
or a reason of the repair.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Hashable, Iterable
from typing import Any, TypeVar

from bdekit.format.eow import Doubt

log = logging.getLogger(__name__)

L = TypeVar("L", bound=Hashable)

#: Reasons used in damage records (volume / output coordinates).
MISSING = "missing (beyond the end of the image)"
UNREADABLE = "unreadable (I/O error)"
NOT_RESCUED = "not rescued (input mapfile)"
#: sectors whose encryption state was decided by content (kept as decided, not zeroed)
GUESSED_NO_INFORMATION = ("guessed: encryption state decided by content (no used-space-only "
                          "information block verifies)")
GUESSED_NO_BITMAP = ("guessed: encryption state decided by content (no verified "
                     "used-space-only bitmap for this region)")
GUESSED_RECORD_DAMAGED = ("guessed: encryption state decided by content (a damaged "
                          "used-space-only bitmap record may be the newest; chunks where it "
                          "differs from the verified one)")
GUESSED_REASONS: dict[Doubt, str] = {
    Doubt.NO_INFORMATION: GUESSED_NO_INFORMATION,
    Doubt.NO_BITMAP: GUESSED_NO_BITMAP,
    Doubt.RECORD_DAMAGED: GUESSED_RECORD_DAMAGED,
}
#: the first sectors of the volume when no valid boot sector is found (written as zeros; the
#: same wording as the repair's, so that both report one range)
BOOT_SECTOR_LOST = ("relocated header block damaged and no backup boot sector found: boot "
                    "sector not recoverable")
VISTA_HEADER_LOST = ("Vista volume header damaged and no backup boot sector found: boot sector "
                     "not recoverable")
#: the relocated header block's sectors after a boot sector taken from a backup (zeros)
BOOT_CODE_LOST = "relocated header block damaged: boot code sectors not recoverable"

def merge_spans(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sort ``(start, end)`` spans; drop empty ones; merge overlapping or touching ones."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def merge_intervals(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """:func:`merge_spans` for ``(offset, length)`` intervals."""
    return [(a, b - a) for a, b in merge_spans((off, off + n) for off, n in ranges)]


def merge_labelled(ranges: Iterable[tuple[int, int, L]]) -> list[tuple[int, int, L]]:
    """Sort ``(offset, length, label)`` ranges by offset and length (stable: equal ranges keep
    their order); drop empty ones; merge those with the same label that overlap or touch; where
    different labels overlap, the earlier range keeps the overlap and the later is clipped."""
    out: list[tuple[int, int, L]] = []
    for off, length, label in sorted(ranges, key=lambda r: (r[0], r[1])):
        if length <= 0:
            continue
        end = off + length
        if out:
            last_off, last_len, last_label = out[-1]
            last_end = last_off + last_len
            if last_end > off or (last_end == off and last_label == label):
                if end > last_end:
                    if last_label == label or last_end == off:
                        out[-1] = (last_off, end - last_off, last_label)
                    else:
                        out.append((last_end, end - last_end, label))
                continue
        out.append((off, length, label))
    return out


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
    """Sort; merge overlapping ranges, and touching ranges with the same reason
    (:func:`merge_labelled`)."""
    return [Damage(off, n, reason)
            for off, n, reason in merge_labelled((d.offset, d.length, d.reason) for d in items)]


def subtract_damage(items: Iterable[Damage], lo: int, hi: int) -> list[Damage]:
    """``items`` without the span ``[lo, hi)`` (a range rebuilt since it was recorded)."""
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
