"""The decrypted view of a BitLocker volume: a read planner and a file-like stream.

The volume a user sees differs from the bytes on disk in a few places, all handled by planning
each read as *runs* before any byte is read:

* ``RELOCATED`` — Windows 7+: the first ``virtualized sectors`` of the volume (the original
  boot sector and what follows it) are served from the relocated header block, decrypted with
  the relocated (physical) positions as IV / tweak.
* ``VISTA_HEADER`` — Vista: sector 0 is the BitLocker header with its OEM field turned back
  into ``NTFS    `` and the u64 at 0x38 replaced by the MFT mirror cluster of the block header;
  the rest of the first 8 KiB is plaintext.
* ``ZERO`` — the metadata copies (64 KiB each on v2, 16 KiB rounded to the cluster on v1), the
  relocated header block itself, and on used-space-only volumes the EOW information blocks,
  bitmaps and conversion logs.
* ``PLAIN`` / ``ENCRYPTED`` — partly converted volumes: below the state offset encrypted, at or
  above it plaintext; on used-space-only (EOW) volumes, per chunk by the current bitmap record
  (one bit per chunk, LSB first, set = encrypted).
* ``MISSING`` — ranges whose ciphertext lies beyond the end of the image (truncated capture).

The map from volume offsets to runs is built once when the volume opens (a sorted list of
segments), so planning a read is a bisect and a slice: cheap enough for 20,000+ random 4 KiB
reads a second. Decryption goes through :mod:`bdekit.ciphers` over whole runs.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Any

from bdekit.crypto import ciphers
from bdekit.errors import BdeError, FormatError, WrongKeyError
from bdekit.escrow.secrets import Secrets, UnlockResult
from bdekit.format.bootsector import boot_sector_size
from bdekit.format.constants import DatumType, EncryptionMethod, VolumeState
from bdekit.format.eow import EowLayout, read_eow
from bdekit.format.layout import round_up
from bdekit.format.metadata import V1_METADATA_REGION, V2_METADATA_REGION, Metadata, read_metadata
from bdekit.format.protector import protectors_of
from bdekit.unlock.attempt import unlock
from bdekit.unlock.vmk import unwrap_key
from bdekit.volume.planner import Run, RunKind, SegmentMap, _bitmap_runs, merge_runs
from bdekit.volume.stream import DecryptedStream

log = logging.getLogger(__name__)



class BdeVolume:
    """An opened (and, once :meth:`unlock` succeeded, readable) BitLocker volume.

    ``source`` is any object with ``size``, ``read_at(offset, length)`` and
    ``readinto_at(offset, buffer)`` (see :mod:`bdekit.sources`).
    """

    def __init__(self, source: Any, *, path: str | None = None,
                 metadata: Metadata | None = None) -> None:
        self.source = source
        self.path = path or getattr(source, "path", None)
        self.image_size: int = int(source.size)
        self.metadata = metadata or read_metadata(self._read, self.path, self.image_size)
        self.header = self.metadata.header
        self.sector_size = self.header.bytes_per_sector
        self.unlocked: UnlockResult | None = None
        self.cipher: ciphers.SectorCipher | None = None
        self.volume_size: int = self.image_size
        self.size_source = "image"
        self.map: SegmentMap | None = None
        self.eow: EowLayout | None = None
        # repair hook (bdekit.repair): (volume size, where it came from) when the boot sector
        # that normally gives it is damaged; None = from the boot sector / the image.
        self.size_override: tuple[int, str] | None = None

    # -- raw access -----------------------------------------------------------------------
    def _read(self, offset: int, length: int) -> bytes:
        if offset >= self.image_size:
            return b""
        return bytes(self.source.read_at(offset, min(length, self.image_size - offset)))

    @property
    def protectors(self) -> list[Any]:
        return protectors_of(self.metadata)

    # -- unlocking --------------------------------------------------------------------------
    def unlock(self, secrets: Secrets, **kwargs: Any) -> UnlockResult:
        result = unlock(self.metadata, secrets, path=self.path, **kwargs)
        self.set_key(result)
        return result

    def set_key(self, result: UnlockResult) -> None:
        self.unlocked = result
        method = result.method
        if self.metadata.state == VolumeState.DECRYPTED and method == EncryptionMethod.NONE:
            self.cipher = None
        else:
            self.cipher = ciphers.make_cipher(method, result.fvek, self.sector_size)
        self.verify_integrity()
        self.eow = self._load_eow()
        self._build_map()
        if (result.via == "fvek" and self.size_source == "image" and self.size_override is None
                and self.metadata.version >= 2):
            # nothing authenticates a raw FVEK: a boot sector that does not decrypt is the
            # only sign of a wrong one (or of a damaged relocated header: use repair then)
            self.unlocked = None
            self.map = None
            raise WrongKeyError("the FVEK given does not decrypt the volume's boot sector: "
                                "wrong FVEK (or a damaged relocated header; try "
                                "'bdekit repair')", path=self.path)

    def verify_integrity(self) -> None:
        """Check each copy's SHA-256 validation datum with the VMK (when known)."""
        vmk = self.unlocked.vmk if self.unlocked else None
        for copy in self.metadata.copies:
            if not copy.usable:
                continue
            if vmk is None or copy.validation is None:
                copy.integrity = "unavailable"
                continue
            try:
                inner = unwrap_key(copy.validation, vmk)
            except (WrongKeyError, BdeError):
                copy.integrity = "mismatch"
                continue
            digest = bytes(inner.body.key) if inner.type == DatumType.KEY else b""
            copy.integrity = "ok" if digest == hashlib.sha256(copy.block).digest() else "mismatch"
            if copy.integrity != "ok":
                log.warning("metadata copy %d at offset %d fails its SHA-256 integrity check",
                            copy.index, copy.offset)

    # -- layout -----------------------------------------------------------------------------
    def _load_eow(self) -> EowLayout | None:
        """The used-space-only bitmaps, read once; damaged ones mean "all encrypted"."""
        if not self.header.eow_offsets:
            return None
        try:
            return read_eow(self._read, self.header.eow_offsets, self.sector_size, self.path)
        except FormatError as exc:
            log.warning("used-space-only bitmaps unusable (%s): treating every chunk as "
                        "encrypted", exc.one_line())
            return None

    def _build_map(self) -> None:
        md = self.metadata
        ss = self.sector_size
        self.volume_size, self.size_source = self._volume_size()
        size = self.volume_size
        decrypted = md.state == VolumeState.DECRYPTED or self.cipher is None
        smap = SegmentMap(size, RunKind.PLAIN if decrypted else RunKind.ENCRYPTED, not decrypted)
        if not decrypted:
            if self.eow is not None:
                # built in one pass: a bitmap may hold tens of thousands of runs, too many to
                # paint one by one
                plain: list[tuple[int, int]] = []
                for region_off, region_size, bitmap, bits in self.eow.regions:
                    for start, end, enc in _bitmap_runs(bitmap, bits, self.eow.chunk_size):
                        if not enc:
                            plain.append((region_off + start,
                                          region_off + min(end, region_size)))
                smap = SegmentMap.from_plain_ranges(size, plain)
            else:
                state_offset = int(md.block_header.state_offset)
                if state_offset and state_offset < size:
                    smap.paint(state_offset, size, RunKind.PLAIN, 0, False)
        # zero regions
        for start, length in self.reserved_regions():
            smap.paint(start, start + length, RunKind.ZERO, 0, False)
        # header
        if md.version == 1:
            smap.paint(0, ss, RunKind.VISTA_HEADER, 0, False)
            smap.paint(ss, 0x2000, RunKind.PLAIN, 0, False)
        else:
            virt = md.virtualization
            if virt is not None:
                voff, vsize = virt
                nvirt = int(md.block_header.virtualized_sectors) * ss or vsize
                # the relocated sectors keep the encryption state of where they lie
                enc_runs = self._state_runs(smap, voff, nvirt, decrypted)
                for a, b, enc in enc_runs:
                    smap.paint(a - voff, b - voff, RunKind.RELOCATED, voff, enc)
        # missing tail: whatever lies beyond the image
        if self.image_size < size:
            self._paint_missing(smap)
        self.map = smap
        log.debug("volume map: %d segments over %d bytes", len(smap), size)

    def _state_runs(self, smap: SegmentMap, start: int, length: int,
                    decrypted: bool) -> list[tuple[int, int, bool]]:
        if decrypted:
            return [(start, start + length, False)]
        out = []
        pos = start
        end = start + length
        if self.eow is not None:
            for region_off, region_size, bitmap, bits in self.eow.regions:
                if region_off <= pos < region_off + region_size:
                    for a, b, enc in _bitmap_runs(bitmap, bits, self.eow.chunk_size):
                        a += region_off
                        b = min(b + region_off, region_off + region_size)
                        lo, hi = max(a, pos), min(b, end)
                        if lo < hi:
                            out.append((lo, hi, enc))
                    return out
        return [(start, end, True)]

    def _paint_missing(self, smap: SegmentMap) -> None:
        fixes = []
        for i, seg in enumerate(smap.segs):
            seg_end = smap.starts[i + 1] if i + 1 < len(smap.starts) else smap.size
            if seg.kind == RunKind.ZERO:
                continue
            src_start = seg.start + seg.delta
            src_end = seg_end + seg.delta
            if src_end > self.image_size:
                missing_from = max(src_start, self.image_size) - seg.delta
                fixes.append((missing_from, seg_end))
        for a, b in fixes:
            smap.paint(a, b, RunKind.MISSING, 0, False)

    def reserved_regions(self) -> list[tuple[int, int]]:
        md = self.metadata
        ss = self.sector_size
        regions: list[tuple[int, int]] = []
        if md.version == 1:
            cluster = self.header.cluster_size
            region = round_up(V1_METADATA_REGION, cluster)
        else:
            region = round_up(V2_METADATA_REGION, ss)
        offsets = [int(o) for o in md.block_header.metadata_offsets]
        regions += [(o, region) for o in offsets if o]
        if md.version >= 2:
            virt = md.virtualization
            if virt is not None:
                nsec = int(md.block_header.virtualized_sectors) or 1
                regions.append((virt[0], nsec * ss))
        if self.eow is not None:
            regions += self.eow.reserved
        if md.state == VolumeState.SWITCHING_DIRTY and md.block_header.state_size:
            regions.append((int(md.block_header.state_offset), int(md.block_header.state_size)))
        return sorted(regions)

    def _volume_size(self) -> tuple[int, str]:
        if self.size_override is not None:  # repair hook
            return self.size_override
        md = self.metadata
        ss = self.sector_size
        try:
            if md.version == 1:
                first = bytearray(self._read(0, ss))
                first[3:11] = b"NTFS    "
                size = boot_sector_size(bytes(first))
            else:
                virt = md.virtualization
                if virt is None:
                    return self.image_size, "image"
                raw = self._read(virt[0], ss)
                if len(raw) < ss:
                    return self.image_size, "image"
                buf = bytearray(ss)
                if self.cipher is not None and self._relocated_encrypted(virt[0]):
                    self.cipher.decrypt(raw, buf, virt[0])
                else:
                    buf[:] = raw
                size = boot_sector_size(bytes(buf))
        except BdeError:
            size = None
        if size:
            return size, "boot sector"
        return self.image_size, "image"

    def _relocated_encrypted(self, offset: int) -> bool:
        if self.metadata.state == VolumeState.DECRYPTED:
            return False
        eow = self.eow
        if eow is not None:
            for region_off, region_size, bitmap, bits in eow.regions:
                if region_off <= offset < region_off + region_size:
                    chunk = (offset - region_off) // eow.chunk_size
                    return chunk < bits and bool(bitmap[chunk // 8] >> (chunk % 8) & 1)
        return True

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
        pos = 0
        for run in self.plan(offset, len(out)):
            dst = out[pos:pos + run.length]
            pos += run.length
            kind = run.kind
            if kind in (RunKind.ZERO, RunKind.MISSING):
                dst[:] = bytes(len(dst))
                continue
            n = self._fill(run.source, dst)
            if n < len(dst):
                dst[n:] = b"\0" * (len(dst) - n)
            if kind == RunKind.VISTA_HEADER:
                dst[3:11] = b"NTFS    "
                dst[0x38:0x40] = int(self.metadata.block_header.virtualized_offset).to_bytes(
                    8, "little")
            elif run.encrypted and self.cipher is not None:
                self.cipher.decrypt(dst, dst, run.source)

    def _fill(self, source_offset: int, dst: memoryview) -> int:
        return int(self.source.readinto_at(source_offset, dst))

    def open(self) -> DecryptedStream:
        return DecryptedStream(self)

    def describe(self) -> dict[str, Any]:
        md = self.metadata
        bh = md.block_header
        out: dict[str, Any] = {
            "path": self.path,
            "image_offset": int(getattr(self.source, "offset", 0)),
            "container": getattr(self.source, "kind", "raw"),
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
            "protectors": [p.describe() for p in self.protectors],
        }
        return out


def _iso(filetime: int) -> str | None:
    from bdekit.format.metadata import filetime_to_datetime

    value = filetime_to_datetime(int(filetime))
    return value.isoformat() if value else None


def open_volume(path: str | os.PathLike[str] | Any, *, secrets: Secrets | None = None,
                recovery_password: str | None = None, password: str | None = None,
                bek: str | os.PathLike[str] | None = None, fvek: bytes | str | None = None,
                vmk: bytes | str | None = None, offset: int | None = None,
                partition: int | None = None) -> DecryptedStream:
    """Open a BitLocker image and return its decrypted volume as a file object.

    ``path`` may be a path (raw, split, E01, VHD/VHDX; a partitioned disk with ``offset`` or
    ``partition``, or the single BitLocker partition) or an image source object.
    """
    from bdekit.format.bek import read_bek

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


def open_bde(path: str | os.PathLike[str] | Any, *, offset: int | None = None,
             partition: int | None = None) -> BdeVolume:
    """Open the BitLocker volume in an image (locked; call ``unlock``)."""
    from bdekit.image import locate

    source = locate.volume_source(path, offset=offset, partition=partition)
    return BdeVolume(source, path=getattr(source, "path", None))

