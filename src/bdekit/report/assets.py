"""The stylesheet and script every page carries inline (no file, font or script is fetched).

The page's Content-Security-Policy (``default-src 'none'``) forbids any fetch, so a page
opened on an offline workstation or from a USB stick behaves the same as anywhere.  Fonts are
the system's (``system-ui`` / ``monospace``).  The script only reads the page: hovering a map
cell shows a tooltip (offsets, sizes, composition, and the exact ranges of the report that
touch it, from the ``map-data`` JSON block); clicking pins the same text below the map.  The
print stylesheet swaps each kind's colour for its texture (see :mod:`bdekit.report.kinds`).
"""

from __future__ import annotations

from bdekit.report import kinds

CSS_BASE = """
:root { --fg: #1d232a; --muted: #5b6570; --line: #d4dae0; --bg: #ffffff; --panel: #f5f7f9; }
* { box-sizing: border-box; }
body { margin: 0; padding: 0 24px 32px; color: var(--fg); background: var(--bg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
header { padding: 18px 0 8px; border-bottom: 1px solid var(--line); }
h1 { font-size: 20px; margin: 0 0 4px; word-break: break-all; }
h2 { font-size: 16px; margin: 24px 0 8px; }
h3 { font-size: 14px; margin: 0 0 6px; }
.sub { margin: 0; color: var(--muted); word-break: break-all; }
.verdict { margin: 12px 0 4px; padding: 8px 12px; border-radius: 4px; border-left: 6px solid;
  -webkit-print-color-adjust: exact; print-color-adjust: exact; }
.v-ok { background: #e7f4ea; border-color: #2e7d32; }
.v-warn { background: #fff6db; border-color: #b58900; }
.v-bad { background: #fde8e8; border-color: #c62828; }
.v-info { background: #e8f0fb; border-color: #3d6fb6; }
.map-wrap { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
svg.map { width: 100%; height: auto; display: block; flex: 1 1 560px; min-width: 0; }
svg.sw-inline rect { stroke: #555; stroke-width: 1; }
svg.map text { font: 10px ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace;
  fill: var(--muted); }
svg.map rect.c { stroke: #ffffff; stroke-width: 0.6; cursor: crosshair; }
svg.map rect.c.sel { stroke: #000; stroke-width: 2; }
svg.map rect.r { fill: none; stroke: #000; stroke-width: 1.6; pointer-events: none; }
.legend { flex: 0 1 330px; min-width: 240px; max-width: 420px; background: var(--panel);
  padding: 10px 12px; border-radius: 4px; }
.legend ul { list-style: none; margin: 0; padding: 0; }
.legend li { display: flex; gap: 8px; align-items: flex-start; margin: 4px 0; }
.legend svg.sw { flex: 0 0 18px; width: 18px; height: 18px; }
.legend svg.sw rect { stroke: #555; stroke-width: 1; }
.legend .n { color: var(--muted); font-size: 12px; display: block; }
.coords { color: var(--muted); margin: 0 0 8px; }
.cell-info { margin-top: 8px; padding: 8px 12px; background: var(--panel); border-radius: 4px;
  white-space: pre-wrap; font: 12px ui-monospace, "DejaVu Sans Mono", Menlo, monospace;
  min-height: 2.5em; }
.tip { position: fixed; z-index: 10; max-width: 460px; padding: 6px 8px; background: #1d232a;
  color: #fff; border-radius: 4px; pointer-events: none; white-space: pre-wrap;
  font: 12px ui-monospace, "DejaVu Sans Mono", Menlo, monospace; }
table { border-collapse: collapse; margin: 4px 0; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: var(--panel); font-weight: 600; }
table.kv th { width: 14em; }
td.num, td.off { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, monospace;
  white-space: nowrap; }
td { word-break: break-word; }
td.hex { font: 12px ui-monospace, "DejaVu Sans Mono", Menlo, monospace; word-break: break-all; }
tr[data-decided="none"] td { background: #fde8e8; }
tr[data-status="failed"] td { background: #fde8e8; }
tr[data-status="damaged"] td { background: #fff6db; }
.note { color: var(--muted); margin: 4px 0; }
footer { margin-top: 32px; color: var(--muted); font-size: 12px;
  border-top: 1px solid var(--line); padding-top: 8px; }
@page { size: A4; margin: 12mm; }
@media print {
  body { padding: 0; font-size: 9.5pt; color: #000; }
  .tip, .cell-info, .hint { display: none !important; }
  .map-wrap { display: block; }
  svg.map { width: 100% !important; max-width: none !important; page-break-inside: avoid;
    break-inside: avoid; }
  svg.map rect.c { stroke: #000; stroke-width: 0.3; }
  .legend { max-width: none; background: none; border: 1px solid #000;
    page-break-inside: avoid; break-inside: avoid; margin-top: 8px; }
  h2 { page-break-after: avoid; break-after: avoid; }
  tr { page-break-inside: avoid; break-inside: avoid; }
  th { background: none; }
  a { color: #000; }
}
"""

