"""Image sources: one small read-only interface over every container a disk image comes in.

Everything bdekit reads goes through an :class:`ImageSource`: a read-only, random-access,
thread-safe view of the *logical* bytes of a disk or volume (what the disk held, not how the
container stores it).  :func:`open_source` picks the implementation by looking at the bytes
(magic numbers), never at the file name, so an ``.E01`` renamed to ``.bin`` still opens as EWF.

Containers
==========

raw (``kind="raw"``)
    A plain ``dd`` image: the file *is* the disk.  Read with :func:`os.pread` on a descriptor
    opened ``O_RDONLY``, so several threads can read at once without sharing a file position.

device (``kind="device"``)
    A block device (``/dev/sdb``, ``/dev/loop0``...).  Same as raw; the size comes from
    ``lseek(fd, 0, SEEK_END)``, which works for devices where ``st_size`` is 0.

split raw (``kind="split"``)
    A raw image cut into segments: ``disk.001 disk.002 ...`` (FTK Imager, ``split -d``-style
    numbering, also ``.000``-based) or ``disk.aa disk.ab ...`` (``split``).  Naming any segment,
    or the base name ``disk`` when only the segments exist, opens the whole set, presented as
    one concatenated image.  A gap in the numbering is an error naming the missing segment.

EWF (``kind="ewf"``)
    Expert Witness Format (EnCase ``.E01``/``.Ex01``, ``.L01``): chunked, optionally
    compressed, with per-chunk checksums, tables and a segment naming scheme (E01..E99,
    EAA...).  Read through ``pyewf`` (``pip install 'bdekit[ewf]'``).

VHD (``kind="vhd"``)
    Microsoft Virtual PC / Hyper-V v1 disks.  *Fixed* VHD: the raw disk followed by a 512-byte
    ``conectix`` footer.  *Dynamic* / *differencing* VHD: a copy of the footer at offset 0, a
    block allocation table and sparse blocks with sector bitmaps; differencing disks read the
    unallocated sectors from a parent.  Read through ``pyvhdi`` (``pip install 'bdekit[vhd]'``);
    a fixed VHD is also readable without it, as raw data minus the footer.

VHDX (``kind="vhdx"``)
    The Hyper-V v2 format (``vhdxfile`` signature, log, region table, BAT, metadata region).
    Read through ``pyvhdi``.

Why two approaches
==================

Raw, device and split images are trivial (an offset into one file, or a binary search over
the segment offsets) and are written here with ``os.pread``: no dependency, zero copies with
:meth:`ImageSource.readinto_at`, and true concurrent reads.  EWF, VHD and VHDX are real
formats with compression, allocation tables, journals, parent chains and plenty of
corner cases accumulated over twenty years of tools writing them; the libyal libraries
(libewf, libvhdi) are the well-kept, widely used reference readers of those formats, so
bdekit uses their Python bindings instead of re-implementing them.  Their handles keep a
file position and are not thread-safe, so every read through them holds a lock.

Errors
======

Every failure to open is a :class:`~bdekit.errors.SourceError` with a one-line message naming
the path (nonexistent, directory, permission denied, empty, missing segment, missing optional
library); a failed read (``EIO`` from a dying disk...) is a :class:`~bdekit.errors.ReadError`
naming the image offset of the read.
"""

from __future__ import annotations

import abc
import errno
import logging
import os
import re
import stat
import threading
from bisect import bisect_right
from collections.abc import Sequence
from types import ModuleType, TracebackType
from typing import Any

from bdekit.errors import FormatError, ReadError, SourceError

__all__ = [
    "KINDS",
    "DeviceSource",
    "EwfSource",
    "ImageSource",
    "RawSource",
    "SliceSource",
    "SplitSource",
    "VhdSource",
    "detect_container",
    "open_source",
]

log = logging.getLogger(__name__)

