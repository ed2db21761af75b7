"""The byte-wise majority of metadata copies that differ (numpy), for :mod:`.consensus`.

The copies' regions arrive already cut or zero-padded to the voted span, one row per copy.
Per byte, the value two of three rows share wins (with two rows, they must agree; one row
stands alone). Every run of bytes where the rows are not all equal becomes a
:class:`~bdekit.format.consensus.Disagreement`, named by ``name_of`` at its start, with each
row's bytes and the rows the majority came from; runs closer than ``MERGE_GAP`` are one range
and past ``MAX_LISTED`` ranges the rest are summed up in one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from bdekit.format.consensus import MAX_LISTED, MAX_SHOWN, MERGE_GAP, Disagreement

__all__ = ["weigh"]


def _majority(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per byte: the majority value, whether one exists, and a mask of rows that agree."""
    if rows.shape[0] == 1:
        ones = np.ones(rows.shape[1], dtype=bool)
        return rows[0].copy(), ones, ones[None, :]
    a, b = rows[0], rows[1]
    if rows.shape[0] == 2:
        same = a == b
        return a.copy(), same, np.vstack([same, same])
    c = rows[2]
    ab, ac, bc = a == b, a == c, b == c
    value = np.where(ab | ac, a, b)
    decided = ab | ac | bc
    agree = np.vstack([ab | ac, ab | bc, ac | bc]) & decided[None, :]
    return value, decided, agree


def _ranges(mask: np.ndarray) -> list[tuple[int, int]]:
    """Runs of True in ``mask`` as (start, end), runs closer than MERGE_GAP joined."""
    if not mask.any():
        return []
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    out: list[tuple[int, int]] = []
    for s, e in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True):
        if out and s - out[-1][1] < MERGE_GAP:
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def _shown(row: np.ndarray) -> str:
    text = row[:MAX_SHOWN].tobytes().hex()
    return text + ("..." if len(row) > MAX_SHOWN else "")


def weigh(regions: Sequence[bytes], indexes: tuple[int, ...],
          name_of: Callable[[int], str]) -> tuple[bytes, list[Disagreement]]:
    """The majority bytes of ``regions`` (equal lengths; copy ``indexes[k]`` is row k) and
    the ranges where they disagree."""
    rows = np.frombuffer(b"".join(regions), dtype=np.uint8).reshape(len(regions), -1)
    value, decided, agree = _majority(rows)
    differ = (rows != rows[0][None, :]).any(axis=0)
    out: list[Disagreement] = []
    ranges = _ranges(differ)
    for start, end in ranges[:MAX_LISTED]:
        chosen = tuple(i for k, i in enumerate(indexes) if agree[k, start:end].all())
        has_majority = bool(decided[start:end].all()) and bool(chosen)
        out.append(Disagreement(
            start, end, name_of(start),
            {i: _shown(rows[k, start:end]) for k, i in enumerate(indexes)},
            chosen if has_majority else ()))
    if len(ranges) > MAX_LISTED:
        rest = ranges[MAX_LISTED:]
        undecided = not all(bool(decided[s:e].all()) for s, e in rest)
        out.append(Disagreement(rest[0][0], rest[-1][1],
                                f"{len(rest)} more differing ranges", {},
                                () if undecided else indexes))
    return value.tobytes(), out
