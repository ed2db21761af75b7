"""``bdekit repair --resume``: killed at any point (SIGKILL included), then resumed, the output
is byte-identical to an uninterrupted run's (same SHA-256, same damage list and mapfile)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from bdekit.errors import EXIT_PARTIAL, EXIT_USAGE
from tests.paced_cli import spawn
from tests.repair_support import (
    MiB,
    Synth,
    bad_ranges_of,
    damage,
    run_cli,
    synth_image,
)

CHUNK = str(1 * MiB)


@pytest.fixture(scope="session")
def big(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return synth_image(tmp_path_factory, "big", size="96M", method="aes-xts-128")


@pytest.fixture(scope="session")
def damaged(big: Synth, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The big image with a zeroed relocated header block (boot sector rebuilt), a lost copy
    and unreadable areas (input mapfile), early and late in the volume."""
    work = tmp_path_factory.mktemp("resume")
    img = big.copy(work / "in.img")
    bad = [(3 * MiB, 4096), (70 * MiB + 512, 1024)]
    damage(img, zero=[(big.layout["relocated_offset"], 8192),
                      (big.layout["metadata_offsets"][0], 65536), *bad])
    size = img.stat().st_size
    lines = ["# current_pos  current_status  current_pass", "0x0  +  1"]
    pos = 0
    for off, n in bad:
        lines += [f"0x{pos:X}  0x{off - pos:X}  +", f"0x{off:X}  0x{n:X}  -"]
        pos = off + n
    lines.append(f"0x{pos:X}  0x{size - pos:X}  +")
    mapfile = work / "in.map"
    mapfile.write_text("\n".join(lines) + "\n")
    return img, mapfile


def _args(img: Path, out: Path, s: Synth, mapfile: Path, *extra: str) -> list[str]:
    return ["repair", str(img), str(out), "--vmk", s.vmk, "--mapfile", str(mapfile),
            "--chunk-size", CHUNK, "--threads", "2", "--report", str(out) + ".json", *extra]


