"""Pages: what one HTML report shows, built from the JSON that bdekit already writes.

Three builders, one per kind of page:

* :func:`report_page` — a ``decrypt`` / ``repair`` job (the dict of ``--report``, or a JSON
  report read back by ``bdekit report``): the volume map from ``volume_map`` with every range
  list of the report (``damaged`` and any later list of ``{offset, length, reason|kind}``
  dicts) drawn over it; metadata copies and the decisions about them; protectors; hashes,
  byte counts, times, version and the command line (secrets masked).
* :func:`info_page` — ``bdekit info`` (``BdeVolume.describe()`` plus, unlocked, the map).
* :func:`scan_page` — ``bdekit scan``: the disk image with its partitions and the stray
  metadata blocks.

Fields a builder does not know are listed under "Other fields" (secrets never: see
:data:`bdekit.report.kinds.SECRET_KEYS`), so new report fields are seen before they get a
place of their own.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from bdekit._version import __version__
from bdekit.report import kinds
from bdekit.report.model import MapData, Span, paint, span_from
from bdekit.report.sections import (
    Page,
    Section,
    copies_section,
    decisions_section,
    generic_section,
    mask_command,
    protectors_section,
    range_table,
    report_map,
    scrub,
)

#: report fields shown in the summary / counts sections (in this order)
_SUMMARY = [("command", "Command"), ("command_line", "Command line"), ("input", "Input"),
            ("output", "Output"),
            ("output_mapfile", "Output mapfile"), ("method", "Encryption method"),
            ("volume_size", "Volume size"), ("volume_size_source", "Volume size from"),
            ("sha256", "SHA-256 of the output"), ("started", "Started"),
            ("seconds", "Seconds"), ("throughput_mb_s", "Throughput (MB/s)"),
            ("resumed_at", "Resumed at"), ("bdekit_version", "bdekit version")]
_COUNTS = ["bytes_decrypted", "bytes_plain", "bytes_zero", "bytes_missing", "bytes_unreadable",
           "bytes_unrecovered"]
_METADATA = ["metadata_copy", "metadata_offset", "metadata_source", "key_package"]
_UNLOCK = ["protector", "key_id", "unlocked_via"]
#: fields drawn elsewhere (the map, the volume section)
_DRAWN = {"volume_map", "volume", "metadata_copies", "repairs", "notes", "metadata_decisions",
          "metadata_trust"}


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _summary(report: dict[str, Any], used: set[str]) -> Section:
    rows: list[list[Any]] = []
    for key, title in _SUMMARY:
        if key not in report:
            continue
        used.add(key)
        value = report[key]
        if key in ("command", "command_line") and value:
            value = mask_command(str(value))
        elif key == "volume_size":
            value = ("size", value)
        elif key == "resumed_at" and value is not None:
            value = ("offset", value)
        if value not in (None, ""):
            rows.append([title, value])
    volume = report.get("volume") or {}
    for key, title in (("volume_guid", "Volume GUID"), ("description", "Description"),
                       ("created", "Created"), ("sector_size", "Sector size"),
                       ("state", "Conversion state"), ("path", "Volume read from")):
        if volume.get(key) not in (None, ""):
            rows.append([title, volume[key]])
    return Section("Summary", "kv", rows, ident="summary")


def _counts(report: dict[str, Any], used: set[str]) -> Section:
    rows = []
    for key in _COUNTS:
        if key in report:
            used.add(key)
            rows.append([key.replace("bytes_", "").replace("_", " "), ("size", report[key])])
    return Section("Byte counts", "kv", rows, ident="counts")


def _verdict(report: dict[str, Any], lists: list[tuple[str, list[Span]]]) -> tuple[str, str]:
    damaged = report.get("damaged") or []
    others = [(k, s) for k, s in lists if k != "damaged"]
    if damaged:
        lost = sum(int(d.get("length", 0)) for d in damaged if isinstance(d, dict))
        return "bad", (f"{len(damaged)} damaged range(s): {lost:,} bytes could not be "
                       "recovered (written as zeros; exit code 6). They are marked on the map "
                       "and listed below.")
    if others:
        names = ", ".join(k for k, _ in others)
        return "warn", f"All bytes written; ranges to check: {names} (see the map)."
    return "ok", "Every byte of the volume was recovered."


def report_page(report: dict[str, Any], command: str = "report") -> Page:
    """The page of a decrypt / repair JSON report (see the module docstring)."""
    report = scrub(report)
    used: set[str] = set(_DRAWN)
    vmap, lists = report_map(report, used)
    sections = [_summary(report, used), _counts(report, used)]
    for key, spans in lists:
        title = "Damaged ranges" if key == "damaged" else key.replace("_", " ").capitalize()
        sections.append(range_table(title, spans, f"ranges-{key}"))
    if "damaged" not in {k for k, _ in lists}:
        sections.append(Section("Damaged ranges", "list", [["none"]], ident="ranges-damaged"))
    volume = report.get("volume") or {}
    copies = report.get("metadata_copies") or volume.get("metadata_copies") or []
    meta = copies_section(copies, report.get("metadata_copy"))
    meta.note = "; ".join(f"{k.replace('_', ' ')}: {report[k]}" for k in _METADATA
                          if report.get(k) not in (None, ""))
    used.update(_METADATA)
    sections.append(meta)
    sections.append(decisions_section(report.get("metadata_decisions"),
                                      report.get("metadata_trust")))
    used.update(_UNLOCK)
    sections.append(protectors_section(volume.get("protectors") or [], report.get("protector"),
                                        report.get("unlocked_via")))
    for key, title in (("repairs", "Repairs"), ("notes", "Notes")):
        if report.get(key):
            sections.append(generic_section(title, report[key], key))
    rest = {k: v for k, v in report.items() if k not in used}
    if rest:
        sections.append(generic_section("Other fields", rest, "other"))
    title = f"bdekit {command}: {report.get('input', '')}"
    sub = f"→ {report.get('output', '')}" if report.get("output") else ""
    return Page("report", title, sub, _verdict(report, lists), vmap, sections,
                str(report.get("bdekit_version") or __version__), now())


def info_page(info: dict[str, Any], volume_map: list[dict[str, Any]]) -> Page:
    """The page of ``bdekit info``: ``info`` as ``info --json`` prints it (keys dropped)."""
    info = scrub(info)
    unlocked = info.get("unlocked") or {}
    size = int(info.get("volume_size") or info.get("image_size") or 0)
    base = sorted((s for s in (span_from(v, "", False) for v in volume_map) if s is not None),
                  key=lambda s: s.offset)
    base = paint(base, size, Span(0, size, "unknown", "locked: not decrypted"))
    coords = "offsets in the decrypted volume" if unlocked else "offsets in the volume (locked)"
    vmap = MapData(size, int(info.get("sector_size") or 512), base, [], "Volume map", coords)
    keys = ["path", "container", "image_offset", "metadata_version", "header_kind",
            "encryption_method", "volume_guid", "created", "description", "state",
            "state_offset", "sector_size", "image_size", "volume_size", "volume_size_source",
            "used_space_only", "relocated_header", "metadata_source"]
    rows = [[k.replace("_", " "), info[k]] for k in keys if info.get(k) not in (None, "")]
    sections = [Section("Volume", "kv", rows, ident="summary"),
                copies_section(info.get("metadata_copies") or [],
                                info.get("metadata_copy_used")),
                decisions_section(info.get("metadata_decisions"), info.get("metadata_trust")),
                protectors_section(info.get("protectors") or [], unlocked.get("protector"),
                                    unlocked.get("via"))]
    if unlocked:
        sections.append(generic_section("Unlocked", unlocked, "unlocked"))
    rest = {k: v for k, v in info.items()
            if k not in {*keys, "metadata_copies", "protectors", "unlocked", "metadata_trust",
                         "metadata_decisions",
                         "metadata_copy_used", "encryption_method_id", "next_state"}}
    if rest:
        sections.append(generic_section("Other fields", rest, "other"))
    verdict = (("ok", f"Unlocked with {unlocked.get('via')}.") if unlocked else
               ("info", "Locked: give a secret to unlock and see the decrypted layout."))
    return Page("info", f"bdekit info: {info.get('path', '')}",
                f"{info.get('encryption_method', '')}, {{{info.get('volume_guid', '')}}}",
                verdict, vmap, sections, __version__, now())


def _scan_base(scan: dict[str, Any], size: int) -> list[Span]:
    spans = []
    volumes = sorted(scan.get("volumes") or [], key=lambda v: not v.get("extended"))
    for v in volumes:
        kind = "extended" if v.get("extended") else "bitlocker" if v.get("bitlocker") \
            else "partition"
        name = f"partition {v.get('index')}" if v.get("index") is not None else "volume"
        what = (f"BitLocker ({v.get('bitlocker')}), {v.get('encryption_method') or ''}"
                if v.get("bitlocker") else v.get("filesystem") or v.get("type_name") or "")
        spans.append(Span(int(v["offset"]), int(v["size"]), kind, f"{name}: {what}",
                          kinds.KINDS[kind].label))
    return paint(spans, size, Span(0, size, "unpartitioned", "not in any partition"))


def scan_page(scan: dict[str, Any]) -> Page:
    """The page of ``bdekit scan`` (``scan --json``): the image with its partitions."""
    scan = scrub(scan)
    size = int(scan.get("image_size") or 0)
    blocks = [Span(int(b["offset"]), int(b.get("size") or 512), "stray-metadata",
                   f"metadata block v{b.get('version')}: {b.get('status')}"
                   + (f", copy {b.get('copy_index')} of a volume at {b.get('volume_start')}"
                      if b.get("volume_start") is not None else ""))
              for b in scan.get("stray_metadata_blocks") or []]
    vmap = MapData(size, 512, _scan_base(scan, size), blocks, "Disk map", "offsets in the image")
    image: list[list[Any]] = [["path", scan.get("path")], ["container", scan.get("container")],
             ["image size", ("size", size)],
             ["partition table", scan.get("partition_table")],
             ["table error", scan.get("partition_table_error") or ""],
             ["metadata search", scan.get("metadata_search")]]
    parts = generic_section("Partitions", [
        {k: v.get(k) for k in ("index", "offset", "size", "type_name", "bitlocker",
                               "filesystem", "encryption_method", "volume_guid", "state",
                               "protectors", "truncated", "error")}
        for v in scan.get("volumes") or []] or ["none"], "partitions")
    stray = generic_section("Stray metadata blocks", scan.get("stray_metadata_blocks")
                            or ["none"], "stray")
    count = int(scan.get("bitlocker_count") or 0)
    verdict = ("info", f"{count} BitLocker volume(s) recognised; "
                       f"{len(blocks)} stray metadata block(s).")
    return Page("scan", f"bdekit scan: {scan.get('path', '')}",
                f"{size:,} bytes, {scan.get('container', '')}", verdict, vmap,
                [Section("Image", "kv", image, ident="summary"), parts, stray],
                __version__, now())
