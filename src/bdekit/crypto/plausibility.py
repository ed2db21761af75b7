"""Does a sector look like ciphertext or like plaintext? A statistical test, per sector.

Used where the metadata that says which sectors are encrypted is lost or unverified (the
used-space-only bitmaps, the relocated boot sectors, salvage without metadata): each sector
is read raw and decrypted, and both are scored.

The score is Pearson's chi-square statistic of the sector's byte histogram against the
uniform distribution (256 bins). AES output is indistinguishable from uniform bytes, so a
ciphertext sector and a wrongly decrypted plaintext sector score about 255 (standard
deviation about 22.6, whatever the sector size); file-system structures, text, executables
and zero-padded records score in the thousands. Compressed or encrypted *files* also look
uniform, so "both look random" stays undecided: callers record such sectors as guessed.

Verdicts (:class:`Verdict`): ``UNWRITTEN`` (raw sector all zeros: never written),
``ENCRYPTED`` (raw looks random, decrypted looks structured), ``PLAIN`` (raw looks
structured, decrypted looks random), ``UNDECIDED`` (both random, or both structured).
"""

from __future__ import annotations

import enum

import numpy as np

#: chi-square above this is "structured" (uniform bytes: mean 255, sd 22.6; this is +8 sd)
STRUCTURED_CHI2 = 255.0 + 8 * 22.6


class Verdict(enum.IntEnum):
    UNWRITTEN = 0
    ENCRYPTED = 1
    PLAIN = 2
    UNDECIDED = 3


def chi_square(sectors: np.ndarray) -> np.ndarray:
    """Chi-square of each row's byte histogram against uniform; ``sectors`` is (n, size) u8."""
    n, size = sectors.shape
    if n == 0:
        return np.zeros(0)
    keys = (np.arange(n, dtype=np.int64)[:, None] * 256 + sectors.astype(np.int64)).ravel()
    counts = np.bincount(keys, minlength=n * 256).reshape(n, 256).astype(np.float64)
    expected = size / 256.0
    result: np.ndarray = ((counts - expected) ** 2).sum(axis=1) / expected
    return result


def looks_structured(sectors: np.ndarray) -> np.ndarray:
    """Per row: True where the bytes are far from uniform."""
    return chi_square(sectors) > STRUCTURED_CHI2


def classify(raw: bytes | bytearray | memoryview, decrypted: bytes | bytearray | memoryview,
             sector_size: int) -> np.ndarray:
    """One :class:`Verdict` per sector of ``raw`` (the bytes on disk) and ``decrypted``
    (the same bytes run through the sector cipher); both whole sectors, same length."""
    r = np.frombuffer(raw, dtype=np.uint8).reshape(-1, sector_size)
    d = np.frombuffer(decrypted, dtype=np.uint8).reshape(-1, sector_size)
    if r.shape != d.shape:
        raise ValueError("raw and decrypted buffers differ in size")
    raw_structured = looks_structured(r)
    dec_structured = looks_structured(d)
    out = np.full(r.shape[0], Verdict.UNDECIDED, dtype=np.uint8)
    out[~raw_structured & dec_structured] = Verdict.ENCRYPTED
    out[raw_structured & ~dec_structured] = Verdict.PLAIN
    out[~r.any(axis=1)] = Verdict.UNWRITTEN
    return out
