"""A BitLocker volume: its metadata, unlocking it, and reading it decrypted.

:class:`BdeVolume` is thin. Opening reads the metadata copies (:mod:`bdekit.format.metadata`);
:meth:`BdeVolume.unlock` finds the FVEK (:mod:`bdekit.unlock`), makes the sector cipher, checks
each copy's SHA-256 integrity, reads the used-space-only bitmaps (verified,
:mod:`bdekit.format.eow`; spans nothing proves are decided by content,
:mod:`bdekit.volume.guess`, and listed in :attr:`BdeVolume.guessed`) and verifies the boot
sector and the volume size (:mod:`bdekit.volume.bootcheck`: ``boot_sector_verified``,
``size_source``; what was decided in ``notes`` / ``repairs``, the sectors it could not verify
in ``guessed``). A volume whose boot sector cannot be verified still opens (its first sectors
read as zeros), with a warning. Then the read planner (:mod:`bdekit.volume.planner`, pure
functions) maps the volume once, and every read is its planned runs: zero-filled, copied, or
read and decrypted in place over whole runs (:mod:`bdekit.crypto.ciphers`), straight into the
caller's buffer. A read that is not sector aligned goes through one bounce buffer.
:meth:`BdeVolume.open` gives the file object (:mod:`bdekit.volume.stream`); :func:`open_volume`
does all of it from a path.
"""

from __future__ import annotations

import enum
import logging
import os
from typing import Any

from bdekit.crypto import ciphers
from bdekit.errors import BdeError, WrongKeyError
from bdekit.escrow.secrets import AttemptHook, Secrets, UnlockResult
from bdekit.format.constants import EncryptionMethod, VolumeState
from bdekit.format.copies import read_metadata
from bdekit.format.eow import EowLayout, probe_eow_offsets, read_eow
from bdekit.format.filetime import filetime_to_datetime
from bdekit.format.layout import round_up
from bdekit.format.metadata import CopyIntegrity, Metadata
from bdekit.format.protector import Protector, protectors_of
from bdekit.image.bounded import read_bek
from bdekit.image.imagesource import ImageSource, SliceSource
from bdekit.image.locate import partition_size, volume_source
from bdekit.image.ranges import Damage
from bdekit.unlock.attempt import unlock
from bdekit.unlock.integrity import settle
from bdekit.volume.bootcheck import BootInputs, BootPlan, check_boot
from bdekit.volume.guess import decide_sectors, guessed_damage
from bdekit.volume.planner import (
    Run,
    RunKind,
    SegmentMap,
    build_map,
    merge_runs,
    reserved_regions,
    volume_layout,
)
from bdekit.volume.probe import detect_sector_size
from bdekit.volume.stream import DecryptedStream

log = logging.getLogger(__name__)


class SizeSource(enum.StrEnum):
    """Where the size of the decrypted volume came from."""

    BOOT_SECTOR = "boot sector"  # the decrypted boot sector (NTFS, FAT, exFAT or ReFS)
    IMAGE = "image"  # the image (no readable boot sector)
    BACKUP_BOOT_SECTOR = "backup boot sector"  # the file system's backup boot sector
    STATE_OFFSET = "state offset"  # the encrypted size the metadata records


