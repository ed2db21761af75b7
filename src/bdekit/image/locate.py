"""Where in an image the BitLocker volume lies: the whole image, an offset, or a partition.

An image is either a bare volume (sector 0 is a BitLocker volume header) or a disk whose
partition table (:mod:`bdekit.image.partitions`) lists the volume among others.
:func:`volume_source` returns the :class:`~bdekit.image.imagesource.ImageSource` of the
volume:

* ``offset=N``: the window of the image from byte ``N`` to its end;
* ``partition=N``: the window of partition ``N`` (numbered as ``bdekit scan`` lists them);
* neither: the image itself when sector 0 is a BitLocker header, else the one partition whose
  first sector is one; several BitLocker partitions are a usage error listing them, none an
  error saying what sector 0 holds.

A window is a :class:`~bdekit.image.imagesource.SliceSource`, so every offset below it is
relative to the volume; the log names the image offset where the volume starts. A window taken
from a partition table entry is a :class:`PartitionSource`: the partition's size bounds the
volume's (:func:`partition_size`), which a window from ``offset=N`` (the rest of the image)
does not.
"""

from __future__ import annotations

import logging
import os
from typing import Literal

from bdekit.errors import BdeError, NotBitLockerError, UsageError
from bdekit.format.metadata import HeaderKind, parse_volume_header
from bdekit.image.imagesource import ImageSource, SliceSource
from bdekit.image.partitions import Partition, find_partition, read_partition_table
from bdekit.image.sources import open_source

__all__ = ["PartitionSource", "is_bitlocker", "partition_size", "scan_partitions",
           "volume_source"]

log = logging.getLogger(__name__)


class PartitionSource(SliceSource):
    """The window of a partition: ``length`` is the size its table entry gives."""


def partition_size(source: ImageSource) -> int | None:
    """The size of the partition ``source`` is the window of (its table entry's), or None
    when it is not a partition (a bare volume, or a window given by an offset)."""
    return source.length if isinstance(source, PartitionSource) else None


def is_bitlocker(sector: bytes) -> HeaderKind | Literal[""]:
    """The header kind if ``sector`` is a BitLocker volume header, else ``""``."""
    try:
        return parse_volume_header(sector).kind
    except BdeError:
        return ""


def scan_partitions(source: ImageSource) -> list[tuple[Partition, HeaderKind | Literal[""]]]:
    """Every partition of the disk with its BitLocker header kind ("" if not BitLocker)."""
    out: list[tuple[Partition, HeaderKind | Literal[""]]] = []
    for part in read_partition_table(source):
        sector = source.read_at(part.offset, 512) if part.offset < source.size else b""
        out.append((part, is_bitlocker(sector)))
    return out


def volume_source(path: str | os.PathLike[str] | ImageSource, *, offset: int | None = None,
                  partition: int | None = None) -> ImageSource:
    """An image source positioned on the BitLocker volume (``path`` opened, or a source)."""
    if offset is not None and partition is not None:
        raise UsageError("give --offset or --partition, not both")
    owned = isinstance(path, (str, os.PathLike))
    source = open_source(path) if isinstance(path, (str, os.PathLike)) else path
    try:
        volume = _volume_source(source, offset, partition, owned)
    except BaseException:
        if owned:
            source.close()
        raise
    start = volume.offset if isinstance(volume, SliceSource) else 0
    if start:
        log.debug("the volume starts at image offset %d (0x%x); the offsets of its structures "
                  "below are relative to the volume", start, start)
    return volume


def _volume_source(source: ImageSource, offset: int | None, partition: int | None,
                   owned: bool) -> ImageSource:
    name = source.path
    if offset is not None:
        if offset < 0 or offset >= source.size:
            raise UsageError(f"--offset {offset} is outside the image ({source.size} bytes)",
                             path=name)
        return SliceSource(source, offset, source.size - offset, owns_parent=owned)
    head = source.read_at(0, 512)
    if partition is None and is_bitlocker(head):
        return source
    parts = scan_partitions(source)
    if partition is not None:
        try:
            part = find_partition([p for p, _kind in parts], partition)
        except UsageError as exc:
            raise exc.with_context(path=name) from None
        log.info("using partition %d at offset %d (%d bytes)", part.index, part.offset,
                 part.size)
        return PartitionSource(source, part.offset, part.size, owns_parent=owned)
    return _the_bitlocker_partition(source, parts, head, owned)


def _the_bitlocker_partition(source: ImageSource,
                             parts: list[tuple[Partition, HeaderKind | Literal[""]]],
                             head: bytes, owned: bool) -> ImageSource:
    """The one BitLocker partition, or an error saying why there is not exactly one."""
    name = source.path
    bitlocker = [(p, k) for p, k in parts if k]
    if len(bitlocker) == 1:
        part, kind = bitlocker[0]
        log.info("using partition %d at offset %d (%s)", part.index, part.offset, kind)
        return PartitionSource(source, part.offset, part.size, owns_parent=owned)
    if len(bitlocker) > 1:
        listing = "; ".join(f"partition {p.index} at offset {p.offset} ({p.size} bytes)"
                            for p, _ in bitlocker)
        raise UsageError(f"several BitLocker partitions, choose one with --partition: {listing}",
                         path=name)
    if parts:
        raise NotBitLockerError(f"none of the {len(parts)} partitions is a BitLocker volume "
                                "('bdekit scan' lists them and searches for stray metadata)",
                                path=name, offset=0)
    # no partition table: let the volume header parser explain what it found
    parse_volume_header(head, name)
    return source
