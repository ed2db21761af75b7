"""The read planner: segment painting, run merging and the runs of real volumes."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bdekit.format.eow import Doubt, EowLayout
from bdekit.volume.bde import open_bde
from bdekit.volume.planner import (
    Run,
    RunKind,
    SegmentMap,
    VolumeLayout,
    bitmap_runs,
    build_map,
    chunk_encrypted,
    eow_plain_ranges,
    merge_runs,
    relocated_runs,
    reserved_regions,
)
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


def test_sized_reads_match_the_whole_and_keep_position() -> None:
    """``read(n)`` (its own fast path, not ``RawIOBase.read``): aligned and unaligned, small
    and across tiles, at the end (short, then empty), ``read(0)``, ``read(None)``; the pieces
    put together are the volume the builder's manifest hashes."""
    from bdekit.volume.bde import open_volume
    from tests.conftest import FIXTURES

    manifest = json.loads((FIXTURES / "xts128-rp.img.manifest.json").read_text())
    rp = manifest["protectors"][0]["recovery_password"]
    stream = open_volume(FIXTURES / "xts128-rp.img", recovery_password=rp)
    size = manifest["volume_size"]
    rng = random.Random(3)
    pieces: list[bytes] = []
    while stream.tell() < size:
        n = rng.choice([1, 511, 512, 4096, 4097, 3 << 20])
        before = stream.tell()
        piece = stream.read(n)
        assert len(piece) == min(n, size - before)
        assert stream.tell() == before + len(piece)
        pieces.append(piece)
    assert hashlib.sha256(b"".join(pieces)).hexdigest() == manifest["volume_sha256"]
    assert stream.read(4096) == b"" and stream.read(0) == b""
    stream.seek(size - 100)
    assert stream.read(None) == b"".join(pieces)[-100:]
    stream.seek(8192)
    assert stream.read(0) == b"" and stream.tell() == 8192
    stream.close()
    with pytest.raises(ValueError):
        stream.read(10)


def test_boot_sector_sizes() -> None:
    """Volume size from NTFS (total + 1 backup sector), FAT32 and exFAT boot sectors."""
    from bdekit.format.bootsector import parse_boot_sector

    def boot_sector_size(sector: bytes) -> int | None:
        info = parse_boot_sector(sector)
        return info.volume_size if info is not None else None

    ntfs = bytearray(512)
    ntfs[3:11] = b"NTFS    "
    ntfs[11:13] = (512).to_bytes(2, "little")
    ntfs[13] = 8  # sectors per cluster
    ntfs[0x28:0x30] = (2047).to_bytes(8, "little")
    ntfs[0x30:0x38] = (4).to_bytes(8, "little")  # $MFT cluster
    ntfs[510:512] = b"\x55\xaa"
    assert boot_sector_size(bytes(ntfs)) == 2048 * 512
    fat = bytearray(512)
    fat[3:11] = b"MSDOS5.0"
    fat[11:13] = (4096).to_bytes(2, "little")
    fat[13] = 1  # sectors per cluster
    fat[14:16] = (32).to_bytes(2, "little")  # reserved sectors
    fat[16] = 2  # FATs
    fat[21] = 0xF8  # media descriptor: fixed disk
    fat[32:36] = (1000).to_bytes(4, "little")
    fat[510:512] = b"\x55\xaa"
    assert boot_sector_size(bytes(fat)) == 1000 * 4096
    exfat = bytearray(512)
    exfat[3:11] = b"EXFAT   "
    exfat[72:80] = (65536).to_bytes(8, "little")
    exfat[108] = 9  # bytes per sector: 2**9
    exfat[110] = 1  # number of FATs
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


# --------------------------------------------------------------------------------------------
# The plan as pure functions (VolumeLayout -> SegmentMap), against a byte model
# --------------------------------------------------------------------------------------------

SS = 512


def _layout(**kw: object) -> VolumeLayout:
    base: dict[str, object] = {"volume_size": 64 * SS, "image_size": 64 * SS, "sector_size": SS,
                               "version": 2, "encrypted": True, "state_offset": 0,
                               "reserved": [], "relocated": None, "eow": None}
    base.update(kw)
    return VolumeLayout(**base)  # type: ignore[arg-type]


def _plan(layout: VolumeLayout) -> list[tuple[RunKind, int, int, int, bool]]:
    smap = build_map(layout)
    return [(r.kind, r.offset, r.length, r.source, r.encrypted)
            for r in merge_runs(smap.runs(0, layout.volume_size))]


def test_plan_of_a_truncated_win7_volume() -> None:
    """Relocated sectors first, a metadata copy and the relocated block as zeros, the
    tail beyond the image missing (expected runs written out by hand)."""
    K = 1024
    layout = _layout(volume_size=1024 * K, image_size=768 * K,
                     reserved=[(64 * K, 64 * K), (200 * K, 8 * K)], relocated=(200 * K, 8 * K))
    assert _plan(layout) == [
        (RunKind.RELOCATED, 0, 8 * K, 200 * K, True),
        (RunKind.ENCRYPTED, 8 * K, 56 * K, 8 * K, True),
        (RunKind.ZERO, 64 * K, 64 * K, 64 * K, False),
        (RunKind.ENCRYPTED, 128 * K, 72 * K, 128 * K, True),
        (RunKind.ZERO, 200 * K, 8 * K, 200 * K, False),
        (RunKind.ENCRYPTED, 208 * K, 560 * K, 208 * K, True),
        (RunKind.MISSING, 768 * K, 256 * K, 768 * K, False),
    ]


