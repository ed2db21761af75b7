"""Opening a damaged BitLocker volume: which metadata, which key, which layout.

:func:`locate_tolerant` finds the volume as usual (bare volume, ``--offset``, ``--partition``
or the single BitLocker partition); when no BitLocker header is left, the whole image (or its
only partition) is taken as the volume.

:func:`open_damaged` then unlocks it with whatever survives, in this order:

1. **The volume's own copies.** The copies the volume header points to, intact (CRC) first.
   The first that unlocks gives the VMK; every copy's SHA-256 integrity datum is checked with
   it and a copy that fails is replaced by one that verifies
   (:mod:`bdekit.recovery.unlock_copies`). A key failure on an intact copy stops here: the
   secret is wrong, not the metadata.
2. **A scan of the image** (:mod:`bdekit.recovery.metadata_scan`) when the header is gone, no
   copy it points to unlocks, or the one that serves fails its SHA-256 check: the blocks found
   are tried the same way, or offer a copy that verifies.
3. **Key packages** (``-kp``, :mod:`bdekit.escrow.keypackage`) when no metadata is left. An
   intact package of another volume (its GUID differs from what is left of the metadata) is
   skipped (a damaged package's GUID is only a hint: it is tried after the others); a package
   whose key decrypts no boot sector of the image serves only when no other does, with a note.
   A package whose layout facts no checksum vouches for has its layout inferred, and every
   sector is judged by its own bytes (:mod:`bdekit.recovery.sector_judge`).
4. **Salvage** (:mod:`bdekit.recovery.salvage_keyonly`) when nothing else serves and an FVEK
   was given: the method (``--method`` or inferred), the boot sector and the metadata regions
   are taken from the image; every guess is reported.

Facts the metadata that serves lacks are inferred from the image, the key checked against it
and a damaged boot sector rebuilt from its backup (:mod:`bdekit.recovery.layout`). The result,
:class:`Opened`, holds the unlocked volume and what the output needs beyond it: sectors to
patch, ranges lost, what was repaired.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Sequence
from typing import Literal

from bdekit.errors import BdeError, NotBitLockerError, UsageError, WrongKeyError
from bdekit.escrow.keypackage import KeyPackage, package_metadata
from bdekit.escrow.secrets import Secrets, UnlockResult
from bdekit.format.constants import DatumType
from bdekit.format.copies import read_metadata
from bdekit.format.metadata import (
    Metadata,
    MetadataCopy,
    MetadataSource,
    VolumeHeader,
    parse_volume_header,
)
from bdekit.image import locate
from bdekit.image.partitions import read_partition_table
from bdekit.image.ranges import Damage
from bdekit.image.sources import ImageSource, SliceSource
from bdekit.recovery.layout import (
    RELOCATED_SIZE,
    key_fits_image,
    rebuild_boot_sector,
    sector_known,
    settle_layout,
    volume_guids,
)
from bdekit.recovery.metadata_scan import (
    ScanResult,
    metadata_from_scan,
    scan_metadata,
    source_reader,
)
from bdekit.recovery.salvage_keyonly import GUESS_BOOT_CODE, salvage_with_fvek
from bdekit.recovery.sector_judge import GUESSED_ZERO
from bdekit.recovery.unlock_copies import (
    CopyUnlocker,
    Unlocker,
    copy_name,
    ordered_copies,
    settle_copy,
)
from bdekit.unlock.integrity import Trust, integrity_of
from bdekit.volume.bde import BdeVolume, SizeSource
from bdekit.volume.planner import reserved_regions

log = logging.getLogger(__name__)

ScanMode = Literal["auto", "always", "never"]
Chosen = tuple[Metadata, UnlockResult]


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
    #: ranges whose bytes are a guess, written as read (reported, not zeroed)
    doubts: list[Damage] = dataclasses.field(default_factory=list)
    #: the layout is inferred: judge every sector by its bytes (SectorJudge)
    judge: bool = False


def locate_tolerant(source: ImageSource, offset: int | None,
                    partition: int | None) -> tuple[ImageSource, int]:
    """(volume source, its offset in the image); a volume whose header is gone is taken as
    the whole image, or the image's only partition."""
    try:
        vsrc: ImageSource = locate.volume_source(source, offset=offset, partition=partition)
    except NotBitLockerError as exc:
        vsrc = _headerless_volume(source, exc)
    base = vsrc.offset if isinstance(vsrc, SliceSource) else 0
    return vsrc, base


