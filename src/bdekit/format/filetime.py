"""FILETIME: how BitLocker stores points in time.

A FILETIME is an unsigned 64-bit count of 100-nanosecond ticks since 1601-01-01 00:00:00 UTC,
stored little-endian.  BitLocker writes one in the dataset header (creation time), in every
VMK and external key datum (modification time) and as the first 8 bytes of every AES-CCM nonce
(FILETIME + 32-bit counter).
"""

from __future__ import annotations

import datetime as dt

#: FILETIME 0.
FILETIME_EPOCH = dt.datetime(1601, 1, 1, tzinfo=dt.UTC)

#: FILETIME ticks (100 ns) per second.
TICKS_PER_SECOND = 10_000_000


def filetime_to_datetime(value: int) -> dt.datetime | None:
    """FILETIME (100 ns ticks since 1601) to an aware UTC datetime; None for 0 / out of range."""
    if not value:
        return None
    try:
        return FILETIME_EPOCH + dt.timedelta(microseconds=value // 10)
    except OverflowError:
        return None
