"""Files bdekit creates are private (0600, or ``--mode``); SIGHUP cleans up like SIGTERM; an
early Ctrl-C never prints a traceback (issue 12)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from bdekit.errors import EXIT_OK
from tests.cli.helpers import IMAGE, ROOT, RP, bdekit_cmd, copy_image, run_cli
from tests.paced_cli import spawn


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def usual_umask():  # type: ignore[no-untyped-def]
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_every_file_created_is_private(tmp_path: Path, usual_umask: None) -> None:
    image = copy_image(tmp_path)
    out, report = tmp_path / "out.img", tmp_path / "report.json"
    code, _o, err = run_cli("-q", "decrypt", str(image), str(out), "-rp", RP, "--report",
                            str(report))
    assert code == EXIT_OK, err
    rout, log, rmap = tmp_path / "rout.img", tmp_path / "repair.log", tmp_path / "rout.img.map"
    code, _o, err = run_cli("-q", "repair", str(image), str(rout), "-rp", RP, "-lf", str(log),
                            "--report", str(tmp_path / "rreport.json"))
    assert code == EXIT_OK, err
    kpg = tmp_path / "key.kpg"
    code, _o, err = run_cli("-q", "keypackage", "export", str(image), str(kpg), "-rp", RP)
    assert code == EXIT_OK, err
    created = [out, report, rout, log, rmap, tmp_path / "rreport.json", kpg]
    assert {p.name: oct(_mode(p)) for p in created} == {p.name: "0o600" for p in created}


def test_mode_option(tmp_path: Path, usual_umask: None) -> None:
    image = copy_image(tmp_path)
    out, report = tmp_path / "out.img", tmp_path / "report.json"
    code, _o, err = run_cli("-q", "decrypt", str(image), str(out), "-rp", RP, "--report",
                            str(report), "--mode", "640")
    assert code == EXIT_OK, err
    assert (_mode(out), _mode(report)) == (0o640, 0o640)


def _wait_for(path: Path, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert proc.poll() is None, f"finished before {what}"
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_sighup_removes_the_partial_output(tmp_path: Path) -> None:
    out = tmp_path / "out.img"
    proc = spawn(["decrypt", str(IMAGE), str(out), "-rp", RP, "--chunk-size", "65536",
                  "--threads", "1"], chunk_delay=0.3)
    partial = Path(str(out) + ".bdekit-partial")
    _wait_for(partial, proc, "the partial file appeared")
    proc.send_signal(signal.SIGHUP)
    assert proc.wait(60) == 130
    assert not partial.exists() and not out.exists()
    assert proc.stderr is not None and b"Traceback" not in proc.stderr.read()


@pytest.mark.parametrize("delay", [0.1, 0.2, 0.4, 0.8])
def test_an_early_interrupt_prints_no_traceback(tmp_path: Path, delay: float) -> None:
    """SIGINT at several moments of start-up (imports included) of the console script."""
    code = ("import os; os.write(2, b'R'); " + bdekit_cmd()[2])
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen([bdekit_cmd()[0], "-c", code, "info", str(IMAGE)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    assert proc.stderr is not None
    assert proc.stderr.read(1) == b"R"
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    err = proc.stderr.read().decode()
    status = proc.wait(60)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    # finished, interrupted (130), or stopped by the signal itself during the interpreter's
    # final shutdown (Python restores the default handler there): never a traceback
    assert status in (0, 130, -signal.SIGINT), err
