"""Raw images, block devices and split raw sets, read with ``os.pread`` (no dependency).

raw (``kind="raw"``)
    A plain ``dd`` image: the file *is* the disk.  Read with :func:`os.pread` on a descriptor
    opened ``O_RDONLY``, so several threads can read at once without sharing a file position;
    :meth:`~bdekit.image.imagesource.ImageSource.readinto_at` reads with ``os.preadv`` straight
    into the caller's buffer.  A fixed VHD read without ``pyvhdi`` is a raw source whose size
    stops before its 512-byte footer (``kind="vhd"``).

device (``kind="device"``)
    A block device (``/dev/sdb``, ``/dev/loop0``...).  Same as raw; the size comes from
    ``lseek(fd, 0, SEEK_END)``, which works for devices where ``st_size`` is 0.

split raw (``kind="split"``)
    A raw image cut into segments: ``disk.001 disk.002 ...`` (FTK Imager, ``split -d``-style
    numbering, also ``.000``-based) or ``disk.aa disk.ab ...`` (``split``).  Naming any segment,
    or the base name ``disk`` when only the segments exist, opens the whole set
    (:func:`find_split_segments`), presented as one concatenated image: a read is cut at the
    segment boundaries found by a binary search over the segment start offsets.  A gap in the
    numbering is an error naming the missing segment.

Failures to open are one-line :class:`~bdekit.errors.SourceError`\\ s naming the path; a failed
read (``EIO`` from a dying disk...) is a :class:`~bdekit.errors.ReadError` naming the image
offset of the read (and, for a split set, the segment and the offset in it).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from bisect import bisect_right
from collections.abc import Sequence

from bdekit.errors import ReadError, SourceError
from bdekit.image.imagesource import ContainerKind, ImageSource

__all__ = ["DeviceSource", "RawSource", "SplitSource", "fd_size", "find_split_segments",
           "open_readonly", "os_error_text"]

#: Largest single pread: Linux caps one read at 0x7ffff000 bytes anyway.
_MAX_PREAD = 1 << 30


def os_error_text(exc: OSError) -> str:
    """The short text of an OSError (its strerror), for one-line messages."""
    return exc.strerror or str(exc)


def _pread_exact(fd: int, offset: int, length: int, *, path: str, image_offset: int,
                 what: str = "") -> bytes:
    """pread until ``length`` bytes or end of file; OSError -> ReadError at ``image_offset``."""
    chunks: list[bytes] = []
    done = 0
    while done < length:
        try:
            data = os.pread(fd, min(length - done, _MAX_PREAD), offset + done)
        except OSError as exc:
            raise _read_error(exc, path, image_offset + done, length - done, what) from exc
        if not data:
            break
        chunks.append(data)
        done += len(data)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _preadinto_exact(fd: int, offset: int, buf: memoryview, *, path: str, image_offset: int,
                     what: str = "") -> int:
    """preadv into ``buf`` until full or end of file; OSError -> ReadError."""
    done = 0
    total = len(buf)
    while done < total:
        part = buf[done : done + min(total - done, _MAX_PREAD)]
        try:
            got = os.preadv(fd, [part], offset + done)
        except OSError as exc:
            raise _read_error(exc, path, image_offset + done, total - done, what) from exc
        if got == 0:
            break
        done += got
    return done


def _read_error(exc: OSError, path: str, offset: int, length: int, what: str) -> ReadError:
    if exc.errno == errno.EIO:
        message = f"I/O error reading {length} bytes (unreadable sector?)"
    else:
        message = f"read of {length} bytes failed: {os_error_text(exc)}"
    if what:
        message += f" [{what}]"
    return ReadError(message, path=path, offset=offset)


def open_readonly(path: str) -> tuple[int, os.stat_result]:
    """Open ``path`` O_RDONLY; every failure becomes a one-line SourceError."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SourceError("no such file or directory", path=path) from None
    except PermissionError:
        raise SourceError("permission denied", path=path) from None
    except OSError as exc:
        raise SourceError(f"cannot open: {os_error_text(exc)}", path=path) from None
    if stat.S_ISDIR(st.st_mode):
        raise SourceError("is a directory, not a disk image", path=path)
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode)):
        raise SourceError("not a regular file or a device", path=path)
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except PermissionError:
        raise SourceError("permission denied", path=path) from None
    except OSError as exc:
        raise SourceError(f"cannot open: {os_error_text(exc)}", path=path) from None
    return fd, st


def fd_size(fd: int, path: str) -> int:
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    except OSError as exc:
        raise SourceError(f"cannot determine the size: {os_error_text(exc)}",
                          path=path) from None


class RawSource(ImageSource):
    """A plain file (or device) that is the image; ``size`` may be less than the file
    (a fixed VHD read without pyvhdi: the footer is excluded)."""

    def __init__(self, path: str, fd: int, size: int,
                 kind: ContainerKind = ContainerKind.RAW) -> None:
        super().__init__(path, size, kind)
        self._fd = fd

    def _read(self, offset: int, length: int) -> bytes:
        return _pread_exact(self._fd, offset, length, path=self.path, image_offset=offset)

    def _readinto(self, offset: int, buf: memoryview) -> int:
        return _preadinto_exact(self._fd, offset, buf, path=self.path, image_offset=offset)

    def _close(self) -> None:
        os.close(self._fd)