def test_plan_of_a_partly_encrypted_vista_volume() -> None:
    """Vista: the header sector, 8 KiB plain, encrypted below the state offset, plain above."""
    layout = _layout(version=1, volume_size=128 * SS, image_size=128 * SS, state_offset=100 * SS,
                     reserved=[(40 * SS, 32 * SS)])
    assert _plan(layout) == [
        (RunKind.VISTA_HEADER, 0, SS, 0, False),
        (RunKind.PLAIN, SS, 15 * SS, SS, False),
        (RunKind.ENCRYPTED, 16 * SS, 24 * SS, 16 * SS, True),
        (RunKind.ZERO, 40 * SS, 32 * SS, 40 * SS, False),
        (RunKind.ENCRYPTED, 72 * SS, 28 * SS, 72 * SS, True),
        (RunKind.PLAIN, 100 * SS, 28 * SS, 100 * SS, False),
    ]


def test_plan_of_a_decrypted_volume_is_plain() -> None:
    layout = _layout(encrypted=False, relocated=(32 * SS, 2 * SS), state_offset=10 * SS)
    assert _plan(layout) == [(RunKind.RELOCATED, 0, 2 * SS, 32 * SS, False),
                             (RunKind.PLAIN, 2 * SS, 62 * SS, 2 * SS, False)]


def test_eow_helpers() -> None:
    """Bits LSB first, set = encrypted; bytes past the bits are not encrypted, bytes outside
    every region are."""
    eow = EowLayout(chunk_size=2 * SS, regions=[(8 * SS, 20 * SS, bytes([0b0000_0110]), 5)],
                    reserved=[])
    assert list(bitmap_runs(bytes([0b0000_0110]), 5, 1)) == [(0, 1, False), (1, 3, True),
                                                             (3, 5, False)]
    assert eow_plain_ranges(eow) == [(8 * SS, 10 * SS), (14 * SS, 18 * SS)]
    assert [chunk_encrypted(eow, o * SS) for o in (0, 9, 10, 13, 14, 18, 27, 28)] == [
        True, False, True, True, False, False, False, True]
    assert chunk_encrypted(None, 0)
    assert relocated_runs(eow, 9 * SS, 4 * SS, True) == [(9 * SS, 10 * SS, False, False),
                                                         (10 * SS, 13 * SS, True, False)]
    assert relocated_runs(eow, 2 * SS, 4 * SS, True) == [(2 * SS, 6 * SS, True, False)]
    assert relocated_runs(eow, 9 * SS, 4 * SS, False) == [(9 * SS, 13 * SS, False, False)]


def test_spans_in_doubt_are_guessed() -> None:
    """Doubts become GUESSED runs whose fallback is the serving bitmap's state; the relocated
    block in doubt is guessed at its relocated source; a state its boot sector proved wins;
    the boot paints replace the first sectors last (expected runs written out by hand)."""
    # chunks of 4 sectors from sector 8: 0 and 2 encrypted, 1 and 3-7 plain, 8 encrypted,
    # 9-13 plain
    eow = EowLayout(chunk_size=4 * SS,
                    regions=[(8 * SS, 56 * SS, bytes([0b0000_0101, 0b0000_0001]), 14)],
                    reserved=[], doubts=[(10 * SS, 20 * SS, Doubt.RECORD_DAMAGED),
                                         (40 * SS, 44 * SS, Doubt.NO_BITMAP)])
    layout = _layout(eow=eow, relocated=(40 * SS, 2 * SS), reserved=[(40 * SS, 2 * SS)])
    assert _plan(layout) == [
        (RunKind.GUESSED, 0, 2 * SS, 40 * SS, True),  # the relocated block lies in chunk 8
        (RunKind.ENCRYPTED, 2 * SS, 8 * SS, 2 * SS, True),  # outside every region, chunk 0
        (RunKind.GUESSED, 10 * SS, 2 * SS, 10 * SS, True),  # chunk 0
        (RunKind.GUESSED, 12 * SS, 4 * SS, 12 * SS, False),  # chunk 1
        (RunKind.GUESSED, 16 * SS, 4 * SS, 16 * SS, True),  # chunk 2
        (RunKind.PLAIN, 20 * SS, 20 * SS, 20 * SS, False),  # chunks 3-7
        (RunKind.ZERO, 40 * SS, 2 * SS, 40 * SS, False),  # the relocated block itself
        (RunKind.GUESSED, 42 * SS, 2 * SS, 42 * SS, True),  # chunk 8
        (RunKind.PLAIN, 44 * SS, 20 * SS, 44 * SS, False)]  # chunks 9-13
    proved = dataclasses.replace(layout, relocated_state=True,
                                 boot=((0, SS, RunKind.RELOCATED, 63 * SS, True),
                                       (SS, 2 * SS, RunKind.ZERO, 0, False)))
    assert _plan(proved)[:3] == [(RunKind.RELOCATED, 0, SS, 63 * SS, True),
                                 (RunKind.ZERO, SS, SS, SS, False),
                                 (RunKind.ENCRYPTED, 2 * SS, 8 * SS, 2 * SS, True)]


