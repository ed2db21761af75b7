"""Salvage without metadata: an FVEK (from memory forensics, say) and the image, nothing else.

When every metadata copy is destroyed, or the capture stops before the first one, and no key
package is at hand, ``repair --fvek HEX`` still decrypts what the image holds. Nothing tells
the layout, so each fact is taken from the image, with its evidence in the report's notes,
and every range a fact only guesses lands in the damage list (the exit code is then 6):

1. **Method and sector size**: ``--method``, or inferred by trial decryption
   (:mod:`bdekit.recovery.method_guess`). A key under which nothing in the image decrypts to
   structure is refused (exit 4); several methods that fit as well need ``--method``.
2. **The boot sector**: every sector of the image is tried as a boot sector, decrypted and as
   stored. One that describes the volume and does not lie in its last sector is the relocated
   header block (its first sector is the volume's sector 0; its extent, 8 KiB, is Windows'
   usual one: the sectors after the boot sector are reported as a guess, and so is the block's
   own region, which reads as zeros). Else the NTFS backup boot sector in the last sector
   replaces sector 0 and the rest of the first 8 KiB is lost. Else the first 8 KiB are lost
   and the volume size is the image's. A boot sector in plaintext at offset 0 means the
   volume's start was never relocated.
3. **Metadata regions**: the offsets the volume header names (when sector 0 still holds one),
   and every sector-aligned ``-FVE-FS-`` signature the scan found, damaged copies included.
   They read as zeros, reported as a guess (64 KiB each).
4. **Used-space-only structures**: EOW information blocks the header or the scan names are
   read as usual (their CRCs decide whether their bitmaps are used).
5. **Every other sector** is judged by its own bytes (:mod:`bdekit.recovery.sector_judge`):
   the conversion state is unknown.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid

from bdekit.crypto import ciphers
from bdekit.errors import UsageError, WrongKeyError
from bdekit.escrow.keypackage import block_header_container
from bdekit.escrow.secrets import UnlockResult, UnlockVia
from bdekit.format import structs
from bdekit.format.bootsector import BootSector
from bdekit.format.constants import VolumeState
from bdekit.format.datum_build import dataset_header
from bdekit.format.layout import V2_METADATA_REGION
from bdekit.format.metadata import (
    HeaderKind,
    Metadata,
    MetadataCopy,
    MetadataSource,
    VolumeHeader,
    stand_in_header,
)
from bdekit.image.ranges import Damage
from bdekit.recovery.boot_search import (
    boot_sector_hits,
    decrypt_sector,
    plain_boot_sector_hits,
)
from bdekit.recovery.layout import LOST_BOOT_CODE, RELOCATED_SIZE
from bdekit.recovery.metadata_scan import SECTOR_SIZES, ReadFn, ScanResult
from bdekit.recovery.method_guess import Candidate, guess_method
from bdekit.volume.bde import SizeSource

log = logging.getLogger(__name__)

GUESS_METADATA = ("guess: metadata region at the offset {where} names (reads as zeros; its "
                  "extent, 64 KiB, is Windows' usual)")
GUESS_RELOCATED = ("guess: relocated header block found by trial decryption (reads as zeros; "
                   "its extent, 8 KiB, is Windows' usual)")
LOST_BOOT = ("boot sector not found (the relocated header block and the backup boot sector "
             "are missing or damaged): not recoverable")
GUESS_BOOT_CODE = ("guess: sectors after the boot sector, from the relocated header block "
                   "(its extent, 8 KiB, is Windows' usual)")


@dataclasses.dataclass
class Salvage:
    """What the image says about a volume whose metadata is gone."""

    metadata: Metadata
    result: UnlockResult
    volume_size: int
    size_source: SizeSource
    patches: list[tuple[int, bytes]] = dataclasses.field(default_factory=list)
    lost: list[Damage] = dataclasses.field(default_factory=list)
    doubts: list[Damage] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    repairs: list[str] = dataclasses.field(default_factory=list)

    def note(self, text: str) -> None:
        self.notes.append(text)
        log.warning("salvage: %s", text)


@dataclasses.dataclass
class _Boot:
    """Where the volume's boot sector was found."""

    relocated: int | None = None  # offset of the relocated header block
    plain: bool = False  # the relocated boot sector is stored in plaintext
    at_zero: bool = False  # a boot sector in plaintext at offset 0: nothing relocated
    backup: tuple[int, bytes] | None = None  # (offset, decrypted sector) of the NTFS backup
    info: BootSector | None = None


