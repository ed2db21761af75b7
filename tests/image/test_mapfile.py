"""GNU ddrescue mapfiles: reading an input's, writing an output's."""

from __future__ import annotations

from pathlib import Path

import pytest

from bdekit.errors import UsageError
from bdekit.image.mapfile import (
    Block,
    blocks_from_bad,
    format_mapfile,
    parse_mapfile,
    read_mapfile,
    write_mapfile,
)

DDRESCUE = """\
# Mapfile. Created by GNU ddrescue version 1.27
# Command line: ddrescue -d -r3 /dev/sdb disk.img disk.map
# Start time:   2024-03-01 10:00:00
# Current time: 2024-03-01 10:42:17
# Finished
# current_pos  current_status  current_pass
0x1C9F0000     +               1
#      pos        size  status
0x00000000  0x00100000  +
0x00100000  0x00000200  -
0x00100200  0x0000FE00  +
0x00110000  0x00010000  *
0x00120000  0x00001000  /
0x00121000  0x00001000  ?
0x00122000  0x1C8CE000  +
"""


def test_parse_ddrescue_mapfile() -> None:
    mf = parse_mapfile(DDRESCUE)
    assert mf.current_pos == 0x1C9F0000 and mf.current_status == "+" and mf.current_pass == 1
    assert mf.blocks[1] == Block(0x100000, 0x200, "-")
    assert mf.size == 0x1C9F0000
    assert mf.unrescued() == [(0x100000, 0x200, "-"), (0x110000, 0x10000, "*"),
                              (0x120000, 0x1000, "/"), (0x121000, 0x1000, "?")]


def test_gaps_and_domain_count_as_not_rescued() -> None:
    mf = parse_mapfile("0 ?\n0x0 0x1000 +\n0x2000 0x1000 +\n")
    assert mf.current_pass == 1
    assert mf.unrescued(domain_size=0x4000) == [(0x1000, 0x1000, "?"), (0x3000, 0x1000, "?")]


def test_decimal_and_comments() -> None:
    mf = parse_mapfile("# c\n\n0  +  2  # trailing\n0 4096 + # ok\n4096 512 -\n")
    assert mf.current_pass == 2 and mf.unrescued() == [(4096, 512, "-")]


@pytest.mark.parametrize("text", [
    "", "# only comments\n", "0x0 + 1\n0x0 0x10 X\n", "0x0 + 1\n0x0 zz +\n",
    "0x0 + 1\n0x0 0x10\n",
])
def test_malformed(text: str) -> None:
    with pytest.raises(UsageError):
        parse_mapfile(text, "bad.map")


def test_format_round_trip(tmp_path: Path) -> None:
    bad = [(4096, 512), (0, 512), (4608, 1024), (10000, 100)]
    text = format_mapfile(20000, bad, command="bdekit repair a b")
    mf = parse_mapfile(text)
    assert "bdekit repair a b" in text and mf.current_status == "+"
    assert [(b.pos, b.size, b.status) for b in mf.blocks] == [
        (0, 512, "-"), (512, 3584, "+"), (4096, 1536, "-"), (5632, 4368, "+"),
        (10000, 100, "-"), (10100, 9900, "+")]
    assert sum(b.size for b in mf.blocks) == 20000
    path = tmp_path / "out.map"
    write_mapfile(path, 20000, bad)
    assert read_mapfile(path).blocks == mf.blocks
    assert not (tmp_path / "out.map.tmp").exists()


def test_blocks_edge_cases() -> None:
    assert blocks_from_bad(0, []) == []
    assert blocks_from_bad(100, []) == [Block(0, 100, "+")]
    assert blocks_from_bad(100, [(0, 100)]) == [Block(0, 100, "-")]
    assert blocks_from_bad(100, [(90, 50)]) == [Block(0, 90, "+"), Block(90, 10, "-")]


def test_write_mapfile_non_ascii_command(tmp_path: Path) -> None:
    """A path outside ASCII in the command line must not lose the job's mapfile."""
    path = tmp_path / "out.map"
    write_mapfile(path, 4096, [(512, 512)], command="bdekit repair café.img out.img")
    text = path.read_text(encoding="ascii")
    assert "caf\\xe9.img" in text
    assert [(b.pos, b.size, b.status) for b in read_mapfile(path).blocks] == [
        (0, 512, "+"), (512, 512, "-"), (1024, 3072, "+")]


def test_undated_mapfile_is_reproducible() -> None:
    """``dated=False`` (the mapfiles ``synth damage`` writes): same arguments, same bytes."""
    first = format_mapfile(8192, [(4096, 512)], creator="test", dated=False, current_pos=4096)
    assert first == format_mapfile(8192, [(4096, 512)], creator="test", dated=False,
                                   current_pos=4096)
    assert "Current time" not in first and "# Mapfile. Created by test " in first
    mf = parse_mapfile(first)
    assert mf.current_pos == 4096 and mf.unrescued() == [(4096, 512, "-")]
