"""What the metadata of a damaged volume leaves unknown, inferred from the image.

Metadata found by a scan, or carried by a key package, may lack facts the volume header or
the copies' own offsets would give. Once a key is known they are taken from the image:

* **Relocated header block** (:func:`settle_layout`): where the metadata does not record it,
  searched for (:func:`bdekit.recovery.boot_search.find_relocated_header`); its 8 KiB hold the
  original first sectors of the volume.
* **Sector size**: a stand-in header's is a guess; the relocated boot sector decrypts only
  under the right one, else the backup boot sector decides (:func:`sector_size_from_backup`).
* **Metadata copy offsets** missing from a package: Windows puts the relocated block right
  after the first copy's region, so that region is taken as the first copy's when it looks
  like one (destroyed or intact).
* **Whether a key fits this image** (:func:`key_fits_image`): it decrypts the relocated boot
  sector, or the backup boot sector at a candidate volume size, or (Vista) the first MFT
  record. A key package of another volume, or a wrong raw FVEK, decrypts none of them.
* **The boot sector** (:func:`rebuild_boot_sector`): sector 0 of the volume must decrypt to a
  boot sector; when it does not, the NTFS backup in the volume's last sector replaces it
  (volume size candidates: the key package, the block header's state offset, the image size)
  and the rest of the relocated block (boot code, sectors 1-15) is reported lost. Not found:
  the whole relocated block is reported lost.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Sequence

from bdekit.crypto import ciphers
from bdekit.errors import BdeError
from bdekit.escrow.keypackage import KeyPackage
from bdekit.escrow.secrets import UnlockResult
from bdekit.format import structs
from bdekit.format.bootsector import NTFS_OEM, parse_boot_sector
from bdekit.format.constants import FVE_SIGNATURE, VolumeState
from bdekit.format.layout import V2_METADATA_REGION
from bdekit.format.metadata import PARSE_ERRORS, Metadata, MetadataCopy, VolumeHeader
from bdekit.image.ranges import Damage
from bdekit.image.salvage import find_salvage
from bdekit.recovery.boot_search import (
    decrypt_sector,
    detect_sector_size,
    find_backup_boot_sector,
    find_relocated_header,
)
from bdekit.recovery.metadata_scan import SECTOR_SIZES, ReadFn
from bdekit.volume.bde import BdeVolume, SizeSource

log = logging.getLogger(__name__)

LOST_BOOT_CODE = "relocated header block damaged: boot code sectors not recoverable"
LOST_BOOT_SECTOR = ("relocated header block damaged and no backup boot sector found: "
                    "boot sector not recoverable")
LOST_VISTA_HEADER = ("Vista volume header damaged and no backup boot sector found: boot "
                     "sector not recoverable")
#: size of the relocated header block Windows writes
RELOCATED_SIZE = 0x2000


def sector_known(md: Metadata, package: KeyPackage | None) -> bool:
    """Whether the sector size is a fact (a volume header, a package that records it)."""
    return not md.header.stand_in or (package is not None and package.sector_size is not None)


def settle_layout(md: Metadata, result: UnlockResult, read: ReadFn, image_size: int, *,
                  sector_known: bool, notes: list[str],
                  hints: Sequence[int] = ()) -> Metadata:
    """Fill in the relocated header block and the sector size when they are not known
    (``hints``: offsets an unverified source names for the block, tried first)."""
    if md.version < 2 or not result.fvek:
        return md
    virt = md.virtualization
    ss = md.header.bytes_per_sector
    if virt is None or not virt[0]:
        found = _find_relocated(md, result, read, image_size, sector_known, notes, hints)
        if found is None:
            return md
        ss = found
    elif not sector_known:
        hit = detect_sector_size(read, result.method, result.fvek, virt[0])
        if hit is not None:
            ss = hit[0]
            log.info("sector size %d (from the boot sector in the relocated header block)", ss)
        else:
            ss = sector_size_from_backup(md, result, read, image_size) or ss
    _guess_first_copy(md, read, ss, notes)
    if ss != md.header.bytes_per_sector:
        md = Metadata(header=md.header.with_sector_size(ss), copies=md.copies, best=md.best,
                      source=md.source)
    return md


def _find_relocated(md: Metadata, result: UnlockResult, read: ReadFn, image_size: int,
                    sector_known: bool, notes: list[str],
                    hints: Sequence[int] = ()) -> int | None:
    """Search the relocated header block, record it in the block header; its sector size."""
    bh = md.block_header
    ss = md.header.bytes_per_sector
    candidates = [*hints, *(int(o) + V2_METADATA_REGION for o in bh.metadata_offsets
                            if int(o))]
    found = find_relocated_header(read, image_size, result.method, result.fvek, candidates,
                                  sector_sizes=(ss,) if sector_known else SECTOR_SIZES)
    if found is None:
        notes.append("the relocated header block was not found: the first 8 KiB of the "
                     "volume cannot be decrypted")
        log.warning(notes[-1])
        return None
    off, ss, _info = found
    bh.virtualized_offset = off
    bh.virtualized_sectors = max(1, RELOCATED_SIZE // ss)
    notes.append(f"relocated header block found at offset {off} (sector size {ss})")
    log.info(notes[-1])
    return ss


def _guess_first_copy(md: Metadata, read: ReadFn, ss: int, notes: list[str]) -> None:
    """A package without the copies' offsets: Windows puts the relocated block right after
    the first copy's region; take it when it looks like a destroyed or intact copy."""
    bh = md.block_header
    virt = md.virtualization
    if virt is None or not virt[0] or any(int(o) for o in bh.metadata_offsets):
        return
    region = max(V2_METADATA_REGION, ss)
    before = read(virt[0] - region, region) if virt[0] >= region else b""
    if len(before) == region and (not any(before) or before[:8] == FVE_SIGNATURE):
        bh.metadata_offsets[0] = virt[0] - region
        notes.append(f"metadata copy offsets unknown; the region before the relocated "
                     f"block ({virt[0] - region}) is taken as the first copy's; the other "
                     "copies' regions cannot be located and decrypt to noise")
    else:
        notes.append("metadata copy offsets unknown: their regions decrypt to noise "
                     "instead of reading as zeros")
    log.warning(notes[-1])


