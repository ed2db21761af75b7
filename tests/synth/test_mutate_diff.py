"""The judge's byte comparison (:func:`bdekit.synth.mutate.diff_ranges`): chunked, from bytes or
from files, against a byte-by-byte scan written here."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bdekit.synth import mutate


def scan(out: bytes, ref: bytes) -> list[tuple[int, int]]:
    """Maximal differing ranges, one byte at a time (the shorter padded with zeros)."""
    size = max(len(out), len(ref))
    a, b = out.ljust(size, b"\0"), ref.ljust(size, b"\0")
    ranges: list[tuple[int, int]] = []
    for i in range(size):
        if a[i] != b[i]:
            if ranges and ranges[-1][1] == i:
                ranges[-1] = (ranges[-1][0], i + 1)
            else:
                ranges.append((i, i + 1))
    return ranges


def test_diff_ranges_match_a_byte_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mutate, "_DIFF_CHUNK", 64)  # many chunk edges in small buffers
    rng = random.Random(1)
    for trial in range(300):
        n = rng.randrange(0, 400)
        ref = rng.randbytes(n)
        out = bytearray(ref[:max(0, n + rng.randrange(-60, 60))].ljust(n + rng.randrange(0, 9),
                                                                      b"\0"))
        for _ in range(rng.randrange(0, 6)):
            if out:
                a = rng.randrange(len(out))
                b = min(len(out), a + rng.randrange(1, 150))  # often across a chunk edge
                out[a:b] = rng.randbytes(b - a)
        path = tmp_path / f"out{trial}"
        path.write_bytes(out)
        expected = scan(bytes(out), ref)
        assert mutate.diff_ranges(bytes(out), ref) == expected, trial
        assert mutate.diff_ranges(path, ref) == expected, trial


def test_judge_reads_an_output_file(tmp_path: Path) -> None:
    ref = bytes(range(256)) * 64
    out = tmp_path / "out.img"
    out.write_bytes(ref)
    assert mutate.judge(0, out, ref).outcome == "exact"
    bad = bytearray(ref)
    bad[5000] ^= 1
    out.write_bytes(bad)
    assert mutate.judge(0, out, ref).outcome.startswith("silent-wrong")
    assert mutate.judge(6, out, ref, [(4096, 8192)]).outcome == "flagged"
