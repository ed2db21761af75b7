"""The map model: ranges of a volume (or disk image) laid out as a grid of cells.

:class:`MapData` holds the *base* spans (what each byte is; non-overlapping, covering
``[0, size)``) and the *overlay* spans (damage and decisions, drawn on top).  :func:`layout`
cuts ``[0, size)`` into at most :data:`MAX_CELLS` cells of ``cell_bytes`` each (a multiple of
the sector size), ``cols`` cells per row, and gives each cell its composition (bytes per
kind).  A cell's colour is the highest-ranked overlay kind it touches, else its biggest base
kind; neighbouring cells of one row with the same single kind are merged into one
:class:`Rect`, so a 2 TB volume is drawn with a few thousand elements whatever its number of
ranges.  Offsets and sizes are exact in the data; only the picture is aggregated.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable
from typing import Any

from bdekit.report import kinds

#: Upper bound of the number of cells of a map.
MAX_CELLS = 4096
#: Cells per row.
COLS = 64
#: At most this many overlay spans are listed in the page's data and outlined on the map.
MAX_LISTED = 2000


@dataclasses.dataclass
class Span:
    offset: int
    length: int
    kind: str
    reason: str = ""
    label: str = ""
    composition: dict[str, int] | None = None

    @property
    def end(self) -> int:
        return self.offset + self.length


@dataclasses.dataclass
class MapData:
    """What a map draws; ``coordinates`` names the offsets (volume / image)."""

    size: int
    unit: int = 512
    base: list[Span] = dataclasses.field(default_factory=list)
    overlay: list[Span] = dataclasses.field(default_factory=list)
    title: str = "Volume map"
    coordinates: str = "volume offsets"
    note: str = ""


@dataclasses.dataclass
class Rect:
    row: int
    col: int
    ncols: int
    start: int
    end: int
    kind: str
    mix: dict[str, int] | None = None  # composition of a cell holding several kinds


@dataclasses.dataclass
class Grid:
    size: int
    cell_bytes: int
    cols: int
    rows: int
    cells: int
    rects: list[Rect]

    @property
    def row_bytes(self) -> int:
        return self.cell_bytes * self.cols


def span_from(item: dict[str, Any], hint: str = "", overlay: bool = True) -> Span | None:
    """A span from a report's range dict; None when it has no usable offset / length."""
    try:
        offset, length = int(item["offset"]), int(item["length"])
    except (KeyError, TypeError, ValueError):
        return None
    if length <= 0 or offset < 0:
        return None
    kind = kinds.classify(item, hint, overlay)
    comp = item.get("composition")
    composition = ({str(k): int(v) for k, v in comp.items()} if isinstance(comp, dict)
                   else None)
    return Span(offset, length, kind, str(item.get("reason") or ""),
                kinds.label_of(item, kind), composition)


def paint(base: Iterable[Span], size: int, fill: Span) -> list[Span]:
    """Non-overlapping spans covering ``[0, size)``: later spans of ``base`` cover earlier
    ones; the gaps take ``fill``'s kind and reason."""
    out: list[Span] = [dataclasses.replace(fill, offset=0, length=size)] if size > 0 else []
    for span in base:
        lo, hi = max(0, span.offset), min(size, span.end)
        if lo >= hi:
            continue
        cut: list[Span] = []
        for old in out:
            if old.end <= lo or old.offset >= hi:
                cut.append(old)
                continue
            if old.offset < lo:
                cut.append(dataclasses.replace(old, length=lo - old.offset))
            if old.end > hi:
                cut.append(dataclasses.replace(old, offset=hi, length=old.end - hi))
        cut.append(dataclasses.replace(span, offset=lo, length=hi - lo))
        out = sorted(cut, key=lambda s: s.offset)
    return out


def is_flat(spans: list[Span]) -> bool:
    """Sorted, non-overlapping (what a report's ``volume_map`` is)."""
    return all(a.end <= b.offset for a, b in itertools.pairwise(spans))