def volume_guids(read: ReadFn, pool: Sequence[MetadataCopy],
                 header: VolumeHeader | None) -> set[uuid.UUID]:
    """Volume GUIDs named by whatever is left of the metadata (even copies whose datums are
    damaged still carry their dataset header)."""
    guids = {c.dataset_header.volume_guid for c in pool if c.dataset_header is not None}
    offsets = [c.offset for c in pool] + (list(header.metadata_offsets) if header else [])
    for off in set(offsets):
        if off <= 0:
            continue
        head = read(off, 112)
        if len(head) < 112 or head[:8] != FVE_SIGNATURE:
            continue
        try:
            ds = structs.DATASET_HEADER.parse(head[64:112])
        except PARSE_ERRORS:
            continue
        if ds.header_size == 48 and ds.version == 1:
            guids.add(ds.volume_guid)
    return guids


def _vista_mft_decrypts(read: ReadFn, cipher: ciphers.SectorCipher, ss: int) -> bool:
    """Vista: the boot sector is the (plaintext) volume header; the first MFT record,
    encrypted, must decrypt to ``FILE``."""
    head = bytearray(read(0, 512))
    if len(head) < 512:
        return False
    head[3:11] = NTFS_OEM
    if parse_boot_sector(head) is None:
        return False
    bpb = structs.BOOT_SECTOR_PREFIX.parse(bytes(head))
    mft = int(bpb.mft_cluster) * int(bpb.sectors_per_cluster) * ss
    raw = read(mft, ss)
    return bool(mft) and len(raw) == ss and decrypt_sector(cipher, raw, mft)[:4] == b"FILE"


def key_fits_image(md: Metadata, result: UnlockResult, read: ReadFn, image_size: int,
                   package: KeyPackage | None) -> bool:
    """Whether the FVEK decrypts a boot sector of this image: the relocated one, or the
    backup at one of the candidate volume sizes (Vista: the first MFT record)."""
    ss = md.header.bytes_per_sector
    virt = md.virtualization
    if virt is not None and virt[0] \
            and detect_sector_size(read, result.method, result.fvek, virt[0]) is not None:
        return True
    try:
        cipher = ciphers.make_cipher(result.method, result.fvek, ss)
    except BdeError:
        return False
    if md.version == 1 and _vista_mft_decrypts(read, cipher, ss):
        return True
    candidates = [(image_size, "image size")]
    if package is not None and package.volume_size:
        candidates.insert(0, (package.volume_size, "key package"))
    if md.version >= 2 and int(md.block_header.state_offset):
        candidates.append((int(md.block_header.state_offset), "state offset"))
    return find_backup_boot_sector(read, image_size, cipher, ss, candidates) is not None


def sector_size_from_backup(md: Metadata, result: UnlockResult, read: ReadFn,
                            image_size: int) -> int | None:
    """The sector size under which a backup boot sector decrypts, or None."""
    candidates = [(int(md.block_header.state_offset), "state offset"),
                  (image_size, "image size")]
    for ss in SECTOR_SIZES:
        try:
            cipher = ciphers.make_cipher(result.method, result.fvek, ss)
        except BdeError:
            continue
        if find_backup_boot_sector(read, image_size, cipher, ss, candidates) is not None:
            log.info("sector size %d (from the backup boot sector)", ss)
            return ss
    log.warning("sector size unknown (the relocated header block is damaged and no backup "
                "boot sector was found); assuming %d", md.header.bytes_per_sector)
    return None