class BdeVolume:
    """An opened (and, once :meth:`unlock` succeeded, readable) BitLocker volume.

    ``source`` is the image source of the volume (:mod:`bdekit.image.sources`; a partition is a
    :class:`~bdekit.image.imagesource.SliceSource`).
    """

    def __init__(self, source: ImageSource, *, path: str | None = None,
                 metadata: Metadata | None = None) -> None:
        self.source = source
        self.path = path or source.path
        self.image_size: int = int(source.size)
        self.metadata = metadata or read_metadata(self._read, self.path, self.image_size)
        self.header = self.metadata.header
        self.sector_size = self.header.bytes_per_sector
        self.unlocked: UnlockResult | None = None
        self.cipher: ciphers.SectorCipher | None = None
        self.volume_size: int = self.image_size
        self.size_source = SizeSource.IMAGE
        self.map: SegmentMap | None = None
        self.eow: EowLayout | None = None
        # repair hook (bdekit.repair): (volume size, where it came from) when the boot sector
        # that normally gives it is damaged; None = from the boot sector / the image.
        self.size_override: tuple[int, SizeSource] | None = None
        #: whether sector 0 is a valid boot sector (None until unlocked); False: it reads as
        #: zeros and ``guessed`` lists it
        self.boot_sector_verified: bool | None = None
        self.boot: BootPlan | None = None
        #: volume ranges whose plaintext is not proven (decided by content, or unverified)
        self.guessed: list[Damage] = []
        #: what opening decided, for the report
        self.notes: list[str] = []
        self.repairs: list[str] = []

    # -- raw access -----------------------------------------------------------------------
    def _read(self, offset: int, length: int) -> bytes:
        if offset >= self.image_size:
            return b""
        return bytes(self.source.read_at(offset, min(length, self.image_size - offset)))

    @property
    def protectors(self) -> list[Protector]:
        return protectors_of(self.metadata)

    # -- unlocking --------------------------------------------------------------------------
    def unlock(self, secrets: Secrets, *, on_attempt: AttemptHook | None = None) -> UnlockResult:
        """Unlock with the first secret that fits a protector (``on_attempt``: called for
        every secret tried, e.g. the audit log) and make the volume readable."""
        result = unlock(self.metadata, secrets, path=self.path, on_attempt=on_attempt)
        self.set_key(result)
        return result

    def set_key(self, result: UnlockResult) -> None:
        self.unlocked = result
        method = result.method
        if self.metadata.state == VolumeState.DECRYPTED and method == EncryptionMethod.NONE:
            self.cipher = None
        else:
            self.verify_integrity()
            self._confirm_sector_size(method, result.fvek)
            self.cipher = ciphers.make_cipher(method, result.fvek, self.sector_size)
        self.verify_integrity()
        self.eow = self._load_eow()
        self._build_map()
        if (result.via == "fvek" and not self.boot_sector_verified
                and self.size_override is None and self.metadata.version >= 2):
            # nothing authenticates a raw FVEK: a boot sector that does not decrypt is the
            # only sign of a wrong one (or of a damaged relocated header: use repair then)
            self.unlocked = None
            self.map = None
            raise WrongKeyError("the FVEK given does not decrypt the volume's boot sector: "
                                "wrong FVEK (or a damaged relocated header; try "
                                "'bdekit repair')", path=self.path)

    def _confirm_sector_size(self, method: int, fvek: bytes) -> None:
        """The header's bytes-per-sector is plaintext that nothing authenticates: keep it when
        the relocated boot sector decrypts under it to a boot sector that says the same, or
        when no size does; take the size that does otherwise (and say so)."""
        virt = self.metadata.virtualization
        if virt is None or self.metadata.version < 2:
            return
        hit = detect_sector_size(self._read, method, fvek, virt[0])
        if hit is None or hit[0] == self.sector_size:
            return
        log.warning("the volume header says %d-byte sectors, but the relocated boot sector "
                    "decrypts only with %d-byte sectors: using %d (damaged header field)",
                    self.sector_size, hit[0], hit[0])
        self.metadata.decisions.append(
            {"field": "bytes per sector (volume header)", "copies": {"header": self.sector_size},
             "decided_by": f"the relocated boot sector decrypts with {hit[0]}-byte sectors"})
        self.sector_size = hit[0]
        self.header = self.metadata.header = self.header.with_sector_size(hit[0])

    def verify_integrity(self) -> None:
        """Weigh the copies with the VMK (SHA-256 integrity datums); the one that verifies
        serves (see :func:`bdekit.unlock.integrity.settle`)."""
        vmk = self.unlocked.vmk if self.unlocked else None
        md = self.metadata
        settlement = settle(md, vmk)
        md.best = settlement.serving
        md.trust = str(settlement.trust)
        # weighed more than once (before and after the sector size is confirmed): keep what
        # an earlier weighing decided (which copy serves instead of which)
        md.decisions = [*settlement.decisions,
                        *(d for d in md.decisions if d not in settlement.decisions)]
        for copy in md.copies:
            if copy.integrity == CopyIntegrity.MISMATCH:
                log.warning("metadata copy %d at offset %d fails its SHA-256 integrity check",
                            copy.index, copy.offset)

    # -- layout -----------------------------------------------------------------------------
    def _load_eow(self) -> EowLayout | None:
        """The used-space-only bitmaps, read and verified once (:func:`read_eow`: spans that
        nothing proves are decided by content). A header whose GUID record lost its EOW GUID
        is still searched for EOW offsets after its metadata offsets."""
        offsets = self.header.eow_offsets or probe_eow_offsets(self._read, self.header.raw,
                                                               self.header.guid_record_offset)
        if not offsets:
            return None
        return read_eow(self._read, offsets, self.sector_size, self.path)

    def _build_map(self) -> None:
        boot = self.boot = self._check_boot()
        if boot.sector_size and boot.sector_size != self.sector_size:
            self._adopt_sector_size(boot.sector_size)
        self.volume_size, self.size_source = boot.size, SizeSource(boot.size_source)
        self.boot_sector_verified = boot.verified
        layout = volume_layout(self.metadata, volume_size=self.volume_size,
                               image_size=self.image_size, encrypted=self.cipher is not None,
                               eow=self.eow, sector_size=self.sector_size,
                               relocated_state=boot.relocated_state, boot=tuple(boot.paints))
        self.map = build_map(layout)
        runs = self.plan(0, self.volume_size)
        self.guessed = [*guessed_damage(runs, self.eow),
                        *(d for d in boot.damage if d.offset < self.volume_size)]
        eow_notes = self.eow.notes if self.eow is not None else []
        self.notes = [*eow_notes, *boot.notes]
        self.repairs = list(boot.repairs)
        if not boot.verified:
            log.warning("the boot sector of the volume cannot be verified: the first sectors "
                        "read as zeros")

    def _check_boot(self) -> BootPlan:
        override = self.size_override
        return check_boot(BootInputs(
            read=self._read, image_size=self.image_size, sector_size=self.sector_size,
            metadata=self.metadata, cipher=self.cipher, eow=self.eow,
            partition_size=partition_size(self.source),
            size_override=(override[0], str(override[1])) if override else None,
            cipher_for=self._cipher_for))

    def _cipher_for(self, sector_size: int) -> ciphers.SectorCipher | None:
        if self.cipher is None or self.unlocked is None:
            return None
        return ciphers.make_cipher(self.unlocked.method, self.unlocked.fvek, sector_size)

    def _adopt_sector_size(self, sector_size: int) -> None:
        """The boot sector check proved another sector size than the header's."""
        self.metadata.decisions.append(
            {"field": "bytes per sector (volume header)", "copies": {"header": self.sector_size},
             "decided_by": f"the backup boot sector decrypts with {sector_size}-byte sectors"})
        self.sector_size = sector_size
        self.header = self.metadata.header = self.header.with_sector_size(sector_size)
        self.cipher = self._cipher_for(sector_size)

    def reserved_regions(self) -> list[tuple[int, int]]:
        """The (offset, length) regions of the volume that read as zeros."""
        return reserved_regions(self.metadata, self.eow)

    # -- reading ----------------------------------------------------------------------------
    def plan(self, offset: int, length: int) -> list[Run]:
        if self.map is None:
            raise BdeError("volume is locked: unlock it first", path=self.path)
        return merge_runs(self.map.runs(offset, length))

    def read_into(self, offset: int, buf: memoryview | bytearray) -> int:
        """Fill ``buf`` with decrypted bytes from ``offset``; returns bytes filled (short at the
        end of the volume). Missing ranges read as zeros. Safe from several threads."""
        mv = memoryview(buf).cast("B")
        length = min(len(mv), max(0, self.volume_size - offset))
        if length <= 0:
            return 0
        ss = self.sector_size
        a = offset - offset % ss
        b = round_up(offset + length, ss)
        if a == offset and b == offset + length:
            self._read_aligned(a, mv[:length])
        else:
            tmp = bytearray(b - a)
            self._read_aligned(a, memoryview(tmp))
            mv[:length] = tmp[offset - a:offset - a + length]
        return length

    def _read_aligned(self, offset: int, out: memoryview) -> None:
        seg = self.map.segment_at(offset, len(out)) if self.map is not None else None
        if seg is not None:  # the common small read: one segment, no runs to plan
            self._read_run(seg.kind, offset + seg.delta, seg.encrypted, out)
            return
        pos = 0
        for run in self.plan(offset, len(out)):
            dst = out[pos:pos + run.length]
            pos += run.length
            self._read_run(run.kind, run.source, run.encrypted, dst)

    def _read_run(self, kind: RunKind, source: int, encrypted: bool, dst: memoryview) -> None:
        if kind in (RunKind.ZERO, RunKind.MISSING):
            dst[:] = bytes(len(dst))
            return
        n = self._fill(source, dst)
        if n < len(dst):
            dst[n:] = b"\0" * (len(dst) - n)
        if kind == RunKind.GUESSED:
            decide_sectors(dst, source, self.cipher, self.sector_size, encrypted)
        elif kind == RunKind.VISTA_HEADER:
            dst[3:11] = b"NTFS    "
            dst[0x38:0x40] = int(self.metadata.block_header.virtualized_offset).to_bytes(
                8, "little")
        elif encrypted and self.cipher is not None:
            self.cipher.decrypt(dst, dst, source)

    def _fill(self, source_offset: int, dst: memoryview) -> int:
        return int(self.source.readinto_at(source_offset, dst))

    def open(self) -> DecryptedStream:
        return DecryptedStream(self)

    def describe(self) -> dict[str, Any]:
        md = self.metadata
        bh = md.block_header
        out: dict[str, Any] = {
            "path": self.path,
            "image_offset": self.source.offset if isinstance(self.source, SliceSource) else 0,
            "container": self.source.kind,
            "metadata_version": md.version,
            "header_kind": self.header.kind,
            "encryption_method": md.method_name,
            "encryption_method_id": md.method,
            "volume_guid": str(md.volume_guid).upper(),
            "created": _iso(md.dataset.creation_time),
            "description": md.description,
            "state": md.state_name,
            "next_state": int(bh.next_state),
            "state_offset": int(bh.state_offset),
            "sector_size": self.sector_size,
            "image_size": self.image_size,
            "volume_size": self.volume_size if self.unlocked else None,
            "volume_size_source": self.size_source if self.unlocked else None,
            "metadata_source": md.source,
            "metadata_copy_used": md.best.index,
            "metadata_copies": [c.describe() for c in md.copies],
            "relocated_header": list(md.virtualization) if md.virtualization else None,
            "used_space_only": bool(self.header.eow_offsets),
            "boot_sector_verified": self.boot_sector_verified,
            "protectors": [p.describe() for p in self.protectors],
        }
        return out


