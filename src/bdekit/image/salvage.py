"""Reading an image that has unreadable sectors: retry, split, zero-fill and record.

:class:`SalvageSource` wraps the image source under a volume. Its fast path is the plain read
(one ``pread`` per request); only when that read raises :class:`~bdekit.errors.ReadError` does
it retry, then split the failing range in halves at sector boundaries down to single sectors;
a sector that stays unreadable reads as zeros and is recorded as :data:`UNREADABLE`. Ranges
known to hold no data (the areas an input ddrescue mapfile does not mark rescued) are never
read: they read as zeros and are recorded with the reason given.

Records are *image* ranges ``(offset, length, reason)``. They go to the sink of the calling
thread (:meth:`SalvageSource.collect`: the decrypt loop opens one per chunk and maps the
records to output ranges) or, outside a sink, to :attr:`SalvageSource.outside` (metadata
reads, scans). :func:`open_salvaged` opens an image this way and positions it on the
BitLocker volume; :func:`find_salvage` finds the salvage layer under a volume's source.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence

from bdekit.errors import ReadError
from bdekit.image import locate
from bdekit.image.ranges import UNREADABLE
from bdekit.image.sources import ImageSource, SliceSource, open_source

log = logging.getLogger(__name__)

#: An image range and why it holds no data: ``(offset, length, reason)``.
Record = tuple[int, int, str]


class SalvageSource(ImageSource):
    """An image source that survives unreadable sectors.

    ``bad`` lists ``(offset, length, reason)`` image ranges known to hold no data (from an input
    mapfile): they read as zeros and are recorded without touching the device. A read that
    raises :class:`ReadError` is retried ``retries`` times, then split in halves down to
    ``sector`` bytes; sectors that stay unreadable read as zeros and are recorded.

    Records go to the calling thread's sink (see :meth:`collect`) when one is open, else to
    :attr:`outside` (reads of metadata, scans...). Offsets are image offsets.
    """

    def __init__(self, inner: ImageSource, *, bad: Sequence[Record] = (),
                 retries: int = 1, sector: int = 512) -> None:
        super().__init__(inner.path, inner.size, inner.kind)
        self.inner = inner
        self.retries = max(0, retries)
        self.sector = sector
        ranges = sorted((o, o + n, r) for o, n, r in bad if n > 0)
        self._bad = ranges
        self._bad_starts = [a for a, _b, _r in ranges]
        self._bad_ends_max: list[int] = []
        top = 0
        for _a, b, _r in ranges:
            top = max(top, b)
            self._bad_ends_max.append(top)
        self._tls = threading.local()
        self._lock = threading.Lock()
        self.outside: list[Record] = []
        self.failed_reads = 0

    # -- sinks ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def collect(self) -> Iterator[list[Record]]:
        """Collect the records of the reads made by this thread inside the ``with`` block."""
        sink: list[Record] = []
        prev = getattr(self._tls, "sink", None)
        self._tls.sink = sink
        try:
            yield sink
        finally:
            self._tls.sink = prev

    def _record(self, offset: int, length: int, reason: str) -> None:
        sink = getattr(self._tls, "sink", None)
        if sink is not None:
            sink.append((offset, length, reason))
        else:
            with self._lock:
                self.outside.append((offset, length, reason))
        if reason == UNREADABLE:
            log.info("unreadable: image offset %d, %d bytes (read as zeros)", offset, length)

    # -- ImageSource ------------------------------------------------------------------------
    def _read(self, offset: int, length: int) -> bytes:
        buf = bytearray(length)
        n = self._readinto(offset, memoryview(buf))
        return bytes(buf[:n])

    def _readinto(self, offset: int, buf: memoryview) -> int:
        if not self._bad or not self._hits_bad(offset, offset + len(buf)):
            try:
                return int(self.inner.readinto_at(offset, buf))
            except ReadError as exc:
                log.info("read error at image offset %s (%d bytes from %d): retrying, then "
                         "splitting", exc.offset, len(buf), offset)
        self._salvage(offset, buf)
        return len(buf)

    def _close(self) -> None:
        self.inner.close()

    # -- the slow path ----------------------------------------------------------------------
    def _hits_bad(self, start: int, end: int) -> bool:
        i = bisect.bisect_left(self._bad_starts, end) - 1
        return i >= 0 and self._bad_ends_max[i] > start

    def _salvage(self, offset: int, buf: memoryview) -> None:
        end = offset + len(buf)
        pos = offset
        i = max(0, bisect.bisect_right(self._bad_starts, offset) - 1)
        while i < len(self._bad) and self._bad[i][0] < end:
            a, b, reason = self._bad[i]
            i += 1
            if b <= pos:
                continue
            a = max(a, pos)
            b = min(b, end)
            if a > pos:
                self._careful(pos, buf[pos - offset:a - offset], first=True)
            buf[a - offset:b - offset] = bytes(b - a)
            self._record(a, b - a, reason)
            pos = b
        if pos < end:
            self._careful(pos, buf[pos - offset:], first=True)

    def _try(self, offset: int, buf: memoryview) -> bool:
        try:
            n = int(self.inner.readinto_at(offset, buf))
        except ReadError:
            with self._lock:
                self.failed_reads += 1
            return False
        if n < len(buf):
            buf[n:] = bytes(len(buf) - n)
        return True

    def _careful(self, offset: int, buf: memoryview, *, first: bool = False) -> None:
        """Read ``buf`` at ``offset`` by retries and halving; zero what stays unreadable."""
        length = len(buf)
        if length <= self.sector:
            for _ in range(1 + self.retries):
                if self._try(offset, buf):
                    return
            buf[:] = bytes(length)
            self._record(offset, length, UNREADABLE)
            return
        for _ in range(1 + (self.retries if first else 0)):
            if self._try(offset, buf):
                return
        # split at a sector boundary near the middle
        mid = offset + length // 2
        mid -= mid % self.sector
        if mid <= offset:
            mid = offset - offset % self.sector + self.sector
        cut = mid - offset
        self._careful(offset, buf[:cut])
        self._careful(mid, buf[cut:])


def find_salvage(source: object) -> tuple[SalvageSource | None, int]:
    """The :class:`SalvageSource` under a volume source (through slices) and the volume's
    offset in it; ``(None, 0)`` when the source does not read through one."""
    base = 0
    while isinstance(source, SliceSource):
        base += source.offset
        source = source.parent
    if isinstance(source, SalvageSource):
        return source, base
    return None, 0


def open_salvaged(path: str, *, offset: int | None = None, partition: int | None = None,
                  bad: Sequence[Record] = (), retries: int = 1,
                  locate_volume: bool = True) -> tuple[ImageSource, SalvageSource, int]:
    """Open an image through a :class:`SalvageSource`; return (volume source, salvage source,
    volume offset in the image). ``locate_volume=False`` leaves partition finding to the
    caller (the volume source is then the whole image)."""
    salvage = SalvageSource(open_source(path), bad=bad, retries=retries)
    if not locate_volume:
        return salvage, salvage, 0
    try:
        vsrc: ImageSource = locate.volume_source(salvage, offset=offset, partition=partition)
    except BaseException:
        salvage.close()
        raise
    return vsrc, salvage, vsrc.offset if isinstance(vsrc, SliceSource) else 0
