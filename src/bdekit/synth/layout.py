"""Where a synthetic volume puts its metadata copies and the relocated header block.

Windows 7+ (metadata version 2)
    Three metadata copies, identical, each reserving 64 KiB (rounded to the sector size) that
    read as zeros in the decrypted volume; placed at 8/16, 10/16 and 12/16 of the volume
    (64 KiB aligned; Windows 10 spreads them similarly, e.g. 54 %, 66 %, 77 %).  The relocated
    header block -- the original first 8 KiB of the volume (NTFS boot sector ...), encrypted
    with the relocated position as the sector offset -- lies right after the first copy's
    64 KiB; it reads as zeros at its own position in the decrypted view.

Vista (metadata version 1)
    Copies reserve 16 KiB rounded up to the cluster; no relocated block.

With ``source=`` the copies move to the nearest all-zero (free) region of the source, so the
decrypted volume equals the source; when there is none, the source data under a copy is
overwritten (with a warning).  The first 8 KiB and the last sector (the backup boot sector)
are never used.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from bdekit.errors import UsageError
from bdekit.format.layout import metadata_region_size, round_down
from bdekit.synth.options import HEADER_BLOCK
from bdekit.synth.plaintext import PlaintextSource

log = logging.getLogger(__name__)

#: Alignment of the metadata copies.
COPY_ALIGN = 64 << 10


@dataclasses.dataclass
class Layout:
    """Where everything lies on the volume (byte offsets)."""

    version: int  # metadata version: 2 (Windows 7+) or 1 (Vista)
    volume_size: int
    sector_size: int
    cluster_size: int
    metadata_offsets: list[int]
    region_size: int  # reserved bytes per metadata copy
    relocated_offset: int  # 0 on Vista
    relocated_size: int  # 0 on Vista
    encrypted_end: int  # the conversion boundary (state offset)

    @property
    def virtualized_sectors(self) -> int:
        return self.relocated_size // self.sector_size

    def reserved(self) -> list[tuple[int, int]]:
        """Ranges that read as zeros in the decrypted volume."""
        out = [(o, self.region_size) for o in self.metadata_offsets]
        if self.relocated_size:
            out.append((self.relocated_offset, self.relocated_size))
        return sorted(out)

    def describe(self) -> dict[str, Any]:
        return {"metadata_version": self.version,
                "header_offset": 0,
                "metadata_offsets": list(self.metadata_offsets),
                "metadata_region_size": self.region_size,
                "relocated_offset": self.relocated_offset or None,
                "relocated_size": self.relocated_size,
                "virtualized_sectors": self.virtualized_sectors,
                "state_offset": self.encrypted_end,
                "cluster_size": self.cluster_size}


def plan_layout(size: int, ss: int, content: PlaintextSource, *, vista: bool, search: bool,
                encrypted_end: int) -> Layout:
    """The layout of a volume of ``size`` bytes (``search``: look for free space in
    ``content``, a source volume)."""
    cluster = max(ss, 4096)
    version = 1 if vista else 2
    region = metadata_region_size(version, ss, cluster)
    reloc_size = 0 if vista else max(HEADER_BLOCK, ss)
    need = [region + reloc_size, region, region]
    taken: list[tuple[int, int]] = [(0, HEADER_BLOCK), (size - ss, ss)]
    offsets: list[int] = []
    for k, length in zip((8, 10, 12), need, strict=True):
        target = round_down(size * k // 16, COPY_ALIGN)
        offsets.append(_find_region(content, target, length, size, taken, search))
        taken.append((offsets[-1], length))
    return Layout(version=version, volume_size=size, sector_size=ss,
                  cluster_size=cluster, metadata_offsets=offsets, region_size=region,
                  relocated_offset=0 if vista else offsets[0] + region,
                  relocated_size=reloc_size, encrypted_end=encrypted_end)


def _find_region(content: PlaintextSource, target: int, length: int, size: int,
                 taken: list[tuple[int, int]], search: bool) -> int:
    """``target`` if free; with ``search``, the nearest aligned all-zero region of the source."""

    def fits(pos: int) -> bool:
        return (HEADER_BLOCK <= pos and pos + length <= size - HEADER_BLOCK
                and all(pos + length <= a or a + n <= pos for a, n in taken))

    candidates = [target]
    if search:
        steps = size // COPY_ALIGN + 1
        for i in range(1, steps):
            candidates += [target + i * COPY_ALIGN, target - i * COPY_ALIGN]
    first_fit = None
    for pos in candidates:
        if not fits(pos):
            continue
        if first_fit is None:
            first_fit = pos
        if not search or content.is_zero(pos, length):
            return pos
    if first_fit is None:
        raise UsageError(f"volume of {size} bytes is too small for the metadata layout")
    log.warning("no all-zero region of %d bytes for a metadata copy: its source data at %d is "
                "overwritten", length, first_fit)
    return first_fit
