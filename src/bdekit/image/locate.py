"""locate: split from bdekit.locate (TODO docstring)."""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

from bdekit.errors import BdeError, NotBitLockerError, UsageError
from bdekit.format.metadata import parse_volume_header

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Candidate:
    index: int | None
    offset: int
    size: int
    kind: str  # header kind, or "" when not BitLocker
    description: str


def is_bitlocker(sector: bytes) -> str:
    """Header kind ("win7", "eow", "togo", "vista") if ``sector`` is a BitLocker header."""
    try:
        return parse_volume_header(sector).kind
    except BdeError:
        return ""


def scan_partitions(source: Any) -> list[tuple[Any, str]]:
    """Every partition of the disk with its BitLocker header kind ("" if not BitLocker)."""
    from bdekit.image.partitions import read_partition_table

    out = []
    for part in read_partition_table(source):
        sector = source.read_at(part.offset, 512) if part.offset < source.size else b""
        out.append((part, is_bitlocker(sector)))
    return out


def volume_source(path: str | os.PathLike[str] | Any, *, offset: int | None = None,
                  partition: int | None = None) -> Any:
    """An image source positioned on the BitLocker volume."""
    from bdekit.image.sources import open_source

    if offset is not None and partition is not None:
        raise UsageError("give --offset or --partition, not both")
    owned = not hasattr(path, "read_at")
    source = open_source(path) if owned else path
    try:
        volume = _volume_source(source, offset, partition, owned)
    except BaseException:
        if owned:
            source.close()
        raise
    start = getattr(volume, "offset", 0)
    if start:
        log.debug("the volume starts at image offset %d (0x%x); the offsets of its structures "
                  "below are relative to the volume", start, start)
    return volume


def _volume_source(source: Any, offset: int | None, partition: int | None,
                   owned: bool) -> Any:
    from bdekit.image.sources import SliceSource

    name = getattr(source, "path", "")
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
        from bdekit.image.partitions import find_partition

        try:
            part = find_partition([p for p, _kind in parts], partition)
        except UsageError as exc:
            raise exc.with_context(path=name) from None
        log.info("using partition %d at offset %d (%d bytes)", part.index, part.offset,
                 part.size)
        return SliceSource(source, part.offset, part.size, owns_parent=owned)
    bitlocker = [(p, k) for p, k in parts if k]
    if len(bitlocker) == 1:
        part = bitlocker[0][0]
        log.info("using partition %d at offset %d (%s)", part.index, part.offset,
                 bitlocker[0][1])
        return SliceSource(source, part.offset, part.size, owns_parent=owned)
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