def geometry(size: int, unit: int, max_cells: int = MAX_CELLS,
             cols: int = COLS) -> tuple[int, int, int]:
    """(cell_bytes, cells, rows) of a map over ``size`` bytes."""
    unit = max(1, unit)
    per_cell = max(1, -(-size // max_cells))
    cell_bytes = -(-per_cell // unit) * unit
    cells = max(1, -(-size // cell_bytes))
    return cell_bytes, cells, -(-cells // cols)


def _compositions(spans: Iterable[Span], cell_bytes: int,
                  cells: int) -> list[dict[str, int] | None]:
    comps: list[dict[str, int] | None] = [None] * cells
    for span in spans:
        first = span.offset // cell_bytes
        last = min(cells - 1, (span.end - 1) // cell_bytes)
        for index in range(first, last + 1):
            lo = max(span.offset, index * cell_bytes)
            hi = min(span.end, (index + 1) * cell_bytes)
            if lo >= hi:
                continue
            comp = comps[index]
            if comp is None:
                comp = comps[index] = {}
            parts = span.composition or {span.kind: hi - lo}
            total = sum(parts.values()) or 1
            for key, value in parts.items():
                share = (hi - lo) * value // total if span.composition else hi - lo
                comp[key] = comp.get(key, 0) + share
    return comps


def _cell_kind(base: dict[str, int] | None, over: dict[str, int] | None,
               cell: int) -> tuple[str, dict[str, int] | None]:
    """(colour kind, composition or None when one kind fills the cell) of a cell."""
    if over:
        top = max(over, key=lambda k: (kinds.kind(k).rank, over[k]))
        if over[top] >= cell:
            return top, None
        # what shows through: the base, shrunk by the bytes the overlay covers
        left = max(0, cell - sum(over.values()))
        total = sum((base or {}).values()) or 1
        mix = {k: v * left // total for k, v in (base or {}).items() if v * left // total}
        for key, value in over.items():
            mix[key] = mix.get(key, 0) + value
        return top, mix
    if not base:
        return "unknown", None
    if len(base) == 1:
        return next(iter(base)), None
    return max(base, key=lambda k: base[k]), dict(base)


def layout(data: MapData, max_cells: int = MAX_CELLS, cols: int = COLS) -> Grid:
    """Cells of ``data`` (see the module docstring)."""
    size = max(data.size, 1)
    cell_bytes, cells, rows = geometry(size, data.unit, max_cells, cols)
    base = _compositions(data.base, cell_bytes, cells)
    over = _compositions(data.overlay, cell_bytes, cells)
    rects: list[Rect] = []
    for index in range(cells):
        start = index * cell_bytes
        end = min(size, start + cell_bytes)
        kind, mix = _cell_kind(base[index], over[index], end - start)
        row, col = divmod(index, cols)
        last = rects[-1] if rects else None
        if (last is not None and mix is None and last.mix is None and last.kind == kind
                and last.row == row and last.end == start):
            last.ncols += 1
            last.end = end
            continue
        rects.append(Rect(row, col, 1, start, end, kind, mix))
    return Grid(size, cell_bytes, cols, rows, cells, rects)


def _tally(spans: Iterable[Span]) -> dict[tuple[str, str], list[int]]:
    seen: dict[tuple[str, str], list[int]] = {}
    for span in spans:
        parts = span.composition or {span.kind: span.length}
        for key, value in parts.items():
            if key == span.kind and key == "other":
                label = span.label
            else:
                label = kinds.kind(key).label if key in kinds.KINDS else key
            entry = seen.setdefault((key, label), [0, 0])
            entry[0] += value
            entry[1] += 1
    return seen


def legend(data: MapData) -> list[tuple[str, str, int, int]]:
    """(kind, label, bytes, ranges) of every kind / label on the map, base kinds first; a
    kind found in both lists (``missing``) is counted from the overlay."""
    over = _tally(data.overlay)
    over_kinds = {key for key, _label in over}
    seen = {k: v for k, v in _tally(data.base).items() if k[0] not in over_kinds}
    seen.update(over)
    order = sorted(seen, key=lambda k: (kinds.kind(k[0]).overlay, kinds.kind(k[0]).rank,
                                        list(kinds.KINDS).index(k[0])
                                        if k[0] in kinds.KINDS else 999, k[1]))
    return [(key, label, seen[(key, label)][0], seen[(key, label)][1]) for key, label in order]
