"""The boot sector of the decrypted volume, verified, and the volume size it gives.

Sector 0 of the decrypted volume must be a valid NTFS, FAT12/16/32, exFAT or ReFS boot sector
(:func:`bdekit.format.bootsector.parse_boot_sector`, naming the volume's sector size), and the
size it gives must agree with the rest of the evidence. :func:`check_boot` decides, in order:

1. **The planned sector** - Windows 7+: the relocated boot sector, decrypted at its relocated
   position, *and* read as plaintext (on used-space-only volumes Windows leaves it in
   plaintext; the way that parses wins and proves the state of the relocated block); Vista:
   the volume header with its OEM field and MFT mirror cluster restored.
2. **Its size, weighed** (:func:`size_doubt`): the metadata copies and the relocated block
   lie inside the volume; a volume in a partition is no larger than the partition; a fully
   encrypted Windows 7+ volume's state offset (its encrypted size) equals its size (true on
   every real image we have); Vista: the MFT mirror cluster lies inside the volume, and the
   size is supported only when the mirror sits in its middle (where NTFS puts it) or the
   copies are spread over it (the third copy beyond its first eighth). A doubted size that
   the file system's own backup confirms (same size) stands, with a note.
3. **Else the file system's backup**: FAT32's sector 6 and exFAT's sector 12 (from the
   relocated block where they lie in it), NTFS's last sector at each candidate volume size
   (the state offset, the end of the used-space-only regions, the partition, the image; a
   hit must describe exactly that size), each read both ways. What serves is recorded in
   ``repairs``; the relocated block's other sectors (boot code) are then lost (zeros).
4. **Else nothing fits**: sector 0 and the rest of the relocated block read as zeros and are
   damage; the size comes from the state offset, the metadata or the image.

The result (:class:`BootPlan`) steers the read planner (``relocated_state``, ``paints``) and
lands in the report (``notes``, ``repairs``, ``damage``). Damaged first sectors read as zeros
and carry the repair's reasons, so ``decrypt`` and ``repair`` report them alike.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

from bdekit.crypto import ciphers
from bdekit.format.bootsector import BootSector, FsKind, parse_boot_sector
from bdekit.format.constants import VolumeState
from bdekit.format.eow import EowLayout
from bdekit.format.layout import metadata_region_size
from bdekit.format.metadata import Metadata
from bdekit.image.ranges import BOOT_CODE_LOST, BOOT_SECTOR_LOST, VISTA_HEADER_LOST, Damage
from bdekit.volume.planner import RunKind, chunk_encrypted, in_doubt, relocated_block

log = logging.getLogger(__name__)

ReadFn = Callable[[int, int], bytes]

#: where the size came from (the values of :class:`bdekit.volume.bde.SizeSource`)
FROM_BOOT_SECTOR = "boot sector"
FROM_IMAGE = "image"
FROM_BACKUP = "backup boot sector"
FROM_STATE_OFFSET = "state offset"
#: FAT32 and exFAT keep their backup boot sector at these sectors
_FS_BACKUPS = ((6, FsKind.FAT), (12, FsKind.EXFAT))


@dataclasses.dataclass(frozen=True)
class BootInputs:
    """What the check reads: the volume's raw bytes, its metadata, key and bitmaps."""

    read: ReadFn
    image_size: int
    sector_size: int
    metadata: Metadata
    cipher: ciphers.SectorCipher | None
    eow: EowLayout | None = None
    partition_size: int | None = None
    size_override: tuple[int, str] | None = None
    #: the sector cipher for another sector size (Vista: the header's bytes-per-sector field
    #: is unauthenticated plaintext, and its own boot sector cannot check it)
    cipher_for: Callable[[int], ciphers.SectorCipher | None] | None = None


@dataclasses.dataclass
class BootPlan:
    """What the check decided (see the module docstring)."""

    size: int
    size_source: str
    verified: bool
    relocated_state: bool | None = None
    #: the sector size the backup boot sector proved, when it is not the header's
    sector_size: int | None = None
    #: (start, end, kind, delta, encrypted) runs that replace the planned first sectors
    paints: list[tuple[int, int, RunKind, int, bool]] = dataclasses.field(default_factory=list)
    damage: list[Damage] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    repairs: list[str] = dataclasses.field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Reading a sector both ways
# --------------------------------------------------------------------------------------------


def _planned(inp: BootInputs, offset: int) -> bool:
    """Whether the sector at ``offset`` holds ciphertext by the plan."""
    return (inp.cipher is not None and inp.metadata.state != VolumeState.DECRYPTED
            and chunk_encrypted(inp.eow, offset))


