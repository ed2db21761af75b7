"""The read planner: segment painting, run merging and the runs of real volumes."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bdekit.volume.bde import open_bde
from bdekit.volume.planner import Run, RunKind, SegmentMap, merge_runs
from tests.conftest import real_kwargs, requires_real

KINDS = [RunKind.PLAIN, RunKind.ENCRYPTED, RunKind.ZERO, RunKind.MISSING]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5000),
       st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 5000), st.sampled_from(KINDS),
                          st.integers(-100, 100)), max_size=12))
def test_paint_matches_naive_model(size: int, paints: list[tuple[int, int, RunKind, int]]) -> None:
    """Painting equals a byte-by-byte model, and runs tile the requested range exactly."""
    smap = SegmentMap(size, RunKind.ENCRYPTED, True)
    model: list[tuple[RunKind, int]] = [(RunKind.ENCRYPTED, 0)] * size
    for a, b, kind, delta in paints:
        lo, hi = min(a, b), max(a, b)
        smap.paint(lo, hi, kind, delta, kind == RunKind.ENCRYPTED)
        for i in range(lo, min(hi, size)):
            model[i] = (kind, delta)
    runs = list(smap.runs(0, size))
    assert runs[0].offset == 0 and runs[-1].end == size
    for prev, nxt in itertools.pairwise(runs):
        assert prev.end == nxt.offset
    for run in runs:
        for i in range(run.offset, run.end):
            assert model[i][0] == run.kind
            assert run.source - run.offset == model[i][1]
    assert smap.starts == sorted(set(smap.starts))


def test_runs_of_subrange() -> None:
    smap = SegmentMap(100, RunKind.ENCRYPTED, True)
    smap.paint(10, 20, RunKind.ZERO, 0, False)
    smap.paint(0, 5, RunKind.RELOCATED, 50, True)
    runs = list(smap.runs(3, 15))
    assert [(r.kind, r.offset, r.length, r.source) for r in runs] == [
        (RunKind.RELOCATED, 3, 2, 53),
        (RunKind.ENCRYPTED, 5, 5, 5),
        (RunKind.ZERO, 10, 8, 10),
    ]


def test_merge_runs_joins_contiguous_only() -> None:
    runs = [Run(RunKind.ENCRYPTED, 0, 10, 0, True), Run(RunKind.ENCRYPTED, 10, 5, 10, True),
            Run(RunKind.ENCRYPTED, 15, 5, 100, True), Run(RunKind.ZERO, 20, 5, 20, False)]
    merged = merge_runs(iter(runs))
    assert [(r.kind, r.offset, r.length) for r in merged] == [
        (RunKind.ENCRYPTED, 0, 15), (RunKind.ENCRYPTED, 15, 5), (RunKind.ZERO, 20, 5)]


@requires_real
@pytest.mark.real
def test_real_win10_plan(real_image) -> None:  # type: ignore[no-untyped-def]
    path = real_image("aes-xts_128")
    volume = open_bde(path)
    from bdekit.escrow.secrets import Secrets

    volume.unlock(Secrets(passwords=[real_kwargs("aes-xts_128")["password"]]))
    with open(path, "rb") as fh:
        offsets = struct.unpack_from("<3Q", fh.read(512), 176)
    virt_off, virt_size = volume.metadata.virtualization  # type: ignore[misc]
    runs = volume.plan(0, volume.volume_size)
    # the first 8 KiB come from the relocated block, encrypted
    assert runs[0] == Run(RunKind.RELOCATED, 0, virt_size, virt_off, True)
    zero = [(r.offset, r.length) for r in runs if r.kind == RunKind.ZERO]
    for off in offsets:
        assert any(o <= off and off + 65536 <= o + n for o, n in zero)
    assert any(o <= virt_off < o + n for o, n in zero)
    missing = [r for r in runs if r.kind == RunKind.MISSING]
    assert missing and missing[-1].end == volume.volume_size
    assert missing[0].offset == path.stat().st_size


@requires_real
@pytest.mark.real
def test_real_vista_plan(real_image) -> None:  # type: ignore[no-untyped-def]
    from bdekit.escrow.secrets import Secrets

    volume = open_bde(real_image("vista"))
    volume.unlock(Secrets(recovery_passwords=[real_kwargs("vista")["recovery_password"]]))
    runs = volume.plan(0, 16384)
    assert runs[0].kind == RunKind.VISTA_HEADER and runs[0].length == 512
    assert runs[1].kind == RunKind.PLAIN and runs[1].end == 8192
    assert runs[2].kind == RunKind.ENCRYPTED
    boot = bytearray(512)
    volume.read_into(0, boot)
    assert boot[3:11] == b"NTFS    "


@requires_real
@pytest.mark.real
def test_real_eow_plan_has_plain_chunks(real_image) -> None:  # type: ignore[no-untyped-def]
    from bdekit.escrow.secrets import Secrets

    volume = open_bde(real_image("eow_partial"))
    volume.unlock(Secrets(passwords=[real_kwargs("eow_partial")["password"]]))
    kinds = {r.kind for r in volume.plan(0, volume.volume_size)}
    assert {RunKind.PLAIN, RunKind.ENCRYPTED, RunKind.ZERO, RunKind.RELOCATED} <= kinds
    assert volume.eow is not None and volume.eow.chunk_size == 8 << 20


def test_stream_is_safe_from_several_threads() -> None:
    """Many threads reading one stream (positional reads) get exactly the right bytes."""
    import threading

    from bdekit.volume.bde import open_volume
    from tests.conftest import FIXTURES

    manifest = json.loads((FIXTURES / "xts128-rp.img.manifest.json").read_text())
    rp = manifest["protectors"][0]["recovery_password"]
    stream = open_volume(FIXTURES / "xts128-rp.img", recovery_password=rp)
    whole = stream.read()
    assert len(whole) == manifest["volume_size"]
    errors: list[str] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(200):
            off = rng.randrange(0, len(whole) - 5000)
            n = rng.randrange(1, 5000)
            if stream.pread(n, off) != whole[off:off + n]:
                errors.append(f"{off}+{n}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert hashlib.sha256(whole).hexdigest() == manifest["volume_sha256"]


def test_boot_sector_sizes() -> None:
    """Volume size from NTFS (total + 1 backup sector), FAT32 and exFAT boot sectors."""
    from bdekit.format.bootsector import boot_sector_size

    ntfs = bytearray(512)
    ntfs[3:11] = b"NTFS    "
    ntfs[11:13] = (512).to_bytes(2, "little")
    ntfs[0x28:0x30] = (2047).to_bytes(8, "little")
    ntfs[510:512] = b"\x55\xaa"
    assert boot_sector_size(bytes(ntfs)) == 2048 * 512
    fat = bytearray(512)
    fat[3:11] = b"MSDOS5.0"
    fat[11:13] = (4096).to_bytes(2, "little")
    fat[32:36] = (1000).to_bytes(4, "little")
    fat[510:512] = b"\x55\xaa"
    assert boot_sector_size(bytes(fat)) == 1000 * 4096
    exfat = bytearray(512)
    exfat[3:11] = b"EXFAT   "
    exfat[72:80] = (65536).to_bytes(8, "little")
    exfat[108] = 9
    exfat[510:512] = b"\x55\xaa"
    assert boot_sector_size(bytes(exfat)) == 65536 * 512
    assert boot_sector_size(bytes(512)) is None


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 3000), st.lists(st.tuples(st.integers(-10, 3100), st.integers(-10, 3100)),
                                      max_size=20))
def test_from_plain_ranges_matches_painting(size: int, ranges: list[tuple[int, int]]) -> None:
    built = SegmentMap.from_plain_ranges(size, ranges)
    painted = SegmentMap(size, RunKind.ENCRYPTED, True)
    for a, b in ranges:
        painted.paint(a, b, RunKind.PLAIN, 0, False)
    assert merge_runs(built.runs(0, size)) == merge_runs(painted.runs(0, size))


def test_many_eow_runs() -> None:
    """A fragmented used-space-only bitmap (every other 8 MiB chunk plain) over 1 TiB."""
    chunk = 8 << 20
    size = 1 << 40
    ranges = [(i * chunk, (i + 1) * chunk) for i in range(0, size // chunk, 2)]
    smap = SegmentMap.from_plain_ranges(size, ranges)
    assert len(smap) == size // chunk
    runs = list(smap.runs(3 * chunk - 10, 20))
    assert [(r.kind, r.length) for r in runs] == [(RunKind.PLAIN, 10), (RunKind.ENCRYPTED, 10)]
