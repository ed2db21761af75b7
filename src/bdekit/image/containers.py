"""EWF (E01), VHD and VHDX images, read through the libyal Python bindings.

EWF (``kind="ewf"``)
    Expert Witness Format (EnCase ``.E01``/``.Ex01``, ``.L01``): chunked, optionally
    compressed, with per-chunk checksums, tables and a segment naming scheme (E01..E99,
    EAA...).  Read through ``pyewf`` (``pip install 'bdekit[ewf]'``).  A missing segment does
    not fail libewf's open, only the first read past it, so :func:`open_ewf` reads the last
    byte of the media at once and names the missing segment file.

VHD (``kind="vhd"``)
    Microsoft Virtual PC / Hyper-V v1 disks.  *Fixed* VHD: the raw disk followed by a 512-byte
    ``conectix`` footer (disk type, big-endian u32 at offset 60 of the footer; current size,
    big-endian u64 at 48).  *Dynamic* / *differencing* VHD: a copy of the footer at offset 0, a
    block allocation table and sparse blocks with sector bitmaps; differencing disks read the
    unallocated sectors from a parent, found by the name the child records (relative to the
    child's folder, absolute, or the same file name beside the child).  Read through ``pyvhdi``
    (``pip install 'bdekit[vhd]'``); a fixed VHD is also readable without it, as raw data
    minus the footer (:func:`open_fixed_vhd_raw`).

VHDX (``kind="vhdx"``)
    The Hyper-V v2 format (``vhdxfile`` signature, log, region table, BAT, metadata region).
    Read through ``pyvhdi``.

Why bindings here and ``os.pread`` for raw images
=================================================

Raw, device and split images are trivial (:mod:`bdekit.image.rawfile`).  EWF, VHD and VHDX
are real formats with compression, allocation tables, journals, parent chains and plenty of
corner cases accumulated over twenty years of tools writing them; the libyal libraries
(libewf, libvhdi) are the well-kept, widely used reference readers of those formats, so
bdekit uses their Python bindings instead of re-implementing them.  Their handles keep a
file position and are not thread-safe, so every read through them holds a lock.  Library
errors chain every layer into one long line; messages keep it one line and bounded.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import threading
from collections.abc import Sequence
from types import ModuleType
from typing import Protocol

from bdekit.errors import ReadError, SourceError
from bdekit.image.imagesource import ContainerKind, ImageSource
from bdekit.image.rawfile import RawSource, open_readonly

__all__ = [
    "VHDX_SIGNATURE",
    "VHD_DISK_DIFFERENCING",
    "VHD_DISK_DYNAMIC",
    "VHD_DISK_FIXED",
    "VHD_FOOTER_SIZE",
    "VHD_SIGNATURE",
    "EwfSource",
    "LibyalHandle",
    "VhdSource",
    "VhdiFile",
    "open_ewf",
    "open_fixed_vhd_raw",
    "open_vhd",
]

log = logging.getLogger(__name__)

VHDX_SIGNATURE = b"vhdxfile"
VHD_SIGNATURE = b"conectix"
VHD_FOOTER_SIZE = 512
#: VHD footer ``disk type`` values (big-endian u32 at offset 60 of the footer).
VHD_DISK_FIXED = 2
VHD_DISK_DYNAMIC = 3
VHD_DISK_DIFFERENCING = 4
#: Longest chain of differencing disks followed (a longer one is taken for a loop).
MAX_PARENT_DEPTH = 32

_EXTRA_HINT = {
    ContainerKind.EWF: "an EWF (E01) image, but libewf-python (pyewf), a dependency of "
                       "bdekit, is not installed here: pip install libewf-python",
    ContainerKind.VHD: "a VHD image, but libvhdi-python (pyvhdi), a dependency of bdekit, is "
                       "not installed here: pip install libvhdi-python",
    ContainerKind.VHDX: "a VHDX image, but libvhdi-python (pyvhdi), a dependency of bdekit, "
                        "is not installed here: pip install libvhdi-python",
}

#: What libyal bindings raise for a file they cannot open or read.
_LIBYAL_ERRORS = (OSError, MemoryError, ValueError, TypeError)


class LibyalHandle(Protocol):
    """What bdekit uses of a ``pyewf.handle`` / ``pyvhdi.file``."""

    def read_buffer_at_offset(self, size: int, offset: int) -> bytes: ...

    def close(self) -> None: ...


class VhdiFile(LibyalHandle, Protocol):
    """What bdekit uses of a ``pyvhdi.file``."""

    def open(self, path: str) -> None: ...

    def get_media_size(self) -> int: ...

    def get_disk_type(self) -> int: ...

    def get_parent_filename(self) -> str | None: ...

    def set_parent(self, parent: VhdiFile) -> None: ...


def libyal_text(exc: BaseException, limit: int = 240) -> str:
    """libyal errors chain every layer into one long line; keep it one line, bounded."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _LockedLibyalSource(ImageSource):
    """Common part of pyewf / pyvhdi handles: ``read_buffer_at_offset`` under a lock."""

    def __init__(self, path: str, size: int, kind: ContainerKind, handle: LibyalHandle,
                 extra_handles: Sequence[LibyalHandle] = ()) -> None:
        super().__init__(path, size, kind)
        self._handle = handle
        self._handles: list[LibyalHandle] = [handle, *extra_handles]
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
                                    f"failed: {libyal_text(exc)}", path=self.path,
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

    def __init__(self, path: str, segments: Sequence[str], handle: LibyalHandle,
                 size: int) -> None:
        super().__init__(path, size, ContainerKind.EWF, handle)
        self.segments = list(segments)