def _ways(inp: BootInputs, offset: int) -> list[bool]:
    """Encrypted or not: the planned way first, then the other (no cipher: plaintext)."""
    if inp.cipher is None:
        return [False]
    first = _planned(inp, offset)
    return [first, not first]


def _boot_at(inp: BootInputs, offset: int, encrypted: bool) -> BootSector | None:
    ss = inp.sector_size
    raw = inp.read(offset, ss)
    if len(raw) < ss:
        return None
    sector = raw
    if encrypted and inp.cipher is not None:
        buf = bytearray(ss)
        inp.cipher.decrypt(raw, buf, offset)
        sector = bytes(buf)
    info = parse_boot_sector(sector)
    return info if info is not None and info.bytes_per_sector == ss else None


def _vista_header(inp: BootInputs) -> BootSector | None:
    first = bytearray(inp.read(0, inp.sector_size))
    if len(first) < inp.sector_size:
        return None
    first[3:11] = b"NTFS    "
    first[0x38:0x40] = int(inp.metadata.block_header.virtualized_offset).to_bytes(8, "little")
    info = parse_boot_sector(first)
    return info if info is not None and info.bytes_per_sector == inp.sector_size else None


def _relocated_sectors(inp: BootInputs) -> int:
    block = relocated_block(inp.metadata)
    return block[1] // inp.sector_size if block else 0


def _source_of(inp: BootInputs, sector: int) -> int:
    """Where sector ``sector`` of the volume lies in the image (the relocated block for the
    first ones)."""
    virt = inp.metadata.virtualization
    if virt is not None and sector < _relocated_sectors(inp):
        return virt[0] + sector * inp.sector_size
    return sector * inp.sector_size


# --------------------------------------------------------------------------------------------
# The size, weighed
# --------------------------------------------------------------------------------------------


def lower_bound(md: Metadata, sector_size: int) -> int:
    """The smallest size the metadata allows: its copies and relocated block lie inside."""
    region = metadata_region_size(md.version, sector_size, md.header.cluster_size)
    ends = [int(o) + region for o in md.block_header.metadata_offsets if int(o)]
    block = relocated_block(md)
    if block is not None:
        ends.append(block[0] + block[1])
    return max(ends, default=0)


