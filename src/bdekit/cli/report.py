"""``bdekit report REPORT.json --html FILE``, the ``--html FILE`` option of ``decrypt``,
``repair``, ``info`` and ``scan``, and the pages of ``batch --html``.

``bdekit report`` renders a page from a JSON file written earlier, possibly on another
machine: a ``decrypt`` / ``repair --report`` file, the output of ``info --json`` or
``scan --json`` (recognised by their fields), a batch job's ``report.json`` or a batch's
``summary.json`` (recognised by their ``format``).  ``--html`` is checked before any work
starts: a path that resolves to an input of the command (image, mapfile, key files, key
packages, keyring, the JSON report read) or to another of its outputs is refused with exit
code 2.  The page is written atomically, mode 0600, only when the command produced its result
(also on exit 6, where it shows the damage).

``batch --html`` (:func:`write_batch_html`) writes ``DIR/<job>/report.html`` for every job
and ``DIR/index.html`` once the batch is over (also when some jobs failed).

``decrypt`` imports this module for its option; the batch modules are imported by the
functions of batch pages only, so a decrypt does not load them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import click

from bdekit import report as html_report
from bdekit.errors import BdeError, FormatError, UsageError
from bdekit.pipeline import volmap
from bdekit.pipeline.journal import journal_path_for
from bdekit.pipeline.output import PARTIAL_SUFFIX

if TYPE_CHECKING:
    from bdekit.volume.bde import BdeVolume

log = logging.getLogger(__name__)

_INPUT_KEYS = ("bek", "keyring", "certificate", "certificate_key", "password_file",
               "key_package", "mapfile")
_OUTPUT_KEYS = ("report_path", "output_mapfile", "log_file", "audit_log")


def html_option(func: Any) -> Any:
    """The ``--html FILE`` option (keyword ``html_path``)."""
    return click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None,
                        metavar="FILE",
                        help="also write a self-contained HTML report here (volume map, "
                             "metadata copies, protectors; opens offline)")(func)


def _paths(value: Any) -> list[str]:
    if not value:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v]
    return [str(value)]


def job_outputs(output: str) -> list[str]:
    """The files a decrypt / repair job writes besides the HTML page."""
    return [output, output + ".map", output + PARTIAL_SUFFIX, journal_path_for(output)]


def guard_html(kwargs: dict[str, Any], inputs: Iterable[str | None] = (),
               outputs: Iterable[str | None] = ()) -> str | None:
    """Check ``kwargs["html_path"]`` against the command's inputs and outputs (exit 2);
    returns the path (None without ``--html``).  Call before the unlock options are
    consumed."""
    path = kwargs.get("html_path")
    if not path:
        return None
    ins = list(inputs)
    outs = list(outputs)
    for key in _INPUT_KEYS:
        ins += _paths(kwargs.get(key))
    for key in _OUTPUT_KEYS:
        outs += _paths(kwargs.get(key))
    html_report.check_target(str(path), ins, outs)
    return str(path)


def write_report_html(path: str | None, report: dict[str, Any], command: str) -> None:
    if path:
        html_report.write_html(path, html_report.render_report(report, command))


def write_info_html(path: str | None, volume: BdeVolume, data: dict[str, Any]) -> None:
    """The ``info`` page: the decrypted layout when unlocked, else what the metadata says."""
    if not path:
        return
    ranges = volmap.volume_map(volume) if volume.map is not None else volmap.layout_map(volume)
    trust, decisions = volmap.metadata_decisions(volume)
    page = html_report.info_page({**data, "metadata_trust": trust,
                                  "metadata_decisions": decisions}, ranges)
    html_report.write_html(path, html_report.render(page))


def write_scan_html(path: str | None, data: dict[str, Any]) -> None:
    if path:
        html_report.write_html(path, html_report.render(html_report.scan_page(data)))


def check_batch_html(names: Sequence[str]) -> None:
    """Refuse ``batch --html`` when a job's directory would take the index's name."""
    if html_report.INDEX_PAGE in {name.lower() for name in names}:
        raise UsageError(f"a job is named {html_report.INDEX_PAGE}: its directory would take "
                         "the place of the batch's index page; rename it in a job list")


def _job_data(path: str, result: dict[str, Any]) -> dict[str, Any]:
    """A job's ``report.json``; its summary row alone when that file is missing or bad."""
    from bdekit.batch.spec import REPORT_FORMAT  # noqa: PLC0415 (batch pages only)

    try:
        data = load_json(path)
    except BdeError as exc:
        log.warning("job %s: no page from its report: %s", result.get("job"), exc.display())
        return {"result": result, "report": None}
    if data.get("format") != REPORT_FORMAT:
        return {"result": result, "report": None}
    return data


