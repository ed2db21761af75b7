"""The pages of a batch: one per job, and the index of the output directory.

``bdekit batch --html`` writes, under the batch's output directory ``DIR``:

* ``DIR/<job>/report.html`` - :func:`job_page` of the job's ``report.json`` (format
  ``bdekit-batch-job``: the job, its result row and the decrypt / repair report): the page of
  a ``decrypt`` / ``repair`` job (map, metadata copies and decisions, protectors, hashes) with
  a "Batch job" section (status, exit class, key source, reason of a failure) and a link back
  to the index; a job that failed before producing a report gets a page without a map;
* ``DIR/index.html`` - :func:`index_page` of ``summary.json`` (format
  ``bdekit-batch-summary``): the run (mode, runner, times, exit code, counts) and one table
  row per job, linked to ``<job>/report.html``.

Links are relative (``<job>/report.html``, ``../index.html``), so the directory can be moved or
copied to a USB stick whole.  Both builders take the JSON dicts only (this package sits above
:mod:`bdekit.batch` in the layers and never imports it).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from bdekit._version import __version__
from bdekit.report.pages import now, report_page
from bdekit.report.sections import Page, Section, scrub

#: the name of a job's page in its directory, and of the index in the output directory
JOB_PAGE = "report.html"
INDEX_PAGE = "index.html"

#: result fields shown in a job's "Batch job" section (in this order)
_RESULT_ROWS = [("job", "Job"), ("status", "Status"), ("exit_code", "Exit code"),
                ("error", "Reason of the failure"), ("input", "Input"),
                ("partition", "Partition"), ("offset", "Volume offset"),
                ("protector_type", "Protector type"), ("key_source", "Key from"),
                ("resumed_at", "Resumed at"), ("seconds", "Seconds")]

#: columns of the index's job table: (title, result field)
_INDEX_COLUMNS = [("job", "job"), ("status", "status"), ("input", "input"),
                  ("partition", "partition"), ("method", "method"),
                  ("protector", "protector_type"), ("key from", "key_source"),
                  ("volume size", "volume_size"), ("unrecovered", "damage_bytes"),
                  ("damaged ranges", "damaged_ranges"), ("SHA-256", "sha256"),
                  ("seconds", "seconds"), ("reason", "error")]


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def job_link(name: str) -> str:
    """The relative link from the index to the page of job ``name``."""
    return f"{quote(name)}/{JOB_PAGE}"


def _job_section(job: dict[str, Any], result: dict[str, Any]) -> Section:
    rows: list[list[Any]] = [["Index", ("link", (f"../{INDEX_PAGE}", "all jobs of the batch"))]]
    for key, title in _RESULT_ROWS:
        value = result.get(key, job.get(key))
        if value in (None, ""):
            continue
        if key in ("offset", "resumed_at"):
            value = ("offset", value)
        rows.append([title, value])
    for key, title in (("origin", "Job from"), ("key_entry", "Keyring entry"),
                       ("key_file", "Key file"), ("mapfile", "Input mapfile")):
        if job.get(key):
            rows.append([title, job[key]])
    return Section("Batch job", "kv", rows, ident="batch-job")


def _job_verdict(result: dict[str, Any]) -> tuple[str, str]:
    status = result.get("status")
    if status == "failed":
        return "bad", (f"The job failed (exit code {result.get('exit_code')}): "
                       f"{result.get('error') or 'no reason recorded'}")
    return "warn", f"The job did not finish (status {status or 'unknown'})."


def job_page(data: dict[str, Any]) -> Page:
    """The page of one job of a batch (its ``report.json``, see the module docstring)."""
    data = scrub(data)
    job = _dict(data.get("job"))
    result = _dict(data.get("result"))
    name = str(result.get("job") or job.get("name") or "")
    report = data.get("report")
    section = _job_section(job, result)
    if isinstance(report, dict):
        page = report_page(report, "batch")
        page.sections.insert(1, section)
        page.title = f"bdekit batch, job {name}: {report.get('input') or job.get('input', '')}"
        return page
    return Page("batch-job", f"bdekit batch, job {name}: {job.get('input', '')}",
                "no output", _job_verdict(result), None, [section], __version__, now())


def _index_verdict(summary: dict[str, Any]) -> tuple[str, str]:
    counts = _dict(summary.get("counts"))
    jobs, failed, damaged = (int(counts.get(k) or 0) for k in ("jobs", "failed", "damaged"))
    if failed:
        return "bad", (f"{failed} of {jobs} job(s) failed; {damaged} finished with data that "
                       "could not be recovered (exit code 1).")
    if damaged:
        return "warn", (f"{damaged} of {jobs} job(s) finished with data that could not be "
                        "recovered (exit code 6); the others are complete.")
    return "ok", f"All {jobs} job(s) succeeded."


def _job_rows(jobs: list[Any]) -> tuple[list[list[Any]], list[dict[str, str]]]:
    rows: list[list[Any]] = []
    attrs: list[dict[str, str]] = []
    for result in jobs:
        if not isinstance(result, dict):
            continue
        name = str(result.get("job") or "")
        row: list[Any] = [("link", (job_link(name), name))]
        for _title, key in _INDEX_COLUMNS[1:]:
            value = result.get(key)
            if key in ("volume_size", "damage_bytes") and isinstance(value, int):
                value = ("size", value)
            elif key == "sha256" and value:
                value = ("hex", value)
            row.append(value)
        rows.append(row)
        attrs.append({"data-job": name, "data-status": str(result.get("status") or "")})
    return rows, attrs


def index_page(summary: dict[str, Any], output_dir: str = "") -> Page:
    """The index of a batch (its ``summary.json``, see the module docstring)."""
    summary = scrub(summary)
    counts = _dict(summary.get("counts"))
    run: list[list[Any]] = [[title, summary[key]] for key, title in (
        ("mode", "Mode"), ("runner", "Runner"), ("started", "Started"),
        ("finished", "Finished"), ("seconds", "Seconds"), ("exit_code", "Exit code"))
        if summary.get(key) not in (None, "")]
    run += [["jobs" if key == "jobs" else f"jobs {key}", value] for key, value in counts.items()]
    if isinstance(summary.get("bytes"), int):
        run.append(["volume bytes written", ("size", summary["bytes"])])
    rows, attrs = _job_rows(list(summary.get("jobs") or []))
    sections = [Section("Batch", "kv", run, ident="summary"),
                Section("Jobs", "table", rows, [t for t, _k in _INDEX_COLUMNS], attrs, "jobs",
                        "Each job's name links to its page (map, metadata, protectors).")]
    if summary.get("skipped"):
        sections.append(Section("Skipped (finished by an earlier run)", "list",
                                [[s] for s in summary["skipped"]], ident="skipped"))
    return Page("batch", f"bdekit batch: {output_dir}" if output_dir else "bdekit batch",
                str(summary.get("runner") or ""), _index_verdict(summary), None, sections,
                __version__, now())