def salvage_with_fvek(read: ReadFn, image_size: int, fvek: bytes, *, method: int | None,
                      header: VolumeHeader | None, scan: ScanResult | None,
                      path: str | None) -> Salvage:
    """A stand-in for the lost metadata, built from ``fvek`` and the image (module
    docstring)."""
    cand, confirmed = _method(read, image_size, fvek, method, path)
    ss = cand.sector_size
    boot = _find_boot(read, image_size, cand)
    regions = _metadata_regions(header, scan, image_size, ss)
    eow = _eow_offsets(header, scan, image_size)
    md = _stand_in(cand, boot, regions, eow, header)
    result = UnlockResult(fvek=cand.key, method=int(cand.method), via=UnlockVia.FVEK,
                          source="--fvek")
    size = boot.info.volume_size if boot.info is not None else image_size
    source = SizeSource.IMAGE if boot.info is None else (
        SizeSource.BACKUP_BOOT_SECTOR if boot.backup is not None else SizeSource.BOOT_SECTOR)
    out = Salvage(md, result, size, source)
    how = "(given)" if method is not None else (
        f"(inferred: {cand.evidence()})" if confirmed else "(the only one the key fits)")
    out.note(f"no BitLocker metadata: the layout is inferred from the image with the FVEK "
             f"given; method {cand.method.label}, {ss}-byte sectors {how}")
    if not confirmed:
        out.note("nothing in the image decrypts to file-system structure: the key is not "
                 "confirmed (the volume is partly in plaintext); every decrypted sector is "
                 "reported as a guess")
    _report_boot(out, boot, ss, read)
    for off, where in regions:
        out.lost.append(Damage(off, V2_METADATA_REGION, GUESS_METADATA.format(where=where)))
    if regions:
        out.note("metadata regions at " + ", ".join(f"{o} ({w})" for o, w in regions)
                 + ": written as zeros, reported as guesses")
    if eow:
        out.note(f"used-space-only (EOW) information blocks at {eow}: their bitmaps decide "
                 "which chunks are encrypted where their CRCs hold")
    out.note("every other sector is judged by its own bytes (the conversion state is "
             "unknown): only sectors whose plaintext shows structure are left unreported")
    return out


def _method(read: ReadFn, image_size: int, fvek: bytes, method: int | None,
            path: str | None) -> tuple[Candidate, bool]:
    """(the method and sector size, whether the image confirms the key)."""
    winner, ranked = guess_method(read, image_size, fvek, method=method)
    if winner is not None:
        return winner, True
    methods = {(c.method, c.key) for c in ranked}
    if ranked and ranked[0].score > 0:
        if len(methods) == 1:
            return ranked[0], True
        scores = "; ".join(c.evidence() for c in ranked[:6])
        raise UsageError("cannot tell the encryption method from the image (" + scores
                         + "): give it with --method", path=path)
    # nothing decrypts to structure: only a volume left partly in plaintext (a boot sector
    # stored as is) makes a salvage worth it, and only with one method to choose
    plain = _plain_boot(read, image_size)
    if plain is None:
        raise WrongKeyError("the FVEK given decrypts nothing in the image to file-system "
                            "structure under any method it may belong to (no boot sector, no "
                            "NTFS record, no structured sector): wrong FVEK, or nothing of "
                            "the file system is left", path=path)
    if len(methods) > 1:
        raise UsageError("nothing in the image decrypts to file-system structure under any "
                         "method the FVEK may belong to (the volume is partly in plaintext): "
                         "give the method with --method", path=path)
    ss = plain.bytes_per_sector
    cand = next((c for c in ranked if c.sector_size == ss), ranked[0])
    return cand, False


def _plain_boot(read: ReadFn, image_size: int) -> BootSector | None:
    for ss in SECTOR_SIZES:
        hits = plain_boot_sector_hits(read, image_size, ss)
        if hits:
            return max((info for _o, info in hits), key=lambda i: i.volume_size)
    return None


