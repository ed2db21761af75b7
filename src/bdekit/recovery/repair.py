"""Salvaging damaged BitLocker images: what ``bdekit repair`` does, step by step.

1. **Input.** The image is opened read-only through a
   :class:`~bdekit.engine.SalvageSource`: unreadable sectors (EIO) are retried, then the
   failing range is split down to single sectors; what stays unreadable reads as zeros and is
   recorded. ``--mapfile`` (a GNU ddrescue mapfile of the input) marks every area not
   finished (``+``) as unreadable without reading it. The volume is found as usual (bare
   volume, ``--offset``, ``--partition`` or the single BitLocker partition); when no BitLocker
   header is left, the whole image (or its only partition) is taken as the volume.
2. **Metadata.** The copies the volume header points to are read and ordered by their CRC32
   (intact first). The first that unlocks gives the VMK; then every copy's SHA-256 integrity
   datum is checked with it, and a copy that fails it is replaced by one that verifies. When
   the header is gone, no copy it points to is usable, or none verifies, the image is scanned
   for metadata blocks (:func:`bdekit.recovery.scan_metadata`) and those are tried the same
   way. When none exists, the key packages (``-kp``) take over
   (:mod:`bdekit.keypackage`); facts a package lacks are inferred from the image (the
   relocated header block by search, the sector size from the boot sector it holds).
3. **Boot sector.** Sector 0 of the volume (from the relocated header block) must decrypt to a
   boot sector; when it does not, the NTFS backup boot sector in the volume's last sector is
   looked for (volume size candidates: the key package, the block header's state offset, the
   image size) and, found, replaces it: the rest of the relocated block (boot code, sectors
   1-15) is reported lost. Not found: the whole relocated block is reported lost.
4. **Decryption** by the shared engine (:func:`bdekit.engine.decrypt_to`), with a journal
   beside the output so that ``--resume`` continues an interrupted run byte-identically.
5. **Products.** The output image; its ddrescue mapfile (``OUTPUT.map`` or
   ``--output-mapfile``) in output coordinates, ``-`` for every range that could not be
   recovered (unreadable, not rescued, missing tail of a truncated image, lost boot code) and
   ``+`` elsewhere; the JSON report (``--report``: the decrypt report plus the damage list,
   which copy or package served, what was rebuilt); the human-readable log (``-lf``).

Exit code 6 (:data:`~bdekit.errors.EXIT_PARTIAL`) when any range could not be recovered.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import logging
import os
import shlex
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from bdekit.crypto import keys
from bdekit.errors import (
    BdeError,
    KeyError_,
    MetadataError,
    NotBitLockerError,
    UnsupportedError,
    UsageError,
    WrongKeyError,
)
from bdekit.escrow.keypackage import KeyPackage, package_metadata, read_key_package
from bdekit.escrow.secrets import Secrets, UnlockResult
from bdekit.format.bootsector import parse_boot_sector
from bdekit.format.constants import FVE_SIGNATURE, DatumType, VolumeState
from bdekit.format.metadata import (
    V2_METADATA_REGION,
    Metadata,
    MetadataCopy,
    VolumeHeader,
    parse_volume_header,
    read_metadata,
)
from bdekit.image.mapfile import read_mapfile, write_mapfile
from bdekit.image.ranges import NOT_RESCUED, Damage
from bdekit.image.salvage import SalvageSource, find_salvage
from bdekit.pipeline.chunks import ChunkReader
from bdekit.pipeline.decrypt import DEFAULT_CHUNK, decrypt_to
from bdekit.pipeline.journal import Journal, journal_path_for
from bdekit.pipeline.output import is_device
from bdekit.pipeline.report import Report
from bdekit.recovery.bootsector import (
    decrypt_sector,
    detect_sector_size,
    find_backup_boot_sector,
    find_relocated_header,
    with_sector_size,
)
from bdekit.recovery.metadata_scan import metadata_from_scan, scan_metadata
from bdekit.unlock.attempt import unlock
from bdekit.unlock.vmk import decrypt_fvek, unwrap_key
from bdekit.volume.bde import BdeVolume

log = logging.getLogger(__name__)

LOST_BOOT_CODE = "relocated header block damaged: boot code sectors not recoverable"
LOST_BOOT_SECTOR = ("relocated header block damaged and no backup boot sector found: "
                    "boot sector not recoverable")
LOST_VISTA_HEADER = ("Vista volume header damaged and no backup boot sector found: boot "
                     "sector not recoverable")
RELOCATED_SIZE = 0x2000

Unlocker = Callable[[BdeVolume, Secrets], UnlockResult]


@dataclasses.dataclass
class RepairOptions:
    input: str
    output: str
    secrets: Secrets = dataclasses.field(default_factory=Secrets)
    key_packages: Sequence[str] = ()
    offset: int | None = None
    partition: int | None = None
    force: bool = False
    resume: bool = False
    threads: int | None = None
    chunk_size: int = DEFAULT_CHUNK
    mapfile: str | None = None
    output_mapfile: str | None = None
    report_path: str | None = None
    log_path: str | None = None
    retries: int = 1
    progress: bool = False
    hash_output: bool = True
    command: str = ""
    #: how to unlock a candidate volume (the CLI passes its audited ``cli_unlock``)
    unlocker: Unlocker | None = None


@dataclasses.dataclass
class Opened:
    """An unlocked volume and what it took to get there."""

    volume: BdeVolume
    result: UnlockResult
    copies: list[MetadataCopy]
    patches: list[tuple[int, bytes]] = dataclasses.field(default_factory=list)
    lost: list[Damage] = dataclasses.field(default_factory=list)
    repairs: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    key_package: str | None = None


# --------------------------------------------------------------------------------------------
# The log file (-lf)
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def log_file(path: str | None, *, append: bool = False) -> Iterator[None]:
    """Copy every INFO+ message of the ``bdekit`` loggers into ``path`` (human-readable),
    leaving the level of the existing (stderr) handlers as it was."""
    if not path:
        yield
        return
    root = logging.getLogger("bdekit")
    try:
        handler = logging.FileHandler(path, mode="a" if append else "w", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write the log file: {exc.strerror}", path=path) from None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s",
                                           "%Y-%m-%d %H:%M:%S"))
    handler.setLevel(logging.INFO)
    old_level = root.level
    effective = root.getEffectiveLevel()
    saved = [(h, h.level) for h in root.handlers]
    for h, level in saved:
        h.setLevel(max(level, effective))
    root.addHandler(handler)
    root.setLevel(min(effective, logging.INFO))
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(old_level)
        for h, level in saved:
            h.setLevel(level)


# --------------------------------------------------------------------------------------------
# Finding the volume
# --------------------------------------------------------------------------------------------


def locate_tolerant(source: Any, offset: int | None,
                    partition: int | None) -> tuple[Any, int]:
    """(volume source, its offset in the image); a volume whose header is gone is taken as
    the whole image, or the image's only partition."""
    from bdekit.image import locate
    from bdekit.image.sources import SliceSource

    try:
        vsrc = locate.volume_source(source, offset=offset, partition=partition)
    except NotBitLockerError as exc:
        from bdekit.image.partitions import read_partition_table

        try:
            parts = read_partition_table(source)
        except BdeError:
            parts = []
        if len(parts) == 1:
            part = parts[0]
            log.warning("%s; using the only partition (%d, at offset %d)", exc.message,
                        part.index, part.offset)
            vsrc = SliceSource(source, part.offset, part.size)
        elif len(parts) > 1:
            listing = "; ".join(f"partition {p.index} at offset {p.offset}" for p in parts)
            raise UsageError(f"{exc.message}; name the damaged one with --partition "
                             f"({listing})", path=source.path) from None
        else:
            log.warning("%s; the whole image is taken as the volume", exc.message)
            vsrc = source
    base = vsrc.offset if isinstance(vsrc, SliceSource) else 0
    return vsrc, base


