"""The summary of a batch: ``summary.json``, ``summary.csv``, the final table and the exit code.

``summary.json``::

    {"format": "bdekit-batch-summary", "version": 1, "mode": "decrypt",
     "runner": "local, 4 workers" | "dask tcp://host:8786", "started": ..., "finished": ...,
     "seconds": ..., "exit_code": 0 | 6 | 1,
     "counts": {"jobs": N, "ok": .., "damaged": .., "failed": .., "skipped": ..},
     "bytes": <volume bytes written>, "jobs": [<one JobResult per job>, ...]}

``summary.csv`` has one line per job, the columns of :data:`~bdekit.batch.spec.CSV_COLUMNS`
(input, volume GUID, method, protector used, key source, bytes, SHA-256 of the output, damage
bytes, seconds, status, ...). Both are written atomically, mode 0600.

Exit code (:func:`exit_code`): 0 when every job succeeded, 6 when some finished with data that
could not be recovered (and none failed), 1 when any failed.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from collections.abc import Sequence
from typing import Any

from bdekit.batch.spec import CSV_COLUMNS, DAMAGED, FAILED, OK, JobResult
from bdekit.errors import EXIT_OK, EXIT_OTHER, EXIT_PARTIAL
from bdekit.image.files import write_atomic

SUMMARY_FORMAT = "bdekit-batch-summary"
SUMMARY_JSON = "summary.json"
SUMMARY_CSV = "summary.csv"


def exit_code(results: Sequence[JobResult]) -> int:
    """1 if any job failed, else 6 if any finished with damage, else 0."""
    if any(r.status == FAILED for r in results):
        return EXIT_OTHER
    if any(r.status == DAMAGED for r in results):
        return EXIT_PARTIAL
    return EXIT_OK


@dataclasses.dataclass
class BatchSummary:
    mode: str
    runner: str
    started: str
    finished: str
    seconds: float
    results: list[JobResult]
    #: jobs skipped because an earlier run had finished them (``--resume``)
    skipped: list[str] = dataclasses.field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return exit_code(self.results)

    def counts(self) -> dict[str, int]:
        return {"jobs": len(self.results),
                "ok": sum(1 for r in self.results if r.status == OK),
                "damaged": sum(1 for r in self.results if r.status == DAMAGED),
                "failed": sum(1 for r in self.results if r.status == FAILED),
                "skipped": len(self.skipped)}

    def to_json(self) -> dict[str, Any]:
        return {"format": SUMMARY_FORMAT, "version": 1, "mode": self.mode,
                "runner": self.runner, "started": self.started, "finished": self.finished,
                "seconds": round(self.seconds, 3), "exit_code": self.exit_code,
                "counts": self.counts(),
                "bytes": sum(r.volume_size for r in self.results if r.complete),
                "skipped": self.skipped, "jobs": [r.to_json() for r in self.results]}


def to_csv(results: Sequence[JobResult]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for result in results:
        row = result.to_json()
        writer.writerow(["" if row[c] is None else row[c] for c in CSV_COLUMNS])
    return out.getvalue()


def write_summary(output_dir: str, summary: BatchSummary, extra_json: str | None = None) -> None:
    """``summary.json`` and ``summary.csv`` in ``output_dir`` (and the JSON at
    ``extra_json``, the ``--report`` the user asked for)."""
    text = json.dumps(summary.to_json(), indent=2) + "\n"
    write_atomic(os.path.join(output_dir, SUMMARY_JSON), text)
    write_atomic(os.path.join(output_dir, SUMMARY_CSV), to_csv(summary.results))
    if extra_json:
        write_atomic(extra_json, text)


def _size(n: int) -> str:
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n} B"


def _unlocked(r: JobResult) -> str:
    if not r.unlocked_via:
        return ""
    return f"{r.unlocked_via} ({r.key_source})" if r.key_source else r.unlocked_via


def format_table(summary: BatchSummary) -> str:
    """The final table: one line per job, then the totals."""
    header = ("JOB", "STATUS", "METHOD", "UNLOCKED WITH", "SIZE", "DAMAGE", "SECONDS")
    earlier = set(summary.skipped)
    rows = [(r.job, r.status + (" (earlier run)" if r.job in earlier else
                                " (resumed)" if r.resumed_at else ""), r.method or "",
             _unlocked(r), _size(r.volume_size) if r.volume_size else "",
             _size(r.damage_bytes) if r.damage_bytes else "", f"{r.seconds:.1f}")
            for r in summary.results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(header, widths, strict=True)).rstrip()]
    for r, row in zip(summary.results, rows, strict=True):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if r.error:
            lines.append(f"    {r.error}")
    c = summary.counts()
    total = sum(r.volume_size for r in summary.results if r.complete)
    tail = f"; {c['skipped']} already done" if c["skipped"] else ""
    lines.append(f"{c['jobs']} job(s): {c['ok']} ok, {c['damaged']} with unrecoverable data, "
                 f"{c['failed']} failed{tail}; {_size(total)} in {summary.seconds:.1f} s")
    return "\n".join(lines)


__all__ = ["SUMMARY_CSV", "SUMMARY_JSON", "BatchSummary", "exit_code", "format_table",
           "to_csv", "write_summary"]
