"""Finding the jobs of a directory of evidence: every BitLocker volume of every image in it.

The directory is walked recursively (sorted; hidden files and directories, files under 512
bytes and the output directory are skipped). Each file is opened as an image whatever its
container (:func:`bdekit.image.sources.open_source`: raw, split, E01, VHD/VHDX, by content),
once per set: the later segments of a split raw set (``.002`` ...) or of an EWF set (``.E02``
...) are left to their first segment. :func:`bdekit.recovery.survey.scan_image` then lists its
volumes: a bare BitLocker volume is one job, a disk gives one job per BitLocker partition
(``--partition N``). In ``repair`` mode the image is also searched for stray metadata blocks
(a wiped volume header, a lost partition table), and each volume start inferred from them is
a job at that offset.

A file that is not an image of a BitLocker volume is skipped (logged); one that looks like
evidence but cannot be opened (an E01 without libewf, a missing segment, a permission
problem) is still a job, so that it fails with its reason in the summary. An image with a
ddrescue mapfile beside it (``IMAGE.map``, as ``ddrescue`` and ``bdekit synth damage`` name
it) gets it as its input mapfile.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Sequence

from bdekit.batch.joblist import default_name, unique_names
from bdekit.batch.spec import JobSpec
from bdekit.errors import BdeError, FormatError, SourceError
from bdekit.image.rawfile import find_split_segments
from bdekit.image.sources import open_source
from bdekit.recovery.survey import ScanReport, scan_image

log = logging.getLogger(__name__)

#: later segments of an EWF set (E02.., EAA.., Ex02.., L02.., s02..)
_EWF_LATER_RE = re.compile(r"^(?P<stem>.+)\.(?P<kind>[EeLlSs]x?)(?!01$)(?:\d\d|[A-Za-z]{2})$")

#: files smaller than this cannot be a BitLocker volume
MIN_IMAGE = 512


def discover(root: str, *, repair: bool = False, exclude: Sequence[str] = ()) -> list[JobSpec]:
    """The jobs of the evidence directory ``root`` (see the module docstring)."""
    jobs: list[JobSpec] = []
    for path in _candidates(root, exclude):
        jobs += _jobs_of(path, root, repair)
    log.info("%s: %d BitLocker volume(s) found", root, len(jobs))
    return unique_names(jobs)


def _candidates(root: str, exclude: Sequence[str]) -> Iterator[str]:
    """The files of ``root`` that may be (the first file of) an image."""
    skip = {os.path.realpath(p) for p in exclude}
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and os.path.realpath(os.path.join(directory, d)) not in skip)
        for name in sorted(files):
            path = os.path.join(directory, name)
            if name.startswith(".") or not os.path.isfile(path) or _later_segment(path):
                continue
            try:
                if os.path.getsize(path) < MIN_IMAGE:
                    continue
            except OSError:
                continue
            yield os.path.abspath(path)


def _later_segment(path: str) -> bool:
    """Whether ``path`` is a segment after the first of a split raw or EWF set."""
    match = _EWF_LATER_RE.match(os.path.basename(path))
    if match:
        kind = match.group("kind")
        first = os.path.join(os.path.dirname(path), f"{match.group('stem')}.{kind}01")
        if os.path.exists(first) or os.path.exists(first[:-3] + first[-3:].lower()):
            return True
    try:
        segments = find_split_segments(path)
    except BdeError:  # a gap in the numbering: the first segment's job reports it
        return True
    return bool(segments and len(segments) > 1 and segments[0] != path)


def _scan(path: str, repair: bool) -> ScanReport | None:
    """The scan of one file; None when it is no image of a BitLocker volume."""
    try:
        with open_source(path) as source:
            if repair:
                return scan_image(source, search="auto")
            return scan_image(source, search="none")
    except FormatError as exc:
        log.info("%s: skipped: %s", path, exc.message)
        return None


def _jobs_of(path: str, root: str, repair: bool) -> list[JobSpec]:
    mapfile = path + ".map" if os.path.isfile(path + ".map") else None
    origin = os.path.relpath(path, root)
    try:
        report = _scan(path, repair)
    except SourceError as exc:
        log.warning("%s: cannot be opened (%s): listed as a failed job", path, exc.message)
        return [JobSpec(name=default_name(path, root=root), input=path, mapfile=mapfile,
                        origin=origin)]
    except BdeError as exc:
        log.info("%s: skipped: %s", path, exc.message)
        return []
    if report is None:
        return []
    jobs: list[JobSpec] = []
    known: set[int] = set()
    for entry in report.entries:
        if not entry.bitlocker:
            continue
        known.add(entry.offset)
        jobs.append(JobSpec(name=default_name(path, entry.index, root=root), input=path,
                            partition=entry.index, mapfile=mapfile,
                            size_hint=entry.size, origin=origin))
    for block in report.blocks:
        start = block.volume_start
        if start is None or start in known:
            continue
        known.add(start)
        log.info("%s: a volume without its header at offset %d (from stray metadata)",
                 path, start)
        jobs.append(JobSpec(name=default_name(path, offset=start, root=root), input=path,
                            offset=start, mapfile=mapfile,
                            size_hint=max(0, report.image_size - start), origin=origin))
    if not jobs:
        log.info("%s: skipped: no BitLocker volume", path)
    return jobs


__all__ = ["discover"]
