"""Weighing the three metadata copies against each other, byte by byte.

Windows writes the three FVE metadata copies identically (on every real image we hold the
three padded blocks are byte-identical, CRC and validation datum included). A damaged copy
therefore differs from the other two exactly where it was damaged, so a byte-wise majority of
the three raw regions rebuilds the original wherever two copies still agree, even when each
copy is damaged somewhere else.

What is voted on: for each copy, ``VOTE_SPAN`` bytes from its offset, i.e. the padded block,
the 8-byte validation header (CRC32) and the validation datum that follows it. The majority
region is then parsed like any copy (index 0, "vote"). Nothing here decides what is *true*:
the vote is a candidate like the copies, and only the block's SHA-256 integrity datum
(authenticated under the VMK, see :mod:`bdekit.unlock.integrity`) proves a candidate intact.

Every range where the copies disagree is a :class:`Disagreement`, named after the field it
falls in (block header field, dataset header field, datum at its offset, CRC, validation
datum) with each copy's bytes and which copies the majority came from; these land in the
report as ``metadata_decisions``.

Identical copies (the usual case) are recognised by comparing their bytes; only copies that
differ are weighed byte by byte with numpy, in :mod:`bdekit.format.majority`, so opening an
intact volume does not load numpy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from bdekit.format import structs

#: bytes voted on past the start of a copy's block: header, dataset, datums, validation
MAX_VOTE_SPAN = 0xFFFF * 16 + 8 + 0x200

_BLOCK_FIELDS: list[tuple[int, int, str]] = [
    (0, 8, "block header signature"), (8, 10, "block size"), (10, 12, "block version"),
    (12, 14, "current state"), (14, 16, "next state"),
    (16, 24, "state offset (encrypted size)"), (24, 28, "conversion log size"),
    (28, 32, "virtualized sectors"), (32, 40, "offset of copy 1"),
    (40, 48, "offset of copy 2"), (48, 56, "offset of copy 3"),
    (56, 64, "relocated header offset / MFT mirror cluster"),
    (64, 68, "dataset size"), (68, 72, "dataset version"), (72, 76, "dataset header size"),
    (76, 80, "dataset copy size"), (80, 96, "volume GUID"), (96, 100, "next nonce counter"),
    (100, 102, "encryption method"), (102, 104, "method flags"), (104, 112, "creation time"),
]


@dataclasses.dataclass(frozen=True)
class Disagreement:
    """A byte range (relative to the block start) where the copies do not all agree."""

    start: int
    end: int
    field: str
    values: dict[int, str]  # copy index -> hex of that copy's bytes
    chosen_from: tuple[int, ...]  # copies the majority came from; () = no majority

    def to_json(self) -> dict[str, object]:
        return {"offset": self.start, "length": self.end - self.start, "field": self.field,
                "copies": {str(k): v for k, v in sorted(self.values.items())},
                "decided_by": (f"copies {' and '.join(map(str, self.chosen_from))}"
                               if self.chosen_from else "no majority")}


@dataclasses.dataclass
class Vote:
    """The byte-wise majority of the copies' regions and where they disagreed."""

    data: bytes
    disagreements: list[Disagreement]
    voters: tuple[int, ...]

    @property
    def undecided(self) -> list[Disagreement]:
        return [d for d in self.disagreements if not d.chosen_from]


#: differing runs closer than this are reported as one range
MERGE_GAP = 16
#: at most this many ranges are listed; the rest are summed up in one more
MAX_LISTED = 64
#: at most this many bytes of each copy are shown per range
MAX_SHOWN = 32


def vote(regions: dict[int, bytes], span: int,
         name_of: Callable[[int], str] | None = None) -> Vote:
    """Byte-wise majority of ``regions`` (copy index -> bytes from the copy's offset), each
    cut or zero-padded to ``span`` bytes."""
    indexes = tuple(sorted(regions))
    rows = [bytes(regions[i][:span]).ljust(span, b"\0") for i in indexes]
    if all(row == rows[0] for row in rows[1:]):
        return Vote(rows[0], [], indexes)  # the usual case, identical copies: nothing to weigh
    from bdekit.format.majority import weigh  # noqa: PLC0415 (numpy, see the docstring)

    data, disagreements = weigh(rows, indexes, name_of or field_name_plain)
    return Vote(data, disagreements, indexes)


def field_name_plain(offset: int) -> str:
    """The block or dataset header field at ``offset`` of a block, or a generic name."""
    for start, end, name in _BLOCK_FIELDS:
        if start <= offset < end:
            return name
    return f"byte {offset} of the block"


def field_namer(block: bytes, block_size: int,
                datum_spans: Sequence[tuple[int, int, str]]) -> Callable[[int], str]:
    """A namer for offsets of a block of ``block_size`` bytes whose datums lie at
    ``datum_spans`` (start, end, description; offsets relative to the block)."""

    def name(offset: int) -> str:
        if offset < structs.FVE_BLOCK_HEADER.sizeof() + structs.DATASET_HEADER.sizeof():
            return field_name_plain(offset)
        for start, end, what in datum_spans:
            if start <= offset < end:
                return what
        if offset < block_size:
            return "padding of the block"
        if offset < block_size + 8:
            return "validation header (CRC32)"
        return "validation datum (SHA-256 of the block)"

    del block
    return name


def vote_span(block_sizes: Sequence[int]) -> int:
    """How many bytes to vote on: the largest block claimed, with its validation data."""
    size = max(block_sizes, default=0)
    return min(MAX_VOTE_SPAN, size + 8 + 0x200)
