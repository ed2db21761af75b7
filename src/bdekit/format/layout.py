"""Arithmetic of the on-disk layout: alignment and the size of reserved regions.

A metadata copy reserves a region that reads as zeros in the decrypted volume: 64 KiB on
Windows 7 and later (metadata version 2), rounded up to the sector size; 16 KiB on Vista
(version 1), rounded up to the cluster size.  :func:`metadata_region_size` is the one place
that computes it (the reader and the synthetic builder both use it).
"""

from __future__ import annotations

#: Reserved region of each v2 metadata copy (reads as zeros in the decrypted volume).
V2_METADATA_REGION = 0x10000

#: v1 (Vista) copies reserve 16 KiB rounded up to the cluster size.
V1_METADATA_REGION = 0x4000


def round_up(value: int, align: int) -> int:
    """``value`` rounded up to a multiple of ``align`` (``align`` > 0)."""
    return -(-value // align) * align


def round_down(value: int, align: int) -> int:
    """``value`` rounded down to a multiple of ``align`` (``align`` > 0)."""
    return value - value % align


def metadata_region_size(version: int, sector_size: int, cluster_size: int) -> int:
    """Bytes each metadata copy reserves: v1 (Vista) 16 KiB rounded up to ``cluster_size``,
    v2 64 KiB rounded up to ``sector_size`` (``cluster_size`` is only read for v1; a size of 0
    means unknown: no rounding)."""
    if version == 1:
        return round_up(V1_METADATA_REGION, max(1, cluster_size))
    return round_up(V2_METADATA_REGION, max(1, sector_size))