def _reader(src: Any) -> Callable[[int, int], bytes]:
    size = int(src.size)

    def read(offset: int, length: int) -> bytes:
        if offset >= size or length <= 0:
            return b""
        return bytes(src.read_at(offset, min(length, size - offset)))

    return read


# --------------------------------------------------------------------------------------------
# Unlocking candidate metadata
# --------------------------------------------------------------------------------------------


def integrity_of(copy: MetadataCopy, vmk: bytes) -> str:
    """The SHA-256 integrity state of a copy under the VMK: ok, mismatch or unavailable."""
    if not copy.usable or copy.validation is None:
        return "unavailable"
    try:
        inner = unwrap_key(copy.validation, vmk)
    except BdeError:
        return "mismatch"
    digest = bytes(inner.body.key) if inner.type == DatumType.KEY else b""
    return "ok" if digest == hashlib.sha256(copy.block).digest() else "mismatch"


def _copy_name(copy: MetadataCopy) -> str:
    if copy.status == "key package":
        return "the key package"
    which = f"copy {copy.index}" if copy.index else "a stray copy"
    return f"{which} at offset {copy.offset}"


class _Unlocker:
    """Tries candidate metadata; after the first success, the VMK opens the others."""

    def __init__(self, src: Any, path: str | None, secrets: Secrets,
                 unlock_fn: Unlocker | None) -> None:
        self.src = src
        self.path = path
        self.secrets = secrets
        self.unlock_fn = unlock_fn or (lambda vol, sec: vol.unlock(sec))
        self.vmk: bytes | None = None
        self.first: UnlockResult | None = None
        self.key_errors: list[BdeError] = []
        self.errors: list[BdeError] = []
        #: a key (or unsupported protector) failure on an intact copy: the secret is the
        #: problem, not the metadata, so scanning for more copies is pointless
        self.wrong_on_intact = False

    def attempt(self, md: Metadata) -> UnlockResult | None:
        name = _copy_name(md.best)
        if self.vmk is not None and self.first is not None:
            try:
                fvek, key_type = decrypt_fvek(md, self.vmk)
            except BdeError as exc:
                log.warning("%s: the VMK does not open its FVEK: %s", name, exc.message)
                self.errors.append(exc)
                return None
            first = self.first
            return UnlockResult(fvek, key_type or md.method, self.vmk, first.via,
                                first.protector, first.source)
        volume = BdeVolume(self.src, path=self.path, metadata=md)
        log.info("unlocking with %s", name)
        try:
            if self.secrets.fvek is not None:
                # a raw FVEK opens any copy; whether it is right is decided on the image
                # (boot sector, its backup), after the boot sector check
                result = unlock(md, Secrets(fvek=self.secrets.fvek), path=self.path)
            else:
                result = self.unlock_fn(volume, self.secrets)
        except (KeyError_, UnsupportedError) as exc:
            log.warning("%s: %s", name, exc.message)
            intact = (md.best.crc_ok and md.source in ("volume", "scan")) \
                or md.source == "key package"
            if intact:
                self.key_errors.append(exc)
                if md.source == "volume":
                    self.wrong_on_intact = True
            else:
                self.errors.append(exc)
            return None
        except BdeError as exc:
            log.warning("%s: cannot unlock: %s", name, exc.message)
            self.errors.append(exc)
            return None
        if result.vmk is not None:
            self.vmk = result.vmk
            self.first = result
        who = f" (protector {result.protector.key_id})" if result.protector else ""
        log.info("unlocked with %s via %s%s", name, result.via, who)
        return result

    def failure(self, what: str) -> BdeError:
        if self.key_errors:
            return self.key_errors[0]
        if self.errors:
            return MetadataError(f"{what}; last error: {self.errors[-1].message}",
                                 path=self.path)
        return MetadataError(what, path=self.path)