def _headerless_volume(source: ImageSource, exc: NotBitLockerError) -> ImageSource:
    try:
        parts = read_partition_table(source)
    except BdeError:
        parts = []
    if len(parts) == 1:
        part = parts[0]
        log.warning("%s; using the only partition (%d, at offset %d)", exc.message,
                    part.index, part.offset)
        return SliceSource(source, part.offset, part.size)
    if len(parts) > 1:
        listing = "; ".join(f"partition {p.index} at offset {p.offset}" for p in parts)
        raise UsageError(f"{exc.message}; name the damaged one with --partition "
                         f"({listing})", path=source.path) from None
    log.warning("%s; the whole image is taken as the volume", exc.message)
    return source


class _Search:
    """The search for metadata that unlocks: the volume's copies, a scan, key packages."""

    def __init__(self, src: ImageSource, secrets: Secrets, path: str | None,
                 unlocker: Unlocker | None) -> None:
        self.src = src
        self.path = path
        self.image_size = int(src.size)
        self.read = source_reader(src)
        self.tries = CopyUnlocker(src, path, secrets, unlocker)
        self.header = self._volume_header()
        #: every copy read so far (the volume's, then scanned ones)
        self.pool: list[MetadataCopy] = []
        self.chosen: Chosen | None = None
        self.scanned: list[MetadataCopy] = []
        self.found: ScanResult | None = None
        self.package: KeyPackage | None = None
        self.notes: list[str] = []

    def _volume_header(self) -> VolumeHeader | None:
        try:
            header = parse_volume_header(self.read(0, 512), self.path)
        except BdeError as exc:
            log.warning("volume header unusable: %s", exc.message)
            return None
        log.info("volume header: %s, metadata copies at %s", header.kind,
                 ", ".join(str(o) for o in header.metadata_offsets))
        return header

    # -- 1. the volume's own copies ---------------------------------------------------------
    def try_volume_copies(self) -> None:
        if self.header is None:
            return
        try:
            md = read_metadata(self.read, self.path, self.image_size)
        except BdeError as exc:
            log.warning("%s", exc.message)
            return
        self.pool = list(md.copies)
        for copy in md.copies:
            log.info("%s: %s", copy_name(copy), copy.status)
        for copy in ordered_copies(md.copies):
            # the weighed metadata (vote, decisions) with this copy serving
            candidate = dataclasses.replace(md, best=copy, source=MetadataSource.VOLUME)
            result = self.tries.attempt(candidate)
            if result is not None:
                self.chosen = settle_copy(candidate, result, self.pool)
                return
            if self.tries.wrong_on_intact:
                return

    # -- 2. a scan of the image -------------------------------------------------------------
    def needs_scan(self, scan: ScanMode) -> bool:
        if scan != "auto":
            return scan == "always"
        if self.chosen is None:
            return not self.tries.wrong_on_intact
        return self.chosen[0].trust == Trust.UNVERIFIED

    def try_scan(self) -> None:
        log.info("scanning the image for metadata blocks (%d bytes)", self.image_size)
        found = self.found = scan_metadata(self.src, path=self.path)
        groups = self._scanned_groups(found)
        if self.chosen is None:
            self._unlock_scanned(groups)
        elif self.scanned:
            self.chosen = settle_copy(*self.chosen, [*self.pool, *self.scanned])
            self.pool += self.scanned

    def _scanned_groups(self, found: ScanResult) -> list[Metadata]:
        known = {(c.offset, c.block) for c in self.pool}
        groups = [metadata_from_scan(group, found.eow_offsets, self.header)
                  for group in found.groups()]
        for group_md in groups:
            self.scanned += [c for c in group_md.copies if (c.offset, c.block) not in known]
        log.info("scan: %d metadata block(s) found, %d not already known", len(found.copies),
                 len(self.scanned))
        return groups

    def _unlock_scanned(self, groups: list[Metadata]) -> None:
        for group_md in groups:
            for copy in ordered_copies(group_md.copies):
                candidate = Metadata(header=group_md.header, copies=group_md.copies,
                                     best=copy, source=MetadataSource.SCAN)
                result = self.tries.attempt(candidate)
                if result is not None:
                    self.chosen = settle_copy(candidate, result, list(group_md.copies))
                    self.pool += [c for c in group_md.copies if c not in self.pool]
                    return

    # -- 3. key packages --------------------------------------------------------------------
    def try_packages(self, packages: Sequence[KeyPackage]) -> None:
        guids = volume_guids(self.read, self.pool, self.header)
        fallback: tuple[Chosen, KeyPackage, list[str]] | None = None
        for pkg in _package_order(packages, guids):
            log.info("trying key package %s (%s: %d VMK, %d FVEK datum(s))", pkg.path,
                     pkg.kind, len(pkg.vmks), len(pkg.fveks))
            if _other_volume(pkg, guids):
                continue
            opened = self._unlock_package(pkg)
            if opened is None:
                continue
            chosen, notes, fits = opened
            if fits:
                self.chosen, self.package, self.notes = chosen, pkg, notes
                break
            log.warning("key package %s: its key could not be checked against this image "
                        "(it decrypts no boot sector - relocated or backup - nor the first MFT "
                        "record: another volume's package, or those are damaged or missing)",
                        pkg.path)
            fallback = fallback or (chosen, pkg, notes)
        if self.chosen is None and fallback is not None:
            self._unverified_package(*fallback)
        if self.package is not None:
            log.info("key package %s serves", self.package.path)

    def _unlock_package(self, pkg: KeyPackage) -> tuple[Chosen, list[str], bool] | None:
        """(metadata and key, layout notes, whether the key fits the image), or None."""
        md = package_metadata(pkg, self.header)
        result = self.tries.attempt(md)
        if result is None:
            return None
        if not md.method and result.method:
            # the package does not record the method: the key (type) says it
            md = package_metadata(pkg, self.header, method=result.method)
        notes: list[str] = []
        md = settle_layout(md, result, self.read, self.image_size,
                           sector_known=sector_known(md, pkg), notes=notes,
                           hints=pkg.hints.get("relocated", []))
        fits = key_fits_image(md, result, self.read, self.image_size, pkg)
        return (md, result), notes, fits

    def _unverified_package(self, chosen: Chosen, pkg: KeyPackage, notes: list[str]) -> None:
        self.chosen, self.package, self.notes = chosen, pkg, notes
        notes.append(f"the key of key package {pkg.path} could not be verified against the "
                     "image: if the output is noise, the package belongs to another volume")
        log.warning(notes[-1])

    # -- nothing left -----------------------------------------------------------------------
    def nothing_unlocks(self, scanned: bool, packages: Sequence[KeyPackage],
                        skipped: Sequence[str] = ()) -> BdeError:
        if self.tries.key_errors:
            return self.tries.failure("")
        what = "no usable BitLocker metadata: "
        what += ("the volume header is gone" if self.header is None else
                 "no metadata copy the volume header points to unlocks")
        what += ("; the scan found no metadata block" if scanned and not self.scanned
                 else "; no scanned metadata block unlocks" if scanned else "")
        what += ("; no key package unlocks" if packages else
                 "; give a key package (-kp FILE) with its recovery password or key")
        if skipped:
            what += "; unreadable key package(s) skipped: " + ", ".join(skipped)
        what += "; with the FVEK (--fvek), repair salvages what the image holds"
        return self.tries.failure(what)