#: Every value :attr:`ImageSource.kind` can take.
KINDS: tuple[str, ...] = ("raw", "device", "split", "ewf", "vhd", "vhdx")

#: EWF v1 signatures: ``EVF`` (E01, SMART), ``LVF`` (L01 logical evidence).
EWF1_SIGNATURES = (b"EVF\x09\x0d\x0a\xff\x00", b"LVF\x09\x0d\x0a\xff\x00")
#: EWF v2 signatures: ``EVF2`` (Ex01), ``LEF2`` (Lx01).
EWF2_SIGNATURES = (b"EVF2\x0d\x0a\x81\x00", b"LEF2\x0d\x0a\x81\x00")
VHDX_SIGNATURE = b"vhdxfile"
VHD_SIGNATURE = b"conectix"
VHD_FOOTER_SIZE = 512
#: VHD footer ``disk type`` values (big-endian u32 at offset 60 of the footer).
VHD_DISK_FIXED = 2
VHD_DISK_DYNAMIC = 3
VHD_DISK_DIFFERENCING = 4

_EXTRA_HINT = {
    "ewf": "an EWF (E01) image; install the optional extra: pip install 'bdekit[ewf]'",
    "vhd": "a VHD image; install the optional extra: pip install 'bdekit[vhd]'",
    "vhdx": "a VHDX image; install the optional extra: pip install 'bdekit[vhd]'",
}

#: Largest single pread: Linux caps one read at 0x7ffff000 bytes anyway.
_MAX_PREAD = 1 << 30