JS = r"""
(function () {
  "use strict";
  var svg = document.getElementById("volume-map");
  var blob = document.getElementById("map-data");
  if (!svg || !blob) { return; }
  var data = JSON.parse(blob.textContent);
  var tip = document.getElementById("tip");
  var info = document.getElementById("cell-info");
  var selected = null;
  function hex(n) { return "0x" + n.toString(16).toUpperCase(); }
  function human(n) {
    var units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"], v = n, i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
    return i === 0 ? n.toLocaleString("en") + " bytes" :
      v.toFixed(v < 10 ? 2 : 1) + " " + units[i] + " (" + n.toLocaleString("en") + " bytes)";
  }
  function label(kind) { return (data.kinds[kind] || kind); }
  function touching(list, start, end) {
    var out = [];
    for (var i = 0; i < list.length; i += 1) {
      var r = list[i];
      if (r[0] < end && r[0] + r[1] > start) { out.push(r); }
    }
    return out;
  }
  function describe(el) {
    var start = Number(el.getAttribute("data-start"));
    var end = Number(el.getAttribute("data-end"));
    var lines = [hex(start) + " \u2013 " + hex(end) + "  (" + data.coordinates + ")",
                 "size " + human(end - start), label(el.getAttribute("data-kind"))];
    var mix = el.getAttribute("data-mix");
    if (mix) {
      lines.push("composition:");
      mix.split(",").forEach(function (part) {
        var kv = part.split(":");
        lines.push("  " + label(kv[0]) + ": " + human(Number(kv[1])));
      });
    }
    var ranges = touching(data.overlay, start, end).concat(touching(data.base, start, end));
    ranges.slice(0, 8).forEach(function (r) {
      lines.push("\u2022 " + hex(r[0]) + " +" + human(r[1]) + ": " + (r[3] || label(r[2])));
    });
    if (ranges.length > 8) { lines.push("\u2026 and " + (ranges.length - 8) + " more"); }
    return lines.join("\n");
  }
  svg.addEventListener("mousemove", function (ev) {
    var el = ev.target.closest ? ev.target.closest("rect.c") : null;
    if (!el) { tip.hidden = true; return; }
    tip.textContent = describe(el);
    tip.hidden = false;
    var x = Math.min(ev.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
    var y = ev.clientY + 14;
    if (y + tip.offsetHeight > window.innerHeight) { y = ev.clientY - tip.offsetHeight - 10; }
    tip.style.left = x + "px";
    tip.style.top = y + "px";
  });
  svg.addEventListener("mouseleave", function () { tip.hidden = true; });
  svg.addEventListener("click", function (ev) {
    var el = ev.target.closest ? ev.target.closest("rect.c") : null;
    if (!el) { return; }
    if (selected) { selected.classList.remove("sel"); }
    selected = el;
    el.classList.add("sel");
    info.textContent = describe(el);
  });
})();
"""


def kind_css() -> str:
    """Screen colours and print textures of every kind (``.k-KEY``)."""
    screen = [f".k-{k.key} {{ fill: {k.colour}; }}" for k in kinds.KINDS.values()]
    printed = [f"  .k-{k.key} {{ fill: url(#t-{k.key}); }}" for k in kinds.KINDS.values()]
    return "\n".join([*screen, "@media print {", *printed, "}"])


def patterns() -> str:
    """SVG ``<pattern>`` of every kind: its colour under its black texture."""
    out = []
    for k in kinds.KINDS.values():
        out.append(f'<pattern id="t-{k.key}" width="6" height="6" '
                   f'patternUnits="userSpaceOnUse"><rect width="6" height="6" '
                   f'fill="{k.colour}"/>{kinds.TEXTURES[k.texture]}</pattern>')
    return "".join(out)