def _package_order(packages: Sequence[KeyPackage],
                   guids: set[uuid.UUID]) -> list[KeyPackage]:
    """Packages that name this volume first; a damaged package naming another one last."""
    def rank(pkg: KeyPackage) -> int:
        return 1 if pkg.volume_guid is not None and guids and pkg.volume_guid not in guids \
            else 0
    return sorted(packages, key=rank)


def _other_volume(pkg: KeyPackage, guids: set[uuid.UUID]) -> bool:
    """An intact package of another volume (a damaged one's GUID proves nothing)."""
    if pkg.volume_guid is None or not guids or pkg.volume_guid in guids:
        return False
    listing = ", ".join(str(g).upper() for g in sorted(guids, key=str))
    if not pkg.intact:
        log.warning("damaged key package %s names volume {%s}, not this one ({%s}): tried "
                    "anyway, its key decides", pkg.path, str(pkg.volume_guid).upper(), listing)
        return False
    log.warning("key package %s is for volume {%s}, not this one ({%s}): skipped", pkg.path,
                str(pkg.volume_guid).upper(), listing)
    return True


def open_damaged(src: ImageSource, secrets: Secrets, *, packages: Sequence[KeyPackage] = (),
                 path: str | None = None, unlocker: Unlocker | None = None,
                 scan: ScanMode = "auto", method: int | None = None,
                 skipped_packages: Sequence[str] = ()) -> Opened:
    """Unlock the volume in ``src`` whatever survives of its metadata (see module docstring).

    ``scan``: ``"auto"`` (when the header's copies do not serve), ``"always"`` or ``"never"``.
    ``method``: the encryption method of a salvage with ``secrets.fvek`` (else inferred).
    ``skipped_packages``: key packages that could not be read (named if nothing unlocks).
    """
    search = _Search(src, secrets, path or getattr(src, "path", None), unlocker)
    search.try_volume_copies()
    scanned = search.needs_scan(scan)
    if scanned:
        search.try_scan()
    if search.chosen is None and packages:
        search.try_packages(packages)
    if search.chosen is None and secrets.fvek is not None and not search.tries.key_errors:
        return _salvage(search, secrets.fvek, method)
    if search.chosen is None:
        raise search.nothing_unlocks(scanned, packages, skipped_packages)
    return _finish(search, *search.chosen)


