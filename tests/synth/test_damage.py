"""``bdekit synth damage``: every option does exactly what it says, and is recorded."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from bdekit import synth
from bdekit.cli.main import cli
from bdekit.errors import FormatError, NotBitLockerError, UsageError
from bdekit.escrow.secrets import Secrets
from bdekit.format.copies import read_metadata
from bdekit.image import mapfile
from bdekit.synth import damage
from bdekit.volume.bde import open_bde, open_volume

SIZE = 2 << 20


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pristine")
    synth.build(root / "v.img", size=SIZE, method="aes-xts-128", seed=4,
                protectors=[synth.ClearKeySpec()])
    return root / "v.img"


@pytest.fixture
def image(pristine: Path, tmp_path: Path) -> Path:
    target = tmp_path / "v.img"
    shutil.copyfile(pristine, target)
    shutil.copyfile(synth.default_manifest_path(pristine), synth.default_manifest_path(target))
    return target


def manifest_of(path: Path) -> synth.Manifest:
    return synth.Manifest.load(synth.default_manifest_path(path))


def metadata_of(path: Path):  # type: ignore[no-untyped-def]
    raw = path.read_bytes()
    return read_metadata(lambda off, n: raw[off:off + n], str(path), len(raw))


def digests_ok(path: Path, manifest: synth.Manifest) -> bool:
    stream = open_volume(path)
    got = synth.window_digests(lambda off, n: stream.pread(n, off), manifest.volume_size,
                               manifest.zero_on_disk)
    return got == manifest.windows


def test_zero_copies(image: Path, pristine: Path) -> None:
    records = damage.apply(image, zero_copies=[1, 2])
    man = manifest_of(image)
    offsets = man.layout["metadata_offsets"]
    raw = image.read_bytes()
    for index in (1, 2):
        off = offsets[index - 1]
        assert raw[off:off + 0x10000] == bytes(0x10000)
    assert raw[offsets[2]:offsets[2] + 8] == b"-FVE-FS-"
    assert man.damage == records == [
        {"kind": "zero-copy", "copy": 1, "offset": offsets[0], "length": 0x10000},
        {"kind": "zero-copy", "copy": 2, "offset": offsets[1], "length": 0x10000}]
    md = metadata_of(image)
    assert [c.status == "ok" for c in md.copies] == [False, False, True]
    assert md.best.index == 3
    assert digests_ok(image, man)  # copy 3 still serves
    # nothing else changed
    before = pristine.read_bytes()
    changed = [i for i in range(0, len(raw), 4096) if raw[i:i + 4096] != before[i:i + 4096]]
    assert all(any(o <= i < o + 0x10000 for o in offsets[:2]) for i in changed)


def test_garble_copy(image: Path, pristine: Path) -> None:
    records = damage.apply(image, garble_copies=[2], seed=3)
    man = manifest_of(image)
    off = man.layout["metadata_offsets"][1]
    size = man.layout["metadata_block_size"]
    assert records == [{"kind": "garble-copy", "copy": 2, "offset": off + 64,
                        "length": size - 64}]
    raw, before = image.read_bytes(), pristine.read_bytes()
    assert raw[off:off + 64] == before[off:off + 64]
    assert raw[off + 64:off + size] != before[off + 64:off + size]
    assert raw[off + size:] == before[off + size:] and raw[:off] == before[:off]
    md = metadata_of(image)
    assert md.copies[1].status != "ok" and not md.copies[1].crc_ok
    assert md.copies[0].status == md.copies[2].status == "ok"
    assert digests_ok(image, man)


def test_zero_header(image: Path) -> None:
    damage.apply(image, zero_header=True)
    assert image.read_bytes()[:512] == bytes(512)
    with pytest.raises(NotBitLockerError):
        open_bde(image)
    assert manifest_of(image).damage == [{"kind": "zero-header", "offset": 0, "length": 512}]


def test_zero_relocated_header(image: Path) -> None:
    man = manifest_of(image)
    off = man.layout["relocated_offset"]
    damage.apply(image, zero_relocated_header=True)
    assert image.read_bytes()[off:off + 8192] == bytes(8192)
    volume = open_bde(image)
    volume.unlock(Secrets())
    # the relocated boot sector is gone: the NTFS backup in the volume's last sector gives
    # the size and serves sector 0 (issue 11: never a noise boot sector)
    assert volume.size_source == "backup boot sector"
    assert volume.open().pread(512, 0)[3:11] == b"NTFS    "
    assert manifest_of(image).damage == [{"kind": "zero-relocated-header", "offset": off,
                                          "length": 8192, "volume_offset": 0}]


def test_bad_sectors_and_mapfile(image: Path, pristine: Path) -> None:
    ranges = damage.parse_ranges("1M-1M+4096,40960+8K,100-200")
    records = damage.apply(image, bad_sectors=ranges, seed=1)
    expected = [(0, 512), (40960, 8192), (1 << 20, 4096)]  # rounded out to whole sectors
    assert [(r["offset"], r["length"]) for r in records] == expected
    raw, before = image.read_bytes(), pristine.read_bytes()
    for off, length in expected:
        assert raw[off:off + length] != before[off:off + length]
        assert raw[off:off + length] != bytes(length)  # garbage, not zeros
    bad = [range(o, o + n) for o, n in expected]
    for i in range(0, len(raw), 512):
        if not any(i in r for r in bad):
            assert raw[i:i + 512] == before[i:i + 512]
    mf = mapfile.read_mapfile(damage.default_mapfile_path(image))
    assert mf.current_status == "+"
    assert [(b.pos, b.size) for b in mf.blocks if b.status == "-"] == expected
    assert mf.size == SIZE
    assert {b.status for b in mf.blocks} == {"+", "-"}
    assert all(a.end == b.pos for a, b in zip(mf.blocks, mf.blocks[1:], strict=False))
    text = damage.default_mapfile_path(image).read_text()
    assert "0x00100000  0x00001000  -" in text
    # a second run keeps the bad ranges of the first mapfile
    damage.apply(image, bad_sectors=[(65536, 512)], seed=2)
    mf = mapfile.read_mapfile(damage.default_mapfile_path(image))
    assert [(b.pos, b.size) for b in mf.blocks if b.status == "-"] == sorted(
        [*expected, (65536, 512)])
    assert len(manifest_of(image).damage) == 4


def test_truncate(image: Path) -> None:
    damage.apply(image, truncate="1536K")
    assert image.stat().st_size == 1536 << 10
    man = manifest_of(image)
    assert man.image_size == 1536 << 10
    assert man.damage == [{"kind": "truncate", "offset": 1536 << 10, "length": 512 << 10}]
    with pytest.raises(UsageError):
        damage.apply(image, truncate="4M")


def test_flip_bits(image: Path, pristine: Path) -> None:
    records = damage.apply(image, flip_bits=7, seed=9)
    raw, before = image.read_bytes(), pristine.read_bytes()
    diff = sum(bin(a ^ b).count("1") for a, b in zip(raw, before, strict=True))
    assert diff == 7
    (rec,) = records
    assert rec["kind"] == "flip-bits" and rec["count"] == 7
    for off, bit in rec["bits"]:
        assert (raw[off] ^ before[off]) >> bit & 1


def test_same_seed_same_damage(pristine: Path, tmp_path: Path) -> None:
    outs = []
    for name in ("a", "b"):
        target = tmp_path / f"{name}.img"
        shutil.copyfile(pristine, target)
        damage.apply(target, flip_bits=20, garble_copies=[3], bad_sectors=[(8192, 4096)],
                     seed=5)
        outs.append((target.read_bytes(), damage.default_mapfile_path(target).read_text()))
    assert outs[0] == outs[1]


def test_without_manifest_reads_layout_from_image(pristine: Path, tmp_path: Path) -> None:
    target = tmp_path / "bare.img"
    shutil.copyfile(pristine, target)
    records = damage.apply(target, zero_copies=[3], zero_relocated_header=True)
    man = manifest_of(pristine)
    assert records[0]["offset"] == man.layout["metadata_offsets"][2]
    assert records[1]["offset"] == man.layout["relocated_offset"]
    assert not synth.default_manifest_path(target).exists()


@pytest.mark.parametrize("text, expected", [
    ("0-512", [(0, 512)]),
    ("4096+4096", [(4096, 4096)]),
    ("1M-1M+4096", [(1 << 20, 4096)]),
    ("1M+4K, 0x2000-0x3000", [(1 << 20, 4096), (0x2000, 0x1000)]),
    ("2K+1K+1K", [(2048, 2048)]),
])
def test_parse_ranges(text: str, expected: list[tuple[int, int]]) -> None:
    assert damage.parse_ranges(text) == expected


@pytest.mark.parametrize("text", ["", "5", "10-5", "a-b", "1M+", "1X+3"])
def test_parse_ranges_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        damage.parse_ranges(text)


def test_parse_copies() -> None:
    assert damage.parse_copies("2,1,2") == [1, 2]
    with pytest.raises(UsageError):
        damage.parse_copies("4")


def test_cli_damage(image: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["synth", "damage", str(image), "--zero-copies", "1,2",
                                 "--bad-sectors", "16K+4K", "--truncate", "1900K",
                                 "--flip-bits", "2", "--seed", "1"])
    assert result.exit_code == 0, result.output
    kinds = [d["kind"] for d in manifest_of(image).damage]
    assert kinds == ["zero-copy", "zero-copy", "bad-sectors", "flip-bits", "truncate"]
    assert damage.default_mapfile_path(image).exists()
    result = runner.invoke(cli, ["synth", "damage", str(image)])
    assert result.exit_code == 2
    result = runner.invoke(cli, ["synth", "damage", str(image), "--bad-sectors", "x"])
    assert result.exit_code == 2


def test_all_copies_gone_is_a_format_error(image: Path) -> None:
    damage.apply(image, zero_copies=[1, 2, 3])
    with pytest.raises(FormatError):
        open_bde(image)