def _ordered(copies: Sequence[MetadataCopy]) -> list[MetadataCopy]:
    usable = [c for c in copies if c.usable]
    return sorted(usable, key=lambda c: (not c.crc_ok, c.index or 99, c.offset))


def _settle_copy(md: Metadata, result: UnlockResult,
                 pool: Sequence[MetadataCopy]) -> tuple[Metadata, UnlockResult]:
    """Check every copy's SHA-256 under the VMK; serve from one that verifies."""
    vmk = result.vmk
    if vmk is None:
        log.info("no VMK (unlocked with %s): the copies' SHA-256 cannot be checked; %s "
                 "serves on its CRC", result.via, _copy_name(md.best))
        return md, result
    for copy in pool:
        copy.integrity = integrity_of(copy, vmk)
        log.info("%s: CRC %s, SHA-256 %s", _copy_name(copy), "ok" if copy.crc_ok else "bad",
                 copy.integrity)
    if md.best.integrity == "ok":
        return md, result
    for copy in _ordered(pool):
        if copy is md.best or copy.integrity != "ok":
            continue
        source = md.source if copy in md.copies else "scan"
        copies = md.copies if copy in md.copies else [*md.copies, copy]
        other = Metadata(header=md.header, copies=copies, best=copy, source=source)
        try:
            fvek, key_type = decrypt_fvek(other, vmk)
        except BdeError:
            continue
        log.warning("%s fails its SHA-256 integrity check; %s verifies and serves",
                    _copy_name(md.best), _copy_name(copy))
        return other, UnlockResult(fvek, key_type or other.method, vmk, result.via,
                                   result.protector, result.source)
    if md.best.integrity == "mismatch":
        log.warning("%s fails its SHA-256 integrity check and no other copy verifies; it "
                    "serves anyway (its FVEK opened)", _copy_name(md.best))
    return md, result


