"""Finding what a damaged BitLocker volume lost: metadata blocks, relocated header, boot sector.

Metadata scan
    When the volume header (sector 0) is gone or every copy it points to is unusable, the image
    is read in large chunks (16 MiB) and searched with ``bytes.find`` for the FVE signature
    ``-FVE-FS-`` at *sector-aligned* offsets (multiples of 512: the volume header carries the
    same string at offset 3, which is never aligned). Each hit is validated as a metadata copy
    would be (block header version 1 or 2 and sane size, 48-byte dataset header that fits,
    datums that parse, CRC32 of the padded block); the EOW information block signature
    ``FVE-EOW\\0`` is searched in the same pass (CRC-checked), as the volume header is the only
    other place naming it. Hits are grouped by (volume GUID, the three copy offsets their block
    header names) and the group with the most intact copies wins.

Relocated header block
    Windows 7+ moves the original first sectors of the volume (the NTFS/FAT boot sector) to the
    relocated header block, encrypted at its new position. Found, when the metadata does not say
    where it is, by trying the candidate positions (right after each metadata region, which is
    where Windows puts it), then by brute force: every sector of the image is decrypted (in
    chunks; all-zero ciphertext is skipped) and checked for a boot sector (``55 AA``, a sane BPB
    whose bytes-per-sector equals the sector size tried). The hit describing the largest volume
    wins; a hit lying at ``volume size - sector`` is that volume's *backup* boot sector instead.

Boot sector rebuild
    NTFS keeps a backup of its boot sector in the last sector of the volume (volume size =
    (total sectors + 1) x bytes per sector). If the relocated block decrypts to something that
    is not a boot sector, candidate volume sizes (the size a key package recorded, the state
    offset of the block header - the encrypted size on Windows 10 -, the image size) are
    checked by decrypting the sector at ``size - sector`` and requiring a BPB that describes
    exactly that size; the one found replaces sector 0 of the output.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from bdekit import ciphers, structs
from bdekit.constants import FVE_SIGNATURE
from bdekit.errors import BdeError
from bdekit.metadata import (
    Metadata,
    MetadataCopy,
    VolumeHeader,
    read_metadata_copy,
)

log = logging.getLogger(__name__)

SCAN_CHUNK = 16 << 20
EOW_SIGNATURE = b"FVE-EOW\x00"
SECTOR_SIZES = (512, 4096, 1024, 2048)

ReadFn = Callable[[int, int], bytes]


# --------------------------------------------------------------------------------------------
# Boot sectors
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BootSector:
    fs: str  # "ntfs", "fat", "exfat"
    bytes_per_sector: int
    volume_size: int  # bytes; for NTFS (total sectors + 1) x bytes per sector


def parse_boot_sector(sector: bytes | bytearray | memoryview) -> BootSector | None:
    """A plausible NTFS / FAT / exFAT boot sector, or None (garbage, zeros, BitLocker header)."""
    data = bytes(sector[:512])
    if len(data) < 512 or data[510:512] != b"\x55\xaa":
        return None
    oem = data[3:11]
    if oem == b"EXFAT   ":
        shift = data[108]
        if not 9 <= shift <= 12:
            return None
        length = int.from_bytes(data[72:80], "little")
        return BootSector("exfat", 1 << shift, length << shift) if length else None
    bpb = structs.BOOT_SECTOR_PREFIX.parse(data)
    bps = int(bpb.bytes_per_sector)
    if bps not in (512, 1024, 2048, 4096):
        return None
    spc = int(bpb.sectors_per_cluster)
    if oem == b"NTFS    ":
        # NTFS: cluster sizes above 64 KiB are stored as 256 - log2(sectors per cluster)
        if not (spc and (spc & (spc - 1) == 0 or spc >= 0xF4)):
            return None
        total = int(bpb.total_sectors_64)
        if not total or not bpb.mft_cluster:
            return None
        return BootSector("ntfs", bps, (total + 1) * bps)
    if oem == FVE_SIGNATURE:
        return None
    if not spc or spc & (spc - 1):
        return None
    if not bpb.reserved_sectors or bpb.fat_count not in (1, 2):
        return None
    if bpb.media_descriptor not in (0xF0, *range(0xF8, 0x100)):
        return None
    total = int(bpb.total_sectors_16 or bpb.total_sectors_32)
    if not total:
        return None
    return BootSector("fat", bps, total * bps)


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


# --------------------------------------------------------------------------------------------
# Metadata scan
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ScanResult:
    copies: list[MetadataCopy]
    eow_offsets: list[int]
    bytes_scanned: int

    def groups(self) -> list[list[MetadataCopy]]:
        """Copies grouped by (volume GUID, copy offsets), the best group first."""
        groups: dict[tuple[Any, ...], list[MetadataCopy]] = {}
        for copy in self.copies:
            if not copy.usable or copy.block_header is None or copy.dataset_header is None:
                continue
            key = (copy.dataset_header.volume_guid,
                   tuple(int(o) for o in copy.block_header.metadata_offsets))
            groups.setdefault(key, []).append(copy)

        def rank(item: tuple[tuple[Any, ...], list[MetadataCopy]]) -> tuple[int, int, int]:
            (_guid, offsets), copies = item
            consistent = sum(1 for c in copies if c.offset in offsets)
            return (sum(1 for c in copies if c.crc_ok), consistent, len(copies))

        ordered = sorted(groups.items(), key=rank, reverse=True)
        return [sorted(copies, key=lambda c: (not c.crc_ok, c.offset)) for _k, copies in ordered]


def _eow_ok(read: ReadFn, off: int) -> bool:
    head = read(off, 0x1000)
    if head[:8] != EOW_SIGNATURE:
        return False
    try:
        info = structs.EOW_INFORMATION.parse(head)
    except Exception:  # construct errors on damaged data
        return False
    if not 40 <= info.size <= len(head):
        return False
    check = bytearray(head[:info.size])
    check[36:40] = b"\0\0\0\0"
    return zlib.crc32(check) == info.crc32


def scan_metadata(source: Any, *, chunk: int = SCAN_CHUNK, align: int = 512,
                  path: str | None = None,
                  progress: Callable[[int], None] | None = None) -> ScanResult:
    """Search the whole ``source`` (``size``, ``readinto_at``, ``read_at``) for FVE metadata
    blocks and EOW information blocks at ``align``-aligned offsets."""
    size = int(source.size)

    def read(offset: int, length: int) -> bytes:
        if offset >= size:
            return b""
        return bytes(source.read_at(offset, min(length, size - offset)))

    buf = bytearray(chunk)
    copies: list[MetadataCopy] = []
    eow: list[int] = []
    pos = 0
    while pos < size:
        n = int(source.readinto_at(pos, memoryview(buf)[:min(chunk, size - pos)]))
        if n <= 0:
            break
        view = buf if n == chunk else buf[:n]
        for signature, kind in ((FVE_SIGNATURE, "fve"), (EOW_SIGNATURE, "eow")):
            i = view.find(signature)
            while i != -1:
                off = pos + i
                if off % align == 0:
                    if kind == "fve":
                        copy = read_metadata_copy(read, off, 0, path, size)
                        if copy.usable:
                            log.info("scan: metadata block at %d (%s)", off, copy.status)
                            copies.append(copy)
                    elif _eow_ok(read, off):
                        log.info("scan: EOW information block at %d", off)
                        eow.append(off)
                    i = view.find(signature, i + align - i % align)
                else:
                    i = view.find(signature, i + 1)
        pos += n
        if progress is not None:
            progress(n)
    return ScanResult(copies, eow, pos)


def metadata_from_scan(group: list[MetadataCopy], eow_offsets: Sequence[int],
                       header: VolumeHeader | None, sector_size: int = 512) -> Metadata:
    """A :class:`Metadata` served by a scanned copy; ``header`` is the volume header if it
    still parses (else a stand-in is made from the block header; its sector size is a guess
    to be confirmed by :func:`detect_sector_size`)."""
    best = group[0]
    assert best.block_header is not None
    offsets = [int(o) for o in best.block_header.metadata_offsets]
    for copy in group:
        copy.index = offsets.index(copy.offset) + 1 if copy.offset in offsets else 0
    if header is None:
        version = int(best.block_header.version)
        kind = "vista" if version == 1 else ("eow" if eow_offsets else "win7")
        header = VolumeHeader(kind=kind, oem_id=b"", bytes_per_sector=sector_size,
                              sectors_per_cluster=8, metadata_offsets=offsets,
                              eow_offsets=list(eow_offsets)[:2], guid_record_offset=None,
                              raw=b"")
    return Metadata(header=header, copies=list(group), best=best, source="scan")


def with_sector_size(header: VolumeHeader, sector_size: int) -> VolumeHeader:
    return dataclasses.replace(header, bytes_per_sector=sector_size)


__all__ = ["BootSector", "ScanResult", "decrypt_sector", "detect_sector_size",
           "find_backup_boot_sector", "find_relocated_header", "metadata_from_scan",
           "parse_boot_sector", "scan_metadata", "with_sector_size"]