# --------------------------------------------------------------------------------------------
# The boot sector
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class BootRepair:
    """What checking sector 0 changed: output patches, lost ranges, what was done."""

    patches: list[tuple[int, bytes]] = dataclasses.field(default_factory=list)
    lost: list[Damage] = dataclasses.field(default_factory=list)
    repairs: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)


def _read_sector0(volume: BdeVolume) -> tuple[bytearray, bool]:
    """Sector 0 of the volume and whether it was unreadable (rather than garbage)."""
    ss = volume.sector_size
    sector0 = bytearray(ss)
    salvage, base = find_salvage(volume.source)
    if salvage is None:
        volume.read_into(0, sector0)
        return sector0, False
    with salvage.collect() as sink:
        volume.read_into(0, sector0)
    src0 = volume.plan(0, ss)[0].source
    unreadable = any(o - base < src0 + ss and o - base + n > src0 for o, n, _r in sink)
    return sector0, unreadable


def _header_extent(md: Metadata, ss: int) -> tuple[int, str]:
    """(bytes the relocated header block - or Vista header - covers, where it lies)."""
    if md.version < 2:
        return ss, "the Vista volume header (sector 0)"
    virt = md.virtualization
    nvirt = int(md.block_header.virtualized_sectors) * ss or (virt[1] if virt else 0) \
        or RELOCATED_SIZE
    where = f"the relocated header block at offset {virt[0]}" if virt else "sector 0"
    return nvirt, where


def _size_candidates(md: Metadata, package: KeyPackage | None,
                     image_size: int) -> list[tuple[int, str]]:
    candidates: list[tuple[int, str]] = []
    if package is not None and package.volume_size:
        candidates.append((package.volume_size, "the key package"))
    state_offset = int(md.block_header.state_offset) if md.version >= 2 else 0
    if state_offset:
        candidates.append((state_offset, "the state offset of the metadata block header"))
    candidates.append((image_size, "the image size"))
    return candidates


def rebuild_boot_sector(volume: BdeVolume, result: UnlockResult, read: ReadFn,
                        image_size: int, package: KeyPackage | None) -> BootRepair:
    """Rebuild sector 0 of the volume from the NTFS backup boot sector when it is damaged;
    may resize ``volume`` (:attr:`~bdekit.volume.bde.BdeVolume.size_override`)."""
    done = BootRepair()
    md = volume.metadata
    ss = volume.sector_size
    sector0, unreadable = _read_sector0(volume)
    info = parse_boot_sector(sector0)
    if info is not None and info.bytes_per_sector == ss:
        return done
    nvirt, where = _header_extent(md, ss)
    log.warning("sector 0 of the volume, from %s, %s", where,
                "is unreadable" if unreadable else "does not decrypt to a boot sector: damaged")
    candidates = _size_candidates(md, package, image_size)
    found = find_backup_boot_sector(read, image_size, volume.cipher, ss, candidates)
    if found is not None:
        size, sector, why, _encrypted = found
        volume.size_override = (size, SizeSource.BACKUP_BOOT_SECTOR)
        volume.set_key(result)
        done.patches.append((0, sector))
        # unreadable sectors (rather than garbage) are reported by the decrypt loop itself
        if nvirt > ss and not unreadable:
            done.lost.append(Damage(ss, nvirt - ss, LOST_BOOT_CODE))
        done.repairs.append(f"boot sector rebuilt from its backup in the last sector "
                            f"(volume offset {size - ss}; volume size {size}, from {why})")
        log.warning(done.repairs[-1])
        return done
    if not unreadable:
        done.lost.append(Damage(0, nvirt, LOST_BOOT_SECTOR if md.version >= 2
                                else LOST_VISTA_HEADER))
    state_offset = int(md.block_header.state_offset) if md.version >= 2 else 0
    if state_offset and md.state == VolumeState.ENCRYPTED \
            and volume.size_source != SizeSource.BOOT_SECTOR:
        volume.size_override = (state_offset, SizeSource.STATE_OFFSET)
        volume.set_key(result)
    done.notes.append("no backup boot sector found (candidates: "
                      + ", ".join(f"{s} from {w}" for s, w in candidates)
                      + f"); volume size {volume.volume_size} from {volume.size_source}")
    log.warning(done.notes[-1])
    return done


__all__ = ["LOST_BOOT_CODE", "LOST_BOOT_SECTOR", "LOST_VISTA_HEADER", "RELOCATED_SIZE",
           "BootRepair", "key_fits_image", "rebuild_boot_sector", "sector_known",
           "sector_size_from_backup", "settle_layout", "volume_guids"]
