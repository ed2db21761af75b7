"""The report of a decrypt or repair job (``--report`` writes it as JSON).

Fields of :class:`Report`: ``input``, ``output``, ``method``, ``protector`` / ``key_id`` /
``unlocked_via`` (the secret that served), ``metadata_source`` (``volume``, ``scan`` or
``key package``), ``metadata_copy`` / ``metadata_offset`` (the copy that served; 0 for a
stray or package copy), ``metadata_copies`` (each copy's status, CRC and SHA-256 integrity),
``metadata_trust`` and ``metadata_decisions`` (where the copies disagreed, what decided),
``key_package``, ``volume_size`` and ``volume_size_source``; byte counts from the read plan
(:func:`account`: ``bytes_decrypted``, ``bytes_plain``, ``bytes_zero``, ``bytes_missing``) and
from the damage list (``bytes_unreadable``, ``bytes_unrecovered``); ``sha256`` of the output,
``seconds``, ``throughput_mb_s``, ``resumed_at``, ``output_mapfile``, ``damaged`` (``offset``,
``length``, ``reason`` in output coordinates, merged), ``repairs`` (what was rebuilt) and
``notes``; for the HTML report (:mod:`bdekit.pipeline.volmap`): ``bdekit_version``,
``command``, ``started``, ``volume`` (its non-secret description) and ``volume_map``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterable
from typing import Any

from bdekit.image.files import write_atomic
from bdekit.image.ranges import NOT_RESCUED, UNREADABLE, Damage, merge_damage
from bdekit.pipeline.volmap import fill_report
from bdekit.volume.bde import BdeVolume
from bdekit.volume.planner import RunKind

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Report:
    input: str
    output: str
    method: str = ""
    protector: str | None = None
    key_id: str | None = None
    unlocked_via: str = ""
    metadata_copy: int | None = None
    metadata_offset: int | None = None
    metadata_source: str = "volume"
    metadata_copies: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    #: after unlocking: "verified", "unverified" or "unavailable" (bdekit.unlock.integrity)
    metadata_trust: str = ""
    #: where the copies disagreed and what was decided (consensus.Disagreement.to_json, and
    #: the serving copy when the SHA-256 integrity check chose another one)
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
    bdekit_version: str = ""
    command: str = ""
    started: str = ""
    volume: dict[str, Any] = dataclasses.field(default_factory=dict)
    volume_map: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the report as indented JSON, atomically."""
        write_atomic(path, json.dumps(self.to_json(), indent=2))

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
        return text + f"; sha256 {self.sha256}"


def account(volume: BdeVolume, report: Report) -> None:
    """Fill the byte counts of the report from the volume's read plan."""
    for run in volume.plan(0, volume.volume_size):
        if run.kind in (RunKind.ZERO,):
            report.bytes_zero += run.length
        elif run.kind == RunKind.MISSING:
            report.bytes_missing += run.length
        elif run.encrypted:
            report.bytes_decrypted += run.length
        else:
            report.bytes_plain += run.length
    fill_report(volume, report)


def missing_ranges(volume: BdeVolume) -> list[tuple[int, int]]:
    """``(offset, length)`` of the volume ranges beyond the end of the image."""
    return [(r.offset, r.length) for r in volume.plan(0, volume.volume_size)
            if r.kind == RunKind.MISSING]