# --------------------------------------------------------------------------------------------
# Layout facts and the boot sector
# --------------------------------------------------------------------------------------------


def _settle_layout(md: Metadata, result: UnlockResult, read: Callable[[int, int], bytes],
                   image_size: int, *, sector_known: bool, notes: list[str]) -> Metadata:
    """Fill in the relocated header block and the sector size when they are not known."""
    if md.version < 2 or not result.fvek:
        return md
    bh = md.block_header
    virt = md.virtualization
    ss = md.header.bytes_per_sector
    if virt is None or not virt[0]:
        region = V2_METADATA_REGION
        candidates = [int(o) + region for o in bh.metadata_offsets if int(o)]
        found = find_relocated_header(
            read, image_size, result.method, result.fvek, candidates,
            sector_sizes=(ss,) if sector_known else (512, 4096, 1024, 2048))
        if found is None:
            notes.append("the relocated header block was not found: the first 8 KiB of the "
                         "volume cannot be decrypted")
            log.warning(notes[-1])
            return md
        off, ss, _info = found
        bh.virtualized_offset = off
        bh.virtualized_sectors = max(1, RELOCATED_SIZE // ss)
        notes.append(f"relocated header block found at offset {off} (sector size {ss})")
        log.info(notes[-1])
    elif not sector_known:
        hit = detect_sector_size(read, result.method, result.fvek, virt[0])
        if hit is not None:
            ss = hit[0]
            log.info("sector size %d (from the boot sector in the relocated header block)", ss)
        else:
            ss = _sector_size_from_backup(md, result, read, image_size) or ss
    virt = md.virtualization
    if virt is not None and virt[0] and not any(int(o) for o in bh.metadata_offsets):
        # A package without the copies' offsets: Windows puts the relocated block right after
        # the first copy's region; take it when it looks like a destroyed or intact copy.
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
    if ss != md.header.bytes_per_sector:
        md = Metadata(header=with_sector_size(md.header, ss), copies=md.copies, best=md.best,
                      source=md.source)
    return md


def _sector_known(md: Metadata, package: KeyPackage | None) -> bool:
    """Whether the sector size is a fact (a volume header, a package that records it)."""
    return md.header.raw != b"" or (package is not None and package.sector_size is not None)


def _volume_guids(read: Callable[[int, int], bytes], pool: Sequence[MetadataCopy],
                  header: VolumeHeader | None) -> set[Any]:
    """Volume GUIDs named by whatever is left of the metadata (even copies whose datums are
    damaged still carry their dataset header)."""
    from bdekit.format import structs

    guids = {c.dataset_header.volume_guid for c in pool if c.dataset_header is not None}
    offsets = [c.offset for c in pool] + (list(header.metadata_offsets) if header else [])
    for off in set(offsets):
        if off <= 0:
            continue
        head = read(off, 112)
        if len(head) == 112 and head[:8] == FVE_SIGNATURE:
            ds = structs.DATASET_HEADER.parse(head[64:112])
            if ds.header_size == 48 and ds.version == 1:
                guids.add(ds.volume_guid)
    return guids


def _key_fits_image(md: Metadata, result: UnlockResult, read: Callable[[int, int], bytes],
                    image_size: int, package: KeyPackage | None) -> bool:
    """Whether the FVEK decrypts a boot sector of this image: the relocated one, or the
    backup at one of the candidate volume sizes."""
    from bdekit.crypto import ciphers
    from bdekit.format import structs

    ss = md.header.bytes_per_sector
    virt = md.virtualization
    if virt is not None and virt[0]:
        found = detect_sector_size(read, result.method, result.fvek, virt[0])
        if found is not None:
            return True
    try:
        cipher = ciphers.make_cipher(result.method, result.fvek, ss)
    except BdeError:
        return False
    if md.version == 1:
        # Vista: the boot sector is the (plaintext) volume header; the first MFT record,
        # encrypted, must decrypt to "FILE"
        head = bytearray(read(0, 512))
        if len(head) == 512:
            head[3:11] = b"NTFS    "
            if parse_boot_sector(head) is not None:
                bpb = structs.BOOT_SECTOR_PREFIX.parse(bytes(head))
                mft = int(bpb.mft_cluster) * int(bpb.sectors_per_cluster) * ss
                raw = read(mft, ss)
                if mft and len(raw) == ss and decrypt_sector(cipher, raw, mft)[:4] == b"FILE":
                    return True
    candidates = [(image_size, "image size")]
    if package is not None and package.volume_size:
        candidates.insert(0, (package.volume_size, "key package"))
    if md.version >= 2 and int(md.block_header.state_offset):
        candidates.append((int(md.block_header.state_offset), "state offset"))
    return find_backup_boot_sector(read, image_size, cipher, ss, candidates) is not None


def _sector_size_from_backup(md: Metadata, result: UnlockResult,
                             read: Callable[[int, int], bytes], image_size: int) -> int | None:
    from bdekit.crypto import ciphers

    candidates = [(int(md.block_header.state_offset), "state offset"),
                  (image_size, "image size")]
    for ss in (512, 4096, 1024, 2048):
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


def _check_boot_sector(opened: Opened, read: Callable[[int, int], bytes], image_size: int,
                       package: KeyPackage | None) -> None:
    """Rebuild sector 0 of the volume from the NTFS backup boot sector when it is damaged."""
    volume = opened.volume
    md = volume.metadata
    ss = volume.sector_size
    sector0 = bytearray(ss)
    salvage, base = find_salvage(volume.source)
    if salvage is not None:
        with salvage.collect() as sink:
            volume.read_into(0, sector0)
    else:
        sink = []
        volume.read_into(0, sector0)
    info = parse_boot_sector(sector0)
    if info is not None and info.bytes_per_sector == ss:
        return
    virt = md.virtualization if md.version >= 2 else None
    if md.version >= 2:
        nvirt = int(md.block_header.virtualized_sectors) * ss or (virt[1] if virt else 0) \
            or RELOCATED_SIZE
        where = f"the relocated header block at offset {virt[0]}" if virt else "sector 0"
    else:
        nvirt = ss
        where = "the Vista volume header (sector 0)"
    # unreadable (rather than garbage): only the unreadable sectors are lost, and the engine
    # reports those itself
    src0 = volume.plan(0, ss)[0].source
    unreadable = any(o - base < src0 + ss and o - base + n > src0 for o, n, _r in sink)
    log.warning("sector 0 of the volume, from %s, %s", where,
                "is unreadable" if unreadable else
                "does not decrypt to a boot sector: damaged")
    candidates: list[tuple[int, str]] = []
    if package is not None and package.volume_size:
        candidates.append((package.volume_size, "the key package"))
    state_offset = int(md.block_header.state_offset) if md.version >= 2 else 0
    if state_offset:
        candidates.append((state_offset, "the state offset of the metadata block header"))
    candidates.append((image_size, "the image size"))
    found = find_backup_boot_sector(read, image_size, volume.cipher, ss, candidates)
    if found is not None:
        size, sector, why, _encrypted = found
        volume.size_override = (size, "backup boot sector")
        volume.set_key(opened.result)
        opened.patches.append((0, sector))
        if nvirt > ss and not unreadable:
            opened.lost.append(Damage(ss, nvirt - ss, LOST_BOOT_CODE))
        opened.repairs.append(f"boot sector rebuilt from its backup in the last sector "
                              f"(volume offset {size - ss}; volume size {size}, from {why})")
        log.warning(opened.repairs[-1])
        return
    if not unreadable:
        opened.lost.append(Damage(0, nvirt, LOST_BOOT_SECTOR if md.version >= 2
                                  else LOST_VISTA_HEADER))
    if md.version >= 2 and state_offset and md.state == VolumeState.ENCRYPTED \
            and volume.size_source != "boot sector":
        volume.size_override = (state_offset, "state offset")
        volume.set_key(opened.result)
    opened.notes.append("no backup boot sector found (candidates: "
                        + ", ".join(f"{s} from {w}" for s, w in candidates)
                        + f"); volume size {volume.volume_size} from {volume.size_source}")
    log.warning(opened.notes[-1])


# --------------------------------------------------------------------------------------------
# Opening a damaged volume
# --------------------------------------------------------------------------------------------


def open_damaged(src: Any, secrets: Secrets, *, packages: Sequence[KeyPackage] = (),
                 path: str | None = None, unlocker: Unlocker | None = None,
                 scan: str = "auto") -> Opened:
    """Unlock the volume in ``src`` whatever survives of its metadata (see module docstring).

    ``scan``: ``"auto"`` (when the header's copies do not serve), ``"always"`` or ``"never"``.
    """
    image_size = int(src.size)
    read = _reader(src)
    path = path or getattr(src, "path", None)
    tries = _Unlocker(src, path, secrets, unlocker)
    header: VolumeHeader | None = None
    try:
        header = parse_volume_header(read(0, 512), path)
        log.info("volume header: %s, metadata copies at %s", header.kind,
                 ", ".join(str(o) for o in header.metadata_offsets))
    except BdeError as exc:
        log.warning("volume header unusable: %s", exc.message)

    pool: list[MetadataCopy] = []
    chosen: tuple[Metadata, UnlockResult] | None = None
    if header is not None:
        try:
            md = read_metadata(read, path, image_size)
            pool = list(md.copies)
        except BdeError as exc:
            log.warning("%s", exc.message)
            md = None
        if md is not None:
            for copy in md.copies:
                log.info("%s: %s", _copy_name(copy), copy.status)
            for copy in _ordered(md.copies):
                candidate = Metadata(header=md.header, copies=md.copies, best=copy,
                                     source="volume")
                result = tries.attempt(candidate)
                if result is not None:
                    chosen = _settle_copy(candidate, result, pool)
                    break
                if tries.wrong_on_intact:
                    break

    need_scan = scan == "always" or (scan == "auto" and (
        (chosen is None and not tries.wrong_on_intact)
        or (chosen is not None and chosen[0].best.integrity == "mismatch")))
    scanned: list[MetadataCopy] = []
    eow_offsets: list[int] = []
    if need_scan:
        log.info("scanning the image for metadata blocks (%d bytes)", image_size)
        result_scan = scan_metadata(src, path=path)
        eow_offsets = result_scan.eow_offsets
        known = {(c.offset, c.block) for c in pool}
        group_mds = [metadata_from_scan(group, eow_offsets, header)
                     for group in result_scan.groups()]
        for group_md in group_mds:
            scanned += [c for c in group_md.copies if (c.offset, c.block) not in known]
        log.info("scan: %d metadata block(s) found, %d not already known",
                 len(result_scan.copies), len(scanned))
        if chosen is None:
            for group_md in group_mds:
                for copy in _ordered(group_md.copies):
                    candidate = Metadata(header=group_md.header, copies=group_md.copies,
                                         best=copy, source="scan")
                    result = tries.attempt(candidate)
                    if result is not None:
                        chosen = _settle_copy(candidate, result, list(group_md.copies))
                        pool += [c for c in group_md.copies if c not in pool]
                        break
                if chosen is not None:
                    break
        elif scanned and chosen is not None:
            chosen = _settle_copy(chosen[0], chosen[1], [*pool, *scanned])
            pool += scanned

    package_used: KeyPackage | None = None
    layout_notes: list[str] = []
    if chosen is None and packages:
        guids = _volume_guids(read, pool, header)
        fallback: tuple[Metadata, UnlockResult, KeyPackage, list[str]] | None = None
        for pkg in packages:
            log.info("trying key package %s (%s: %d VMK, %d FVEK datum(s))", pkg.path,
                     pkg.kind, len(pkg.vmks), len(pkg.fveks))
            if pkg.volume_guid is not None and guids and pkg.volume_guid not in guids:
                log.warning("key package %s is for volume {%s}, not this one ({%s}): skipped",
                            pkg.path, str(pkg.volume_guid).upper(),
                            ", ".join(str(g).upper() for g in sorted(guids, key=str)))
                continue
            md_pkg = package_metadata(pkg, header)
            result = tries.attempt(md_pkg)
            if result is None:
                continue
            if not md_pkg.method and result.method:
                md_pkg.best.dataset_header.method = result.method
            pkg_notes: list[str] = []
            md_pkg = _settle_layout(md_pkg, result, read, image_size,
                                    sector_known=_sector_known(md_pkg, pkg), notes=pkg_notes)
            if _key_fits_image(md_pkg, result, read, image_size, pkg):
                chosen, package_used, layout_notes = (md_pkg, result), pkg, pkg_notes
                break
            log.warning("key package %s: its key could not be checked against this image "
                        "(it decrypts no boot sector - relocated or backup - nor the first MFT "
                        "record: another volume's package, or those are damaged or missing)",
                        pkg.path)
            if fallback is None:
                fallback = (md_pkg, result, pkg, pkg_notes)
        if chosen is None and fallback is not None:
            md_pkg, result, pkg, layout_notes = fallback
            chosen, package_used = (md_pkg, result), pkg
            layout_notes.append(f"the key of key package {pkg.path} could not be verified "
                                "against the image: if the output is noise, the package "
                                "belongs to another volume")
            log.warning(layout_notes[-1])
        if package_used is not None:
            log.info("key package %s serves", package_used.path)

    if chosen is None:
        if tries.key_errors:
            raise tries.failure("")
        what = "no usable BitLocker metadata: "
        what += ("the volume header is gone" if header is None else
                 "no metadata copy the volume header points to unlocks")
        what += ("; the scan found no metadata block" if need_scan and not scanned
                 else "; no scanned metadata block unlocks" if need_scan else "")
        what += ("; no key package unlocks" if packages else
                 "; give a key package (-kp FILE) with its recovery password or key")
        raise tries.failure(what)

    md, result = chosen
    notes: list[str] = list(layout_notes)
    if package_used is None:
        md = _settle_layout(md, result, read, image_size,
                            sector_known=_sector_known(md, None), notes=notes)
    volume = BdeVolume(src, path=path, metadata=md)
    fvek_unverified = False
    try:
        volume.set_key(result)
    except WrongKeyError:
        # a raw FVEK whose relocated boot sector does not decrypt: wrong, or the block is
        # damaged; provisionally sized by the image, the boot sector check decides
        if result.via != "fvek":
            raise
        fvek_unverified = True
        volume.size_override = (image_size, "image")
        volume.set_key(result)
    if md.source == "key package":
        # a package's copy has no SHA-256 of its own; keep the copies read from the image
        for copy in pool:
            copy.integrity = integrity_of(copy, result.vmk) if result.vmk else copy.integrity
    opened = Opened(volume=volume, result=result, copies=[*md.copies,
                                                          *[c for c in pool
                                                            if c not in md.copies]],
                    notes=notes, key_package=package_used.path if package_used else None)
    opened.notes.append(f"metadata from {md.source}: {_copy_name(md.best)} serves")
    log.info(opened.notes[-1])
    _check_boot_sector(opened, read, image_size, package_used)
    if fvek_unverified and not opened.patches \
            and not _key_fits_image(md, result, read, image_size, package_used):
        raise WrongKeyError("the FVEK given decrypts neither the volume's boot sector nor its "
                            "backup: wrong FVEK", path=path)
    return opened


# --------------------------------------------------------------------------------------------
# The whole job
# --------------------------------------------------------------------------------------------


def _fingerprint(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def default_mapfile_path(output: str) -> str:
    if is_device(output):
        return os.path.abspath(os.path.basename(output) + ".map")
    return output + ".map"


def repair(opts: RepairOptions) -> Report:
    """Salvage ``opts.input`` into ``opts.output``; returns the report (see module docstring).

    Raises like ``decrypt`` for what prevents any output (no usable metadata and no key
    package, wrong key, refused output); a finished job with damage returns normally and the
    caller exits 6 when ``report.damaged`` is not empty.
    """
    started = dt.datetime.now()
    with log_file(opts.log_path, append=opts.resume):
        log.info("bdekit repair started: %s", opts.command or f"{opts.input} -> {opts.output}")
        return _repair(opts, started)


def load_key_packages(paths: Sequence[str]) -> list[KeyPackage]:
    """Read each key package; a directory contributes every file in it that holds one."""
    packages: list[KeyPackage] = []
    for path in paths:
        if not os.path.isdir(path):
            packages.append(read_key_package(path))
            continue
        found = 0
        for name in sorted(os.listdir(path)):
            full = os.path.join(path, name)
            if not os.path.isfile(full) or os.path.getsize(full) > 64 << 20:
                continue
            try:
                packages.append(read_key_package(full))
                found += 1
            except BdeError as exc:
                log.info("%s: not a key package (%s)", full, exc.message)
        log.info("key package directory %s: %d package(s)", path, found)
        if not found:
            log.warning("key package directory %s holds no key package", path)
    return packages


def _open_image(path: str) -> Any:
    """``open_source``; when the very first sectors are unreadable (the container cannot be
    detected), the file is read as a raw image."""
    from bdekit.errors import ReadError
    from bdekit.image.sources import RawSource, open_source

    try:
        return open_source(path)
    except ReadError as exc:
        log.warning("%s: reading it as a raw image", exc.one_line())
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
    except OSError:
        os.close(fd)
        raise
    return RawSource(path, fd, size)


def _repair(opts: RepairOptions, started: dt.datetime) -> Report:
    packages = load_key_packages(opts.key_packages)
    bad: list[tuple[int, int, str]] = []
    map_digest = None
    mf = None
    if opts.mapfile:
        mf = read_mapfile(opts.mapfile)
        with open(opts.mapfile, "rb") as fh:
            map_digest = _fingerprint(fh.read())
    image = _open_image(opts.input)
    if mf is not None:
        if mf.size and mf.size < image.size:
            log.warning("the input mapfile covers %d bytes of the %d-byte image: the rest "
                        "counts as not rescued", mf.size, image.size)
        for pos, size, status in mf.unrescued(domain_size=image.size):
            if pos >= image.size:
                continue
            size = min(size, image.size - pos)
            bad.append((pos, size, NOT_RESCUED))
            log.info("input mapfile: image offset %d, %d bytes not rescued (status '%s')",
                     pos, size, status)
    salvage = SalvageSource(image, bad=bad, retries=opts.retries)
    try:
        vsrc, base = locate_tolerant(salvage, opts.offset, opts.partition)
        opened = open_damaged(vsrc, opts.secrets, packages=packages,
                              path=opts.input, unlocker=opts.unlocker)
        volume = opened.volume
        result = opened.result
        for off, length, _reason in salvage.outside:
            log.warning("unreadable while reading metadata: image offset %d, %d bytes", off,
                        length)
        reader = ChunkReader(volume, salvage, base, patches=opened.patches, lost=opened.lost)
        journal_path = journal_path_for(opts.output)
        params = {
            "input": os.path.realpath(opts.input), "input_size": int(salvage.size),
            "volume_offset": base, "output": os.path.realpath(opts.output),
            "volume_size": volume.volume_size, "sector_size": volume.sector_size,
            "method": int(result.method), "fvek": keys.fvek_fingerprint(result.fvek),
            "metadata_source": volume.metadata.source,
            "metadata_offset": volume.metadata.best.offset,
            "patches": _fingerprint(b"".join(o.to_bytes(8, "little") + d
                                             for o, d in opened.patches)),
            "lost": [[d.offset, d.length, d.reason] for d in opened.lost],
            "mapfile": map_digest,
        }
        journal = Journal(journal_path, params)
        report = Report(input=opts.input, output=opts.output)
        report.metadata_copies = [c.describe() for c in opened.copies]
        report.key_package = opened.key_package
        report.repairs = list(opened.repairs)
        report.notes = list(opened.notes)
        report = decrypt_to(volume, opts.output, force=opts.force, threads=opts.threads,
                            chunk_size=opts.chunk_size, progress=opts.progress,
                            hash_output=opts.hash_output, read_chunk=reader, journal=journal,
                            resume=opts.resume, report=report)
        map_path = opts.output_mapfile or default_mapfile_path(opts.output)
        bad_out = [(d["offset"], d["length"]) for d in report.damaged]
        write_mapfile(map_path, volume.volume_size, bad_out, command=opts.command,
                      started=started)
        report.output_mapfile = map_path
        for item in report.damaged:
            log.info("damaged: output offset %d (0x%x), %d bytes: %s (written as zeros)",
                        item["offset"], item["offset"], item["length"], item["reason"])
        if opts.report_path:
            import json

            with open(opts.report_path, "w", encoding="utf-8") as fh:
                json.dump(report.to_json(), fh, indent=2)
        journal.remove()
        log.info("finished: %s", report.summary())
        log.info("output mapfile: %s (%d damaged range(s), %d bytes)", map_path,
                 len(report.damaged), report.bytes_unrecovered)
        return report
    finally:
        salvage.close()


def command_line(argv: Sequence[str]) -> str:
    """The command line for logs and the mapfile header, secrets masked."""
    masked: list[str] = []
    hide = False
    secret_flags = {"-rp", "--recovery-password", "-RecoveryPassword", "-pw", "--password",
                    "-Password", "--fvek", "--vmk", "--certificate-password"}
    for arg in argv:
        if hide and not arg.startswith("-"):
            masked.append("***")
            hide = False
            continue
        hide = False
        name, eq, _value = arg.partition("=")
        if name in secret_flags:
            if eq:
                masked.append(name + "=***")
            else:
                masked.append(arg)
                hide = True
            continue
        masked.append(arg)
    return shlex.join(masked)


__all__ = ["LOST_BOOT_CODE", "LOST_BOOT_SECTOR", "Opened", "RepairOptions", "command_line",
           "default_mapfile_path", "integrity_of", "locate_tolerant", "log_file",
           "open_damaged", "repair"]
