"""Byte-wise voting of metadata copies: on hand-made regions and on the real images' copies."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bdekit.format.consensus import MAX_LISTED, vote, vote_span
from bdekit.format.copies import read_metadata
from bdekit.image.sources import open_source
from tests.conftest import requires_real


def _region(seed: int, size: int = 600) -> bytes:
    return bytes((i * 7 + seed) % 251 for i in range(size))


def test_three_copies_each_damaged_elsewhere_rebuild_the_original() -> None:
    original = _region(1)
    copies = {i: bytearray(original) for i in (1, 2, 3)}
    copies[1][16:24] = b"\xff" * 8  # state offset
    copies[2][300] ^= 0x20
    copies[3][450] ^= 0x01
    result = vote({i: bytes(c) for i, c in copies.items()}, len(original))
    assert result.data == original
    assert [(d.start, d.end, d.chosen_from) for d in result.disagreements] == [
        (16, 24, (2, 3)), (300, 301, (1, 3)), (450, 451, (1, 2))]
    assert result.disagreements[0].field == "state offset (encrypted size)"
    assert not result.undecided


def test_two_copies_that_differ_leave_the_range_undecided() -> None:
    original = _region(2)
    other = bytearray(original)
    other[40] ^= 0xFF
    result = vote({1: original, 3: bytes(other)}, len(original))
    assert [(d.start, d.chosen_from) for d in result.undecided] == [(40, ())]


def test_three_different_values_have_no_majority() -> None:
    a = _region(3)
    b, c = bytearray(a), bytearray(a)
    b[100], c[100] = a[100] ^ 1, a[100] ^ 2
    result = vote({1: a, 2: bytes(b), 3: bytes(c)}, len(a))
    assert len(result.undecided) == 1 and result.undecided[0].start == 100


def test_identical_copies_agree_everywhere() -> None:
    a = _region(4)
    result = vote({1: a, 2: a, 3: a}, len(a))
    assert result.data == a and not result.disagreements


def test_many_scattered_differences_are_summed_up() -> None:
    a = _region(5, 8000)
    b = bytearray(a)
    for pos in range(0, 8000, 50):
        b[pos] ^= 0xFF
    result = vote({1: a, 2: bytes(b), 3: a}, len(a))
    assert result.data == a
    assert len(result.disagreements) == MAX_LISTED + 1
    assert "more differing ranges" in result.disagreements[-1].field


def test_short_region_counts_as_zeros() -> None:
    a = _region(6)
    result = vote({1: a, 2: a[:100], 3: a}, len(a))
    assert result.data == a
    assert result.disagreements[0].start == 100 and result.disagreements[0].chosen_from == (1, 3)


def test_identical_after_padding_and_cutting_is_agreement() -> None:
    """Regions are cut or zero-padded to the span before they are compared: a copy that is
    shorter only by trailing zeros, or longer past the span, agrees (no numpy weighing)."""
    a = _region(7, 300) + bytes(100)
    result = vote({1: a, 2: a[:300], 3: a + b"tail past the span"}, len(a))
    assert result.data == a and not result.disagreements and result.voters == (1, 2, 3)
    padded = vote({1: a[:300], 2: a[:300]}, 350)
    assert padded.data == a[:350] and not padded.disagreements
    differ = vote({1: a, 2: a[:299]}, len(a))  # byte 299 is nonzero in copy 1 only
    assert [(d.start, d.end, d.chosen_from) for d in differ.disagreements] == [(299, 300, ())]


def test_span_covers_block_and_validation() -> None:
    assert vote_span([608, 600]) == 608 + 8 + 0x200


@requires_real
@pytest.mark.real
@pytest.mark.parametrize("name", ["aes-xts_128", "aes_128_diffuser", "eow_partial"])
def test_real_copies_are_byte_identical_so_a_vote_changes_nothing(
        real_image: Callable[[str], Path], name: str) -> None:
    """The premise of voting: Windows writes the three copies identically (the CRC and the
    validation datum included)."""
    path = real_image(name)
    src = open_source(path)
    md = read_metadata(lambda o, n: bytes(src.read_at(o, n)), str(path), src.size)
    span = vote_span([c.block_size for c in md.copies])
    regions = {c.index: bytes(src.read_at(c.offset, span)) for c in md.copies}
    result = vote(regions, span)
    assert not result.disagreements
    assert result.data == regions[1]
