"""image/ranges.py: interval merging, checked against a model that paints single bytes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bdekit.image.ranges import (
    Damage,
    merge_damage,
    merge_intervals,
    merge_labelled,
    merge_spans,
    subtract_damage,
)

intervals = st.lists(st.tuples(st.integers(0, 60), st.integers(-2, 20)), max_size=12)
labelled = st.lists(st.tuples(st.integers(0, 60), st.integers(-2, 20), st.sampled_from("abc")),
                    max_size=12)


def _runs(points: dict[int, str]) -> list[tuple[int, int, str]]:
    """Maximal runs of consecutive bytes with the same label."""
    out: list[tuple[int, int, str]] = []
    for x in sorted(points):
        if out and out[-1][0] + out[-1][1] == x and out[-1][2] == points[x]:
            out[-1] = (out[-1][0], out[-1][1] + 1, out[-1][2])
        else:
            out.append((x, 1, points[x]))
    return out


@given(intervals)
def test_merge_intervals_is_the_union(ranges: list[tuple[int, int]]) -> None:
    covered = {x: "" for off, n in ranges for x in range(off, off + n)}
    expected = [(off, n) for off, n, _ in _runs(covered)]
    assert merge_intervals(ranges) == expected
    assert merge_spans((off, off + n) for off, n in ranges) == [(o, o + n) for o, n in expected]


@given(labelled)
def test_merge_labelled_first_range_keeps_the_overlap(
        ranges: list[tuple[int, int, str]]) -> None:
    # each byte takes the label of the first range covering it, in (offset, length) order
    points: dict[int, str] = {}
    for off, n, label in sorted(ranges, key=lambda r: (r[0], r[1])):
        for x in range(off, off + n):
            points.setdefault(x, label)
    assert merge_labelled(ranges) == _runs(points)


def test_merge_examples() -> None:
    assert merge_intervals([(5, 5), (0, 5), (20, 0), (12, 3)]) == [(0, 10), (12, 3)]
    assert merge_spans([(10, 20), (0, 5), (5, 7), (30, 30)]) == [(0, 7), (10, 20)]
    assert merge_labelled([(0, 10, "-"), (10, 5, "?"), (15, 5, "?")]) == [
        (0, 10, "-"), (10, 10, "?")]


def test_merge_damage_wraps_merge_labelled() -> None:
    items = [Damage(0, 512, "a"), Damage(512, 512, "a"), Damage(2048, 512, "b"),
             Damage(2048, 1024, "b"), Damage(4096, 512, "a"), Damage(4352, 512, "b")]
    assert merge_damage(items) == [Damage(0, 1024, "a"), Damage(2048, 1024, "b"),
                                   Damage(4096, 512, "a"), Damage(4608, 256, "b")]


def test_subtract_damage() -> None:
    items = [Damage(0, 100, "a"), Damage(200, 100, "b"), Damage(400, 10, "c")]
    assert subtract_damage(items, 50, 250) == [Damage(0, 50, "a"), Damage(250, 50, "b"),
                                               Damage(400, 10, "c")]
    assert subtract_damage(items, 0, 1000) == []
