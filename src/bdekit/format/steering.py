"""The metadata fields that steer reads, checked against each other before they are used.

A read plan is built from a handful of fields (:mod:`bdekit.volume.planner`): the three copy
offsets of the block header (their regions read as zeros) and the relocated header block
(where the volume's first sectors are served from). A value that is not sector aligned, or
lies outside the image, cannot be right; nor can one that every other source contradicts. Such
a value is damage of the copy that holds it, never used as it is (a misaligned region once
split a read into a 65,537-byte buffer that no sector cipher takes).

:func:`check_steering` weighs, for each field, every source that names it:

* copy offset *i*: the block header of every usable copy (and of the majority vote), the
  volume header's GUID record (Windows 7 and later) and the offset copy *i* was actually read
  from when it parsed;
* relocated header block offset (Windows 7 and later): the virtualization info datum and the
  block header field of every usable copy.

Only *plausible* values vote (sector aligned, positive, inside the image when its size is
known). The value most sources give wins; a tie keeps the serving copy's value when it is
plausible. Every parsed copy (the vote included) is then steered by the winner, so whichever
copy serves reads the same layout; the raw blocks are untouched (their CRC32 and SHA-256 still
judge them). Each replacement is returned as a decision for the report
(``metadata_decisions``).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterable
from typing import Any

from construct import Container

from bdekit.format.constants import DatumType
from bdekit.format.metadata import HeaderKind, Metadata, MetadataCopy

log = logging.getLogger(__name__)


def _plausible(value: int, sector_size: int, image_size: int | None) -> bool:
    return value > 0 and value % sector_size == 0 and (image_size is None
                                                       or value < image_size)


def _winner(votes: Iterable[int], current: int, sector_size: int,
            image_size: int | None) -> int | None:
    """The plausible value with most votes (ties: ``current`` when plausible), or None."""
    counts = collections.Counter(v for v in votes if _plausible(v, sector_size, image_size))
    if not counts:
        return None
    top = max(counts.values())
    best = [v for v, n in counts.items() if n == top]
    if current in best:
        return current
    return best[0] if len(best) == 1 else None


def _parsed(md: Metadata) -> list[tuple[MetadataCopy, Container]]:
    """Every parsed copy (the vote and the serving one included) with its block header."""
    cands = [*md.copies, md.vote_copy, md.best]
    out: list[tuple[MetadataCopy, Container]] = []
    for c in cands:
        if c is not None and c.usable and c.block_header is not None \
                and all(c is not o for o, _h in out):
            out.append((c, c.block_header))
    return out


def _copy_offset_votes(md: Metadata, copies: list[tuple[MetadataCopy, Container]],
                       i: int) -> list[int]:
    votes = [int(bh.metadata_offsets[i]) for _c, bh in copies]
    header = md.header
    if header.kind != HeaderKind.VISTA and len(header.metadata_offsets) > i:
        votes.append(int(header.metadata_offsets[i]))
    votes += [c.offset for c in md.copies if c.index == i + 1 and c.usable]
    return votes


def _virtualization_datums(copy: MetadataCopy) -> list[Any]:
    return [d for d in copy.datums if d.type == DatumType.VIRTUALIZATION_INFO]


def check_steering(md: Metadata, image_size: int | None = None) -> list[dict[str, Any]]:
    """Weigh the steering fields (module docstring); steer every parsed copy by the winners;
    the decisions taken."""
    if md.best.block_header is None:
        return []
    ss = md.header.bytes_per_sector or 512
    copies = _parsed(md)
    decisions: list[dict[str, Any]] = []
    for i in range(3):
        current = int(md.block_header.metadata_offsets[i])
        win = _winner(_copy_offset_votes(md, copies, i), current, ss, image_size)
        if win is not None and win != current:
            for _c, bh in copies:
                bh.metadata_offsets[i] = win
            decisions.append(_decision(f"offset of copy {i + 1}", current, win))
    if md.version >= 2:
        decisions += _check_relocated(md, copies, ss, image_size)
    for item in decisions:
        log.warning("metadata: %s %s is implausible or contradicted; %s", item["field"],
                    item["value"], item["decided_by"])
    return decisions


def _check_relocated(md: Metadata, copies: list[tuple[MetadataCopy, Container]], ss: int,
                     image_size: int | None) -> list[dict[str, Any]]:
    virt = md.virtualization
    current = virt[0] if virt is not None else 0
    votes = [int(bh.virtualized_offset) for _c, bh in copies]
    votes += [int(d.body.offset) for c, _bh in copies for d in _virtualization_datums(c)]
    win = _winner(votes, current, ss, image_size)
    if win is None or win == current:
        return []
    for c, bh in copies:
        bh.virtualized_offset = win
        for d in _virtualization_datums(c):
            d.body.offset = win
    return [_decision("relocated header block offset", current, win)]


def _decision(field: str, value: int, win: int) -> dict[str, Any]:
    return {"field": field, "value": value, "decided_by": f"{win}, which the other copies "
            "and the volume header support (the value is implausible or outvoted)"}


__all__ = ["check_steering"]
