"""GNU ddrescue mapfiles: read the input's, write the output's.

Format (GNU ddrescue manual, "Mapfile structure"), a text file:

* lines starting with ``#`` are comments (ddrescue writes its version, command line and times);
* the first non-comment line is the *status line*: ``current_pos current_status [current_pass]``
  (``0x...`` position, one status character, optional pass number);
* every further non-comment line is a *data block*: ``pos size status`` with ``pos`` and
  ``size`` in hexadecimal (``0x`` prefix; decimal and octal are accepted too, as ddrescue
  does), and one status character per block:

  ====  ==========================================
  ``?`` non-tried
  ``*`` failed block, non-trimmed
  ``/`` failed block, non-scraped
  ``-`` failed block, bad sector(s)
  ``+`` finished (rescued)
  ====  ==========================================

Blocks are sorted, contiguous and non-overlapping in files ddrescue writes; the reader here
sorts and tolerates gaps (a gap is treated as not rescued) and blank lines.

bdekit reads the *input* mapfile to know which areas of an image made by ddrescue hold data
(``+``) and which do not (everything else: those bytes are zeros in the image, not data); and
writes an *output* mapfile in the output's coordinates where ``-`` marks every range whose
plaintext could not be recovered and ``+`` the rest, so that later tools (``ddrescue``'s own
``ddrescuelog``, file carvers, ``bdekit``) know which bytes are reliable.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Sequence

from bdekit._version import __version__
from bdekit.errors import UsageError
from bdekit.image.bounded import read_bounded
from bdekit.image.files import write_atomic
from bdekit.image.ranges import merge_intervals, merge_labelled

STATUS_CHARS = "?*/-+"
FINISHED = "+"
BAD = "-"


@dataclasses.dataclass(frozen=True)
class Block:
    pos: int
    size: int
    status: str

    @property
    def end(self) -> int:
        return self.pos + self.size


@dataclasses.dataclass
class Mapfile:
    current_pos: int
    current_status: str
    current_pass: int
    blocks: list[Block]

    @property
    def size(self) -> int:
        """End of the last block (the size of the rescue domain ddrescue knew about)."""
        return max((b.end for b in self.blocks), default=0)

    def unrescued(self, domain_size: int | None = None) -> list[tuple[int, int, str]]:
        """``(pos, size, status)`` of every area not marked finished, merged; gaps between
        blocks and, with ``domain_size``, anything past the last block count too (status ``?``)."""
        out: list[tuple[int, int, str]] = []
        pos = 0
        for block in sorted(self.blocks, key=lambda b: b.pos):
            if block.pos > pos:
                out.append((pos, block.pos - pos, "?"))
            if block.status != FINISHED and block.size:
                out.append((block.pos, block.size, block.status))
            pos = max(pos, block.end)
        if domain_size is not None and domain_size > pos:
            out.append((pos, domain_size - pos, "?"))
        return merge_labelled(out)


def _int(text: str, path: str, lineno: int) -> int:
    try:
        return int(text, 0)
    except ValueError:
        # ddrescue accepts leading-zero decimals too (int(..., 0) refuses "010")
        try:
            return int(text, 10)
        except ValueError:
            raise UsageError(f"mapfile line {lineno}: {text!r} is not a number",
                             path=path) from None


def parse_mapfile(text: str, path: str = "<mapfile>") -> Mapfile:
    """Parse the text of a ddrescue mapfile; malformed lines are a UsageError naming them."""
    status_line: tuple[int, str, int] | None = None
    blocks: list[Block] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if status_line is None:
            if len(fields) not in (2, 3) or len(fields[1]) != 1:
                raise UsageError(f"mapfile line {lineno}: expected 'current_pos current_status "
                                 f"[current_pass]', found {raw.strip()!r}", path=path)
            status_line = (_int(fields[0], path, lineno), fields[1],
                           _int(fields[2], path, lineno) if len(fields) == 3 else 1)
            continue
        if len(fields) != 3 or fields[2] not in STATUS_CHARS or len(fields[2]) != 1:
            raise UsageError(f"mapfile line {lineno}: expected 'pos size status' with status one "
                             f"of {STATUS_CHARS}, found {raw.strip()!r}", path=path)
        pos = _int(fields[0], path, lineno)
        size = _int(fields[1], path, lineno)
        if pos < 0 or size < 0:
            raise UsageError(f"mapfile line {lineno}: negative position or size", path=path)
        blocks.append(Block(pos, size, fields[2]))
    if status_line is None:
        raise UsageError("mapfile holds no status line (is it a GNU ddrescue mapfile?)",
                         path=path)
    return Mapfile(status_line[0], status_line[1], status_line[2], blocks)


def read_mapfile(path: str | os.PathLike[str]) -> Mapfile:
    """Read (bounded: a regular file of at most 64 MiB) and parse a ddrescue mapfile."""
    text = read_bounded(path, "mapfile").decode("ascii", errors="replace")
    return parse_mapfile(text, os.fspath(path))


#: kept under its old name for the callers of ``bdekit.image.mapfile.merge_ranges``
merge_ranges = merge_intervals


def blocks_from_bad(size: int, bad: Sequence[tuple[int, int]]) -> list[Block]:
    """Cover ``[0, size)``: ``-`` for the (merged, clipped) bad ranges, ``+`` elsewhere."""
    blocks: list[Block] = []
    pos = 0
    for off, length in merge_intervals(bad):
        off = max(0, off)
        end = min(size, off + length)
        if end <= off:
            continue
        if off > pos:
            blocks.append(Block(pos, off - pos, FINISHED))
        blocks.append(Block(off, end - off, BAD))
        pos = end
    if pos < size:
        blocks.append(Block(pos, size - pos, FINISHED))
    return blocks


#: The comment of the mapfiles ``repair`` writes.
RECOVERY_NOTE = "Areas marked '-' could not be recovered: their bytes in the output are zeros."


def format_mapfile(size: int, bad: Sequence[tuple[int, int]], *, command: str = "",
                   started: dt.datetime | None = None, creator: str = "",
                   note: str = RECOVERY_NOTE, dated: bool = True, current_pos: int = 0) -> str:
    """A finished ddrescue mapfile over ``[0, size)`` with ``bad`` marked ``-``, the rest ``+``.

    The comment lines name the ``creator`` (default: this bdekit version), say what ``-``
    means (``note``), and give the ``command`` and ``started`` when known; ``dated`` adds the
    current time and ``# Finished`` as ddrescue does (off for reproducible files)."""
    lines = [f"# Mapfile. Created by {creator or 'bdekit ' + __version__} "
             "(GNU ddrescue mapfile format)",
             f"# {note}"]
    if command:
        lines.append(f"# Command line: {command}")
    if started is not None:
        lines.append(f"# Start time:   {started:%Y-%m-%d %H:%M:%S}")
    if dated:
        lines.append(f"# Current time: {dt.datetime.now().astimezone():%Y-%m-%d %H:%M:%S}")
        lines.append("# Finished")
    lines.append("# current_pos  current_status  current_pass")
    lines.append(f"0x{current_pos:08X}     {FINISHED}               1")
    lines.append("#      pos        size  status")
    for block in blocks_from_bad(size, bad):
        lines.append(f"0x{block.pos:08X}  0x{block.size:08X}  {block.status}")
    return "\n".join(lines) + "\n"


def write_mapfile(path: str | os.PathLike[str], size: int, bad: Sequence[tuple[int, int]], *,
                  command: str = "", started: dt.datetime | None = None,
                  mode: int = 0o600) -> None:
    """Write the mapfile ``repair`` produces (:func:`format_mapfile`) atomically, with
    ``mode``; characters of the command line outside ASCII are written as backslash escapes."""
    text = format_mapfile(size, bad, command=command, started=started)
    write_atomic(path, text.encode("ascii", "backslashreplace"), mode=mode)


__all__ = ["BAD", "FINISHED", "RECOVERY_NOTE", "Block", "Mapfile", "blocks_from_bad",
           "format_mapfile", "merge_ranges", "parse_mapfile", "read_mapfile", "write_mapfile"]
