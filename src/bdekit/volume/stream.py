"""A file object over the decrypted volume: ``io.RawIOBase`` with seek, ``readinto`` and ``pread``.

The stream holds no cipher or plan of its own: every read goes to ``read_into`` of the volume
(:class:`bdekit.volume.bde.BdeVolume`), which plans it as runs.

It behaves as ``io.RawIOBase`` and ``io.FileIO`` specify: ``read(None)`` and ``read(-1)`` read
to the end; ``seek`` takes integers only (``TypeError`` otherwise) and a position before the
start is ``OSError(EINVAL)``, as ``lseek`` reports it; seeking past the end is allowed (reads
there return ``b""``). ``pread`` with a negative offset is ``OSError(EINVAL)`` like
``os.pread``.
"""

from __future__ import annotations

import errno
import io
import logging
import operator
import os
import threading
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

log = logging.getLogger(__name__)


class PlannedReader(Protocol):
    """What the stream needs of a volume: its size and positional reads into a buffer."""

    @property
    def volume_size(self) -> int: ...

    def read_into(self, offset: int, buf: memoryview | bytearray) -> int: ...


class DecryptedStream(io.RawIOBase):
    """A read-only, seekable file object over the decrypted volume.

    ``readinto`` takes the stream's lock only to claim the position, so several threads may
    share one stream (each read is positional underneath); ``pread`` never touches the position.
    """

    def __init__(self, volume: PlannedReader) -> None:
        super().__init__()
        self.volume = volume
        self._pos = 0
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self.volume.volume_size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        offset = operator.index(offset)
        whence = operator.index(whence)
        if self.closed:
            raise ValueError("I/O operation on closed stream")
        with self._lock:
            if whence == os.SEEK_SET:
                pos = offset
            elif whence == os.SEEK_CUR:
                pos = self._pos + offset
            elif whence == os.SEEK_END:
                pos = self.size + offset
            else:
                raise ValueError(f"invalid whence {whence}")
            if pos < 0:
                raise OSError(errno.EINVAL, f"negative seek position {pos}")
            self._pos = pos
            return pos

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes; ``None`` or a negative size reads to the end. A sized read
        goes straight to the volume (one Python frame less than ``RawIOBase.read``: small
        random reads are what file-system tools make)."""
        size = -1 if size is None else operator.index(size)
        if size < 0:
            return super().read(-1)
        if self.closed:
            raise ValueError("I/O operation on closed stream")
        with self._lock:
            pos = self._pos
            n = max(0, min(size, self.size - pos))
            self._pos = pos + n
        if n == 0:
            return b""
        buf = bytearray(n)
        got = self.volume.read_into(pos, buf)
        return bytes(buf) if got == n else bytes(buf[:got])

    def readinto(self, b: WriteableBuffer) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed stream")
        mv = memoryview(b).cast("B")
        with self._lock:
            pos = self._pos
            n = max(0, min(len(mv), self.size - pos))
            self._pos = pos + n
        if n == 0:
            return 0
        return self.volume.read_into(pos, mv[:n])

    def pread(self, length: int, offset: int) -> bytes:
        length, offset = operator.index(length), operator.index(offset)
        if offset < 0:
            raise OSError(errno.EINVAL, f"negative offset {offset}")
        if length < 0:
            raise ValueError(f"negative length {length}")
        buf = bytearray(max(0, min(length, self.size - offset)))
        self.volume.read_into(offset, buf)
        return bytes(buf)