def _find_boot(read: ReadFn, image_size: int, cand: Candidate) -> _Boot:
    """The relocated boot sector, or the backup, of the volume (module docstring, step 2)."""
    ss = cand.sector_size
    hits = [(off, info, False) for off, info in
            boot_sector_hits(read, image_size, cand.method, cand.key, ss)]
    hits += [(off, info, True) for off, info in plain_boot_sector_hits(read, image_size, ss)]
    if not hits:
        return _Boot()
    size = max(info.volume_size for _o, info, _p in hits)
    best = [(o, info, p) for o, info, p in hits if info.volume_size == size]
    for off, info, plain in best:
        if off == 0 and plain:
            return _Boot(at_zero=True, info=info)
    for off, info, plain in best:
        if off != size - ss and off > 0:
            return _Boot(relocated=off, plain=plain, info=info)
    off, info, plain = best[0]
    raw = read(off, ss)
    cipher = ciphers.make_cipher(cand.method, cand.key, ss)
    sector = raw if plain else decrypt_sector(cipher, raw, off)
    return _Boot(backup=(off, sector), info=info)


def _report_boot(out: Salvage, boot: _Boot, ss: int, read: ReadFn) -> None:
    nvirt = max(RELOCATED_SIZE, ss)
    if boot.at_zero:
        out.patches.append((0, read(0, ss)))
        out.note("a boot sector in plaintext at offset 0: the volume's start was never "
                 "relocated")
    elif boot.relocated is not None:
        how = "stored in plaintext" if boot.plain else "decrypted"
        out.note(f"relocated header block found at offset {boot.relocated} by trial "
                 f"decryption: a boot sector ({how}) describing a {out.volume_size}-byte "
                 "volume")
        out.lost.append(Damage(boot.relocated, nvirt, GUESS_RELOCATED))
        if nvirt > ss:
            out.doubts.append(Damage(ss, nvirt - ss, GUESS_BOOT_CODE))
    elif boot.backup is not None:
        off, sector = boot.backup
        out.patches.append((0, sector))
        out.lost.append(Damage(ss, nvirt - ss, LOST_BOOT_CODE))
        out.repairs.append(f"boot sector rebuilt from its backup in the last sector (offset "
                           f"{off}; volume size {out.volume_size})")
        out.note(out.repairs[-1] + "; the relocated header block was not found")
    else:
        out.lost.append(Damage(0, nvirt, LOST_BOOT))
        out.note(f"no boot sector found (relocated or backup): the first {nvirt} bytes are "
                 f"lost and the volume size is the image's ({out.volume_size})")


def _metadata_regions(header: VolumeHeader | None, scan: ScanResult | None,
                      image_size: int, ss: int) -> list[tuple[int, str]]:
    found: dict[int, str] = {}
    if scan is not None:
        for off in scan.signatures:
            found.setdefault(off, "a metadata block signature found by the scan")
    if header is not None and header.kind != HeaderKind.VISTA:
        for off in header.metadata_offsets:
            found.setdefault(int(off), "the volume header")
    return sorted((o, w) for o, w in found.items()
                  if 0 < o < image_size and o % ss == 0)


def _eow_offsets(header: VolumeHeader | None, scan: ScanResult | None,
                 image_size: int) -> list[int]:
    offsets = list(scan.eow_offsets) if scan is not None else []
    if header is not None:
        offsets += [o for o in header.eow_offsets if o not in offsets]
    return [o for o in offsets if 0 < o < image_size][:2]


def _stand_in(cand: Candidate, boot: _Boot, regions: list[tuple[int, str]], eow: list[int],
              header: VolumeHeader | None) -> Metadata:
    ss = cand.sector_size
    offsets = [o for o, _w in regions[:3]]
    reloc = boot.relocated or 0
    bh = block_header_container(
        metadata_offsets=offsets, virtualized_offset=reloc,
        virtualized_sectors=max(1, RELOCATED_SIZE // ss) if reloc else 0,
        current_state=VolumeState.ENCRYPTED, next_state=VolumeState.ENCRYPTED)
    dataset = structs.DATASET_HEADER.parse(structs.DATASET_HEADER.build(dataset_header(
        uuid.UUID(int=0), nonce_counter=0, method=int(cand.method), creation_time=0)))
    spc = header.sectors_per_cluster if header is not None else 8
    stand = stand_in_header(2, offsets, eow_offsets=eow, sector_size=ss,
                            sectors_per_cluster=spc or 8)
    copy = MetadataCopy(index=0, offset=0, status="salvage: no metadata", block_header=bh,
                        dataset_header=dataset, datums=[], block=b"", crc_ok=False)
    return Metadata(header=stand, copies=[copy], best=copy, source=MetadataSource.SALVAGE)


__all__ = ["Salvage", "salvage_with_fvek"]