def _iso(filetime: int) -> str | None:
    value = filetime_to_datetime(int(filetime))
    return value.isoformat() if value else None


def open_volume(path: str | os.PathLike[str] | ImageSource, *, secrets: Secrets | None = None,
                recovery_password: str | None = None, password: str | None = None,
                bek: str | os.PathLike[str] | None = None, fvek: bytes | str | None = None,
                vmk: bytes | str | None = None, offset: int | None = None,
                partition: int | None = None) -> DecryptedStream:
    """Open a BitLocker image and return its decrypted volume as a file object.

    ``path`` may be a path (raw, split, E01, VHD/VHDX; a partitioned disk with ``offset`` or
    ``partition``, or the single BitLocker partition) or an image source object.
    """
    sec = secrets or Secrets()
    if recovery_password:
        sec.recovery_passwords.append(recovery_password)
    if password:
        sec.passwords.append(password)
    if bek:
        sec.beks.append(read_bek(bek))
    if fvek:
        sec.fvek = bytes.fromhex(fvek) if isinstance(fvek, str) else fvek
    if vmk:
        sec.vmk = bytes.fromhex(vmk) if isinstance(vmk, str) else vmk
    volume = open_bde(path, offset=offset, partition=partition)
    volume.unlock(sec)
    return volume.open()


def open_bde(path: str | os.PathLike[str] | ImageSource, *, offset: int | None = None,
             partition: int | None = None) -> BdeVolume:
    """Open the BitLocker volume in an image (locked; call ``unlock``)."""
    source = volume_source(path, offset=offset, partition=partition)
    return BdeVolume(source, path=source.path)

