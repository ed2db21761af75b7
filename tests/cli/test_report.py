"""A report an examiner can file: hashes (any subset, input too), provenance fields, --range,
and positions in hex or sectors (issue 12).

Expected hashes come from hashlib over the files; the plaintext is the one whose SHA-256 the
synthetic image builder recorded in the fixture's manifest.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from importlib import metadata
from pathlib import Path

import pytest

from bdekit.errors import EXIT_OK
from tests.cli.helpers import (
    IMAGE,
    MANIFEST,
    PROTECTOR,
    RP,
    VOLUME_SHA256,
    copy_image,
    digest,
    run_cli,
)


def _decrypt(tmp_path: Path, *extra: str, image: Path | None = None) -> tuple[Path, dict]:  # type: ignore[type-arg]
    out, report = tmp_path / "out.img", tmp_path / "report.json"
    code, _o, err = run_cli("-q", "decrypt", str(image or IMAGE), str(out), "-rp", RP,
                            "--report", str(report), "-f", *extra)
    assert code == EXIT_OK, err
    return out, json.loads(report.read_text())


@pytest.mark.parametrize("choice,expected", [("md5,sha1,sha256", ["md5", "sha1", "sha256"]),
                                             ("sha1", ["sha1"]), ("SHA256,md5", ["md5", "sha256"])])
def test_hash_subsets(tmp_path: Path, choice: str, expected: list[str]) -> None:
    out, rep = _decrypt(tmp_path, "--hash", choice)
    assert rep["hashes"] == {alg: digest(out, alg) for alg in expected}
    assert digest(out) == VOLUME_SHA256


def test_no_hash(tmp_path: Path) -> None:
    _out, rep = _decrypt(tmp_path, "--no-hash")
    assert rep["hashes"] == {} and rep["sha256"] == ""


def test_hash_input_covers_every_segment(tmp_path: Path) -> None:
    data = IMAGE.read_bytes()
    first, second = tmp_path / "disk.001", tmp_path / "disk.002"
    first.write_bytes(data[:300_000])
    second.write_bytes(data[300_000:])
    _out, rep = _decrypt(tmp_path, "--hash-input", "--hash", "md5,sha256", image=first)
    assert rep["input_hashes"] == {"md5": hashlib.md5(data).hexdigest(),
                                   "sha256": hashlib.sha256(data).hexdigest()}
    assert rep["input_files"] == [str(first), str(second)]
    assert rep["container"] == "split"


def test_the_report_carries_what_an_examiner_files(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    image = copy_image(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    code, _o, err = run_cli("decrypt", image.name, "out.img", "-rp", RP, "--report", "r.json")
    assert code == EXIT_OK, err
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["bdekit_version"] == metadata.version("bdekit")
    assert rep["command_line"] == "bdekit decrypt evidence.img out.img -rp '***' --report r.json"
    assert rep["input"] == str(image) and rep["output"] == str(tmp_path / "out.img")
    assert rep["container"] == "raw" and rep["volume_offset"] == 0
    assert rep["volume_guid"] == MANIFEST["volume_guid"]
    assert rep["method"] == MANIFEST["method"]
    assert (rep["protector"], rep["key_id"]) == (PROTECTOR, PROTECTOR[:8])
    started = dt.datetime.fromisoformat(rep["started"])
    finished = dt.datetime.fromisoformat(rep["finished"])
    assert started.utcoffset() == dt.timedelta(0) and before <= started <= finished
    assert rep["hashes"] == {"sha256": VOLUME_SHA256}
    assert rep["bytes_written"] == MANIFEST["volume_size"] and rep["damaged"] == []
    assert f"sha256 {VOLUME_SHA256}" in err


@pytest.mark.parametrize("spec,start,end", [("0x1000:0x3000", 0x1000, 0x3000),
                                            ("8s:24s", 8 * 512, 24 * 512),
                                            ("1048064:", 1048064, 1 << 20)])
def test_range(tmp_path: Path, spec: str, start: int, end: int) -> None:
    (tmp_path / "full").mkdir()
    full, _rep = _decrypt(tmp_path / "full")
    assert digest(full) == VOLUME_SHA256
    part_dir = tmp_path / "part"
    part_dir.mkdir()
    part, rep = _decrypt(part_dir, "--range", spec)
    assert part.read_bytes() == full.read_bytes()[start:end]
    assert rep["range"] == [start, end] and rep["bytes_written"] == end - start
    assert rep["hashes"]["sha256"] == digest(part)


@pytest.mark.parametrize("offset", ["0x100000", "2048s", "1048576"])
def test_offset_in_hex_or_sectors(tmp_path: Path, offset: str) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20) + IMAGE.read_bytes())
    code, out, err = run_cli("info", str(disk), "--offset", offset)
    assert code == EXIT_OK, err
    assert MANIFEST["volume_guid"] in out
