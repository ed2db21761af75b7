"""The report of a decrypt or repair job (``--report`` writes it as JSON).

Fields of :class:`Report`: ``input``, ``output``, ``method``, ``protector`` / ``key_id`` /
``unlocked_via`` (the secret that served), ``metadata_source`` (``volume``, ``scan`` or
``key package``), ``metadata_copy`` / ``metadata_offset`` (the copy that served; 0 for a
stray or package copy, and for the byte-wise majority of the copies), ``metadata_copies``
(each copy's status, CRC and SHA-256 integrity), ``metadata_trust`` (``verified``: the
serving metadata matches its SHA-256 integrity datum; ``unverified``: no candidate does, so
the whole volume is listed as damage; ``unavailable``: nothing to check it with, e.g. a raw
FVEK), ``metadata_decisions`` (where the copies disagreed and which copies or vote decided each
field), ``key_package``, ``volume_size`` and ``volume_size_source``; byte counts from the read
plan (:func:`account`: ``bytes_decrypted``, ``bytes_plain``, ``bytes_zero``,
``bytes_missing``) and from the damage list (``bytes_unreadable``, ``bytes_unrecovered``);
``sha256`` of the output, ``seconds``, ``throughput_mb_s``, ``resumed_at``,
``output_mapfile``, ``damaged`` (``offset``, ``length``, ``reason`` in output coordinates,
merged), ``repairs`` (what was rebuilt) and ``notes``.

What an examiner files with the output (:func:`describe_image` and the command line fill
them): ``bdekit_version``, ``command_line`` (secrets replaced by ``***``), ``input`` and
``output`` as absolute paths, ``input_files`` (every file of the image: segments of a split
or EWF set), ``container`` (``raw``, ``split``, ``ewf``, ``vhd``, ...), ``volume_offset``
(where the volume starts in the image), ``volume_guid``, ``range`` (``[start, end)`` of the
volume decrypted with ``--range``, else null), ``started`` / ``finished`` (UTC, ISO 8601),
``hashes`` (of the output, by algorithm: ``md5``, ``sha1``, ``sha256``; ``sha256`` is also
kept on its own), ``input_hashes`` (``--hash-input``: of the input image), ``bytes_written``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterable
from typing import Any

from bdekit._version import __version__
from bdekit.image.files import PRIVATE_MODE, write_atomic
from bdekit.image.imagesource import SliceSource
from bdekit.image.ranges import NOT_RESCUED, UNREADABLE, Damage, merge_damage
from bdekit.pipeline.volmap import fill_report
from bdekit.volume.bde import BdeVolume
from bdekit.volume.planner import RunKind

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Report:
    input: str
    output: str
    bdekit_version: str = __version__
    command_line: str = ""
    input_files: list[str] = dataclasses.field(default_factory=list)
    container: str = ""
    volume_offset: int | None = None
    volume_guid: str | None = None
    range: list[int] | None = None
    started: str = ""
    finished: str = ""
    hashes: dict[str, str] = dataclasses.field(default_factory=dict)
    input_hashes: dict[str, str] = dataclasses.field(default_factory=dict)
    bytes_written: int = 0
    method: str = ""
    protector: str | None = None
    key_id: str | None = None
    unlocked_via: str = ""
    metadata_copy: int | None = None
    metadata_offset: int | None = None
    metadata_source: str = "volume"
    metadata_copies: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    metadata_trust: str = ""
    metadata_decisions: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    key_package: str | None = None
    volume_size: int = 0
    volume_size_source: str = ""
    bytes_decrypted: int = 0
    bytes_plain: int = 0
    bytes_zero: int = 0
    bytes_missing: int = 0
    bytes_unreadable: int = 0
    bytes_unrecovered: int = 0
    sha256: str = ""
    seconds: float = 0.0
    throughput_mb_s: float = 0.0
    resumed_at: int | None = None
    output_mapfile: str | None = None
    damaged: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    repairs: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    # for the HTML report (bdekit.pipeline.volmap.fill_report, bdekit.report)
    command: str = ""
    volume: dict[str, Any] = dataclasses.field(default_factory=dict)
    volume_map: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def write(self, path: str | os.PathLike[str], mode: int = PRIVATE_MODE) -> None:
        """Write the report as indented JSON, atomically (``-``: standard output)."""
        text = json.dumps(self.to_json(), indent=2) + "\n"
        if os.fspath(path) == "-":
            view = memoryview(text.encode("utf-8"))
            while len(view):
                view = view[os.write(1, view):]
            return
        write_atomic(path, text, mode=mode)

    def set_damage(self, items: Iterable[Damage]) -> None:
        merged = merge_damage(items)
        self.damaged = [d.to_json() for d in merged]
        self.bytes_unrecovered = sum(d.length for d in merged)
        self.bytes_unreadable = sum(d.length for d in merged
                                    if d.reason in (UNREADABLE, NOT_RESCUED))

    def summary(self) -> str:
        mib = 1 << 20
        text = (f"{self.output}: {self.volume_size / mib:.1f} MiB in {self.seconds:.2f} s "
                f"({self.throughput_mb_s:.0f} MB/s); decrypted {self.bytes_decrypted / mib:.1f} "
                f"MiB, plain {self.bytes_plain / mib:.1f} MiB, zero {self.bytes_zero / mib:.1f} "
                f"MiB, missing {self.bytes_missing / mib:.1f} MiB")
        if self.bytes_unreadable:
            text += f", unreadable {self.bytes_unreadable / mib:.3f} MiB"
        if self.bytes_unrecovered:
            text += f"; {len(self.damaged)} damaged range(s), {self.bytes_unrecovered} bytes"
        hashes = self.hashes or ({"sha256": self.sha256} if self.sha256 else {})
        text += "".join(f"; {alg} {value}" for alg, value in hashes.items())
        if self.input_hashes:
            text += "; input " + ", ".join(f"{alg} {value}"
                                           for alg, value in self.input_hashes.items())
        return text


def account(volume: BdeVolume, report: Report, span: tuple[int, int] | None = None) -> None:
    """Fill the byte counts of the report from the volume's read plan (of ``span`` only, when
    given: ``--range``)."""
    first, end = span or (0, volume.volume_size)
    report.bytes_written = end - first
    if span is not None:
        report.range = [first, end]
    describe_image(volume, report)
    for run in volume.plan(first, end - first):
        if run.kind in (RunKind.ZERO,):
            report.bytes_zero += run.length
        elif run.kind == RunKind.MISSING:
            report.bytes_missing += run.length
        elif run.encrypted:
            report.bytes_decrypted += run.length
        else:
            report.bytes_plain += run.length
    fill_report(volume, report)


#: damage reason when no metadata candidate matches its SHA-256 integrity datum
METADATA_UNVERIFIED = ("uncertain (metadata unverified: no copy matches its SHA-256 "
                       "integrity datum, so the fields that steer reads may be wrong)")


def metadata_doubts(volume: BdeVolume) -> list[Damage]:
    """The volume ranges that unverified metadata makes uncertain: all of it (any steering
    field may be wrong, and nothing says which)."""
    if volume.metadata.trust != "unverified" or not volume.volume_size:
        return []
    return [Damage(0, volume.volume_size, METADATA_UNVERIFIED)]


def describe_metadata(volume: BdeVolume, report: Report) -> None:
    """The report's account of the copies: each one's state, the trust, the decisions."""
    md = volume.metadata
    report.metadata_copy = md.best.index
    report.metadata_offset = md.best.offset
    report.metadata_source = md.source
    if not report.metadata_copies:
        report.metadata_copies = [c.describe() for c in md.copies]
    report.metadata_trust = md.trust
    report.metadata_decisions = list(md.decisions or md.vote_decisions)
    if md.best.index == 0 and md.best is md.vote_copy:
        report.notes.append("metadata: no copy is intact on its own; the byte-wise majority of "
                            "the copies serves")


def describe_image(volume: BdeVolume, report: Report) -> None:
    """Where the volume lies: container kind, offset in the image, volume GUID."""
    source = volume.source
    report.container = str(getattr(source, "kind", "") or "")
    report.volume_offset = source.offset if isinstance(source, SliceSource) else 0
    guid = volume.metadata.volume_guid
    report.volume_guid = str(guid).upper() if guid is not None else None


def missing_ranges(volume: BdeVolume) -> list[tuple[int, int]]:
    """``(offset, length)`` of the volume ranges beyond the end of the image."""
    return [(r.offset, r.length) for r in volume.plan(0, volume.volume_size)
            if r.kind == RunKind.MISSING]

