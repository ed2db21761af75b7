"""Side outputs never land on the evidence or on another output (issue 12, first part).

Each case names a file the command reads (the image, a segment of it, a hard link to it) or
writes as one of its outputs; the command must refuse with exit 2, one line, before anything
is unlocked or written, and the file must be byte for byte what it was.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bdekit.errors import EXIT_OK, EXIT_USAGE
from tests.cli.helpers import RP, copy_image, digest, run_cli


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("bdekit: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def _audit_records(tmp_path: Path) -> list[dict[str, object]]:
    path = tmp_path / "audit.jsonl"  # tests/conftest.py points $BDEKIT_AUDIT_LOG here
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_keypackage_export_over_the_image_is_refused(tmp_path: Path) -> None:
    image = copy_image(tmp_path)
    before = digest(image)
    code, _out, err = run_cli("keypackage", "export", str(image), str(image), "-f", "-rp", RP)
    assert code == EXIT_USAGE
    assert str(image) in _one_error_line(err)
    assert digest(image) == before


@pytest.mark.parametrize("option", ["--report", "--audit-log"])
def test_decrypt_side_output_over_the_image_is_refused(tmp_path: Path, option: str) -> None:
    image = copy_image(tmp_path)
    before = digest(image)
    out = tmp_path / "out.img"
    code, _out, err = run_cli("decrypt", str(image), str(out), "-rp", RP, option, str(image))
    assert code == EXIT_USAGE
    assert "input image" in _one_error_line(err)
    assert digest(image) == before
    assert not out.exists()
    assert _audit_records(tmp_path) == []  # refused before anything was unlocked


@pytest.mark.parametrize("option", ["-lf", "--output-mapfile", "--report"])
def test_repair_side_output_over_the_image_is_refused(tmp_path: Path, option: str) -> None:
    image = copy_image(tmp_path)
    before = digest(image)
    out = tmp_path / "out.img"
    code, _out, err = run_cli("repair", str(image), str(out), "-rp", RP, option, str(image))
    assert code == EXIT_USAGE
    _one_error_line(err)
    assert digest(image) == before
    assert not out.exists()


@pytest.mark.parametrize("command,option", [("decrypt", "--report"),
                                            ("repair", "--output-mapfile"),
                                            ("repair", "--report")])
def test_side_output_over_the_output_is_refused(tmp_path: Path, command: str,
                                                option: str) -> None:
    image = copy_image(tmp_path)
    out = tmp_path / "out.img"
    code, _out, err = run_cli(command, str(image), str(out), "-rp", RP, option, str(out), "-f")
    assert code == EXIT_USAGE
    assert "same file" in _one_error_line(err)
    assert not out.exists()


def test_a_hard_link_to_the_image_is_the_image(tmp_path: Path) -> None:
    image = copy_image(tmp_path)
    alias = tmp_path / "alias.json"
    os.link(image, alias)
    before = digest(image)
    code, _out, err = run_cli("decrypt", str(image), str(tmp_path / "out.img"), "-rp", RP,
                              "--report", str(alias), "-f")
    assert code == EXIT_USAGE
    assert "another name" in _one_error_line(err)
    assert digest(image) == before and os.path.samefile(image, alias)


def test_a_segment_of_a_split_image_is_an_input(tmp_path: Path) -> None:
    data = copy_image(tmp_path, "whole.img").read_bytes()
    first, second = tmp_path / "disk.001", tmp_path / "disk.002"
    first.write_bytes(data[:len(data) // 2])
    second.write_bytes(data[len(data) // 2:])
    before = digest(second)
    code, _out, err = run_cli("decrypt", str(first), str(tmp_path / "out.img"), "-rp", RP,
                              "--report", str(second), "-f")
    assert code == EXIT_USAGE
    assert str(second) in _one_error_line(err)
    assert digest(second) == before


def test_a_key_file_is_an_input(tmp_path: Path) -> None:
    image = copy_image(tmp_path)
    ring = tmp_path / "keys.txt"
    ring.write_text(f"Recovery Key: {RP}\n")
    before = ring.read_bytes()
    code, _out, err = run_cli("decrypt", str(image), str(ring), "--keyring", str(ring), "-f")
    assert code == EXIT_USAGE
    assert "keyring" in _one_error_line(err)
    assert ring.read_bytes() == before


def test_an_existing_side_output_needs_force(tmp_path: Path) -> None:
    image = copy_image(tmp_path)
    report = tmp_path / "report.json"
    report.write_text("an earlier case's report\n")
    out = tmp_path / "out.img"
    code, _out, err = run_cli("decrypt", str(image), str(out), "-rp", RP, "--report",
                              str(report))
    assert code == EXIT_USAGE
    assert "--force" in _one_error_line(err)
    assert report.read_text() == "an earlier case's report\n" and not out.exists()
    code, _out, err = run_cli("decrypt", str(image), str(out), "-rp", RP, "--report",
                              str(report), "--force")
    assert code == EXIT_OK, err
    assert json.loads(report.read_text())["hashes"]["sha256"] == digest(out)


def test_nothing_is_unlocked_before_the_outputs_are_checked(tmp_path: Path) -> None:
    """The audit log's "unlocked" record and the rotation reminder follow the checks."""
    image = copy_image(tmp_path)
    out = tmp_path / "out.img"
    out.write_bytes(b"an existing output")
    code, _out, err = run_cli("decrypt", str(image), str(out), "-rp", RP)
    assert code == EXIT_USAGE
    assert "rotate" not in err
    assert _audit_records(tmp_path) == []
    code, _out, err = run_cli("decrypt", str(image), str(out), "-rp", RP, "-f")
    assert code == EXIT_OK
    assert "rotate" in err
    assert [r["outcome"] for r in _audit_records(tmp_path)] == ["unlocked"]


def test_batch_report_over_the_job_list_is_refused(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.csv"
    jobs.write_text(f"input\n{copy_image(tmp_path)}\n")
    before = jobs.read_bytes()
    code, _out, err = run_cli("batch", str(jobs), "-o", str(tmp_path / "out"), "--report",
                              str(jobs))
    assert code == EXIT_USAGE
    assert "job list" in _one_error_line(err)
    assert jobs.read_bytes() == before
