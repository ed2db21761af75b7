"""Which encryption method (and sector size) an FVEK belongs to, when no metadata says.

An FVEK recovered from memory comes without its method. Its length narrows the choice
(format notes, section 5):

=======  ========================================================================
bytes    methods it may belong to
=======  ========================================================================
16       AES-128-CBC
32       AES-128-XTS (two 16-byte keys), AES-256-CBC, AES-128-CBC + diffuser as memory
         tools print it (16-byte key, 16-byte tweak key), AES-128-CBC (the first 16 bytes)
64       AES-256-XTS, AES-256-CBC + diffuser, AES-128-CBC + diffuser (the key datum's
         layout: the first 16 bytes of each 32-byte half)
=======  ========================================================================

The image decides among them. Under the right method and sector size the sectors that hold
file-system structure decrypt to it; under any other they decrypt to uniform noise. Each
candidate decrypts the same sample - the first MiB of the image and windows spread over all
of it, the last one included (where the NTFS backup boot sector lies) - and scores, over the
sectors whose ciphertext looks random (a sector stored in plaintext says nothing about the
key):

* a boot sector (NTFS, FAT, exFAT; :func:`bdekit.format.bootsector.parse_boot_sector`) that
  agrees with the sector size: 100;
* an NTFS record (``FILE``, ``INDX``, ``RCRD``, ``RSTR`` at the start of the sector): 10;
* any other sector whose plaintext is structured (chi-square far from uniform; zero-filled
  plaintext counts): 1.

The best candidate wins when it scores at least :data:`MIN_SCORE` and :data:`MARGIN` times
the runner-up; otherwise every candidate is tried against the whole image for a boot sector
(relocated or backup). Without a winner the method is not guessed: the caller asks for
``--method``. The scores of every candidate are the evidence the report carries.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np

from bdekit.crypto import ciphers
from bdekit.crypto.plausibility import looks_structured
from bdekit.errors import BdeError, UsageError
from bdekit.format.bootsector import parse_boot_sector
from bdekit.format.constants import EncryptionMethod
from bdekit.recovery.boot_search import boot_sector_hits
from bdekit.recovery.metadata_scan import SECTOR_SIZES, ReadFn
from bdekit.unlock.vmk import normalise_fvek

log = logging.getLogger(__name__)

M = EncryptionMethod
#: methods an FVEK of each length may belong to, most common first
CANDIDATES: dict[int, tuple[EncryptionMethod, ...]] = {
    16: (M.AES_128_CBC,),
    32: (M.AES_128_XTS, M.AES_256_CBC, M.AES_128_CBC_DIFFUSER, M.AES_128_CBC),
    64: (M.AES_256_XTS, M.AES_256_CBC_DIFFUSER, M.AES_128_CBC_DIFFUSER),
}
NTFS_RECORDS = (b"FILE", b"INDX", b"RCRD", b"RSTR")
BOOT_POINTS = 100
RECORD_POINTS = 10
#: the winner needs this score, and this many times the runner-up's
MIN_SCORE = 3
MARGIN = 4
#: the sample: the first MiB, then this many windows of this size spread over the image
FIRST = 1 << 20
WINDOWS = 48
WINDOW = 64 << 10


@dataclasses.dataclass
class Candidate:
    """A method, its key laid out as the key datum would hold it, a sector size, a score."""

    method: EncryptionMethod
    key: bytes
    sector_size: int
    score: int = 0
    boot_sectors: int = 0
    records: int = 0
    structured: int = 0
    sampled: int = 0

    @property
    def label(self) -> str:
        extra = " (first 16 bytes)" if self.method == M.AES_128_CBC and len(self.key) == 32 \
            else ""
        return f"{self.method.label}{extra}, {self.sector_size}-byte sectors"

    def evidence(self) -> str:
        return (f"{self.label}: score {self.score} ({self.boot_sectors} boot sector(s), "
                f"{self.records} NTFS record(s), {self.structured} other structured sector(s) "
                f"of {self.sampled} sampled)")


def candidates(fvek: bytes, method: int | None,
               sector_sizes: Sequence[int]) -> list[Candidate]:
    """Every (method, key layout, sector size) the FVEK may belong to."""
    if method is not None:
        methods: tuple[EncryptionMethod, ...] = (M(method),)
    else:
        methods = CANDIDATES.get(len(fvek), ())
    if not methods:
        raise UsageError(f"an FVEK of {len(fvek)} bytes belongs to no BitLocker method "
                         "(16, 32 or 64 bytes)")
    out: list[Candidate] = []
    for meth in methods:
        key = normalise_fvek(fvek, meth)
        out += [Candidate(meth, key, ss) for ss in sector_sizes]
    return out


def sample_windows(image_size: int) -> list[tuple[int, int]]:
    """(offset, length) windows of the sample: the first MiB, spread windows, the last one."""
    out = [(0, min(FIRST, image_size))]
    if image_size > FIRST:
        step = max(WINDOW, (image_size - FIRST) // WINDOWS)
        pos = FIRST
        while pos < image_size:
            out.append((pos, min(WINDOW, image_size - pos)))
            pos += step
        last = max(FIRST, image_size - WINDOW)
        if last > out[-1][0]:
            out.append((last, image_size - last))
    return out


def score(read: ReadFn, windows: Sequence[tuple[int, int]], cand: Candidate) -> Candidate:
    """Decrypt the sample under ``cand``; count what its plaintext shows."""
    ss = cand.sector_size
    try:
        cipher = ciphers.make_cipher(cand.method, cand.key, ss)
    except BdeError:
        return cand
    for off, length in windows:
        start = off - off % ss
        data = read(start, length + off - start)
        n = len(data) - len(data) % ss
        if n <= 0:
            continue
        raw = np.frombuffer(data, dtype=np.uint8, count=n).reshape(-1, ss)
        keep = raw.any(axis=1) & ~looks_structured(raw)
        if not keep.any():
            continue
        plain = bytearray(n)
        cipher.decrypt(data[:n], plain, start)
        parr = np.frombuffer(plain, dtype=np.uint8).reshape(-1, ss)
        _count(cand, parr[keep])
    cand.score = (cand.boot_sectors * BOOT_POINTS + cand.records * RECORD_POINTS
                  + cand.structured)
    return cand


def _count(cand: Candidate, sectors: np.ndarray) -> None:
    cand.sampled += len(sectors)
    structured = looks_structured(sectors)
    for i in np.flatnonzero(structured).tolist():
        sector = sectors[i].tobytes()
        info = parse_boot_sector(sector) if sector[510:512] == b"\x55\xaa" else None
        if info is not None and info.bytes_per_sector == cand.sector_size:
            cand.boot_sectors += 1
        elif sector[:4] in NTFS_RECORDS:
            cand.records += 1
        else:
            cand.structured += 1


def _decided(ranked: list[Candidate]) -> Candidate | None:
    """The best candidate when its method beats every other method by the margin (the sector
    sizes of one method are not rivals: under CBC they decrypt much the same)."""
    best_of: dict[tuple[EncryptionMethod, bytes], Candidate] = {}
    for cand in ranked:  # best first: the first of each method is its best
        best_of.setdefault((cand.method, cand.key), cand)
    tops = list(best_of.values())
    best = tops[0]
    runner = tops[1].score if len(tops) > 1 else 0
    if best.score >= MIN_SCORE and best.score >= MARGIN * runner + (1 if runner else 0):
        return best
    return None


def guess_method(read: ReadFn, image_size: int, fvek: bytes, *, method: int | None = None,
                 sector_size: int | None = None) -> tuple[Candidate | None, list[Candidate]]:
    """(the winner or None, every candidate with its score, best first); see module
    docstring. ``method`` / ``sector_size``: known, not to be guessed."""
    sizes = (sector_size,) if sector_size else SECTOR_SIZES
    windows = sample_windows(image_size)
    ranked = sorted((score(read, windows, c) for c in candidates(fvek, method, sizes)),
                    key=_rank)
    for cand in ranked:
        log.info("method candidate %s", cand.evidence())
    winner = _decided(ranked)
    if winner is None:
        winner = _by_boot_sector(read, image_size, ranked)
    return winner, ranked


def _by_boot_sector(read: ReadFn, image_size: int,
                    ranked: list[Candidate]) -> Candidate | None:
    """The sample did not decide: the one candidate under which a boot sector decrypts
    anywhere in the image (relocated or backup)."""
    log.info("the sample does not decide the method: searching the whole image for a boot "
             "sector under each candidate")
    found = []
    for cand in ranked:
        hits = [(off, info) for off, info in
                boot_sector_hits(read, image_size, cand.method, cand.key, cand.sector_size)
                if info.bytes_per_sector == cand.sector_size]
        if hits:
            cand.boot_sectors = max(cand.boot_sectors, len(hits))
            cand.score += BOOT_POINTS * len(hits)
            found.append(cand)
    ranked.sort(key=_rank)
    methods = {(c.method, c.key) for c in found}
    return sorted(found, key=_rank)[0] if len(methods) == 1 else None


def _rank(cand: Candidate) -> tuple[int, int, int]:
    """Best first: score, then a boot sector that agrees, then the usual sector size."""
    return (-cand.score, -cand.boot_sectors, SECTOR_SIZES.index(cand.sector_size)
            if cand.sector_size in SECTOR_SIZES else 99)


__all__ = ["CANDIDATES", "Candidate", "candidates", "guess_method", "sample_windows", "score"]
