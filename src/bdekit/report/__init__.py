"""HTML reports: one self-contained page per job, with a map of the volume.

Layers of this package (each imports only the ones above it in this list):

* :mod:`~bdekit.report.kinds` — the kinds of ranges (label, colour, texture, priority) and the
  classification of a report's range dicts into them;
* :mod:`~bdekit.report.model` — spans, painting, and the grid of cells a map is drawn with;
* :mod:`~bdekit.report.sections` / :mod:`~bdekit.report.pages` — what a page shows, built
  from the JSON of ``decrypt`` / ``repair --report``, ``info --json`` and ``scan --json``;
* :mod:`~bdekit.report.batch_pages` — the pages of ``batch --html``: one per job (its
  ``report.json``) and the index of the output directory (``summary.json``);
* :mod:`~bdekit.report.assets` / :mod:`~bdekit.report.html` — the HTML text (inline CSS, SVG,
  script; a Content-Security-Policy that forbids any fetch).

:func:`write_html` writes a page atomically (``image/files.write_atomic``), mode 0600, after
:func:`check_target` made sure the path is neither an input nor another output of the job.
The page builders are imported when first used (PEP 562), so a command that only checks its
``--html`` path, or writes no page, does not load them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from bdekit._lazy import lazy_getattr
from bdekit.errors import OutputExistsError, UsageError
from bdekit.image.files import write_atomic

if TYPE_CHECKING:
    from bdekit.report.batch_pages import INDEX_PAGE, JOB_PAGE, index_page, job_page
    from bdekit.report.html import render
    from bdekit.report.pages import info_page, report_page, scan_page
    from bdekit.report.sections import Page

__getattr__ = lazy_getattr(__name__, {
    "INDEX_PAGE": "batch_pages", "JOB_PAGE": "batch_pages", "index_page": "batch_pages",
    "job_page": "batch_pages", "render": "html", "info_page": "pages", "report_page": "pages",
    "scan_page": "pages", "Page": "sections"}, globals())

__all__ = ["INDEX_PAGE", "JOB_PAGE", "Page", "check_target", "index_page", "info_page",
           "job_page", "render", "render_report", "report_page", "scan_page", "write_html"]


def render_report(report: dict[str, Any], command: str = "report") -> str:
    """The HTML of a decrypt / repair JSON report."""
    from bdekit.report.html import render  # noqa: PLC0415 (see the module docstring)
    from bdekit.report.pages import report_page  # noqa: PLC0415

    return render(report_page(report, command))


def _same(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)
    except OSError:
        return False


def check_target(path: str, inputs: Iterable[str | None] = (),
                 outputs: Iterable[str | None] = ()) -> None:
    """Refuse (exit 2) an HTML path that is an input, another output, a directory or a device,
    or whose directory does not exist."""
    for other in inputs:
        if other and _same(path, other):
            raise OutputExistsError("refusing to write the HTML report over an input",
                                    path=path)
    for other in outputs:
        if other and _same(path, other):
            raise OutputExistsError("the HTML report would overwrite another output of this "
                                    "command", path=path)
    if os.path.isdir(path):
        raise UsageError("the HTML report path is a directory", path=path)
    if os.path.exists(path) and not os.path.isfile(path):
        raise OutputExistsError("the HTML report path is not a regular file", path=path)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"directory {parent} does not exist", path=path)


def write_html(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically, mode 0600 (``image.files.write_atomic``)."""
    write_atomic(path, text)
