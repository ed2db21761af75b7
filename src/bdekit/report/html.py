"""One self-contained HTML file per page: inline CSS, SVG and script, nothing fetched.

Layout of the file: a ``<header>`` (title, subtitle, verdict ``#verdict``), the map section
(``#map-section``: the SVG ``#volume-map``, the legend ``#legend``, the pinned-cell panel
``#cell-info``), one ``<section id="sec-IDENT">`` per :class:`bdekit.report.sections.Section`,
a footer, the tooltip ``#tip``, the ``map-data`` JSON block and the script.

Map geometry (also in the SVG's data attributes, so a test can check positions): cell ``i``
covers bytes ``[i * cell_bytes, (i + 1) * cell_bytes)`` and lies in row ``i // cols``, column
``i % cols``, at ``x = LEFT + col * CELL_W``, ``y = TOP + row * CELL_H`` (SVG user units).
Every overlay range (damage ...) is also outlined (``rect.r``) at its exact offsets, one
outline per row it crosses.
"""

from __future__ import annotations

import html
import json
from typing import Any

from bdekit.report import assets, kinds
from bdekit.report.model import MAX_LISTED, Grid, MapData, layout, legend
from bdekit.report.sections import Page, Section

LEFT = 92
TOP = 4
CELL_W = 12
CELL_H = 13
GAP = 2  # between rows

_CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
        "img-src data:; base-uri 'none'; form-action 'none'")


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def human(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{n:,} bytes" if unit == "bytes" else f"{value:.3g} {unit}"
        value /= 1024
    return f"{n:,} bytes"  # pragma: no cover


def _cell(value: Any) -> tuple[str, str]:
    """(css class, html) of a table cell value."""
    if isinstance(value, tuple) and len(value) == 2:
        style, raw = value
        if raw is None:
            return "", ""
        if style == "offset":
            return "off", f"0x{int(raw):X} <small>({int(raw):,})</small>"
        if style == "size":
            return "num", f"{esc(human(int(raw)))}" + (
                f" <small>({int(raw):,})</small>" if int(raw) >= 1024 else "")
        if style == "link":  # (relative href, text): links between the pages of a batch
            href, text = raw
            return "", f'<a href="{esc(href)}">{esc(text)}</a>'
        if style == "hex":
            return "hex", esc(raw)
        if style == "kind":
            return "", (f'<svg class="sw-inline" width="10" height="10"><rect class="k-{esc(raw)}"'
                        f' width="10" height="10"/></svg> {esc(raw)}')
        return "", esc(raw)
    if isinstance(value, bool):
        return "", "yes" if value else "no"
    if isinstance(value, int):
        return "num", f"{value:,}"
    if isinstance(value, float):
        return "num", f"{value:,.3f}"
    return "", esc("" if value is None else value)


def _section(sec: Section) -> str:
    out = [f'<section id="sec-{esc(sec.ident or kinds.slug(sec.title))}">',
           f"<h2>{esc(sec.title)}</h2>"]
    if sec.style == "kv":
        out.append('<table class="kv">')
        for key, value in sec.rows:
            cls, text = _cell(value)
            out.append(f'<tr><th>{esc(key)}</th><td class="{cls}">{text}</td></tr>')
        out.append("</table>")
    elif sec.style == "table":
        out.append("<table><thead><tr>" + "".join(f"<th>{esc(c)}</th>" for c in sec.columns)
                   + "</tr></thead><tbody>")
        for i, row in enumerate(sec.rows):
            attrs = sec.attrs[i] if i < len(sec.attrs) else {}
            attr = "".join(f' {esc(k)}="{esc(v)}"' for k, v in attrs.items())
            cells = "".join('<td class="{}">{}</td>'.format(*_cell(v)) for v in row)
            out.append(f"<tr{attr}>{cells}</tr>")
        out.append("</tbody></table>")
    else:
        out.append("<ul>" + "".join(f"<li>{_cell(row[0])[1]}</li>" for row in sec.rows)
                   + "</ul>")
    if sec.note:
        out.append(f'<p class="note">{esc(sec.note)}</p>')
    out.append("</section>")
    return "\n".join(out)


def _row_labels(grid: Grid) -> list[str]:
    every = max(1, -(-grid.rows // 48))
    out = []
    for row in range(0, grid.rows, every):
        y = TOP + row * CELL_H + CELL_H - GAP - 3
        out.append(f'<text x="{LEFT - 6}" y="{y}" text-anchor="end">'
                   f"{esc(human(row * grid.row_bytes) if row else '0')}</text>")
    return out


def _cells(grid: Grid) -> list[str]:
    out = []
    for r in grid.rects:
        x = LEFT + r.col * CELL_W
        y = TOP + r.row * CELL_H
        mix = ""
        if r.mix:
            parts = ",".join(f"{k}:{v}" for k, v in sorted(r.mix.items(), key=lambda kv: -kv[1]))
            mix = f' data-mix="{esc(parts)}"'
        out.append(f'<rect class="c k-{esc(r.kind)}" x="{x}" y="{y}" width="{r.ncols * CELL_W}"'
                   f' height="{CELL_H - GAP}" data-start="{r.start}" data-end="{r.end}"'
                   f' data-kind="{esc(r.kind)}"{mix}/>')
    return out


def _outlines(data: MapData, grid: Grid) -> list[str]:
    """Outline of each overlay range, one rect per row it crosses, at exact offsets."""
    out = []
    row_bytes = grid.row_bytes
    scale = CELL_W / grid.cell_bytes
    for span in data.overlay[:MAX_LISTED]:
        pos, part = span.offset, 0
        while pos < min(span.end, grid.size):
            row = pos // row_bytes
            stop = min(span.end, (row + 1) * row_bytes, grid.size)
            x = LEFT + (pos - row * row_bytes) * scale
            width = max(2.0, (stop - pos) * scale)
            out.append(f'<rect class="r k-{esc(span.kind)}" x="{x:.2f}" '
                       f'y="{TOP + row * CELL_H - 0.5}" width="{width:.2f}" '
                       f'height="{CELL_H - GAP + 1}" data-offset="{span.offset}" '
                       f'data-length="{span.length}" data-kind="{esc(span.kind)}" '
                       f'data-part="{part}"/>')
            pos, part = stop, part + 1
    return out


def _svg(data: MapData, grid: Grid) -> str:
    width = LEFT + grid.cols * CELL_W + 4
    height = TOP + grid.rows * CELL_H + 4
    attrs = (f'id="volume-map" class="map" viewBox="0 0 {width} {height}" '
             f'width="{width}" height="{height}" style="max-width:{width}px" role="img" '
             f'aria-label="{esc(data.title)}: {grid.cells} cells of {grid.cell_bytes} bytes" '
             f'data-size="{data.size}" data-cell-bytes="{grid.cell_bytes}" '
             f'data-cols="{grid.cols}" data-rows="{grid.rows}" data-left="{LEFT}" '
             f'data-top="{TOP}" data-cell-w="{CELL_W}" data-cell-h="{CELL_H}" '
             f'data-width="{width}"')
    return "\n".join([f"<svg {attrs}>", '<g class="labels">', *_row_labels(grid), "</g>",
                      '<g class="cells">', *_cells(grid), "</g>", '<g class="ranges">',
                      *_outlines(data, grid), "</g>", "</svg>"])


def _legend(data: MapData) -> str:
    items = []
    for key, label, size, count in legend(data):
        items.append(f'<li data-kind="{esc(key)}"><svg class="sw" viewBox="0 0 18 18">'
                     f'<rect class="k-{esc(key)}" x="0.5" y="0.5" width="17" height="17"/>'
                     f'</svg><span>{esc(label)}<span class="n">{esc(human(size))} in '
                     f"{count:,} range(s)</span></span></li>")
    return ('<aside id="legend" class="legend"><h3>Legend</h3><ul>' + "".join(items)
            + "</ul></aside>")


def _map_json(data: MapData) -> str:
    payload = {
        "coordinates": data.coordinates,
        "kinds": {k: v.label for k, v in kinds.KINDS.items()},
        "overlay": [[s.offset, s.length, s.kind, s.reason or s.label]
                    for s in data.overlay[:MAX_LISTED]],
        "base": [[s.offset, s.length, s.kind, s.reason or s.label]
                 for s in data.base[:MAX_LISTED]],
    }
    return json.dumps(payload, separators=(",", ":")).replace("<", "\\u003c")


def _map_section(data: MapData) -> str:
    grid = layout(data)
    sectors = grid.cell_bytes // max(1, data.unit)
    note = f'<p class="note">{esc(data.note)}</p>' if data.note else ""
    return "\n".join([
        '<section id="map-section">', f"<h2>{esc(data.title)}</h2>",
        f'<p class="coords">{esc(human(data.size))}, {esc(data.coordinates)}. Each cell is '
        f"{esc(human(grid.cell_bytes))} ({sectors:,} sector(s) of {data.unit} bytes), "
        f"{grid.cols} cells per row; a cell touched by damage takes the damage's colour, "
        "and every damaged range is outlined. "
        '<span class="hint">Hover over a cell for its offsets; click to keep them below.'
        "</span></p>", note,
        '<div class="map-wrap">', _svg(data, grid), _legend(data), "</div>",
        '<div id="cell-info" class="cell-info" aria-live="polite">Click a cell of the map to '
        "see its offsets, sizes and the ranges it holds.</div>",
        f'<script type="application/json" id="map-data">{_map_json(data)}</script>',
        "</section>"])


def render(page: Page) -> str:
    """The whole HTML document of ``page``."""
    level, text = page.verdict
    head = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta name="generator" content="bdekit {esc(page.version)}">',
        f"<title>{esc(page.title)}</title>",
        f"<style>{assets.CSS_BASE}\n{assets.kind_css()}\n</style>", "</head>",
        f'<body class="page-{esc(page.kind)}">',
        '<svg width="0" height="0" style="position:absolute" aria-hidden="true"><defs>'
        f"{assets.patterns()}</defs></svg>",
        "<header>", f"<h1>{esc(page.title)}</h1>",
        f'<p class="sub">{esc(page.subtitle)}</p>' if page.subtitle else "",
        f'<p id="verdict" class="verdict v-{esc(level)}">{esc(text)}</p>', "</header>", "<main>"]
    body = [_map_section(page.map)] if page.map is not None else []
    body += [_section(s) for s in page.sections]
    tail = ["</main>",
            f"<footer>Written by bdekit {esc(page.version)} on {esc(page.generated)}. This file "
            "is self-contained: it loads nothing from the network.</footer>",
            '<div id="tip" class="tip" hidden></div>', f"<script>{assets.JS}</script>",
            "</body>", "</html>"]
    return "\n".join([*head, *body, *tail]) + "\n"
