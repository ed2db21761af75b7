"""The parts of a page (:class:`Page`, :class:`Section`) and the helpers that make them.

A page is a title, a verdict line, an optional map (:class:`bdekit.report.model.MapData`) and
sections; a section is a key/value list, a table or a list of lines, whose cells are plain
values or ``(style, value)`` pairs (``offset``, ``size``, ``kind``) that the renderer formats.
Reports reach the page through :func:`scrub` (no key named like a secret is shown, whatever
the report holds) and :func:`mask_command` (values of secret options become ``***``).
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from typing import Any

from bdekit.report import kinds
from bdekit.report.model import MapData, Span, is_flat, paint, span_from


@dataclasses.dataclass
class Section:
    """``kv``: rows of (key, value); ``table``: ``columns`` and rows (``attrs`` per row are
    data attributes); ``list``: rows of one string."""

    title: str
    style: str
    rows: list[list[Any]]
    columns: list[str] = dataclasses.field(default_factory=list)
    attrs: list[dict[str, str]] = dataclasses.field(default_factory=list)
    ident: str = ""
    note: str = ""


@dataclasses.dataclass
class Page:
    kind: str  # "report", "info", "scan"
    title: str
    subtitle: str
    verdict: tuple[str, str]  # (level "ok" / "warn" / "bad" / "info", text)
    map: MapData | None
    sections: list[Section]
    version: str = ""
    generated: str = ""


_SECRET_FLAGS = {"-rp", "--recovery-password", "-RecoveryPassword", "-pw", "--password",
                 "-Password", "--fvek", "--vmk", "--certificate-password"}


def mask_command(text: str) -> str:
    """The command line with the value of every secret option replaced by ``***``."""
    try:
        argv = shlex.split(text)
    except ValueError:
        return "(command line withheld: it does not parse)"
    out: list[str] = []
    hide = False
    for arg in argv:
        name, eq, _value = arg.partition("=")
        if hide and not arg.startswith("-"):
            out.append("***")
        elif name in _SECRET_FLAGS and eq:
            out.append(name + "=***")
        else:
            out.append(arg)
        hide = name in _SECRET_FLAGS and not eq and not hide
    return shlex.join(out)


def scrub(value: Any) -> Any:
    """``value`` without any secret-named key (recursively)."""
    if isinstance(value, dict):
        return {k: ("(withheld)" if str(k).lower() in kinds.SECRET_KEYS else scrub(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def is_range_list(value: Any) -> bool:
    return (isinstance(value, list) and bool(value)
            and all(isinstance(v, dict) and "offset" in v and "length" in v for v in value))


def range_table(title: str, spans: list[Span], ident: str, limit: int = 1000) -> Section:
    rows: list[list[Any]] = []
    attrs: list[dict[str, str]] = []
    for span in spans[:limit]:
        rows.append([("offset", span.offset), ("offset", span.end), ("size", span.length),
                     ("kind", span.kind), span.reason or span.label])
        attrs.append({"data-offset": str(span.offset), "data-length": str(span.length),
                      "data-kind": span.kind})
    note = (f"{len(spans) - limit} more range(s) are in the JSON report."
            if len(spans) > limit else "")
    return Section(title, "table", rows, ["start", "end", "size", "kind", "reason"], attrs,
                   ident, note)


_NOT_ON_MAP = ("volume_map", "metadata_copies", "metadata_decisions")


def _overlays(report: dict[str, Any], used: set[str]) -> list[tuple[str, list[Span]]]:
    """Every range list of the report but the volume map, as overlay spans."""
    out: list[tuple[str, list[Span]]] = []
    for key, value in report.items():
        # metadata decisions are ranges inside a metadata block, not in the volume
        if key in _NOT_ON_MAP or not is_range_list(value):
            continue
        spans = [s for s in (span_from(v, key) for v in value) if s is not None]
        used.add(key)
        if spans:
            out.append((key, sorted(spans, key=lambda s: s.offset)))
    return out


def _base_spans(report: dict[str, Any], size: int) -> tuple[list[Span], str]:
    items = report.get("volume_map")
    if isinstance(items, list) and is_range_list(items):
        spans = [s for s in (span_from(v, "", overlay=False) for v in items) if s is not None]
        spans.sort(key=lambda s: s.offset)
        if is_flat(spans):
            return spans, ""
        return paint(spans, size, Span(0, size, "unknown", "not in the map")), ""
    copies = [Span(int(c["offset"]), 0x10000, "metadata",
                   f"metadata copy {c.get('index')} (extent assumed: 64 KiB)")
              for c in report.get("metadata_copies") or [] if c.get("offset")]
    fill = Span(0, size, "unknown", "this report has no volume map (older bdekit)",
                "No read plan in this report")
    return paint(copies, size, fill), "This report has no volume map: only the metadata " \
        "copies and the damage are placed."


def report_map(report: dict[str, Any], used: set[str]) -> tuple[MapData,
                                                                list[tuple[str, list[Span]]]]:
    size = int(report.get("volume_size") or 0) or max(
        (int(v.get("offset", 0)) + int(v.get("length", 0))
         for v in report.get("volume_map") or [] if isinstance(v, dict)), default=0)
    volume = report.get("volume") if isinstance(report.get("volume"), dict) else {}
    unit = int((volume or {}).get("sector_size") or 512)
    base, note = _base_spans(report, size)
    lists = _overlays(report, used)
    overlay = [s for _key, spans in lists for s in spans] + _rebuilt(report, unit)
    return MapData(size, unit, base, overlay, "Volume map", "offsets in the output volume",
                   note), lists


def _rebuilt(report: dict[str, Any], unit: int) -> list[Span]:
    """The boot sector ``repair`` rebuilt (its ``repairs`` lines are text: today the only one
    with a place on the map is "boot sector rebuilt ...", at volume offset 0)."""
    return [Span(0, unit, "rebuilt", str(line))
            for line in report.get("repairs") or []
            if isinstance(line, str) and line.startswith("boot sector rebuilt")][:1]


def copies_section(copies: list[dict[str, Any]], used_index: Any) -> Section:
    rows = []
    attrs = []
    for c in copies:
        rows.append([c.get("index"), ("offset", c.get("offset")), c.get("status"),
                     _yes_no(c.get("crc_ok")), c.get("integrity"),
                     "serves" if c.get("index") == used_index else ""])
        attrs.append({"data-copy": str(c.get("index"))})
    return Section("Metadata copies", "table", rows,
                   ["copy", "offset", "status", "CRC32", "SHA-256 integrity", "used"], attrs,
                   "metadata")


#: how much of a copy's bytes a decisions table shows (hex digits)
_HEX_SHOWN = 48


def decisions_section(decisions: Any, trust: Any = None) -> Section:
    """What was decided about the metadata copies: one row per range where the copies
    disagreed (``bdekit.format.consensus.Disagreement.to_json``: offset and length inside
    the metadata block, the field it falls in, each copy's bytes, which copies the majority
    came from) and the serving-copy decision of the SHA-256 integrity check."""
    items = [d for d in scrub(decisions or []) if isinstance(d, dict)]
    indices = sorted({str(k) for d in items if isinstance(d.get("copies"), dict)
                      for k in d["copies"]}, key=lambda k: (len(k), k))
    rows: list[list[Any]] = []
    attrs: list[dict[str, str]] = []
    for d in items:
        copies: dict[str, Any] = d["copies"] if isinstance(d.get("copies"), dict) else {}
        decided = str(d.get("decided_by") or "")
        if d.get("instead_of"):
            decided += f" (instead of {d['instead_of']})"
        offset = d.get("offset")
        rows.append([d.get("field") or "",
                     ("offset", offset) if isinstance(offset, int) else "",
                     ("size", d["length"]) if isinstance(d.get("length"), int) else "",
                     *[("hex", _hex(copies.get(k))) for k in indices], decided])
        attrs.append({"data-field": str(d.get("field") or ""),
                      "data-decided": "none" if decided == "no majority" else "majority"
                      if copies else "integrity"})
    note = f"Metadata trust: {trust}." if trust not in (None, "") else ""
    if not items:
        text = ("This report does not record the metadata decisions (older bdekit)."
                if decisions is None else "The copies agree: nothing had to be decided.")
        return Section("Metadata decisions", "list", [[text]], ident="decisions", note=note)
    return Section("Metadata decisions", "table", rows,
                   ["field", "offset in the block", "length",
                    *[f"copy {k}" for k in indices], "decided by"], attrs, "decisions", note)


def _hex(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= _HEX_SHOWN else text[:_HEX_SHOWN] + "…"


def _yes_no(value: Any) -> str:
    return "ok" if value is True else "failed" if value is False else "" if value is None \
        else str(value)


def protectors_section(protectors: list[dict[str, Any]], opened: str | None,
                        via: str | None) -> Section:
    rows = []
    for p in protectors:
        mark = f"opened ({via})" if opened and str(p.get("guid", "")).upper() == \
            opened.upper() else ""
        extra = p.get("label") or p.get("bek_file") or p.get("thumbprint") or ""
        rows.append([p.get("type"), "{" + str(p.get("guid")) + "}", p.get("key_id"),
                     p.get("modified") or "", extra, mark])
    note = "" if protectors else (f"Opened with {via}: {{{opened}}}" if opened else "")
    return Section("Protectors", "table", rows,
                   ["type", "ID", "key ID", "date", "label / file", "used"], [], "protectors",
                   note)


def generic_section(title: str, value: Any, ident: str = "") -> Section:
    """Any JSON value: a list of dicts as a table, a dict as key/value rows, else a list."""
    value = scrub(value)
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        columns: list[str] = []
        for v in value:
            columns += [k for k in v if k not in columns]
        rows = [[_short(v.get(c)) for c in columns] for v in value[:1000]]
        return Section(title, "table", rows, columns, [], ident)
    if isinstance(value, dict):
        return Section(title, "kv", [[k, _short(v)] for k, v in value.items()], [], [], ident)
    if isinstance(value, list):
        return Section(title, "list", [[_short(v)] for v in value], [], [], ident)
    return Section(title, "list", [[_short(value)]], [], [], ident)


def _short(value: Any, limit: int = 400) -> Any:
    if isinstance(value, (dict, list)):
        text = json.dumps(value, default=str)
        return text if len(text) <= limit else text[:limit] + " …"
    return value