def _model(layout: VolumeLayout) -> list[tuple[RunKind, int, bool]]:
    """(kind, source, encrypted) of every sector, by the rules of the format notes."""
    eow = layout.eow

    def state(q: int) -> bool:
        if not layout.encrypted:
            return False
        if eow is not None:
            off, size, bitmap, bits = eow.regions[0]
            if off <= q < off + size:
                chunk = (q - off) // eow.chunk_size
                return not (chunk < bits and not bitmap[chunk // 8] >> (chunk % 8) & 1)
            return True
        return not (layout.state_offset and q >= layout.state_offset)

    out = []
    for p in range(0, layout.volume_size, SS):
        kind, src, enc = (RunKind.ENCRYPTED if state(p) else RunKind.PLAIN), p, state(p)
        if any(a <= p < a + n for a, n in layout.reserved):
            kind, enc = RunKind.ZERO, False
        if layout.version == 1 and p < 0x2000:
            kind, enc = (RunKind.VISTA_HEADER if p < SS else RunKind.PLAIN), False
        elif layout.relocated is not None and p < layout.relocated[1]:
            # the relocated sectors are encrypted like the volume (the state offset does not
            # apply to them), unless a used-space-only bitmap covers where they lie
            q = p + layout.relocated[0]
            covered, q_enc = True, layout.encrypted
            if layout.encrypted and eow is not None:
                off, size, _bitmap, bits = eow.regions[0]
                if off <= layout.relocated[0] < off + size:
                    covered = q < off + size and (q - off) // eow.chunk_size < bits
                    q_enc = state(q)
            if covered:
                kind, src, enc = RunKind.RELOCATED, q, q_enc
        if kind != RunKind.ZERO and src >= layout.image_size:
            kind, src, enc = RunKind.MISSING, p, False
        out.append((kind, src, enc))
    return out


@settings(max_examples=300, deadline=None)
@given(version=st.sampled_from([1, 2]), encrypted=st.booleans(),
       sizes=st.tuples(st.integers(16, 64), st.integers(1, 64)),
       state=st.integers(0, 70), reserved=st.lists(st.tuples(st.integers(0, 64),
                                                             st.integers(1, 12)), max_size=3),
       relocated=st.one_of(st.none(), st.tuples(st.integers(0, 60), st.integers(1, 8))),
       eow=st.one_of(st.none(), st.tuples(st.integers(0, 40), st.integers(1, 40),
                                          st.integers(0, 0xFFFF), st.integers(0, 16))))
def test_build_map_matches_model(version: int, encrypted: bool, sizes: tuple[int, int],
                                 state: int, reserved: list[tuple[int, int]],
                                 relocated: tuple[int, int] | None,
                                 eow: tuple[int, int, int, int] | None) -> None:
    """Every sector of a random layout (sizes in sectors, chunks of 2 sectors) gets the kind,
    source and encryption state the rules say."""
    volume, image = sizes[0] * SS, sizes[1] * SS
    eow_layout = None
    if eow is not None:
        off, size, bitmap, bits = eow
        eow_layout = EowLayout(chunk_size=2 * SS, regions=[(off * SS, size * SS,
                                                            bitmap.to_bytes(2, "little"), bits)],
                               reserved=[])
    layout = _layout(volume_size=volume, image_size=image, version=version,
                     encrypted=encrypted, state_offset=state * SS,
                     reserved=[(a * SS, n * SS) for a, n in reserved],
                     relocated=(None if relocated is None or version == 1
                                else (relocated[0] * SS, relocated[1] * SS)),
                     eow=eow_layout)
    got: list[tuple[RunKind, int, bool]] = []
    for run in build_map(layout).runs(0, volume):
        assert run.offset % SS == 0 and run.length % SS == 0
        got += [(run.kind, run.source + i, run.encrypted) for i in range(0, run.length, SS)]
    assert got == _model(layout)


def test_reserved_regions_of_a_fixture() -> None:
    """The zero regions are the three metadata copies (64 KiB each, offsets from the GUID
    record of the volume header) and the relocated sectors (from the block header)."""
    from tests.conftest import FIXTURES

    path = FIXTURES / "xts128-rp.img"
    raw = path.read_bytes()
    offsets = struct.unpack_from("<3Q", raw, 160 + 16)
    nsec = struct.unpack_from("<I", raw, offsets[0] + 28)[0]
    virt_offset = struct.unpack_from("<Q", raw, offsets[0] + 56)[0]
    volume = open_bde(path)
    expected = sorted([(o, 65536) for o in offsets] + [(virt_offset, nsec * 512)])
    assert reserved_regions(volume.metadata, None) == expected
    assert volume.reserved_regions() == expected
