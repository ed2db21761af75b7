"""planner: split from bdekit.volume (TODO docstring)."""

from __future__ import annotations

import bisect
import dataclasses
import enum
import logging
from collections.abc import Iterator

log = logging.getLogger(__name__)


class RunKind(enum.Enum):
    PLAIN = "plain"
    ENCRYPTED = "encrypted"
    RELOCATED = "relocated"
    VISTA_HEADER = "vista-header"
    ZERO = "zero"
    MISSING = "missing"


@dataclasses.dataclass(frozen=True)
class Run:
    kind: RunKind
    offset: int  # in the volume
    length: int
    source: int  # where the bytes lie in the image (physical offset in the volume)
    encrypted: bool  # whether ``source`` holds ciphertext

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclasses.dataclass(frozen=True)
class Segment:
    start: int
    kind: RunKind
    delta: int  # source = offset + delta
    encrypted: bool


class SegmentMap:
    """Non-overlapping segments covering [0, size), painted in layers."""

    def __init__(self, size: int, kind: RunKind, encrypted: bool) -> None:
        self.size = size
        self.starts: list[int] = [0]
        self.segs: list[Segment] = [Segment(0, kind, 0, encrypted)]

    def paint(self, start: int, end: int, kind: RunKind, delta: int, encrypted: bool) -> None:
        """Overlay [start, end) with one segment; what lies after ``end`` continues as before."""
        start = max(0, start)
        end = min(self.size, end)
        if start >= end:
            return
        tail = self.segs[bisect.bisect_right(self.starts, end) - 1]
        lo = bisect.bisect_left(self.starts, start)
        hi = bisect.bisect_left(self.starts, end)
        new = [Segment(start, kind, delta, encrypted)]
        if end < self.size and (hi == len(self.starts) or self.starts[hi] != end):
            new.append(Segment(end, tail.kind, tail.delta, tail.encrypted))
        self.segs[lo:hi] = new
        self.starts[lo:hi] = [s.start for s in new]

    @classmethod
    def from_plain_ranges(cls, size: int, plain: list[tuple[int, int]]) -> SegmentMap:
        """An encrypted map with ``plain`` ranges (any order, may overlap) marked PLAIN."""
        merged: list[list[int]] = []
        for a, b in sorted((max(0, a), min(size, b)) for a, b in plain):
            if a >= b:
                continue
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        segs: list[Segment] = []
        pos = 0
        for a, b in merged:
            if a > pos:
                segs.append(Segment(pos, RunKind.ENCRYPTED, 0, True))
            segs.append(Segment(a, RunKind.PLAIN, 0, False))
            pos = b
        if pos < size or not segs:
            segs.append(Segment(pos, RunKind.ENCRYPTED, 0, True))
        smap = cls(size, RunKind.ENCRYPTED, True)
        smap.segs = segs
        smap.starts = [seg.start for seg in segs]
        return smap

    def runs(self, offset: int, length: int) -> Iterator[Run]:
        end = min(offset + length, self.size)
        i = bisect.bisect_right(self.starts, offset) - 1
        pos = offset
        while pos < end:
            seg = self.segs[i]
            seg_end = self.starts[i + 1] if i + 1 < len(self.starts) else self.size
            stop = min(seg_end, end)
            yield Run(seg.kind, pos, stop - pos, pos + seg.delta, seg.encrypted)
            pos = stop
            i += 1

    def __len__(self) -> int:
        return len(self.segs)


def merge_runs(runs: Iterator[Run]) -> list[Run]:
    """Join adjacent runs of the same kind whose sources are contiguous."""
    out: list[Run] = []
    for run in runs:
        if out:
            last = out[-1]
            if (last.kind == run.kind and last.encrypted == run.encrypted
                    and last.end == run.offset and last.source + last.length == run.source):
                out[-1] = dataclasses.replace(last, length=last.length + run.length)
                continue
        out.append(run)
    return out


def _bitmap_runs(bitmap: bytes, bits: int, chunk: int) -> Iterator[tuple[int, int, bool]]:
    """(start, end, encrypted) byte runs of a bitmap, LSB first, set = encrypted."""
    if bits <= 0:
        return
    import numpy as np

    arr = np.unpackbits(np.frombuffer(bitmap, dtype=np.uint8), bitorder="little")[:bits]
    change = np.flatnonzero(np.diff(arr)) + 1
    starts = np.concatenate(([0], change))
    ends = np.concatenate((change, [bits]))
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        yield s * chunk, e * chunk, bool(arr[s])

