"""``bdekit scan``: partitions, BitLocker volumes, and stray metadata blocks on damaged disks.

Images come from the builders of tests/test_containers.py (a synthetic AES-XTS-128 volume in
GPT and MBR disks); the damaged ones are copies with a volume header, a partition table or
both GPT headers wiped.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from bdekit.errors import ReadError
from bdekit.image.sources import open_source
from bdekit.recovery.survey import find_metadata_blocks, scan_image
from tests.image.test_containers import (
    GPT_OFFSET,
    MBR_OFFSET,
    make_container,
    make_volume,
    run_cli,
    unlock_args,
)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.getbasetemp() / "bdekit-containers"
    path.mkdir(exist_ok=True)
    return path


def scan_json(image: Path, *args: str) -> dict[str, Any]:
    code, out, err = run_cli("scan", "--json", str(image), *args)
    assert code == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


def damaged_copy(src: Path, dst: Path, wipes: list[tuple[int, int]]) -> Path:
    shutil.copyfile(src, dst)
    with open(dst, "r+b") as fh:
        for offset, length in wipes:
            fh.seek(offset)
            fh.write(bytes(length))
    return dst


def copy_offsets(manifest: dict[str, Any]) -> list[int]:
    return [int(o) for o in manifest["layout"]["metadata_offsets"]]


def test_bare_volume(work: Path) -> None:
    volume, manifest = make_volume(work)
    d = scan_json(volume)
    assert d["partition_table"] == "none"
    assert d["bitlocker_count"] == 1
    [v] = d["volumes"]
    assert v["index"] is None and v["offset"] == 0 and v["scheme"] == "none"
    assert v["bitlocker"] == "win7"
    assert v["encryption_method"] == "aes-xts-128"
    assert v["volume_guid"] == manifest["volume_guid"].upper()
    assert v["protectors"] == ["recovery-password"]
    assert [c["offset"] for c in v["metadata_copies"]] == copy_offsets(manifest)
    assert all(c["status"] == "ok" for c in v["metadata_copies"])
    assert d["metadata_search"]["bytes"] == 0
    assert d["stray_metadata_blocks"] == []


def test_gpt_disk(work: Path) -> None:
    image, _index, _offset = make_container(work, "gpt")
    _volume, manifest = make_volume(work)
    d = scan_json(image)
    assert d["partition_table"] == "gpt"
    assert d["container"] == "raw"
    by_index = {v["index"]: v for v in d["volumes"]}
    assert set(by_index) == {1, 2}
    assert by_index[1]["bitlocker"] == "" and by_index[1]["type_name"] == "EFI system"
    two = by_index[2]
    assert two["offset"] == GPT_OFFSET and two["size"] == manifest["image_size"]
    assert two["bitlocker"] == "win7" and two["type_name"] == "Microsoft basic data"
    assert two["name"] == "data"
    assert two["volume_guid"] == manifest["volume_guid"].upper()
    assert d["bitlocker_count"] == 1
    # auto: only the unpartitioned space and the empty EFI partition are searched
    assert 0 < d["metadata_search"]["bytes"] < 4 << 20
    assert d["stray_metadata_blocks"] == []


@pytest.mark.parametrize("kind", ["mbr", "split", "e01-segments", "vhdx"])
def test_containers(work: Path, kind: str) -> None:
    image, index, offset = make_container(work, kind)
    d = scan_json(image)
    bitlocker = [v for v in d["volumes"] if v["bitlocker"]]
    assert [(v["index"], v["offset"]) for v in bitlocker] == [(index, offset)]
    assert d["container"] == {"mbr": "raw", "split": "split", "e01-segments": "ewf",
                              "vhdx": "vhdx"}[kind]


def test_mbr_extended(work: Path) -> None:
    image, _index, _offset = make_container(work, "mbr")
    d = scan_json(image)
    assert d["partition_table"] == "mbr"
    by_index = {v["index"]: v for v in d["volumes"]}
    assert set(by_index) == {1, 2, 5}
    assert by_index[2]["extended"] and not by_index[2]["bitlocker"]
    assert by_index[5]["offset"] == MBR_OFFSET and by_index[5]["bitlocker"] == "win7"
    assert by_index[5]["type"] == "0x07"


def test_human_output(work: Path) -> None:
    image, _index, _offset = make_container(work, "gpt")
    _volume, manifest = make_volume(work)
    code, out, err = run_cli("scan", str(image))
    assert code == 0, err
    assert "Partition table:  gpt" in out
    assert "Microsoft basic data 'data'" in out
    assert f"BitLocker, aes-xts-128, {{{manifest['volume_guid'].upper()}}}" in out
    assert "Stray metadata blocks: none" in out


def test_search_modes(work: Path) -> None:
    image, _index, _offset = make_container(work, "gpt")
    size = image.stat().st_size
    d = scan_json(image, "--search", "all")
    assert d["metadata_search"] == {"mode": "all", "ranges": [[0, size]], "bytes": size}
    assert d["stray_metadata_blocks"] == []  # the volume's own copies are not stray
    d = scan_json(image, "--search", "none")
    assert d["metadata_search"]["bytes"] == 0


def test_vista_volume(tmp_path: Path) -> None:
    from bdekit import synth
    image = tmp_path / "vista.img"
    synth.build(image, size="4M", method="aes-cbc-128-diffuser", vista=True, seed=3)
    [v] = scan_json(image)["volumes"]
    assert v["bitlocker"] == "vista"
    assert v["metadata_version"] == 1
    assert v["encryption_method"] == "aes-cbc-128-diffuser"


def test_wiped_volume_header(work: Path, tmp_path: Path) -> None:
    """The partition is there, its BitLocker header is gone: the copies are found inside it
    and point back to the partition start."""
    image, _index, _offset = make_container(work, "gpt")
    _volume, manifest = make_volume(work)
    damaged = damaged_copy(image, tmp_path / "d.img", [(GPT_OFFSET, 512)])
    d = scan_json(damaged)
    two = next(v for v in d["volumes"] if v["index"] == 2)
    assert two["bitlocker"] == "" and two["filesystem"] == ""
    blocks = d["stray_metadata_blocks"]
    assert [b["offset"] for b in blocks] == [GPT_OFFSET + o for o in copy_offsets(manifest)]
    for n, b in enumerate(blocks, start=1):
        assert b["copy_index"] == n
        assert b["volume_start"] == GPT_OFFSET
        assert b["volume_header"] is False
        assert b["partition"] == 2
        assert b["status"] == "ok"
        assert b["volume_guid"] == manifest["volume_guid"].upper()
        assert b["encryption_method"] == "aes-xts-128"
        assert b["metadata_offsets"] == copy_offsets(manifest)
    code, out, _err = run_cli("scan", str(damaged))
    assert code == 0
    assert "Stray metadata blocks (3" in out
    assert f"copy 1 of a volume starting at offset {GPT_OFFSET}" in out
    assert "No BitLocker volume recognised by its header." in out


def test_wiped_partition_table(work: Path, tmp_path: Path) -> None:
    """MBR and primary GPT zeroed: no table; the volume is found by its metadata and opens
    with the --offset scan suggests."""
    image, _index, _offset = make_container(work, "gpt")
    _volume, manifest = make_volume(work)
    damaged = damaged_copy(image, tmp_path / "d.img", [(0, 34 * 512)])
    d = scan_json(damaged)
    assert d["partition_table"] == "none" and d["volumes"] == []
    assert d["metadata_search"]["ranges"] == [[0, damaged.stat().st_size]]
    blocks = d["stray_metadata_blocks"]
    assert len(blocks) == 3
    assert {b["volume_start"] for b in blocks} == {GPT_OFFSET}
    assert all(b["volume_header"] and b["partition"] is None for b in blocks)
    code, out, _err = run_cli("scan", str(damaged))
    assert f"try --offset {GPT_OFFSET}" in out
    code, out, err = run_cli("info", "--json", str(damaged), "--offset", str(GPT_OFFSET),
                             *unlock_args(manifest))
    assert code == 0, err
    assert json.loads(out)["unlocked"] is not None


def test_damaged_gpt(work: Path, tmp_path: Path) -> None:
    """Protective MBR intact, both GPT headers corrupt: the table is reported damaged and the
    whole disk is searched."""
    image, _index, _offset = make_container(work, "gpt")
    size = image.stat().st_size
    damaged = damaged_copy(image, tmp_path / "d.img", [(512 + 24, 8), (size - 512 + 24, 8)])
    d = scan_json(damaged)
    assert d["partition_table"] == "damaged"
    assert "GPT" in d["partition_table_error"]
    assert d["metadata_search"]["bytes"] == size
    assert {b["volume_start"] for b in d["stray_metadata_blocks"]} == {GPT_OFFSET}


class _BadSectors:
    """A source whose reads touching ``[bad, bad + length)`` fail, as a dying disk's do."""

    def __init__(self, source: Any, bad: int, length: int) -> None:
        self.source, self.bad, self.length = source, bad, length
        self.size, self.path, self.kind = source.size, source.path, source.kind

    def _check(self, offset: int, length: int) -> None:
        if offset < self.bad + self.length and self.bad < offset + length:
            raise ReadError("I/O error", path=self.path, offset=max(offset, self.bad))

    def read_at(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        return self.source.read_at(offset, length)  # type: ignore[no-any-return]

    def readinto_at(self, offset: int, buf: Any) -> int:
        self._check(offset, len(memoryview(buf).cast("B")))
        return self.source.readinto_at(offset, buf)  # type: ignore[no-any-return]


def test_search_survives_read_errors(work: Path, tmp_path: Path) -> None:
    volume, manifest = make_volume(work)
    offsets = copy_offsets(manifest)
    wiped = damaged_copy(volume, tmp_path / "v.img", [(0, 512)])
    with open_source(wiped) as source:
        bad = _BadSectors(source, offsets[1] - 4096, 8192)  # copy 2 is unreadable
        found = find_metadata_blocks(bad)
        assert [c.offset for c in found] == [offsets[0], offsets[2]]
        report = scan_image(bad)
        assert [b.copy_index for b in report.blocks] == [1, 3]
        assert {b.volume_start for b in report.blocks} == {0}


def test_to_go_kind(work: Path, tmp_path: Path) -> None:
    """A To Go header (FAT32-style, OEM MSWIN4.1) is recognised as BitLocker, kind togo."""
    volume, manifest = make_volume(work)
    togo = tmp_path / "togo.img"
    shutil.copyfile(volume, togo)
    with open(togo, "r+b") as fh:
        fh.seek(3)
        fh.write(b"MSWIN4.1")
    [v] = scan_json(togo)["volumes"]
    assert v["bitlocker"] == "togo"
    assert v["volume_guid"] == manifest["volume_guid"].upper()
    code, out, _err = run_cli("scan", str(togo))
    assert code == 0 and "BitLocker To Go" in out
