"""The volume map of a job: what each range of the decrypted volume is, for the JSON report.

:func:`volume_map` turns the volume's read plan (:mod:`bdekit.volume.planner`) into a list of
ranges in volume (output) coordinates, each ``{"offset", "length", "kind", "reason"}``; the
HTML report (:mod:`bdekit.report`) draws it, and ``bdekit report`` redraws it from a JSON
report written on another machine.  Kinds:

``decrypted``        encrypted on disk, decrypted
``plain``            plaintext on disk (partly converted volume; chunks a used-space-only
                     conversion left unencrypted; a decrypted volume)
``relocated``        the first sectors of the volume, served from the relocated header block
``vista-header``     Vista: sector 0 is the BitLocker header with the boot sector fields
                     restored
``metadata``         a metadata copy's reserved region (reads as zeros)
``relocated-block``  where the relocated header block lies (reads as zeros)
``eow``              used-space-only conversion structures and logs (read as zeros)
``zero``             any other range that reads as zeros
``missing``          the ciphertext lies beyond the end of the image (truncated capture)

A fragmented used-space-only volume can have hundreds of thousands of runs: past ``limit``
ranges, runs shorter than ``volume size / limit`` are pooled into ranges of kind ``mixed``
with a ``composition`` (bytes per kind), so the report stays small for a 2 TB volume.
:func:`volume_facts` is the non-secret description of the volume (GUID, protectors, ...);
:func:`fill_report` puts all of it, and the metadata decisions, into a job's report.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from bdekit._version import __version__
from bdekit.errors import BdeError
from bdekit.format.constants import VolumeState
from bdekit.image.ranges import MISSING
from bdekit.volume.bde import BdeVolume
from bdekit.volume.planner import Run, RunKind

if TYPE_CHECKING:  # the report module imports this one
    from bdekit.pipeline.report import Report

log = logging.getLogger(__name__)

#: At most about this many ranges per map (twice this in the worst case).
MAP_LIMIT = 4096

#: Keys of ``BdeVolume.describe()`` never copied into a report (secrets have no key there;
#: this is belt and braces).
_SECRET_KEYS = {"fvek", "vmk", "recovery_password", "password", "clear_key"}


@dataclasses.dataclass
class MapRange:
    offset: int
    length: int
    kind: str
    reason: str
    composition: dict[str, int] | None = None

    @property
    def end(self) -> int:
        return self.offset + self.length

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"offset": self.offset, "length": self.length, "kind": self.kind,
                               "reason": self.reason}
        if self.composition:
            out["composition"] = dict(self.composition)
        return out


def _zero_regions(volume: BdeVolume) -> list[tuple[int, int, str, str]]:
    """(offset, length, kind, reason) of the ranges that read as zeros, most specific first."""
    md = volume.metadata
    out: list[tuple[int, int, str, str]] = []
    offsets = [int(o) for o in md.block_header.metadata_offsets]
    reserved = dict(volume.reserved_regions())
    for index, off in enumerate(offsets, 1):
        if off and off in reserved:
            out.append((off, reserved[off], "metadata",
                        f"metadata copy {index} (reads as zeros)"))
    virt = md.virtualization if md.version >= 2 else None
    if virt is not None and virt[0] in reserved:
        out.append((virt[0], reserved[virt[0]], "relocated-block",
                    "relocated boot sectors are stored here (reads as zeros)"))
    if volume.eow is not None:
        out += [(o, n, "eow", "used-space-only conversion structures (read as zeros)")
                for o, n in volume.eow.reserved]
    return out


def _plain_reason(volume: BdeVolume) -> str:
    md = volume.metadata
    if md.state == VolumeState.DECRYPTED or volume.cipher is None:
        return "not encrypted (the volume is decrypted)"
    if volume.eow is not None:
        return "not encrypted on disk (left plaintext by the used-space-only conversion)"
    return (f"not encrypted on disk (conversion stopped at offset "
            f"{int(md.block_header.state_offset)})")


def _classify(run: Run, plain_reason: str) -> tuple[str, str]:
    if run.kind == RunKind.ENCRYPTED:
        return "decrypted", "encrypted on disk, decrypted"
    if run.kind == RunKind.PLAIN:
        return "plain", plain_reason
    if run.kind == RunKind.MISSING:
        return "missing", MISSING
    if run.kind == RunKind.RELOCATED:
        state = "decrypted" if run.encrypted else "plaintext"
        return "relocated", (f"boot sectors served from the relocated block at volume offset "
                             f"{run.source - run.offset} ({state})")
    if run.kind == RunKind.VISTA_HEADER:
        return "vista-header", "BitLocker header with the boot sector fields restored"
    return "zero", "reads as zeros"


def _split_zero(run: Run, zeros: list[tuple[int, int, str, str]]) -> Iterator[MapRange]:
    """A zero run cut along the reserved regions it covers (metadata copy, relocated block)."""
    pos, end = run.offset, run.end
    for off, length, kind, reason in zeros:
        lo, hi = max(off, pos), min(off + length, end)
        if lo >= hi:
            continue
        if lo > pos:
            yield MapRange(pos, lo - pos, "zero", "reads as zeros")
        yield MapRange(lo, hi - lo, kind, reason)
        pos = hi
    if pos < end:
        yield MapRange(pos, end - pos, "zero", "reads as zeros")


def _runs(volume: BdeVolume) -> Iterator[MapRange]:
    zeros = sorted(_zero_regions(volume))
    plain_reason = _plain_reason(volume)
    for run in volume.plan(0, volume.volume_size):
        if run.kind == RunKind.ZERO:
            yield from _split_zero(run, zeros)
            continue
        kind, reason = _classify(run, plain_reason)
        yield MapRange(run.offset, run.length, kind, reason)


def merge(ranges: Iterable[MapRange]) -> list[MapRange]:
    """Join touching ranges of the same kind and reason."""
    out: list[MapRange] = []
    for item in ranges:
        if item.length <= 0:
            continue
        last = out[-1] if out else None
        if (last is not None and last.end == item.offset and last.kind == item.kind
                and last.reason == item.reason and not last.composition
                and not item.composition):
            last.length += item.length
            continue
        out.append(dataclasses.replace(item))
    return out


def coarsen(ranges: list[MapRange], size: int, limit: int = MAP_LIMIT) -> list[MapRange]:
    """At most about ``2 * limit`` ranges: runs shorter than ``size / limit`` are pooled."""
    if len(ranges) <= limit or size <= 0:
        return ranges
    step = max(1, -(-size // limit))
    out: list[MapRange] = []
    pool: MapRange | None = None
    for item in ranges:
        if item.length >= step:
            if pool is not None:
                out.append(_settle(pool))
                pool = None
            out.append(item)
            continue
        if pool is None:
            pool = MapRange(item.offset, 0, "mixed", "several kinds of ranges", {})
        assert pool.composition is not None
        pool.length = item.end - pool.offset
        pool.composition[item.kind] = pool.composition.get(item.kind, 0) + item.length
        if pool.length >= step:
            out.append(_settle(pool))
            pool = None
    if pool is not None:
        out.append(_settle(pool))
    return merge(out)


def _settle(pool: MapRange) -> MapRange:
    comp = pool.composition or {}
    if len(comp) == 1:
        kind = next(iter(comp))
        return MapRange(pool.offset, pool.length, kind, f"{kind} (pooled short ranges)")
    return pool


def volume_map(volume: BdeVolume, limit: int = MAP_LIMIT) -> list[dict[str, Any]]:
    """The map of an unlocked volume as JSON-ready ranges covering ``[0, volume_size)``."""
    if volume.map is None:
        return []
    ranges = merge(_runs(volume))
    return [r.to_json() for r in coarsen(ranges, volume.volume_size, limit)]


def layout_map(volume: BdeVolume) -> list[dict[str, Any]]:
    """What a locked volume's metadata says about its layout (metadata copies, relocated
    block): ranges over ``[0, image size)``; the rest is of kind ``unknown``."""
    size = volume.image_size
    marks = sorted((o, n, k, r) for o, n, k, r in _zero_regions(volume) if o < size)
    out: list[MapRange] = []
    pos = 0
    for off, length, kind, reason in marks:
        if off < pos:
            continue
        if off > pos:
            out.append(MapRange(pos, off - pos, "unknown", "locked: not decrypted"))
        length = min(length, size - off)
        out.append(MapRange(off, length, kind, reason))
        pos = off + length
    if pos < size:
        out.append(MapRange(pos, size - pos, "unknown", "locked: not decrypted"))
    return [r.to_json() for r in merge(out)]


def volume_facts(volume: BdeVolume) -> dict[str, Any]:
    """The volume's non-secret description (``BdeVolume.describe`` without keys)."""
    try:
        facts = volume.describe()
    except (BdeError, AttributeError, ValueError) as exc:
        log.debug("volume description unavailable: %s", exc)
        return {}
    return {k: v for k, v in facts.items() if k not in _SECRET_KEYS}


def metadata_decisions(volume: BdeVolume) -> tuple[str, list[dict[str, Any]]]:
    """The trust in the volume's metadata and what was decided about its copies (the vote's
    disagreements alone before the volume is unlocked)."""
    md = volume.metadata
    return md.trust, [dict(d) for d in (md.decisions or md.vote_decisions)]


def fill_report(volume: BdeVolume, report: Report) -> None:
    """Set the report's ``bdekit_version``, ``started``, ``volume``, ``volume_map`` and,
    unless set already, ``metadata_trust`` and ``metadata_decisions``."""
    report.bdekit_version = __version__
    trust, decisions = metadata_decisions(volume)
    if not report.metadata_trust:
        report.metadata_trust = trust
    if not report.metadata_decisions:
        report.metadata_decisions = decisions
    if not report.started:
        report.started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    report.volume = volume_facts(volume)
    try:
        report.volume_map = volume_map(volume)
    except BdeError as exc:
        log.debug("volume map unavailable: %s", exc)
        report.volume_map = []
