"""Job lists: a CSV or JSON file naming the volumes of a batch, and the names of jobs.

CSV: a header line, then one job per line; ``#`` lines and blank lines are skipped; comma,
semicolon or tab separated. JSON: a list (or ``{"jobs": [...]}``) whose items are objects
with the same fields, or plain strings (the input). Fields (header names are case- and
punctuation-insensitive; synonyms in :data:`FIELDS`):

``input``      the image (required; relative paths are relative to the job list);
``partition``  partition number (as ``bdekit scan`` lists it), or
``offset``     byte offset of the volume in the image (decimal or 0x hex);
``output``     the job's name: its directory under ``--output-dir`` (a plain file name;
               default: from the image's name, with ``-pN`` for a partition);
``key_file``   a key file for this job (BEK file, recovery key text file, escrow export);
``key_entry``  a keyring entry (``export.csv:row 12``) or key ID / protector GUID: only that
               escrowed key is tried;
``mapfile``    the input's GNU ddrescue mapfile.

A job list never holds a secret: a column that would (recovery password, password, key)
is refused, as is any unknown column. Every error names the file and the line.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterable
from typing import Any

from bdekit.batch.spec import JobSpec
from bdekit.errors import UsageError

#: field -> accepted (normalised) header names
FIELDS: dict[str, tuple[str, ...]] = {
    "input": ("input", "image", "path", "file", "evidence"),
    "partition": ("partition", "part"),
    "offset": ("offset", "volumeoffset"),
    "output": ("output", "name", "job", "outputname"),
    "key_file": ("keyfile", "bek", "bekfile", "recoverykeyfile"),
    "key_entry": ("keyentry", "keyringentry", "entry", "keyid", "recoverykeyid", "protectorid"),
    "mapfile": ("mapfile", "inputmapfile", "ddrescuemapfile"),
}

#: normalised header names that would carry a secret
SECRET_HEADERS = frozenset({"recoverypassword", "recoverykey", "password", "key", "fvek", "vmk",
                            "secret", "pin", "passphrase", "numericalpassword"})

_NAME_RE = re.compile(r"[^A-Za-z0-9._+-]+")
_IMAGE_EXT_RE = re.compile(r"\.(?:img|raw|dd|bin|iso|vhdx?|[el]x?01|s01|0+1|aa)$", re.I)
MAX_NAME = 100


def _norm(header: str) -> str:
    return re.sub(r"[^a-z0-9]", "", header.strip().lower())


def safe_name(text: str) -> str:
    """``text`` as a plain file name: other characters become ``_``; no leading dot."""
    name = _NAME_RE.sub("_", text).strip("._") or "job"
    return name[:MAX_NAME]


def default_name(image: str, partition: int | None = None, offset: int | None = None,
                 root: str | None = None) -> str:
    """The job name of a volume: the image's path (relative to ``root``) without its image
    extension, then ``-pN`` for partition N or ``-atN`` for an offset."""
    rel = os.path.relpath(image, root) if root else os.path.basename(image)
    base = _IMAGE_EXT_RE.sub("", rel.replace(os.sep, "_")) or rel
    if partition is not None:
        base += f"-p{partition}"
    elif offset is not None:
        base += f"-at{offset}"
    return safe_name(base)


def unique_names(jobs: Iterable[JobSpec]) -> list[JobSpec]:
    """The jobs, a name that repeats another (case-insensitively) getting ``-2``, ``-3``..."""
    seen: set[str] = set()
    out: list[JobSpec] = []
    for job in jobs:
        name, n = job.name, 1
        while name.lower() in seen:
            n += 1
            name = f"{job.name}-{n}"
        seen.add(name.lower())
        out.append(job if name == job.name else _renamed(job, name))
    return out


def _renamed(job: JobSpec, name: str) -> JobSpec:
    return JobSpec(name=name, input=job.input, partition=job.partition, offset=job.offset,
                   key_file=job.key_file, key_entry=job.key_entry, mapfile=job.mapfile,
                   size_hint=job.size_hint, origin=job.origin)


# --------------------------------------------------------------------------------------------
# Reading a job list
# --------------------------------------------------------------------------------------------


def read_job_list(path: str) -> list[JobSpec]:
    """The jobs of a CSV or JSON job list (see the module docstring)."""
    try:
        with open(path, encoding="utf-8-sig") as fh:
            text = fh.read()
    except UnicodeDecodeError:
        raise UsageError("not a job list (expected a directory of images or a CSV / JSON "
                         "job list; this file is not text)", path=path) from None
    except OSError as exc:
        raise UsageError(f"cannot read the job list: {exc.strerror}", path=path) from None
    stripped = text.lstrip()
    if stripped[:1] in ("[", "{"):
        items = _json_items(text, path)
    else:
        items = _csv_items(text, path)
    if not items:
        raise UsageError("the job list names no job", path=path)
    jobs: list[JobSpec] = []
    named: dict[str, int] = {}
    for line, fields in items:
        job = _job(fields, path, line)
        if "output" in fields and fields["output"] not in (None, ""):
            key = job.name.lower()
            if key in named:
                raise _line_error(path, line, f"output name {job.name!r} is also used on "
                                              f"line {named[key]}")
            named[key] = line
        jobs.append(job)
    return unique_names(jobs)


def _line_error(path: str, line: int, message: str) -> UsageError:
    return UsageError(f"line {line}: {message}", path=path)


def _csv_items(text: str, path: str) -> list[tuple[int, dict[str, Any]]]:
    rows = [(n, line) for n, line in enumerate(text.splitlines(), start=1)
            if line.strip() and not line.lstrip().startswith("#")]
    if not rows:
        return []
    head_line, head = rows[0]
    counts = {d: head.count(d) for d in (",", ";", "\t")}
    delimiter = max(counts, key=lambda d: counts[d])
    header = next(csv.reader([head], delimiter=delimiter))
    columns = _columns(header, path, head_line)
    items: list[tuple[int, dict[str, Any]]] = []
    for n, line in rows[1:]:
        try:
            cells = next(csv.reader(io.StringIO(line), delimiter=delimiter))
        except csv.Error as exc:
            raise _line_error(path, n, f"not a CSV line: {exc}") from None
        if len(cells) > len(columns) and any(c.strip() for c in cells[len(columns):]):
            raise _line_error(path, n, f"{len(cells)} values for {len(columns)} columns")
        items.append((n, {field: cells[i].strip() for i, field in enumerate(columns)
                          if i < len(cells)}))
    return items


def _field_of(cell: str, path: str, line: int) -> str:
    """The field a header cell (or JSON key) names; secret or unknown ones are refused."""
    norm = _norm(cell)
    if norm in SECRET_HEADERS:
        raise _line_error(path, line, f"column {cell.strip()!r} would hold a secret: a job "
                                      "list names key files (key_file) or keyring entries "
                                      "(key_entry), never keys")
    field = next((f for f, names in FIELDS.items() if norm in names), None)
    if field is None:
        raise _line_error(path, line, f"unknown column {cell.strip()!r} (expected: "
                                      f"{', '.join(FIELDS)})")
    return field


def _columns(header: list[str], path: str, line: int) -> list[str]:
    """The field of each header cell."""
    fields: list[str] = []
    for cell in header:
        field = _field_of(cell, path, line)
        if field in fields:
            raise _line_error(path, line, f"column {cell.strip()!r} repeats {field}")
        fields.append(field)
    if "input" not in fields:
        raise _line_error(path, line, "no input column (expected a header line such as "
                                      "'input,partition,output,key_entry')")
    return fields


def _json_items(text: str, path: str) -> list[tuple[int, dict[str, Any]]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _line_error(path, exc.lineno, f"not JSON: {exc.msg}") from None
    if isinstance(doc, dict) and isinstance(doc.get("jobs"), list):
        match = re.search(r'"jobs"\s*:\s*\[', text)
        start = match.end() - 1 if match else text.index("[")
        values: list[Any] = doc["jobs"]
    elif isinstance(doc, list):
        start, values = text.index("["), doc
    else:
        raise _line_error(path, 1, 'expected a list of jobs, or {"jobs": [...]}')
    lines = _element_lines(text, start)
    items: list[tuple[int, dict[str, Any]]] = []
    for line, value in zip(lines, values, strict=False):
        if isinstance(value, str):
            value = {"input": value}
        if not isinstance(value, dict):
            raise _line_error(path, line, "a job is an object or a string (the input)")
        fields = {_field_of(str(key), path, line): cell for key, cell in value.items()}
        if "input" not in fields:
            raise _line_error(path, line, "the job has no input")
        items.append((line, fields))
    return items


def _element_lines(text: str, start: int) -> list[int]:
    """The line of each element of the JSON array opening at ``text[start]``."""
    decoder = json.JSONDecoder()
    skip = re.compile(r"[\s,]*")
    lines: list[int] = []
    pos = start + 1
    while True:
        pos = skip.match(text, pos).end()  # type: ignore[union-attr]
        if pos >= len(text) or text[pos] == "]":
            return lines
        lines.append(text.count("\n", 0, pos) + 1)
        _value, pos = decoder.raw_decode(text, pos)


def _int_field(fields: dict[str, Any], name: str, path: str, line: int) -> int | None:
    value = fields.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise _line_error(path, line, f"{name} {value!r} is not a number")
    if isinstance(value, int):
        number = value
    else:
        try:
            number = int(str(value).strip(), 0)
        except ValueError:
            raise _line_error(path, line, f"{name} {value!r} is not a number") from None
    if number < 0:
        raise _line_error(path, line, f"{name} {number} is negative")
    return number


def _path_field(fields: dict[str, Any], name: str, base: str, path: str,
                line: int) -> str | None:
    value = fields.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _line_error(path, line, f"{name} must be a path")
    return os.path.abspath(os.path.join(base, os.path.expanduser(value)))


def _job(fields: dict[str, Any], path: str, line: int) -> JobSpec:
    base = os.path.dirname(os.path.abspath(path))
    image = _path_field(fields, "input", base, path, line)
    if image is None:
        raise _line_error(path, line, "input is empty")
    partition = _int_field(fields, "partition", path, line)
    offset = _int_field(fields, "offset", path, line)
    if partition is not None and offset is not None:
        raise _line_error(path, line, "give a partition or an offset, not both")
    output = fields.get("output")
    if output not in (None, ""):
        if not isinstance(output, str) or safe_name(output) != output or output in (".", ".."):
            raise _line_error(path, line, f"output name {output!r} is not a plain name "
                                          "(letters, digits, '.', '_', '+', '-')")
        name = output
    else:
        name = default_name(image, partition, offset)
    entry = fields.get("key_entry")
    if entry is not None and not isinstance(entry, str):
        raise _line_error(path, line, "key_entry must be text")
    return JobSpec(name=name, input=image, partition=partition, offset=offset,
                   key_file=_path_field(fields, "key_file", base, path, line),
                   key_entry=entry or None,
                   mapfile=_path_field(fields, "mapfile", base, path, line),
                   origin=f"{os.path.basename(path)}:line {line}")


__all__ = ["FIELDS", "default_name", "read_job_list", "safe_name", "unique_names"]