class DeviceSource(RawSource):
    """A block (or character) device; its size comes from ``lseek(SEEK_END)``."""

    def __init__(self, path: str, fd: int, size: int) -> None:
        super().__init__(path, fd, size, kind=ContainerKind.DEVICE)


class SplitSource(ImageSource):
    """Raw segments presented as one concatenated image."""

    def __init__(self, path: str, segments: Sequence[str]) -> None:
        fds: list[int] = []
        sizes: list[int] = []
        try:
            for seg in segments:
                fd, _st = open_readonly(seg)
                fds.append(fd)
                sizes.append(fd_size(fd, seg))
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        self.segments: list[str] = list(segments)
        self._fds = fds
        self._sizes = sizes
        starts = [0]
        for s in sizes:
            starts.append(starts[-1] + s)
        self._starts = starts  # starts[i] = image offset of segment i; starts[-1] = total
        super().__init__(path, starts[-1], ContainerKind.SPLIT)

    def _pieces(self, offset: int, length: int) -> list[tuple[int, int, int]]:
        """(segment index, offset in segment, length) covering [offset, offset + length)."""
        pieces = []
        i = bisect_right(self._starts, offset) - 1
        end = offset + length
        while offset < end and i < len(self._fds):
            seg_end = self._starts[i + 1]
            if offset < seg_end:
                n = min(end, seg_end) - offset
                pieces.append((i, offset - self._starts[i], n))
                offset += n
            i += 1
        return pieces

    def _read(self, offset: int, length: int) -> bytes:
        out: list[bytes] = []
        pos = offset
        for i, seg_off, n in self._pieces(offset, length):
            data = _pread_exact(self._fds[i], seg_off, n, path=self.path, image_offset=pos,
                                what=f"segment {self.segments[i]} at {seg_off}")
            out.append(data)
            pos += len(data)
            if len(data) < n:  # a segment shrank under us: stop, short read
                break
        return b"".join(out)

    def _readinto(self, offset: int, buf: memoryview) -> int:
        done = 0
        for i, seg_off, n in self._pieces(offset, len(buf)):
            got = _preadinto_exact(self._fds[i], seg_off, buf[done : done + n], path=self.path,
                                   image_offset=offset + done,
                                   what=f"segment {self.segments[i]} at {seg_off}")
            done += got
            if got < n:
                break
        return done

    def _close(self) -> None:
        for fd in self._fds:
            os.close(fd)


_NUM_SUFFIX_RE = re.compile(r"^\d{2,}$")
_ALPHA_SUFFIX_RE = re.compile(r"^(?:[a-z]{2,}|[A-Z]{2,})$")


def _alpha_index(s: str) -> int:
    n = 0
    for ch in s.lower():
        n = n * 26 + (ord(ch) - ord("a"))
    return n


def _alpha_name(i: int, width: int, upper: bool) -> str:
    chars = []
    for _ in range(width):
        i, r = divmod(i, 26)
        chars.append(chr(ord("A" if upper else "a") + r))
    return "".join(reversed(chars))


def _split_family(directory: str, stem: str, suffix: str) -> list[str] | None:
    """The ordered segment paths of the set ``stem.suffix`` belongs to, or None if it is not
    a split set (a lone file, or numbering that does not start at 000/001 or aa)."""
    numeric = bool(_NUM_SUFFIX_RE.match(suffix))
    if not numeric and not _ALPHA_SUFFIX_RE.match(suffix):
        return None
    width = len(suffix)
    upper = suffix.isupper()
    try:
        names = os.listdir(directory or ".")
    except OSError:
        return None
    prefix = stem + "."
    found: dict[int, str] = {}
    for name in names:
        if not name.startswith(prefix):
            continue
        sfx = name[len(prefix):]
        if numeric:
            if sfx.isdigit() and sfx.isascii() and f"{int(sfx):0{width}d}" == sfx:
                found[int(sfx)] = name
        elif len(sfx) == width and _ALPHA_SUFFIX_RE.match(sfx) and sfx.isupper() == upper:
            found[_alpha_index(sfx)] = name
    if len(found) < 2:
        return None
    first = min(found)
    if first not in ((0, 1) if numeric else (0,)):
        return None
    last = max(found)
    for i in range(first, last + 1):
        if i not in found:
            missing = f"{i:0{width}d}" if numeric else _alpha_name(i, width, upper)
            have = ", ".join(found[j] for j in sorted(found))
            raise SourceError(f"split image: segment {prefix}{missing} is missing "
                              f"(found {have})", path=os.path.join(directory, prefix + missing))
    return [os.path.join(directory, found[i]) for i in range(first, last + 1)]


def find_split_segments(path: str) -> list[str] | None:
    """Segments of a split raw image named by ``path`` (a segment, or the base name).

    For a base name whose only file is ``base.E01``/``base.Ex01``, that one file (the EWF
    reader finds its other segments).  None when ``path`` is not part of a split set.
    """
    directory, name = os.path.split(path)
    if os.path.lexists(path):
        stem, dot, suffix = name.rpartition(".")
        if not dot or not stem:
            return None
        return _split_family(directory, stem, suffix)
    # The base name: disk -> disk.001 / disk.000 / disk.aa (and disk.E01, opened as EWF)
    for first in ("000", "001", "aa", "AA", "E01", "Ex01"):
        if os.path.exists(f"{path}.{first}"):
            segs = _split_family(directory, name, first)
            return segs if segs is not None else [f"{path}.{first}"]
    return None