def _os_error_text(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _libyal_text(exc: BaseException, limit: int = 240) -> str:
    """libyal errors chain every layer into one long line; keep it one line, bounded."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ImageSource(abc.ABC):
    """Read-only random access to the logical bytes of a disk or volume image.

    ``read_at`` and ``readinto_at`` may be called from several threads at once.  Reads are
    short only at the end of the image; a read starting at or past the end returns nothing.
    """

    path: str
    size: int
    kind: str

    def __init__(self, path: str, size: int, kind: str) -> None:
        self.path = path
        self.size = size
        self.kind = kind
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


# --------------------------------------------------------------------------------------------
# raw, device, split: os.pread on read-only descriptors
# --------------------------------------------------------------------------------------------
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
        message = f"read of {length} bytes failed: {_os_error_text(exc)}"
    if what:
        message += f" [{what}]"
    return ReadError(message, path=path, offset=offset)


def _open_readonly(path: str) -> tuple[int, os.stat_result]:
    """Open ``path`` O_RDONLY; every failure becomes a one-line SourceError."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SourceError("no such file or directory", path=path) from None
    except PermissionError:
        raise SourceError("permission denied", path=path) from None
    except OSError as exc:
        raise SourceError(f"cannot open: {_os_error_text(exc)}", path=path) from None
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
        raise SourceError(f"cannot open: {_os_error_text(exc)}", path=path) from None
    return fd, st


def _fd_size(fd: int, path: str) -> int:
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    except OSError as exc:
        raise SourceError(f"cannot determine the size: {_os_error_text(exc)}",
                          path=path) from None


class RawSource(ImageSource):
    """A plain file (or device) that is the image; ``size`` may be less than the file
    (a fixed VHD read without pyvhdi: the footer is excluded)."""

    def __init__(self, path: str, fd: int, size: int, kind: str = "raw") -> None:
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
        super().__init__(path, fd, size, kind="device")


class SplitSource(ImageSource):
    """Raw segments presented as one concatenated image."""

    def __init__(self, path: str, segments: Sequence[str]) -> None:
        fds: list[int] = []
        sizes: list[int] = []
        try:
            for seg in segments:
                fd, _st = _open_readonly(seg)
                fds.append(fd)
                sizes.append(_fd_size(fd, seg))
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
        super().__init__(path, starts[-1], "split")

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


# --------------------------------------------------------------------------------------------
# EWF, VHD, VHDX: libyal bindings behind a lock
# --------------------------------------------------------------------------------------------
class _LockedLibyalSource(ImageSource):
    """Common part of pyewf / pyvhdi handles: ``read_buffer_at_offset`` under a lock."""

    _handles: list[Any]

    def __init__(self, path: str, size: int, kind: str, handle: Any,
                 extra_handles: Sequence[Any] = ()) -> None:
        super().__init__(path, size, kind)
        self._handle = handle
        self._handles = [handle, *extra_handles]
        self._lock = threading.Lock()

    def _read(self, offset: int, length: int) -> bytes:
        chunks: list[bytes] = []
        done = 0
        with self._lock:
            while done < length:
                try:
                    data = self._handle.read_buffer_at_offset(length - done, offset + done)
                except (OSError, OverflowError, ValueError) as exc:
                    raise ReadError(f"{self.kind.upper()} read of {length - done} bytes "
                                    f"failed: {_libyal_text(exc)}", path=self.path,
                                    offset=offset + done) from exc
                if not data:
                    break
                chunks.append(data)
                done += len(data)
        return b"".join(chunks)

    def _close(self) -> None:
        for h in self._handles:
            try:
                h.close()
            except OSError:  # already closed, or the library refuses: nothing to release
                log.debug("closing %s handle failed", self.kind, exc_info=True)


class EwfSource(_LockedLibyalSource):
    """An EWF (E01/Ex01/L01) segment set, read through pyewf."""

    def __init__(self, path: str, segments: Sequence[str], handle: Any, size: int) -> None:
        super().__init__(path, size, "ewf", handle)
        self.segments = list(segments)


class VhdSource(_LockedLibyalSource):
    """A VHD or VHDX (fixed, dynamic or differencing), read through pyvhdi."""


def _import_optional(module: str, kind: str, path: str) -> ModuleType:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise SourceError(f"is {_EXTRA_HINT[kind]}", path=path) from None


_EWF_SEGMENT_RE = re.compile(r"^(?P<stem>.*\.)(?P<ext>[EeLlSs])(?P<num>\d\d)$")


def _next_ewf_segment_name(path: str) -> str | None:
    m = _EWF_SEGMENT_RE.match(path)
    if not m or int(m["num"]) >= 99:
        return None
    return f"{m['stem']}{m['ext']}{int(m['num']) + 1:02d}"


def _open_ewf(path: str) -> EwfSource:
    pyewf = _import_optional("pyewf", "ewf", path)
    try:
        segments = list(pyewf.glob(path))
    except (OSError, MemoryError, ValueError, TypeError):
        # libewf globs by extension only (.E01, .Ex01, .L01, .s01); a renamed single-segment
        # image (x.bin) is still readable on its own.
        log.debug("pyewf.glob(%r) failed; opening the file alone", path, exc_info=True)
        segments = [path]
    if not segments:
        segments = [path]
    handle = pyewf.handle()
    try:
        handle.open(segments)
    except (OSError, MemoryError, ValueError, TypeError) as exc:
        raise SourceError(f"cannot open EWF image ({len(segments)} segment file(s)): "
                          f"{_libyal_text(exc)}", path=path) from None
    try:
        size = int(handle.get_media_size())
        if size <= 0:
            raise SourceError("EWF image has an empty media (size 0)", path=path)
        # A missing segment does not fail open(); it fails the first read past it.  Read the
        # last byte now so an incomplete set is reported at open, naming what is missing.
        try:
            handle.read_buffer_at_offset(1, size - 1)
        except OSError:
            nxt = _next_ewf_segment_name(segments[-1])
            missing = f"segment file {nxt} is missing" if nxt and not os.path.exists(nxt) \
                else "a segment file is missing or damaged"
            raise SourceError(f"incomplete EWF image: {missing} (found "
                              f"{', '.join(os.path.basename(s) for s in segments)}); "
                              "cannot read the end of the media", path=path) from None
    except BaseException:
        handle.close()
        raise
    log.info("%s: EWF image, %d segment file(s), media size %d", path, len(segments), size)
    return EwfSource(path, segments, handle, size)


def _open_vhdi(path: str, kind: str, _depth: int = 0) -> tuple[Any, list[Any]]:
    """Open a pyvhdi file and, for a differencing disk, its chain of parents."""
    pyvhdi = _import_optional("pyvhdi", kind, path)
    handle = pyvhdi.file()
    try:
        handle.open(path)
    except (OSError, MemoryError, ValueError, TypeError) as exc:
        raise SourceError(f"cannot open {kind.upper()} image: {_libyal_text(exc)}",
                          path=path) from None
    parents: list[Any] = []
    try:
        if handle.get_disk_type() == VHD_DISK_DIFFERENCING:
            if _depth > 32:
                raise SourceError("differencing chain too deep (a loop?)", path=path)
            parent_name = handle.get_parent_filename() or ""
            parent_path = _resolve_parent(path, parent_name)
            if parent_path is None:
                raise SourceError(f"differencing disk: parent image {parent_name!r} not found "
                                  "(put it next to the child)", path=path)
            log.info("%s: differencing disk, parent %s", path, parent_path)
            with open(parent_path, "rb") as f:
                pkind = "vhdx" if f.read(8) == VHDX_SIGNATURE else "vhd"
            parent, grandparents = _open_vhdi(parent_path, pkind, _depth + 1)
            parents = [parent, *grandparents]
            try:
                handle.set_parent(parent)
            except (OSError, ValueError, TypeError) as exc:
                raise SourceError(f"differencing disk: parent {parent_path} does not match: "
                                  f"{_libyal_text(exc)}", path=path) from None
    except BaseException:
        for h in (handle, *parents):
            h.close()
        raise
    return handle, parents


def _resolve_parent(child: str, parent_name: str) -> str | None:
    """The parent of a differencing disk: the recorded name relative to the child's folder,
    the recorded absolute path, else the same file name beside the child."""
    if not parent_name:
        return None
    child_dir = os.path.dirname(os.path.abspath(child))
    portable = parent_name.replace("\\", "/")
    base = portable.rsplit("/", 1)[-1]
    candidates = []
    if os.path.isabs(portable):
        candidates.append(portable)
    elif not re.match(r"^[A-Za-z]:", portable):  # not a Windows drive path
        candidates.append(os.path.join(child_dir, portable))
    candidates.append(os.path.join(child_dir, base))
    for c in candidates:
        if os.path.isfile(c):
            return c
    return None


def _open_vhd(path: str, kind: str, fixed_footer: bytes | None, file_size: int) -> ImageSource:
    try:
        import pyvhdi  # noqa: F401
    except ImportError:
        if kind == "vhd" and fixed_footer is not None:
            return _open_fixed_vhd_raw(path, fixed_footer, file_size)
        raise SourceError(f"is {_EXTRA_HINT[kind]}", path=path) from None
    handle, parents = _open_vhdi(path, kind)
    size = int(handle.get_media_size())
    if size <= 0:
        for h in (handle, *parents):
            h.close()
        raise SourceError(f"{kind.upper()} image has an empty media (size 0)", path=path)
    log.info("%s: %s image (disk type %s), media size %d", path, kind.upper(),
             handle.get_disk_type(), size)
    return VhdSource(path, size, kind, handle, parents)


def _open_fixed_vhd_raw(path: str, footer: bytes, file_size: int) -> RawSource:
    """A fixed VHD without pyvhdi: the data is the file minus its 512-byte footer."""
    current_size = int.from_bytes(footer[48:56], "big")
    size = file_size - VHD_FOOTER_SIZE
    if 0 < current_size < size:
        size = current_size
    fd, _st = _open_readonly(path)
    log.info("%s: fixed VHD read as raw (pyvhdi not installed), %d bytes", path, size)
    return RawSource(path, fd, size, kind="vhd")


# --------------------------------------------------------------------------------------------
# detection and split naming
# --------------------------------------------------------------------------------------------
def detect_container(head: bytes, tail: bytes) -> str:
    """Container kind from the first bytes and the last 512 bytes of a file.

    Returns ``"ewf"``, ``"vhdx"``, ``"vhd"`` (dynamic/differencing: footer copy at 0),
    ``"vhd-fixed"`` (footer only at the end) or ``"raw"``.
    """
    if head.startswith(EWF1_SIGNATURES + EWF2_SIGNATURES):
        return "ewf"
    if head.startswith(VHDX_SIGNATURE):
        return "vhdx"
    if head.startswith(VHD_SIGNATURE):
        return "vhd"
    if len(tail) == VHD_FOOTER_SIZE and tail.startswith(VHD_SIGNATURE):
        return "vhd-fixed"
    return "raw"


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


def _find_split_segments(path: str) -> list[str] | None:
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


# --------------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------------
def open_source(path: str | os.PathLike[str]) -> ImageSource:
    """Open a disk or volume image read-only, whatever its container.

    The container is detected from the bytes (EWF, VHDX, VHD signatures); anything else is a
    raw image, a block device, or a split raw set (``x.001 x.002 ...`` / ``x.aa x.ab ...``,
    found from any segment or from the base name).  Failures to open are one-line
    :class:`SourceError`\\ s naming the path.
    """
    p = os.fspath(path)
    if not p:
        raise SourceError("empty image path")

    segments = _find_split_segments(p)
    if segments is not None and not os.path.lexists(p):
        log.info("%s: no such file; using %s", p, ", ".join(segments))
    elif segments is not None and segments[0] != p:
        log.info("%s: a split segment; opening the set from %s", p, segments[0])

    first = segments[0] if segments else p
    fd, st = _open_readonly(first)
    try:
        size = _fd_size(fd, first)
        if stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode):
            if size <= 0:
                raise SourceError("device has size 0 (no medium?)", path=p)
            log.info("%s: block device, %d bytes", p, size)
            return DeviceSource(p, fd, size)
        if size == 0 and not (segments and len(segments) > 1):
            raise FormatError("empty image (0 bytes): expected a BitLocker volume or disk image",
                              path=p, offset=0)
        try:
            head = os.pread(fd, 512, 0)
            tail = os.pread(fd, VHD_FOOTER_SIZE, size - VHD_FOOTER_SIZE) \
                if size >= 2 * VHD_FOOTER_SIZE else b""
        except OSError as exc:
            raise ReadError(f"cannot read the image header: {_os_error_text(exc)}",
                            path=first, offset=0) from exc
        container = detect_container(head, tail)
    except BaseException:
        os.close(fd)
        raise

    if container == "raw" and segments and len(segments) > 1:
        os.close(fd)
        src: ImageSource = SplitSource(p, segments)
        if src.size == 0:
            src.close()
            raise SourceError("every split segment is empty (0 bytes)", path=p)
        log.info("%s: split raw image, %d segments, %d bytes", p, len(segments), src.size)
        return src
    if container == "raw":
        log.info("%s: raw image, %d bytes", p, size)
        return RawSource(p, fd, size)

    os.close(fd)
    if container == "ewf":
        return _open_ewf(first)
    if container == "vhdx":
        return _open_vhd(first, "vhdx", None, size)
    if container == "vhd":
        return _open_vhd(first, "vhd", None, size)
    # "vhd-fixed": footer only; a dynamic disk has a footer copy at 0 and is handled above.
    disk_type = int.from_bytes(tail[60:64], "big")
    if disk_type != VHD_DISK_FIXED:
        log.warning("%s: VHD footer at the end declares disk type %d, expected fixed (2)",
                    p, disk_type)
    return _open_vhd(first, "vhd", tail, size)
