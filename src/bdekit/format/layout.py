"""Arithmetic of the on-disk layout: alignment and the size of reserved regions.

A metadata copy reserves a region that reads as zeros in the decrypted volume: 64 KiB on
Windows 7 and later, rounded up to the sector size; 16 KiB on Vista, rounded up to the
cluster size (see ``V2_METADATA_REGION`` / ``V1_METADATA_REGION`` in
:mod:`bdekit.format.metadata`).
"""

from __future__ import annotations


def round_up(value: int, align: int) -> int:
    """``value`` rounded up to a multiple of ``align`` (``align`` > 0)."""
    return -(-value // align) * align


def round_down(value: int, align: int) -> int:
    """``value`` rounded down to a multiple of ``align`` (``align`` > 0)."""
    return value - value % align