def _finish(search: _Search, md: Metadata, result: UnlockResult) -> Opened:
    """The unlocked volume, its layout settled and its boot sector checked."""
    package = search.package
    notes = list(search.notes)
    if package is None:
        md = settle_layout(md, result, search.read, search.image_size,
                           sector_known=sector_known(md, None), notes=notes)
    volume = BdeVolume(search.src, path=search.path, metadata=md)
    fvek_unverified = _set_key(volume, result, search.image_size)
    if md.source == MetadataSource.KEY_PACKAGE and result.vmk is not None:
        # a package's copy has no SHA-256 of its own; check the copies read from the image
        for copy in search.pool:
            copy.integrity = integrity_of(copy, result.vmk)
    opened = Opened(volume=volume, result=result,
                    copies=[*md.copies, *[c for c in search.pool if c not in md.copies]],
                    notes=notes, key_package=package.path if package else None)
    opened.notes.append(f"metadata from {md.source}: {copy_name(md.best)} serves")
    log.info(opened.notes[-1])
    boot = rebuild_boot_sector(volume, result, search.read, search.image_size, package)
    opened.patches += boot.patches
    opened.lost += boot.lost
    opened.repairs += boot.repairs
    opened.notes += boot.notes
    if fvek_unverified and not opened.patches \
            and not key_fits_image(md, result, search.read, search.image_size, package):
        raise WrongKeyError("the FVEK given decrypts neither the volume's boot sector nor its "
                            "backup: wrong FVEK", path=search.path)
    if package is not None:
        # no SHA-256 to check a package with: its checksums vouched for what it gave, the
        # sector judge reports what they do not cover
        volume.metadata.trust = str(Trust.UNAVAILABLE)
        if package.block_header is None:
            _judge_package_layout(opened, package)
    return opened


def _judge_package_layout(opened: Opened, package: KeyPackage) -> None:
    """A package without verified layout facts: what they steer is a guess (the regions
    taken to read as zeros, the extent of the relocated block), every sector is judged."""
    md = opened.volume.metadata
    ss = opened.volume.sector_size
    opened.judge = True
    for off, length in reserved_regions(md, opened.volume.eow):
        opened.lost.append(Damage(off, length, GUESSED_ZERO))
    virt = md.virtualization
    if virt is not None and virt[0] and md.find(DatumType.VIRTUALIZATION_INFO) is None:
        nvirt = max(RELOCATED_SIZE, ss)
        opened.doubts.append(Damage(ss, nvirt - ss, GUESS_BOOT_CODE))
    opened.notes.append(f"key package {package.path}: no layout fact of it is verified (the "
                        "conversion state, the metadata regions): every sector is judged by "
                        "its own bytes and the regions taken to read as zeros are reported")
    log.warning(opened.notes[-1])


def _salvage(search: _Search, fvek: bytes, method: int | None) -> Opened:
    """No metadata unlocks, but an FVEK was given: decrypt what the image holds."""
    plan = salvage_with_fvek(search.read, search.image_size, fvek, method=method,
                             header=search.header, scan=search.found, path=search.path)
    volume = BdeVolume(search.src, path=search.path, metadata=plan.metadata)
    volume.size_override = (plan.volume_size, plan.size_source)
    volume.set_key(plan.result)
    # nothing to verify the stand-in with; the sector judge reports every doubt
    volume.metadata.trust = str(Trust.UNAVAILABLE)
    return Opened(volume=volume, result=plan.result, copies=list(search.pool),
                  patches=plan.patches, lost=plan.lost, repairs=plan.repairs,
                  notes=plan.notes, doubts=plan.doubts, judge=True)


def _set_key(volume: BdeVolume, result: UnlockResult, image_size: int) -> bool:
    """Key the volume; True when a raw FVEK could not be checked on the relocated boot
    sector (wrong, or the block is damaged): then the volume is provisionally sized by the
    image, and the boot sector check decides."""
    try:
        volume.set_key(result)
    except WrongKeyError:
        if result.via != "fvek":
            raise
        volume.size_override = (image_size, SizeSource.IMAGE)
        volume.set_key(result)
        return True
    return False


__all__ = ["Opened", "ScanMode", "locate_tolerant", "open_damaged"]