@pytest.fixture(scope="session")
def uninterrupted(big: Synth, damaged: tuple[Path, Path],
                  tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:  # type: ignore[type-arg]
    img, mapfile = damaged
    out = tmp_path_factory.mktemp("ref") / "out.img"
    code, _o, err = run_cli(*_args(img, out, big, mapfile))
    assert code == EXIT_PARTIAL, err
    return out, json.loads(Path(str(out) + ".json").read_text())


def _spawn_slow(args: list[str]) -> subprocess.Popen[bytes]:
    """The CLI in a child process, slowed down (a pause per chunk, frequent journal saves)."""
    return spawn(args, chunk_delay=0.03, journal_interval=0.02)


def _wait_progress(journal: Path, proc: subprocess.Popen[bytes], at_least: int) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise AssertionError(f"finished before it could be interrupted: {err}")
        try:
            done = json.loads(journal.read_text())["done"]
        except (OSError, ValueError, KeyError):
            done = -1
        if done >= at_least:
            return int(done)
        time.sleep(0.01)
    raise AssertionError("no progress")


def test_kill9_then_resume_identical(big: Synth, damaged: tuple[Path, Path],
                                     uninterrupted: tuple[Path, dict],  # type: ignore[type-arg]
                                     tmp_path: Path) -> None:
    img, mapfile = damaged
    ref_out, ref_rep = uninterrupted
    out = tmp_path / "out.img"
    journal = Path(str(out) + ".bdekit-journal")
    partial = Path(str(out) + ".bdekit-partial")
    seen = []
    # killed three times at different points (the first one early, before the first bad area
    # is written), resumed each time
    for at_least in (1 * MiB, 30 * MiB, 60 * MiB):
        extra = ("--resume",) if seen else ()
        proc = _spawn_slow(_args(img, out, big, mapfile, *extra))
        seen.append(_wait_progress(journal, proc, at_least))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not out.exists() and partial.exists() and journal.exists()
    assert seen == sorted(seen) and seen[-1] < big.volume_size
    code, _o, err = run_cli(*_args(img, out, big, mapfile, "--resume"))
    assert code == EXIT_PARTIAL, err
    rep = json.loads(Path(str(out) + ".json").read_text())
    assert rep["resumed_at"] >= seen[-1]
    assert out.read_bytes() == ref_out.read_bytes()
    assert rep["sha256"] == ref_rep["sha256"]
    assert rep["damaged"] == ref_rep["damaged"]
    assert bad_ranges_of(Path(str(out) + ".map")) == bad_ranges_of(Path(str(ref_out) + ".map"))
    assert not journal.exists() and not partial.exists()


def test_sigint_keeps_journal_then_resume(big: Synth, damaged: tuple[Path, Path],
                                          uninterrupted: tuple[Path, dict],  # type: ignore[type-arg]
                                          tmp_path: Path) -> None:
    img, mapfile = damaged
    ref_out, _ref = uninterrupted
    out = tmp_path / "out.img"
    journal = Path(str(out) + ".bdekit-journal")
    proc = _spawn_slow(_args(img, out, big, mapfile))
    _wait_progress(journal, proc, 10 * MiB)
    proc.send_signal(signal.SIGINT)
    _o, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert b"--resume" in err and not out.exists() and journal.exists()
    code, _o, err2 = run_cli(*_args(img, out, big, mapfile, "--resume"))
    assert code == EXIT_PARTIAL, err2
    assert out.read_bytes() == ref_out.read_bytes()


def test_resume_refuses_another_job(big: Synth, damaged: tuple[Path, Path],
                                    tmp_path: Path) -> None:
    img, mapfile = damaged
    out = tmp_path / "out.img"
    journal = Path(str(out) + ".bdekit-journal")
    proc = _spawn_slow(_args(img, out, big, mapfile))
    _wait_progress(journal, proc, 2 * MiB)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # same output, but without the input mapfile: a different job
    code, _o, err = run_cli("repair", str(img), str(out), "--vmk", big.vmk, "--resume")
    assert code == EXIT_USAGE and "mapfile" in err


def test_resume_after_finish_is_a_no_op(big: Synth, damaged: tuple[Path, Path],
                                        uninterrupted: tuple[Path, dict],  # type: ignore[type-arg]
                                        tmp_path: Path) -> None:
    """Killed after the rename but before the journal was removed: --resume completes the
    products (mapfile, report) without redoing the work."""
    img, mapfile = damaged
    ref_out, ref_rep = uninterrupted
    out = tmp_path / "out.img"
    code, _o, _e = run_cli(*_args(img, out, big, mapfile))
    journal = Path(str(out) + ".bdekit-journal")
    assert code == EXIT_PARTIAL and not journal.exists()
    # the state a kill between the rename and the journal's removal leaves
    state = {"format": "bdekit-journal", "version": 1, "complete": True,
             "partial": str(out) + ".bdekit-partial", "done": big.volume_size,
             "sha256": ref_rep["sha256"],
             "damage": [[d["offset"], d["length"], d["reason"]] for d in ref_rep["damaged"]]}
    Path(str(out) + ".map").unlink()
    # the parameters are those of the run: take them from a fresh journal of an interrupted run
    proc = _spawn_slow(_args(img, tmp_path / "other.img", big, mapfile))
    other_journal = tmp_path / "other.img.bdekit-journal"
    _wait_progress(other_journal, proc, 1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    params = json.loads(other_journal.read_text())["params"]
    params["output"] = os.path.realpath(out)
    state["params"] = params
    journal.write_text(json.dumps(state))
    code, _o, err = run_cli(*_args(img, out, big, mapfile, "--resume"))
    assert code == EXIT_PARTIAL, err
    assert Path(str(out) + ".map").exists() and not journal.exists()
    assert out.read_bytes() == ref_out.read_bytes()