def _vista_doubt(md: Metadata, size: int, sector_size: int) -> str | None:
    cluster = md.header.cluster_size
    mirror = int(md.block_header.virtualized_offset)  # v1: the MFT mirror cluster
    if mirror and mirror * cluster >= size:
        return f"the MFT mirror (cluster {mirror}) lies beyond it"
    clusters = size // sector_size // max(1, md.header.sectors_per_cluster)
    if mirror and mirror in (clusters // 2, (clusters - 1) // 2):
        return None  # NTFS puts the mirror in the middle of the volume
    last = max((int(o) for o in md.block_header.metadata_offsets), default=0)
    if last >= size // 8:
        return None  # the copies are spread over the volume
    return ("nothing supports it: the metadata copies all lie in its first eighth and the MFT "
            "mirror is not in its middle")


def size_doubt(inp: BootInputs, size: int, *, partition: bool = True) -> str | None:
    """Why the evidence contradicts a volume size of ``size`` bytes; None if it does not
    (``partition``: a size beyond the partition counts as contradicted)."""
    md = inp.metadata
    low = lower_bound(md, inp.sector_size)
    if size < low:
        return f"the metadata (copies, relocated block) reaches offset {low}"
    if partition and inp.partition_size is not None and size > inp.partition_size:
        return f"its partition holds {inp.partition_size} bytes"
    if md.version == 1:
        return _vista_doubt(md, size, inp.sector_size)
    return _state_doubt(inp, size)


def _state_doubt(inp: BootInputs, size: int) -> str | None:
    """Windows 7+: a fully encrypted volume's state offset is its size."""
    md = inp.metadata
    state_offset = int(md.block_header.state_offset)
    if md.version >= 2 and md.state == VolumeState.ENCRYPTED and state_offset \
            and state_offset != size:
        return f"the metadata's state offset (encrypted size) is {state_offset}"
    return None


def _backup_readable(inp: BootInputs, info: BootSector) -> bool:
    """Whether the file system's backup boot sector lies inside the image."""
    if info.backup_offset is None:
        return False
    pos = _source_of(inp, info.backup_offset // inp.sector_size)
    return pos + inp.sector_size <= inp.image_size


def _confirmed_by_backup(inp: BootInputs, info: BootSector) -> bool:
    """Whether the file system's backup boot sector describes the same size."""
    if info.backup_offset is None:
        return False
    pos = _source_of(inp, info.backup_offset // inp.sector_size)
    return any((b := _boot_at(inp, pos, enc)) is not None and b.volume_size == info.volume_size
               for enc in _ways(inp, pos))


# --------------------------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------------------------


def _primary(inp: BootInputs) -> tuple[BootSector, bool | None] | None:
    """The planned boot sector and, Windows 7+, the way it parsed (True: decrypted)."""
    if inp.metadata.version == 1:
        info = _vista_header(inp)
        return (info, None) if info is not None else None
    virt = inp.metadata.virtualization
    if virt is None:
        return None
    for enc in _ways(inp, virt[0]):
        info = _boot_at(inp, virt[0], enc)
        if info is not None:
            return info, enc
    return None


def check_boot(inp: BootInputs) -> BootPlan:
    """Verify sector 0 and the volume size (see the module docstring)."""
    found = _primary(inp)
    if found is not None:
        info, enc = found
        plan = _accept(inp, info, enc)
        if plan is not None:
            return plan
    return _fallback(inp, found[0] if found else None)


def _accept(inp: BootInputs, info: BootSector, enc: bool | None) -> BootPlan | None:
    """The plan when the planned boot sector parsed: None when its size is contradicted and
    its own backup does not confirm it."""
    size, source = info.volume_size, FROM_BOOT_SECTOR
    notes: list[str] = []
    doubt = size_doubt(inp, size, partition=False) if inp.size_override is None else None
    if doubt is not None:
        if _confirmed_by_backup(inp, info):
            notes.append(f"the boot sector's volume size ({size}) disagrees with the metadata "
                         f"({doubt}), but the file system's backup boot sector confirms it")
        elif doubt == _state_doubt(inp, size) and not _backup_readable(inp, info):
            # a valid boot sector against one metadata field, and its backup beyond the
            # capture: kept (in the encrypted state the state offset steers no read)
            notes.append(f"the boot sector's volume size ({size}) disagrees with the metadata "
                         f"({doubt}); its backup lies beyond the image: the boot sector's "
                         "size is used")
        else:
            log.warning("the boot sector says the volume is %d bytes, but %s: not trusted",
                        size, doubt)
            return None
        log.warning(notes[-1])
    part = inp.partition_size
    if inp.size_override is not None:
        size, source = inp.size_override
    elif part is not None and lower_bound(inp.metadata, inp.sector_size) <= part < size:
        notes.append(f"the boot sector's volume size ({size}) exceeds its partition ({part} "
                     "bytes): the output stops at the end of the partition")
        log.warning(notes[-1])
        size = part
    plan = BootPlan(size, source, True, notes=notes)
    virt = inp.metadata.virtualization
    if enc is not None and virt is not None:
        planned = _planned(inp, virt[0])
        if enc != planned or in_doubt(inp.eow, virt[0]):
            plan.relocated_state = enc
            plan.notes.append("the relocated boot sector parses as "
                              f"{'ciphertext' if enc else 'plaintext'}: the relocated header "
                              "block is read so")
            log.info(plan.notes[-1])
    return plan


def _size_candidates(inp: BootInputs, claimed: BootSector | None) -> list[tuple[int, str]]:
    md = inp.metadata
    out: list[tuple[int, str]] = []
    state_offset = int(md.block_header.state_offset) if md.version >= 2 else 0
    if state_offset:
        out.append((state_offset, "the state offset of the metadata"))
    if inp.eow is not None and inp.eow.regions:
        out.append((max(o + n for o, n, _b, _k in inp.eow.regions),
                     "the end of the used-space-only regions"))
    if claimed is not None:
        out.append((claimed.volume_size, "the damaged boot sector"))
    if inp.partition_size:
        out.append((inp.partition_size, "the partition"))
    out.append((inp.image_size, "the image size"))
    return out


def _backup_sector(inp: BootInputs,
                   claimed: BootSector | None) -> tuple[int, bool, BootSector, str] | None:
    """(where, encrypted, boot sector, why) of the file system's backup boot sector."""
    ss = inp.sector_size
    if inp.metadata.version >= 2:
        for sector, fs in _FS_BACKUPS:
            pos = _source_of(inp, sector)
            for enc in _ways(inp, pos):
                info = _boot_at(inp, pos, enc)
                if info is not None and info.fs == fs and info.backup_offset == sector * ss:
                    return pos, enc, info, f"the {fs} backup boot sector (sector {sector})"
    low = lower_bound(inp.metadata, ss)
    seen: set[int] = set()
    for size, why in _size_candidates(inp, claimed):
        if size in seen or size % ss or size <= max(low, ss) or size > inp.image_size:
            continue
        seen.add(size)
        pos = size - ss
        for enc in _ways(inp, pos):
            info = _boot_at(inp, pos, enc)
            if info is not None and info.fs == FsKind.NTFS and info.volume_size == size \
                    and size_doubt(inp, size) is None:
                return pos, enc, info, (f"the NTFS backup boot sector in the last sector "
                                        f"(volume size {size}, from {why})")
    return None


def _other_sector_size(inp: BootInputs,
                       claimed: BootSector | None) -> tuple[BootInputs, tuple[
                           int, bool, BootSector, str]] | None:
    """Vista: the backup boot sector under another sector size than the header's."""
    if inp.metadata.version != 1 or inp.cipher_for is None:
        return None
    for ss in (512, 4096, 1024, 2048):
        if ss == inp.sector_size:
            continue
        other = dataclasses.replace(inp, sector_size=ss, cipher=inp.cipher_for(ss))
        found = _backup_sector(other, claimed)
        if found is not None:
            log.warning("the volume header says %d-byte sectors, but the backup boot sector "
                        "decrypts only with %d-byte sectors: using %d (damaged header field)",
                        inp.sector_size, ss, ss)
            return other, found
    return None


def _lost_spans(inp: BootInputs, first: int, block: int) -> list[tuple[int, int]]:
    """The (start, end) volume spans of the relocated block from sector ``first`` that cannot
    be trusted once its boot sector failed: all of it when that sector holds something that
    is not a boot sector (garbled); when it is blank (never written, or unreadable and
    zero-filled), only the sectors that are blank too (they would decrypt to noise)."""
    ss = inp.sector_size
    virt = inp.metadata.virtualization
    if virt is None or block <= first * ss:
        return []
    raw = inp.read(virt[0], block)
    if any(raw[:ss]):
        return [(first * ss, block)]
    spans: list[tuple[int, int]] = []
    for k in range(first, block // ss):
        if not any(raw[k * ss:(k + 1) * ss]):
            if spans and spans[-1][1] == k * ss:
                spans[-1] = (spans[-1][0], (k + 1) * ss)
            else:
                spans.append((k * ss, (k + 1) * ss))
    return spans


def _fallback(inp: BootInputs, claimed: BootSector | None) -> BootPlan:
    backup = _backup_sector(inp, claimed)
    if backup is None:
        resized = _other_sector_size(inp, claimed)
        if resized is not None:
            inp, backup = resized
    ss = inp.sector_size
    block = _relocated_sectors(inp) * ss if inp.metadata.version >= 2 else 0
    if backup is not None:
        pos, enc, info, what = backup
        size, source = info.volume_size, FROM_BACKUP
        if inp.size_override is not None:
            size, source = inp.size_override
        plan = BootPlan(size, source, True, paints=[(0, ss, RunKind.RELOCATED, pos, enc)])
        plan.sector_size = ss
        plan.repairs.append(f"boot sector rebuilt from its backup: {what} at offset {pos} "
                            "(sector 0 of the volume does not hold a valid boot sector)")
        log.warning(plan.repairs[-1])
        for a, b in _lost_spans(inp, 1, block):  # the boot code after a damaged boot sector
            plan.paints.append((a, b, RunKind.ZERO, 0, False))
            plan.damage.append(Damage(a, b - a, BOOT_CODE_LOST))
        return plan
    size, source = _size_without_boot_sector(inp, claimed)
    plan = BootPlan(size, source, False, paints=[(0, ss, RunKind.ZERO, 0, False)])
    reason = BOOT_SECTOR_LOST if block else VISTA_HEADER_LOST
    plan.damage.append(Damage(0, ss, reason))
    for a, b in _lost_spans(inp, 1, block):
        plan.paints.append((a, b, RunKind.ZERO, 0, False))
        plan.damage.append(Damage(a, b - a, reason))
    plan.notes.append(f"no valid boot sector (sector 0, its other reading, the file system's "
                      f"backups): sector 0 is written as zeros; volume size {size} from "
                      f"{source}")
    log.warning(plan.notes[-1])
    return plan


def _size_without_boot_sector(inp: BootInputs,
                              claimed: BootSector | None) -> tuple[int, str]:
    if inp.size_override is not None:
        return inp.size_override
    md = inp.metadata
    low = lower_bound(md, inp.sector_size)
    state_offset = int(md.block_header.state_offset) if md.version >= 2 else 0
    if md.state == VolumeState.ENCRYPTED and state_offset >= low and (
            inp.partition_size is None or state_offset <= inp.partition_size):
        return state_offset, FROM_STATE_OFFSET
    if claimed is not None and size_doubt(inp, claimed.volume_size) is None:
        return claimed.volume_size, FROM_BOOT_SECTOR
    return max(inp.image_size, low), FROM_IMAGE


__all__ = ["BootInputs", "BootPlan", "check_boot", "lower_bound", "size_doubt"]