def write_batch_html(output_dir: str, summary: dict[str, Any]) -> None:
    """``DIR/<job>/report.html`` for every job of ``summary`` (a batch's ``summary.json``)
    whose directory exists, then ``DIR/index.html``."""
    from bdekit.batch.spec import job_paths  # noqa: PLC0415 (batch pages only)

    for result in summary.get("jobs") or []:
        paths = job_paths(output_dir, str(result.get("job")))
        if not os.path.isdir(paths.directory):
            continue
        page = html_report.job_page(_job_data(paths.report, result))
        html_report.write_html(os.path.join(paths.directory, html_report.JOB_PAGE),
                               html_report.render(page))
    index = html_report.index_page(summary, output_dir)
    html_report.write_html(os.path.join(output_dir, html_report.INDEX_PAGE),
                           html_report.render(index))


def load_json(path: str) -> dict[str, Any]:
    """A JSON object from ``path``; one-line errors with the offset of a syntax error."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise UsageError(f"cannot read the report: {exc.strerror}", path=path) from None
    except UnicodeDecodeError as exc:
        raise FormatError("not a JSON report: expected UTF-8 text", path=path,
                          offset=exc.start) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormatError(f"not a JSON report: {exc.msg} (line {exc.lineno}, column "
                          f"{exc.colno})", path=path, offset=exc.pos) from None
    if not isinstance(data, dict):
        raise FormatError("not a bdekit report: expected a JSON object", path=path, offset=0)
    return data


def page_of(data: dict[str, Any], path: str) -> str:
    """The HTML of whichever bdekit JSON ``data`` is (job report, info, scan)."""
    from bdekit.batch.spec import REPORT_FORMAT  # noqa: PLC0415 (``bdekit report`` only)
    from bdekit.batch.summary import SUMMARY_FORMAT  # noqa: PLC0415

    if data.get("format") == REPORT_FORMAT:
        return html_report.render(html_report.job_page(data))
    if data.get("format") == SUMMARY_FORMAT:
        return html_report.render(html_report.index_page(data))
    if "input" in data and ("damaged" in data or "volume_map" in data):
        return html_report.render_report(data, "report")
    if "partition_table" in data and "volumes" in data:
        return html_report.render(html_report.scan_page(data))
    if "metadata_copies" in data and "protectors" in data:
        return html_report.render(html_report.info_page(data, []))
    raise FormatError("not a bdekit report: expected the JSON of decrypt/repair --report "
                      "(fields input, damaged), info --json, scan --json, or a batch's "
                      "report.json or summary.json", path=path)


@click.command("report")
@click.argument("report_json", metavar="REPORT.json", type=click.Path(dir_okay=False))
@html_option
def report_command(report_json: str, html_path: str | None) -> None:
    """Render an HTML page from a JSON report (decrypt/repair --report, info --json or
    scan --json), e.g. one written on another machine or by an older run."""
    if not html_path:
        raise UsageError("give --html FILE: where to write the page")
    guard_html({"html_path": html_path}, [report_json])
    text = page_of(load_json(report_json), report_json)
    html_report.write_html(html_path, text)


COMMANDS = [report_command]