class VhdSource(_LockedLibyalSource):
    """A VHD or VHDX (fixed, dynamic or differencing), read through pyvhdi."""


def _optional_module(name: str) -> ModuleType | None:
    """An optional binding (pyewf, pyvhdi), or None when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _require_module(name: str, kind: ContainerKind, path: str) -> ModuleType:
    module = _optional_module(name)
    if module is None:
        raise SourceError(f"is {_EXTRA_HINT[kind]}", path=path)
    return module


# --------------------------------------------------------------------------------------------
# EWF
# --------------------------------------------------------------------------------------------
_EWF_SEGMENT_RE = re.compile(r"^(?P<stem>.*\.)(?P<ext>[EeLlSs])(?P<num>\d\d)$")


def _next_ewf_segment_name(path: str) -> str | None:
    m = _EWF_SEGMENT_RE.match(path)
    if not m or int(m["num"]) >= 99:
        return None
    return f"{m['stem']}{m['ext']}{int(m['num']) + 1:02d}"


def _ewf_segments(pyewf: ModuleType, path: str) -> list[str]:
    try:
        segments = [str(s) for s in pyewf.glob(path)]
    except _LIBYAL_ERRORS:
        # libewf globs by extension only (.E01, .Ex01, .L01, .s01); a renamed single-segment
        # image (x.bin) is still readable on its own.
        log.debug("pyewf.glob(%r) failed; opening the file alone", path, exc_info=True)
        segments = []
    return segments or [path]


def _check_ewf_media(handle: LibyalHandle, size: int, segments: list[str], path: str) -> None:
    """A missing segment does not fail open(); it fails the first read past it.  Read the
    last byte now so an incomplete set is reported at open, naming what is missing."""
    if size <= 0:
        raise SourceError("EWF image has an empty media (size 0)", path=path)
    try:
        handle.read_buffer_at_offset(1, size - 1)
    except OSError:
        nxt = _next_ewf_segment_name(segments[-1])
        missing = f"segment file {nxt} is missing" if nxt and not os.path.exists(nxt) \
            else "a segment file is missing or damaged"
        raise SourceError(f"incomplete EWF image: {missing} (found "
                          f"{', '.join(os.path.basename(s) for s in segments)}); "
                          "cannot read the end of the media", path=path) from None


def open_ewf(path: str) -> EwfSource:
    """Open an EWF segment set (any segment named; libewf finds the others)."""
    pyewf = _require_module("pyewf", ContainerKind.EWF, path)
    segments = _ewf_segments(pyewf, path)
    handle = pyewf.handle()
    try:
        handle.open(segments)
    except _LIBYAL_ERRORS as exc:
        raise SourceError(f"cannot open EWF image ({len(segments)} segment file(s)): "
                          f"{libyal_text(exc)}", path=path) from None
    try:
        size = int(handle.get_media_size())
        _check_ewf_media(handle, size, segments, path)
    except BaseException:
        handle.close()
        raise
    log.info("%s: EWF image, %d segment file(s), media size %d", path, len(segments), size)
    return EwfSource(path, segments, handle, size)


# --------------------------------------------------------------------------------------------
# VHD, VHDX
# --------------------------------------------------------------------------------------------
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


def _open_parents(handle: VhdiFile, path: str, depth: int) -> list[VhdiFile]:
    """Open the parent chain of the differencing disk ``handle`` and attach its parent."""
    if depth > MAX_PARENT_DEPTH:
        raise SourceError("differencing chain too deep (a loop?)", path=path)
    parent_name = handle.get_parent_filename() or ""
    parent_path = _resolve_parent(path, parent_name)
    if parent_path is None:
        raise SourceError(f"differencing disk: parent image {parent_name!r} not found "
                          "(put it next to the child)", path=path)
    log.info("%s: differencing disk, parent %s", path, parent_path)
    with open(parent_path, "rb") as f:
        pkind = ContainerKind.VHDX if f.read(8) == VHDX_SIGNATURE else ContainerKind.VHD
    parent, grandparents = _open_vhdi(parent_path, pkind, depth + 1)
    try:
        handle.set_parent(parent)
    except (OSError, ValueError, TypeError) as exc:
        for h in (parent, *grandparents):
            h.close()
        raise SourceError(f"differencing disk: parent {parent_path} does not match: "
                          f"{libyal_text(exc)}", path=path) from None
    return [parent, *grandparents]


def _open_vhdi(path: str, kind: ContainerKind,
               depth: int = 0) -> tuple[VhdiFile, list[VhdiFile]]:
    """Open a pyvhdi file and, for a differencing disk, its chain of parents."""
    pyvhdi = _require_module("pyvhdi", kind, path)
    handle: VhdiFile = pyvhdi.file()
    try:
        handle.open(path)
    except _LIBYAL_ERRORS as exc:
        raise SourceError(f"cannot open {kind.upper()} image: {libyal_text(exc)}",
                          path=path) from None
    try:
        if handle.get_disk_type() == VHD_DISK_DIFFERENCING:
            return handle, _open_parents(handle, path, depth)
    except BaseException:
        handle.close()
        raise
    return handle, []


def open_vhd(path: str, kind: ContainerKind, fixed_footer: bytes | None,
             file_size: int) -> ImageSource:
    """Open a VHD or VHDX through pyvhdi; a fixed VHD (``fixed_footer``: its footer) is read
    as raw data minus the footer when pyvhdi is not installed."""
    if _optional_module("pyvhdi") is None:
        if kind == ContainerKind.VHD and fixed_footer is not None:
            return open_fixed_vhd_raw(path, fixed_footer, file_size)
        raise SourceError(f"is {_EXTRA_HINT[kind]}", path=path)
    handle, parents = _open_vhdi(path, kind)
    size = int(handle.get_media_size())
    if size <= 0:
        for h in (handle, *parents):
            h.close()
        raise SourceError(f"{kind.upper()} image has an empty media (size 0)", path=path)
    log.info("%s: %s image (disk type %s), media size %d", path, kind.upper(),
             handle.get_disk_type(), size)
    return VhdSource(path, size, kind, handle, parents)


def open_fixed_vhd_raw(path: str, footer: bytes, file_size: int) -> RawSource:
    """A fixed VHD without pyvhdi: the data is the file minus its 512-byte footer."""
    current_size = int.from_bytes(footer[48:56], "big")
    size = file_size - VHD_FOOTER_SIZE
    if 0 < current_size < size:
        size = current_size
    fd, _st = open_readonly(path)
    log.info("%s: fixed VHD read as raw (pyvhdi not installed), %d bytes", path, size)
    return RawSource(path, fd, size, kind=ContainerKind.VHD)
