"""The one read-only interface every disk image is read through, and windows onto it.

An :class:`ImageSource` presents the *logical* bytes of a disk or volume (what the disk held,
not how the container stores them) as random-access, read-only, thread-safe reads:

* ``read_at(offset, length)`` returns bytes, ``readinto_at(offset, buffer)`` fills a buffer
  (zero copies where the container allows it);
* a read is short only at the end of the image; one starting at or past the end is empty;
* ``kind`` says which container the bytes come from (:class:`ContainerKind`), ``path`` names
  the image in every error.

A subclass implements ``_read`` (and, when it can fill a buffer without a copy, ``_readinto``)
for already clipped, non-empty ranges; the base class does the clipping and the closed check.

:class:`SliceSource` is the view of one partition: a window ``[offset, offset + length)`` of
another source, clipped to it, whose errors name the parent's offsets.  The containers
themselves live in :mod:`bdekit.image.rawfile` (raw, device, split) and
:mod:`bdekit.image.containers` (EWF, VHD, VHDX); :func:`bdekit.image.sources.open_source`
picks one.
"""

from __future__ import annotations

import abc
import enum
from types import TracebackType

from bdekit.errors import SourceError

__all__ = ["KINDS", "ContainerKind", "ImageSource", "SliceSource"]


class ContainerKind(enum.StrEnum):
    """The container an image source reads (its ``kind``)."""

    RAW = "raw"
    DEVICE = "device"
    SPLIT = "split"
    EWF = "ewf"
    VHD = "vhd"
    VHDX = "vhdx"


#: Every value :attr:`ImageSource.kind` can take.
KINDS: tuple[str, ...] = tuple(kind.value for kind in ContainerKind)


class ImageSource(abc.ABC):
    """Read-only random access to the logical bytes of a disk or volume image.

    ``read_at`` and ``readinto_at`` may be called from several threads at once.  Reads are
    short only at the end of the image; a read starting at or past the end returns nothing.
    """

    path: str
    size: int
    kind: ContainerKind

    def __init__(self, path: str, size: int, kind: ContainerKind | str) -> None:
        self.path = path
        self.size = size
        self.kind = ContainerKind(kind)
        self._closed = False

    # -- subclasses implement these, for 0 <= offset, offset + length <= size, length > 0 ----
    @abc.abstractmethod
    def _read(self, offset: int, length: int) -> bytes:
        """Read ``length`` bytes (already clipped to the image) at ``offset``."""

    def _readinto(self, offset: int, buf: memoryview) -> int:
        """Fill ``buf`` (already clipped to the image) from ``offset``; default: copy."""
        data = self._read(offset, len(buf))
        buf[: len(data)] = data
        return len(data)

    def _close(self) -> None:  # noqa: B027 - optional hook
        """Release the underlying handles."""

    # -- public API -------------------------------------------------------------------------
    def _clip(self, offset: int, length: int) -> int:
        if self._closed:
            raise SourceError("image source is closed", path=self.path)
        if offset < 0 or length < 0:
            raise ValueError(f"negative offset or length: offset={offset} length={length}")
        return max(0, min(length, self.size - offset))

    def read_at(self, offset: int, length: int) -> bytes:
        """Read ``length`` bytes at ``offset``; short only at the end of the image."""
        n = self._clip(offset, length)
        if n == 0:
            return b""
        return self._read(offset, n)

    def readinto_at(self, offset: int, buf: memoryview | bytearray) -> int:
        """Fill ``buf`` from ``offset``; return the number of bytes read (short only at end)."""
        mv = memoryview(buf)
        if mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B")
        n = self._clip(offset, mv.nbytes)
        if n == 0:
            return 0
        return self._readinto(offset, mv[:n])

    def close(self) -> None:
        """Release the underlying file handles; idempotent."""
        if not self._closed:
            self._closed = True
            self._close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} kind={self.kind} size={self.size} path={self.path!r}>"


class SliceSource(ImageSource):
    """A window ``[offset, offset + length)`` of another source: the view of one partition.

    Reads are clipped to the window; ``size = min(length, parent.size - offset)``.  Errors name
    the parent's path and the offset in the parent.  Closing the slice closes the parent only
    when ``owns_parent`` is true.
    """

    def __init__(self, parent: ImageSource, offset: int, length: int, *,
                 owns_parent: bool = False) -> None:
        if offset < 0 or length < 0:
            raise ValueError(f"negative slice: offset={offset} length={length}")
        super().__init__(parent.path, max(0, min(length, parent.size - offset)), parent.kind)
        self.parent = parent
        self.offset = offset
        self.length = length
        self.owns_parent = owns_parent

    def _read(self, offset: int, length: int) -> bytes:
        return self.parent.read_at(self.offset + offset, length)

    def _readinto(self, offset: int, buf: memoryview) -> int:
        return self.parent.readinto_at(self.offset + offset, buf)

    def _close(self) -> None:
        if self.owns_parent:
            self.parent.close()

    def __repr__(self) -> str:
        return (f"<SliceSource offset={self.offset} size={self.size} of {self.parent!r}>")
