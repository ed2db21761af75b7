"""A batch killed with SIGKILL and resumed gives the same outputs as an uninterrupted one.

The batch runs in a child process (tests/paced_cli.py: its decrypt loop slowed down, which the
batch passes on to its worker processes) and is killed while its second job is half done;
its worker process dies with it (no orphan keeps writing). ``--resume`` then skips the first
job (finished: its report is not touched), continues the second from its journal and runs
the third; every output, mapfile and damage list equals the uninterrupted run's, and the
outputs match the synth manifests. Both modes: ``decrypt`` (the batch's journal) and
``repair`` (the repair journal).
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import time
from pathlib import Path

import pytest

from bdekit.errors import EXIT_PARTIAL
from tests.batch import fleet
from tests.batch.conftest import Small
from tests.conftest import run_cli
from tests.paced_cli import spawn

CHUNK = "65536"


def mapfile_body(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if not line.startswith("#")]


def wait_for(what: str, check, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def lock_free(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def journal_done(path: Path) -> int:
    try:
        return int(json.loads(path.read_text())["done"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.fixture(scope="module")
def jobs(small: Small, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[fleet.Volume]]:
    work = tmp_path_factory.mktemp("resume")
    keys = small.keys
    a = fleet.build(work / "a.img", seed=31, kind="bek", keys=keys, size="4M")
    b = fleet.build(work / "b.img", seed=32, kind="bek", keys=keys, size="4M",
                    method="aes-cbc-256")
    damaged = small.volumes["damaged"]
    vols = [fleet.Volume(work / "a.img", a), fleet.Volume(work / "b.img", b), damaged]
    path = work / "jobs.csv"
    path.write_text("input,output,mapfile\n"
                    f"{work / 'a.img'},a,\n{work / 'b.img'},b,\n"
                    f"{damaged.image},c,{damaged.image}.map\n")
    return path, vols


@pytest.mark.parametrize("mode", ["decrypt", "repair"])
def test_sigkill_then_resume(small: Small, jobs: tuple[Path, list[fleet.Volume]],
                             tmp_path: Path, mode: str) -> None:
    path, vols = jobs
    common = ["--keyring", str(small.keys), "--workers", "1", "--chunk-size", CHUNK,
              "--mode", mode]
    ref = tmp_path / "ref"
    code, _o, err = run_cli("batch", str(path), "-o", str(ref), *common)
    assert code == EXIT_PARTIAL, err

    out = tmp_path / "out"
    proc = spawn(["batch", str(path), "-o", str(out), *common], chunk_delay=0.05,
                 journal_interval=0.05)
    try:
        wait_for("job a to finish", lambda: (out / "a" / "report.json").exists())
        wait_for("job b to be under way",
                 lambda: journal_done(out / "b" / "b.img.bdekit-journal") >= 512 * 1024)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
    # its worker process died with it (PR_SET_PDEATHSIG): the job's lock is released
    wait_for("the worker to die", lambda: lock_free(out / "b" / ".lock"), timeout=30)
    done_at_kill = journal_done(out / "b" / "b.img.bdekit-journal")
    assert 0 < done_at_kill < vols[1].manifest.volume_size
    assert not (out / "b" / "b.img").exists() and (out / "b" / "b.img.bdekit-partial").exists()
    assert not (out / "c").exists() and not (out / "summary.json").exists()
    a_report = (out / "a" / "report.json").stat().st_mtime_ns

    code, _o, err = run_cli("batch", str(path), "-o", str(out), *common, "--resume")
    assert code == EXIT_PARTIAL, err
    rows, ref_rows = fleet.summary_rows(out), fleet.summary_rows(ref)
    assert (out / "a" / "report.json").stat().st_mtime_ns == a_report
    assert json.loads((out / "summary.json").read_text())["skipped"] == ["a"]
    assert rows["b"]["resumed_at"] and rows["b"]["resumed_at"] >= done_at_kill
    assert rows["c"]["resumed_at"] is None
    for name, vol in zip("abc", vols, strict=True):
        assert rows[name]["sha256"] == ref_rows[name]["sha256"] == vol.sha256
        assert fleet.file_sha256(out / name / f"{name}.img") == vol.sha256
        assert mapfile_body(out / name / f"{name}.img.map") == \
            mapfile_body(ref / name / f"{name}.img.map")
        ours = json.loads((out / name / "report.json").read_text())["report"]
        theirs = json.loads((ref / name / "report.json").read_text())["report"]
        assert ours["damaged"] == theirs["damaged"]
        assert (rows[name]["status"], rows[name]["damage_bytes"]) == (
            ref_rows[name]["status"], ref_rows[name]["damage_bytes"])
        assert not list((out / name).glob("*.bdekit-*"))
