"""Outputs that are not regular files: standard output, /dev/stdout, FIFOs, terminals, closed
pipes, and two bdekit processes on one output (issue 12).

The expected plaintext is the volume's SHA-256 the synthetic image builder recorded in the
fixture's manifest, not anything bdekit's decrypt computed.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from bdekit.errors import EXIT_OK, EXIT_USAGE
from bdekit.pipeline.output import PIPE_BYTES, widen_pipe
from tests.cli.helpers import IMAGE, RP, VOLUME_SHA256, bdekit_cmd, run_child
from tests.paced_cli import spawn

EXIT_SIGPIPE = 141


def test_dash_is_standard_output(tmp_path: Path) -> None:
    proc = run_child("-q", "decrypt", str(IMAGE), "-", "-rp", RP, cwd=tmp_path)
    assert proc.returncode == EXIT_OK, proc.stderr
    assert hashlib.sha256(proc.stdout).hexdigest() == VOLUME_SHA256
    assert not (tmp_path / "-").exists()


def test_dev_stdout_into_a_pipe(tmp_path: Path) -> None:
    proc = run_child("-q", "decrypt", str(IMAGE), "/dev/stdout", "-f", "-rp", RP, cwd=tmp_path)
    assert proc.returncode == EXIT_OK, proc.stderr
    assert hashlib.sha256(proc.stdout).hexdigest() == VOLUME_SHA256


def test_everything_else_goes_to_stderr(tmp_path: Path) -> None:
    """With the volume on stdout, the summary and the corrected recovery password are not."""
    blocks = RP.split("-")
    blocks[2] = blocks[2][:5] + str((int(blocks[2][5]) + 1) % 10)  # one mistyped digit
    typo = "-".join(blocks)
    proc = run_child("decrypt", str(IMAGE), "-", "-rp", typo, "--fix-typos", cwd=tmp_path,
                     timeout=600)
    assert proc.returncode == EXIT_OK, proc.stderr
    assert hashlib.sha256(proc.stdout).hexdigest() == VOLUME_SHA256
    assert b"Corrected recovery password" in proc.stderr


def test_a_fifo_is_written_in_place(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []

    def read() -> None:
        with open(fifo, "rb") as fh:
            got.append(fh.read())

    reader = threading.Thread(target=read)
    reader.start()
    proc = run_child("-q", "decrypt", str(IMAGE), str(fifo), "-f", "-rp", RP)
    reader.join(60)
    assert proc.returncode == EXIT_OK, proc.stderr
    assert hashlib.sha256(got[0]).hexdigest() == VOLUME_SHA256
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # not replaced by a regular file
    assert not list(tmp_path.glob("pipe?*"))  # no partial file beside it


def test_a_terminal_is_refused(tmp_path: Path) -> None:
    master, slave = os.openpty()
    try:
        proc = subprocess.run(bdekit_cmd("decrypt", str(IMAGE), "-", "-rp", RP), cwd=tmp_path,
                              stdout=slave, stderr=subprocess.PIPE, timeout=120, check=False,
                              env=dict(os.environ, PYTHONPATH=str(Path.cwd() / "src")))
    finally:
        os.close(slave)
        os.close(master)
    assert proc.returncode == EXIT_USAGE
    assert b"terminal" in proc.stderr
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize("extra", [(), ("--resume",)])
def test_no_journal_or_resume_on_a_stream(tmp_path: Path, extra: tuple[str, ...]) -> None:
    proc = run_child("repair", str(IMAGE), "-", "-rp", RP, *extra, cwd=tmp_path)
    assert proc.returncode == EXIT_USAGE
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "stream" in lines[0], proc.stderr
    assert proc.stdout == b"" and not list(tmp_path.glob("-*"))


def test_no_mapfile_on_a_stream(tmp_path: Path) -> None:
    out = tmp_path / "out.img"
    proc = run_child("repair", str(IMAGE), str(out), "-rp", RP, "--output-mapfile",
                     "/dev/stdout")
    assert proc.returncode == EXIT_USAGE
    assert b"regular file" in proc.stderr and proc.stdout == b""
    assert not out.exists()


def test_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(Path.cwd() / "src"))
    child = subprocess.Popen(bdekit_cmd("decrypt", str(IMAGE), "-", "-rp", RP,
                                        "--chunk-size", "65536"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
                             env=env)
    assert child.stdout is not None and child.stderr is not None
    head = child.stdout.read(100)  # like `| head -c 100`
    child.stdout.close()
    err = child.stderr.read().decode()
    assert child.wait(120) == EXIT_SIGPIPE
    assert len(head) == 100
    assert "Broken pipe" not in err and "Traceback" not in err and "error" not in err


def test_a_second_writer_of_the_same_output_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out.img"
    first = spawn(["decrypt", str(IMAGE), str(out), "-rp", RP, "--chunk-size", "65536",
                   "--threads", "1"], chunk_delay=0.5)
    try:
        deadline = time.monotonic() + 60
        partial = Path(str(out) + ".bdekit-partial")
        while not partial.exists():
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        proc = run_child("decrypt", str(IMAGE), str(out), "-rp", RP, "-f")
        assert proc.returncode == EXIT_USAGE
        assert f"is being written by another bdekit (pid {first.pid})".encode() in proc.stderr
    finally:
        first.kill()
        first.wait()


@pytest.mark.skipif(not hasattr(fcntl, "F_SETPIPE_SZ"), reason="Linux only")
def test_a_pipe_output_gets_a_wider_buffer(tmp_path: Path) -> None:
    """The stream writer asks for a 1 MiB pipe buffer (fewer turns of the reader per chunk);
    a regular file is left alone."""
    read_end, write_end = os.pipe()
    try:
        before = fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ)
        widen_pipe(write_end)
        after = fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ)
        limit = int(Path("/proc/sys/fs/pipe-max-size").read_text())
        assert before < PIPE_BYTES
        if limit >= PIPE_BYTES or os.geteuid() == 0:  # root may pass the limit
            assert after == PIPE_BYTES
        else:
            assert after == limit
    finally:
        os.close(read_end)
        os.close(write_end)
    regular = tmp_path / "file"
    regular.write_bytes(b"x")
    fd = os.open(regular, os.O_WRONLY)
    try:
        widen_pipe(fd)  # no error, nothing to do
    finally:
        os.close(fd)
