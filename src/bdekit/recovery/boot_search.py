"""Finding boot sectors in a damaged image: the relocated one, the NTFS backup, the sector size.

What counts as a boot sector is :func:`bdekit.format.bootsector.parse_boot_sector`'s rule (a
plausible NTFS, FAT or exFAT BPB); a hit must also say it uses the sector size it was found
with.

Relocated header block
    Windows 7+ moves the original first sectors of the volume (the boot sector and what
    follows) to the relocated header block, encrypted at its new position. When the metadata
    does not say where it is, :func:`find_relocated_header` tries the candidate positions
    (right after each metadata region, where Windows puts it), then brute force: every sector
    of the image is decrypted in chunks (all-zero ciphertext skipped) and checked. The hit
    describing the largest volume wins; one lying at ``volume size - sector`` is that
    volume's *backup* boot sector instead.
Backup boot sector
    NTFS keeps a copy of its boot sector in the last sector of the volume (volume size =
    (total sectors + 1) x bytes per sector). :func:`find_backup_boot_sector` checks candidate
    volume sizes (what a key package recorded, the state offset of the block header - the
    encrypted size on Windows 10 -, the image size) by decrypting the sector at
    ``size - sector`` (and reading it as plaintext) and requiring a BPB that describes exactly
    that size.
Sector size
    :func:`bdekit.volume.probe.detect_sector_size` (re-exported here): the sector size under
    which a sector decrypts to a boot sector whose bytes-per-sector field agrees.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np

from bdekit.crypto import ciphers
from bdekit.errors import BdeError
from bdekit.format.bootsector import BootSector, parse_boot_sector
from bdekit.recovery.metadata_scan import SECTOR_SIZES, ReadFn
from bdekit.volume.probe import decrypt_sector, detect_sector_size

log = logging.getLogger(__name__)

#: the smallest volume a backup boot sector search considers (the header block is 8 KiB)
_MIN_VOLUME = 0x2000




def _backup_at(read: ReadFn, size: int, cipher: ciphers.SectorCipher | None,
               sector_size: int) -> tuple[bytes, bool] | None:
    """``(sector, was encrypted)`` when the last sector of a ``size``-byte volume holds a boot
    sector describing exactly that size."""
    pos = size - sector_size
    raw = read(pos, sector_size)
    if len(raw) < sector_size:
        return None
    for encrypted in ((True, False) if cipher is not None else (False,)):
        plain = decrypt_sector(cipher, raw, pos) if encrypted else raw
        info = parse_boot_sector(plain)
        if info is not None and info.volume_size == size \
                and info.bytes_per_sector == sector_size:
            return plain, encrypted
    return None


def find_backup_boot_sector(read: ReadFn, image_size: int, cipher: ciphers.SectorCipher | None,
                            sector_size: int, candidates: Iterable[tuple[int, str]],
                            ) -> tuple[int, bytes, str, bool] | None:
    """``(volume size, sector, where the size came from, was encrypted)`` of the first candidate
    volume size whose last sector holds a boot sector describing exactly that size."""
    seen: set[int] = set()
    for size, why in candidates:
        if not size or size in seen or size % sector_size or size <= _MIN_VOLUME:
            continue
        seen.add(size)
        pos = size - sector_size
        if pos + sector_size > image_size:
            log.info("backup boot sector for volume size %d (%s) would lie at %d, beyond the "
                     "image (%d bytes)", size, why, pos, image_size)
            continue
        found = _backup_at(read, size, cipher, sector_size)
        if found is not None:
            return size, found[0], why, found[1]
        log.info("no backup boot sector at %d (volume size %d from %s)", pos, size, why)
    return None




def find_relocated_header(read: ReadFn, image_size: int, method: int, fvek: bytes,
                          candidates: Sequence[int] = (), *, brute_force: bool = True,
                          sector_sizes: Sequence[int] = SECTOR_SIZES,
                          chunk: int = 4 << 20) -> tuple[int, int, BootSector] | None:
    """``(offset, sector size, boot sector)`` of the relocated header block.

    ``candidates`` are tried first; then, with ``brute_force``, every sector of the image."""
    for off in candidates:
        if off <= 0 or off >= image_size:
            continue
        found = detect_sector_size(read, method, fvek, off)
        if found is not None:
            ss, info = found
            if off != info.volume_size - ss:
                log.info("relocated header block found at candidate offset %d", off)
                return off, ss, info
    if not brute_force:
        return None
    for ss in sector_sizes:
        hits = boot_sector_hits(read, image_size, method, fvek, ss, chunk)
        if not hits:
            continue
        # the boot sector describing the largest volume is this volume's; a hit at
        # size - ss is its backup, anything else is the relocated block.
        best_size = max(info.volume_size for _off, info in hits)
        reloc = [(off, info) for off, info in hits
                 if info.volume_size == best_size and off != best_size - ss]
        if reloc:
            off, info = reloc[0]
            log.info("relocated header block found by brute force at %d (sector size %d)",
                     off, ss)
            return off, ss, info
    return None


def _boot_sectors_in(data: bytes, pos: int, cipher: ciphers.SectorCipher,
                     ss: int) -> list[tuple[int, BootSector]]:
    """Boot sectors among the sectors of ``data`` (ciphertext at ``pos``) once decrypted."""
    n = len(data) - len(data) % ss
    arr = np.frombuffer(data, dtype=np.uint8, count=n).reshape(-1, ss)
    nonzero = np.flatnonzero(arr.any(axis=1))
    if not nonzero.size:
        return []
    plain = bytearray(n)
    cipher.decrypt(data[:n], plain, pos)
    parr = np.frombuffer(plain, dtype=np.uint8).reshape(-1, ss)
    sig = (parr[:, 510] == 0x55) & (parr[:, 511] == 0xAA)
    hits: list[tuple[int, BootSector]] = []
    for i in np.flatnonzero(sig[nonzero]).tolist():
        idx = int(nonzero[i])
        info = parse_boot_sector(bytes(parr[idx, :512]))
        if info is not None and info.bytes_per_sector == ss:
            hits.append((pos + idx * ss, info))
    return hits


def boot_sector_hits(read: ReadFn, image_size: int, method: int, fvek: bytes, ss: int,
                     chunk: int = 4 << 20) -> list[tuple[int, BootSector]]:
    """``(offset, boot sector)`` of every sector of the image that decrypts to a boot sector
    using ``ss``-byte sectors (all-zero ciphertext skipped)."""
    try:
        cipher = ciphers.make_cipher(method, fvek, ss)
    except BdeError:
        return []
    chunk -= chunk % ss
    hits: list[tuple[int, BootSector]] = []
    pos = 0
    log.info("searching the image for the relocated boot sector (sector size %d)", ss)
    while pos < image_size:
        data = read(pos, min(chunk, image_size - pos))
        n = len(data) - len(data) % ss
        if n <= 0:
            break
        hits += _boot_sectors_in(data[:n], pos, cipher, ss)
        pos += n
    return hits


def plain_boot_sector_hits(read: ReadFn, image_size: int, ss: int,
                           chunk: int = 4 << 20) -> list[tuple[int, BootSector]]:
    """``(offset, boot sector)`` of every ``ss``-aligned sector of the image that *is* a boot
    sector as stored (Windows 10 leaves the relocated boot sectors of used-space-only volumes
    in plaintext)."""
    chunk -= chunk % ss
    hits: list[tuple[int, BootSector]] = []
    pos = 0
    while pos < image_size:
        data = read(pos, min(chunk, image_size - pos))
        n = len(data) - len(data) % ss
        if n <= 0:
            break
        arr = np.frombuffer(data, dtype=np.uint8, count=n).reshape(-1, ss)
        sig = (arr[:, 510] == 0x55) & (arr[:, 511] == 0xAA)
        for idx in np.flatnonzero(sig).tolist():
            info = parse_boot_sector(bytes(arr[idx, :512]))
            if info is not None and info.bytes_per_sector == ss:
                hits.append((pos + idx * ss, info))
        pos += n
    return hits


__all__ = ["boot_sector_hits", "decrypt_sector", "detect_sector_size",
           "find_backup_boot_sector", "find_relocated_header", "plain_boot_sector_hits"]
