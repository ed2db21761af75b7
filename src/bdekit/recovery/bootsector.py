"""bootsector: split from bdekit.recovery (TODO docstring)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence

import numpy as np

from bdekit.crypto import ciphers
from bdekit.errors import BdeError
from bdekit.format.bootsector import BootSector, parse_boot_sector
from bdekit.format.metadata import VolumeHeader
from bdekit.recovery.metadata_scan import SECTOR_SIZES, ReadFn

log = logging.getLogger(__name__)


def decrypt_sector(cipher: ciphers.SectorCipher | None, raw: bytes, offset: int) -> bytes:
    if cipher is None:
        return raw
    buf = bytearray(len(raw))
    cipher.decrypt(raw, buf, offset)
    return bytes(buf)


def find_backup_boot_sector(read: ReadFn, image_size: int, cipher: ciphers.SectorCipher | None,
                            sector_size: int, candidates: Iterable[tuple[int, str]],
                            ) -> tuple[int, bytes, str, bool] | None:
    """``(volume size, sector, where the size came from, was encrypted)`` of the first candidate
    volume size whose last sector holds a boot sector describing exactly that size."""
    seen: set[int] = set()
    for size, why in candidates:
        if not size or size in seen or size % sector_size or size <= 0x2000:
            continue
        seen.add(size)
        pos = size - sector_size
        if pos + sector_size > image_size:
            log.info("backup boot sector for volume size %d (%s) would lie at %d, beyond the "
                     "image (%d bytes)", size, why, pos, image_size)
            continue
        raw = read(pos, sector_size)
        if len(raw) < sector_size:
            continue
        for encrypted in ((True, False) if cipher is not None else (False,)):
            plain = decrypt_sector(cipher, raw, pos) if encrypted else raw
            info = parse_boot_sector(plain)
            if info is not None and info.volume_size == size \
                    and info.bytes_per_sector == sector_size:
                return size, plain, why, encrypted
        log.info("no backup boot sector at %d (volume size %d from %s)", pos, size, why)
    return None


def detect_sector_size(read: ReadFn, method: int, fvek: bytes, offset: int,
                       encrypted: bool = True) -> tuple[int, BootSector] | None:
    """The sector size under which the sector at ``offset`` decrypts to a boot sector whose
    bytes-per-sector field agrees with it (a plaintext boot sector there, as on a partly
    converted volume, gives its own)."""
    plain = parse_boot_sector(read(offset, 512))
    if plain is not None and offset % plain.bytes_per_sector == 0:
        return plain.bytes_per_sector, plain
    for ss in SECTOR_SIZES:
        if offset % ss:
            continue
        raw = read(offset, ss)
        if len(raw) < ss:
            continue
        try:
            cipher = ciphers.make_cipher(method, fvek, ss) if encrypted else None
        except BdeError:
            continue
        info = parse_boot_sector(decrypt_sector(cipher, raw, offset))
        if info is not None and info.bytes_per_sector == ss:
            return ss, info
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
        hits = _brute_force(read, image_size, method, fvek, ss, chunk)
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


def _brute_force(read: ReadFn, image_size: int, method: int, fvek: bytes, ss: int,
                 chunk: int) -> list[tuple[int, BootSector]]:
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
        arr = np.frombuffer(data, dtype=np.uint8, count=n).reshape(-1, ss)
        nonzero = np.flatnonzero(arr.any(axis=1))
        if nonzero.size:
            plain = bytearray(n)
            cipher.decrypt(data[:n], plain, pos)
            parr = np.frombuffer(plain, dtype=np.uint8).reshape(-1, ss)
            sig = (parr[:, 510] == 0x55) & (parr[:, 511] == 0xAA)
            for i in np.flatnonzero(sig[nonzero]).tolist():
                idx = int(nonzero[i])
                info = parse_boot_sector(bytes(parr[idx, :512]))
                if info is not None and info.bytes_per_sector == ss:
                    hits.append((pos + idx * ss, info))
        pos += n
    return hits


def with_sector_size(header: VolumeHeader, sector_size: int) -> VolumeHeader:
    return dataclasses.replace(header, bytes_per_sector=sector_size)

