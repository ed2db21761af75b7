"""image/files.py: the atomic replace and the positional write loop."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bdekit.image import files
from bdekit.image.files import pwrite_all, write_atomic


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_write_atomic_creates_private_file(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    write_atomic(target, "{}\n")
    assert target.read_bytes() == b"{}\n"
    assert _mode(target) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_write_atomic_replaces_and_honours_mode(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    target.write_bytes(b"old content, longer than the new one")
    os.chmod(target, 0o644)
    write_atomic(target, b"new", mode=0o640)
    assert target.read_bytes() == b"new"
    assert _mode(target) == 0o640


def test_write_atomic_failure_keeps_old_file(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.map"
    target.write_bytes(b"old")

    def boom(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "replace", boom)
    with pytest.raises(OSError):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.map"]


def test_write_atomic_removes_stale_temporary_link(tmp_path: Path) -> None:
    """A ``NAME.tmp`` symbolic link left behind is replaced, never written through."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    target = tmp_path / "key.kpg"
    (tmp_path / "key.kpg.tmp").symlink_to(victim)
    write_atomic(target, b"package")
    assert target.read_bytes() == b"package"
    assert victim.read_bytes() == b"precious"
    assert not (tmp_path / "key.kpg.tmp").exists()


def test_write_atomic_follows_a_symbolic_link(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_bytes(b"old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_atomic(link, b"new")
    assert link.is_symlink() and real.read_bytes() == b"new"


def test_write_atomic_into_a_fifo(tmp_path: Path) -> None:
    """A target that is not a regular file (a pipe, /dev/stdout) is written in place."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        write_atomic(fifo, b"through the pipe")
        assert os.read(reader, 100) == b"through the pipe"
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_pwrite_all_loops_over_short_writes(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    real_pwrite = os.pwrite
    calls = []

    def short(fd: int, data: memoryview, offset: int) -> int:
        calls.append(offset)
        return real_pwrite(fd, bytes(data[:3]), offset)

    path = tmp_path / "img"
    path.write_bytes(bytes(20))
    fd = os.open(path, os.O_RDWR)
    try:
        monkeypatch.setattr(files.os, "pwrite", short)
        pwrite_all(fd, b"0123456789", 5)
    finally:
        os.close(fd)
    assert path.read_bytes() == bytes(5) + b"0123456789" + bytes(5)
    assert calls == [5, 8, 11, 14]
