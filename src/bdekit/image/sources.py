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

Where each lives
================

The interface and the partition window: :mod:`bdekit.image.imagesource`.  Raw, device and
split sets, read with ``os.pread`` (no dependency, zero copies, true concurrent reads):
:mod:`bdekit.image.rawfile`.  EWF, VHD and VHDX, read through the libyal bindings behind a
lock: :mod:`bdekit.image.containers`.  This module detects the container and opens it; every
public name of those modules is importable from here too.

Errors
======

Every failure to open is a :class:`~bdekit.errors.SourceError` with a one-line message naming
the path (nonexistent, directory, permission denied, empty, missing segment, missing optional
library); a failed read (``EIO`` from a dying disk...) is a :class:`~bdekit.errors.ReadError`
naming the image offset of the read.
"""

from __future__ import annotations

import logging
import os
import stat

from bdekit.errors import FormatError, ReadError, SourceError
from bdekit.image.containers import (
    VHD_DISK_FIXED,
    VHD_FOOTER_SIZE,
    VHD_SIGNATURE,
    VHDX_SIGNATURE,
    EwfSource,
    VhdSource,
    open_ewf,
    open_vhd,
)
from bdekit.image.imagesource import KINDS, ContainerKind, ImageSource, SliceSource
from bdekit.image.rawfile import (
    DeviceSource,
    RawSource,
    SplitSource,
    fd_size,
    find_split_segments,
    open_readonly,
    os_error_text,
)

__all__ = [
    "KINDS",
    "ContainerKind",
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

#: EWF v1 signatures: ``EVF`` (E01, SMART), ``LVF`` (L01 logical evidence).
EWF1_SIGNATURES = (b"EVF\x09\x0d\x0a\xff\x00", b"LVF\x09\x0d\x0a\xff\x00")
#: EWF v2 signatures: ``EVF2`` (Ex01), ``LEF2`` (Lx01).
EWF2_SIGNATURES = (b"EVF2\x0d\x0a\x81\x00", b"LEF2\x0d\x0a\x81\x00")


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


def _split_segments(p: str) -> list[str] | None:
    """The split set ``p`` names (a segment or the base name), logged; None for one file."""
    segments = find_split_segments(p)
    if segments is not None and not os.path.lexists(p):
        log.info("%s: no such file; using %s", p, ", ".join(segments))
    elif segments is not None and segments[0] != p:
        log.info("%s: a split segment; opening the set from %s", p, segments[0])
    return segments


def _open_device(p: str, fd: int, first: str) -> DeviceSource:
    try:
        size = fd_size(fd, first)
        if size <= 0:
            raise SourceError("device has size 0 (no medium?)", path=p)
    except BaseException:
        os.close(fd)
        raise
    log.info("%s: block device, %d bytes", p, size)
    return DeviceSource(p, fd, size)


def _probe(fd: int, p: str, first: str, several: bool) -> tuple[int, bytes, bytes]:
    """(size, first sector, last 512 bytes) of the first file of an image."""
    size = fd_size(fd, first)
    if size == 0 and not several:
        raise FormatError("empty image (0 bytes): expected a BitLocker volume or disk image",
                          path=p, offset=0)
    try:
        head = os.pread(fd, 512, 0)
        tail = os.pread(fd, VHD_FOOTER_SIZE, size - VHD_FOOTER_SIZE) \
            if size >= 2 * VHD_FOOTER_SIZE else b""
    except OSError as exc:
        raise ReadError(f"cannot read the image header: {os_error_text(exc)}",
                        path=first, offset=0) from exc
    return size, head, tail


def _open_split(p: str, segments: list[str]) -> SplitSource:
    src = SplitSource(p, segments)
    if src.size == 0:
        src.close()
        raise SourceError("every split segment is empty (0 bytes)", path=p)
    log.info("%s: split raw image, %d segments, %d bytes", p, len(segments), src.size)
    return src


def _open_container(container: str, p: str, first: str, size: int,
                    tail: bytes) -> ImageSource:
    """Open an EWF, VHD or VHDX whose first file is ``first`` (its descriptor closed)."""
    if container == "ewf":
        return open_ewf(first)
    if container == "vhdx":
        return open_vhd(first, ContainerKind.VHDX, None, size)
    if container == "vhd":
        return open_vhd(first, ContainerKind.VHD, None, size)
    # "vhd-fixed": footer only; a dynamic disk has a footer copy at 0 and is handled above.
    disk_type = int.from_bytes(tail[60:64], "big")
    if disk_type != VHD_DISK_FIXED:
        log.warning("%s: VHD footer at the end declares disk type %d, expected fixed (2)",
                    p, disk_type)
    return open_vhd(first, ContainerKind.VHD, tail, size)


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
    segments = _split_segments(p)
    several = bool(segments and len(segments) > 1)
    first = segments[0] if segments else p
    fd, st = open_readonly(first)
    if stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode):
        return _open_device(p, fd, first)
    try:
        size, head, tail = _probe(fd, p, first, several)
    except BaseException:
        os.close(fd)
        raise
    container = detect_container(head, tail)
    if container == "raw":
        if segments is not None and several:
            os.close(fd)
            return _open_split(p, segments)
        log.info("%s: raw image, %d bytes", p, size)
        return RawSource(p, fd, size)
    os.close(fd)
    return _open_container(container, p, first, size, tail)
