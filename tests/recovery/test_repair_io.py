"""Unreadable sectors: through the real read path (a FUSE file answering EIO) and through an
input ddrescue mapfile; unreadable ciphertext must land at the right *output* offsets (the
first 8 KiB of the volume come from the relocated header block)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from bdekit.errors import EXIT_OK, EXIT_PARTIAL
from bdekit.image.ranges import NOT_RESCUED, UNREADABLE
from tests.repair_support import (
    EioMount,
    MiB,
    Synth,
    check_repaired,
    damage,
    run_cli,
)

REGION = 64 << 10


def _bad_layout(s: Synth) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(unreadable image ranges, the output ranges they spoil)."""
    reloc = s.layout["relocated_offset"]
    copy2 = s.layout["metadata_offsets"][1]
    ss = s.manifest.sector_size
    bad = [
        (5 * MiB + 3 * 512, 2 * 512),          # ciphertext: same offsets in the volume
        (reloc + 1024, 512),                   # relocated block: volume sector 2 (512 B)
        (copy2, 4096),                         # metadata copy 2: unusable, but reads as zeros
        (9 * MiB - 512, 1024),                 # across a chunk boundary
    ]
    out = [
        (5 * MiB + 3 * 512 - (5 * MiB + 3 * 512) % ss, max(ss, 2 * 512)),
        (1024 - 1024 % ss, ss),
        (9 * MiB - ss, 2 * ss) if ss > 512 else (9 * MiB - 512, 1024),
    ]
    return bad, out


def test_fuse_eio_repair_and_decrypt(xts: Synth, tmp_path: Path) -> None:
    bad, expected = _bad_layout(xts)
    with EioMount(xts.image, tmp_path, bad) as disk:
        out = tmp_path / "out.img"
        report = tmp_path / "r.json"
        log = tmp_path / "log.txt"
        code, _o, err = run_cli("repair", str(disk), str(out), "--vmk", xts.vmk, "-f",
                                "--report", str(report), "-lf", str(log), "--threads", "2")
        assert code == EXIT_PARTIAL, err
        check_repaired(out, xts.reference, expected)
        rep = json.loads(report.read_text())
        assert {d["reason"] for d in rep["damaged"]} == {UNREADABLE}
        assert rep["metadata_copy"] == 1
        assert rep["bytes_unreadable"] == sum(n for _o, n in expected)
        assert "unreadable" in log.read_text()
        # decrypt shares the engine: it does not give up either
        out2 = tmp_path / "out2.img"
        code, _o, err = run_cli("decrypt", str(disk), str(out2), "--vmk", xts.vmk, "-f")
        assert code == EXIT_PARTIAL, err
        assert out2.read_bytes() == out.read_bytes()


def test_fuse_eio_4k_sectors(cbc4k: Synth, tmp_path: Path) -> None:
    """One unreadable 512-byte piece spoils the whole 4096-byte sector of plaintext."""
    bad, expected = _bad_layout(cbc4k)
    with EioMount(cbc4k.image, tmp_path, bad) as disk:
        out = tmp_path / "out.img"
        code, _o, err = run_cli("repair", str(disk), str(out), "--vmk", cbc4k.vmk, "-f",
                                "--retries", "0")
        assert code == EXIT_PARTIAL, err
        check_repaired(out, cbc4k.reference, expected)


def test_fuse_eio_in_volume_header(xts: Synth, tmp_path: Path) -> None:
    """The volume header itself unreadable: the metadata is found by scanning."""
    with EioMount(xts.image, tmp_path, [(0, 512)]) as disk:
        out = tmp_path / "out.img"
        report = tmp_path / "r.json"
        code, _o, err = run_cli("repair", str(disk), str(out), "--vmk", xts.vmk, "-f",
                                "--report", str(report))
        assert code == EXIT_OK, err
        check_repaired(out, xts.reference, [])
        assert json.loads(report.read_text())["metadata_source"] == "scan"


def _write_ddrescue_map(path: Path, size: int, bad: list[tuple[int, int, str]]) -> None:
    lines = ["# Mapfile. Created by GNU ddrescue version 1.27",
             "# Command line: ddrescue -d /dev/sdb disk.img disk.map",
             "# current_pos  current_status  current_pass", "0x00000000     +               1",
             "#      pos        size  status"]
    pos = 0
    for off, n, status in sorted(bad):
        if off > pos:
            lines.append(f"0x{pos:08X}  0x{off - pos:08X}  +")
        lines.append(f"0x{off:08X}  0x{n:08X}  {status}")
        pos = off + n
    if pos < size:
        lines.append(f"0x{pos:08X}  0x{size - pos:08X}  +")
    path.write_text("\n".join(lines) + "\n")


def test_input_mapfile(xts: Synth, tmp_path: Path) -> None:
    bad, expected = _bad_layout(xts)
    statuses = ["-", "?", "/", "*"]
    img = xts.copy(tmp_path / "in.img")
    damage(img, zero=bad)  # ddrescue leaves what it could not read as zeros
    mapfile = tmp_path / "in.map"
    _write_ddrescue_map(mapfile, img.stat().st_size,
                        [(o, n, statuses[i]) for i, (o, n) in enumerate(bad)])
    out = tmp_path / "out.img"
    report = tmp_path / "r.json"
    code, _o, err = run_cli("repair", str(img), str(out), "--vmk", xts.vmk, "-f", "--mapfile",
                            str(mapfile), "--report", str(report))
    assert code == EXIT_PARTIAL, err
    check_repaired(out, xts.reference, expected)
    assert {d["reason"] for d in json.loads(report.read_text())["damaged"]} == {NOT_RESCUED}


def test_input_mapfile_partitioned_disk(xts: Synth, tmp_path: Path) -> None:
    """Mapfile positions are image positions: the volume's offset in the disk is subtracted."""
    start = 1 * MiB
    vol = xts.image.read_bytes()
    mbr = bytearray(512)
    mbr[446:462] = struct.pack("<B3sB3sII", 0, b"\0\0\0", 0x07, b"\0\0\0", start // 512,
                               len(vol) // 512)
    mbr[510:512] = b"\x55\xaa"
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(mbr) + bytes(start - 512) + vol)
    bad = [(start + 7 * MiB, 4096), (start + xts.layout["relocated_offset"], 512)]
    damage(disk, zero=bad)
    mapfile = tmp_path / "disk.map"
    _write_ddrescue_map(mapfile, disk.stat().st_size, [(o, n, "-") for o, n in bad])
    out = tmp_path / "out.img"
    code, _o, err = run_cli("repair", str(disk), str(out), "--vmk", xts.vmk, "-f", "--mapfile",
                            str(mapfile), "--output-mapfile", str(tmp_path / "o.map"))
    assert code == EXIT_PARTIAL, err
    # sector 0 of the volume (the unreadable relocated sector) comes back from the backup boot
    # sector; the rest of the relocated block was readable
    check_repaired(out, xts.reference, [(7 * MiB, 4096)], tmp_path / "o.map")
    assert "rebuilt from its backup" in err
