"""Discovery: every BitLocker volume of every image in a directory is a job, once."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bdekit.batch.discover import discover
from bdekit.batch.runner import load_jobs
from bdekit.errors import NotBitLockerError, UsageError
from tests.batch import fleet


@pytest.fixture(scope="module")
def evidence(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("discover")
    keys, parts, ev = work / "keys", work / "parts", work / "ev"
    ev.mkdir()
    fleet.build(ev / "bare.img", seed=1, kind="bek", keys=keys)
    a = fleet.build(parts / "a.img", seed=2, kind="bek", keys=keys)
    b = fleet.build(parts / "b.img", seed=3, kind="bek", keys=keys, method="aes-cbc-128")
    assert a.path and b.path
    (ev / "cases" / "17").mkdir(parents=True)
    fleet.gpt_disk(ev / "cases" / "17" / "gpt.dd", [parts / "a.img", parts / "b.img"])
    fleet.mbr_disk(ev / "mbr.raw", parts / "a.img")
    fleet.split(parts / "b.img", ev, "usb", segment=fleet.MiB // 2)
    fleet.bad_sectors(ev / "bare.img", [(300 * 1024, 4096)])
    (ev / "notes.txt").write_text("chain of custody\n" * 100)
    (ev / "plain.img").write_bytes(bytes(2 * fleet.MiB))
    (ev / ".hidden.img").write_bytes((parts / "a.img").read_bytes())
    (ev / "tiny.img").write_bytes(b"\x55" * 100)
    return ev


def test_every_volume_once(evidence: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bdekit")
    jobs = discover(str(evidence))
    got = {j.name: (Path(j.input).relative_to(evidence).as_posix(), j.partition) for j in jobs}
    assert got == {
        "bare": ("bare.img", None),
        "cases_17_gpt-p2": ("cases/17/gpt.dd", 2),
        "cases_17_gpt-p3": ("cases/17/gpt.dd", 3),
        "mbr-p2": ("mbr.raw", 2),
        "usb": ("usb.001", None),  # the split set once, from its first segment
    }
    bare = next(j for j in jobs if j.name == "bare")
    assert bare.mapfile == str(evidence / "bare.img.map")
    assert all(j.mapfile is None for j in jobs if j is not bare)
    assert all(j.size_hint == 2 * fleet.MiB for j in jobs)
    assert "plain.img: skipped" in caplog.text


def test_output_directory_inside_the_evidence_is_refused(evidence: Path) -> None:
    with pytest.raises(UsageError, match="inside the evidence directory"):
        load_jobs(str(evidence), mode="decrypt", output_dir=str(evidence / "out"))


def test_no_volume_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "plain.img").write_bytes(bytes(fleet.MiB))
    with pytest.raises(NotBitLockerError, match="no BitLocker volume found"):
        load_jobs(str(tmp_path / "ev"), mode="decrypt", output_dir=str(tmp_path / "out"))


def test_repair_mode_finds_a_volume_without_its_header(tmp_path: Path) -> None:
    ev = tmp_path / "ev"
    fleet.build(ev / "wiped.img", seed=4, kind="bek", keys=tmp_path / "keys")
    fleet.damage.apply(ev / "wiped.img", zero_header=True)
    assert discover(str(ev)) == []
    jobs = discover(str(ev), repair=True)
    assert [(j.name, j.offset, j.partition) for j in jobs] == [("wiped-at0", 0, None)]
