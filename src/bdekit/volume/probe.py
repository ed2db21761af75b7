"""Trial decryption of single sectors: does this key, at this sector size, give a boot sector?

The sector size of a volume is written in plaintext only in the BitLocker volume header, which
nothing authenticates; the relocated boot sector, decrypted, carries its own bytes-per-sector
field. A sector size under which the relocated boot sector decrypts to a boot sector naming
that same size (:func:`detect_sector_size`) is confirmed; the volume and the repair both use
this to check or find the size.
"""

from __future__ import annotations

from collections.abc import Callable

from bdekit.crypto import ciphers
from bdekit.errors import BdeError
from bdekit.format.bootsector import BootSector, parse_boot_sector

ReadFn = Callable[[int, int], bytes]

#: sector sizes BitLocker volumes use
SECTOR_SIZES = (512, 4096, 1024, 2048)


def decrypt_sector(cipher: ciphers.SectorCipher | None, raw: bytes, offset: int) -> bytes:
    """``raw`` (whole sectors at volume offset ``offset``) decrypted; as is without a cipher."""
    if cipher is None:
        return raw
    buf = bytearray(len(raw))
    cipher.decrypt(raw, buf, offset)
    return bytes(buf)


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
