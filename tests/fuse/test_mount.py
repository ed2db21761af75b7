"""``bdekit mount`` / ``bdekit umount`` for real, through FUSE, and the file system object.

The real mounts run ``bdekit`` as a subprocess (as a user would: the background mode forks a
daemon) on the synthetic volume of tests/test_containers.py inside a GPT disk, read the
decrypted file through the mount point and compare it with the plaintext and the synth
manifest's digests; then mount the NTFS inside it with ``ntfs-3g -o ro`` and read the file
``mkntfs``/``ntfscp`` put there.  They skip cleanly when FUSE is not usable here (no
mfusepy or libfuse, no /dev/fuse, mounting not permitted) or a tool is missing.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bdekit.errors import ReadError
from bdekit.fuse import VOLUME_FILE_NAME, VolumeFS, fuse_problem, is_mounted
from tests.image.test_containers import (
    SECRET_NAME,
    make_container,
    make_volume,
    plaintext,
    recovery_password,
    run_cli,
    secret_bytes,
    unlock_args,
    window_digests,
)

MiB = 1 << 20
WRONG_RP = "000000-000000-000000-000000-000000-000000-000000-000011"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.getbasetemp() / "bdekit-containers"
    path.mkdir(exist_ok=True)
    return path


def bdekit(*args: str, env: dict[str, str] | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bdekit.cli.main", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})},
                          check=False)


def wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def force_unmount(mountpoint: Path) -> None:
    if is_mounted(str(mountpoint)):
        for tool in ("fusermount3", "fusermount"):
            if shutil.which(tool):
                subprocess.run([tool, "-u", "-z", str(mountpoint)], capture_output=True,
                               check=False)
                break


_NOT_PERMITTED = re.compile(r"permission denied|not permitted|operation not permitted|"
                            r"fuse: device not found|fusermount.*not found|no such device",
                            re.IGNORECASE)


@pytest.fixture(scope="module")
def fuse_ok() -> None:
    problem = fuse_problem()
    if problem:
        pytest.skip(f"FUSE is not usable here: {problem}")
    if not (shutil.which("fusermount3") or shutil.which("fusermount")):
        pytest.skip("neither fusermount3 nor fusermount is installed (Debian: fuse3)")


class Mount:
    """A background ``bdekit mount`` of ``image`` on ``path``; unmounted at the end."""

    def __init__(self, image: Path, path: Path, args: list[str],
                 env: dict[str, str] | None = None) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.file = path / VOLUME_FILE_NAME
        proc = bdekit("mount", str(image), str(path), *args, env=env)
        if proc.returncode != 0:
            if _NOT_PERMITTED.search(proc.stderr):
                pytest.skip(f"mounting is not permitted here: {proc.stderr.strip()}")
            raise AssertionError(f"bdekit mount failed ({proc.returncode}): {proc.stderr}")
        self.stderr = proc.stderr
        m = re.search(r"served by process (\d+)", proc.stderr)
        assert m, proc.stderr
        self.pid = int(m.group(1))

    def close(self) -> None:
        # the daemon exits on its own once the kernel tells it (test_umount_command waits)
        force_unmount(self.path)


@pytest.fixture
def mounted(fuse_ok: None, work: Path, tmp_path: Path) -> Iterator[Mount]:
    image, _index, _offset = make_container(work, "gpt")
    _volume, manifest = make_volume(work)
    # a space in the path: mountinfo escapes it (is_mounted must unescape)
    mount = Mount(image, tmp_path / "mnt point", unlock_args(manifest))
    try:
        yield mount
    finally:
        mount.close()


# --------------------------------------------------------------------------------------------
# Real mounts
# --------------------------------------------------------------------------------------------
def test_mount_reads_plaintext(mounted: Mount, work: Path) -> None:
    _volume, manifest = make_volume(work)
    plain = plaintext(work)
    assert "mounted:" in mounted.stderr and str(mounted.file) in mounted.stderr
    assert os.listdir(mounted.path) == [VOLUME_FILE_NAME]
    st = os.stat(mounted.file)
    assert st.st_size == manifest["volume_size"]
    assert stat.S_ISREG(st.st_mode) and st.st_mode & 0o777 == 0o444
    data = mounted.file.read_bytes()
    assert hashlib.sha256(data).digest() == hashlib.sha256(plain).digest()
    assert window_digests(data) == manifest["windows"]
    # random, unaligned reads from several threads at once
    fd = os.open(mounted.file, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        rng = random.Random(3)
        ranges = [(rng.randrange(len(plain)), rng.randrange(1, 70000)) for _ in range(200)]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda r: os.pread(fd, r[1], r[0]), ranges))
        for (off, n), chunk in zip(ranges, got, strict=True):
            assert chunk == plain[off:off + n]
        assert os.pread(fd, 100, len(plain)) == b""
    finally:
        os.close(fd)


def test_mount_is_read_only(mounted: Mount) -> None:
    with pytest.raises(OSError) as exc:
        os.open(mounted.file, os.O_RDWR)
    assert exc.value.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
    with pytest.raises(OSError):
        (mounted.path / "new").write_bytes(b"x")
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        escaped = str(mounted.path).replace(" ", "\\040")
        line = next(ln for ln in fh if f" {escaped} " in ln)
    assert " ro," in line or " ro " in line
    assert "fuse.bdekit" in line


def test_umount_command(mounted: Mount) -> None:
    code, _out, err = run_cli("umount", str(mounted.path))
    assert code == 0, err
    assert not is_mounted(str(mounted.path))
    assert wait_gone(mounted.pid), "the mount daemon did not exit after umount"


def test_ntfs_inside_the_mount(mounted: Mount, work: Path, tmp_path: Path) -> None:
    _volume, manifest = make_volume(work)
    if not manifest["ntfs"]:
        pytest.skip("mkntfs / ntfscp are not installed (Debian: ntfs-3g)")
    ntfs3g = shutil.which("ntfs-3g") or shutil.which("ntfs-3g", path="/bin:/usr/bin")
    if not ntfs3g:
        pytest.skip("ntfs-3g is not installed")
    inner = tmp_path / "ntfs"
    inner.mkdir()
    proc = subprocess.run([ntfs3g, "-o", "ro", str(mounted.file), str(inner)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    try:
        assert (inner / SECRET_NAME).read_bytes() == secret_bytes()
        # the bdekit mount is busy while the NTFS on it is mounted: a clear error
        busy = bdekit("umount", str(mounted.path))
        assert busy.returncode != 0
        assert "cannot unmount" in busy.stderr and "busy" in busy.stderr.lower()
        assert is_mounted(str(mounted.path))
    finally:
        force_unmount(inner)
    proc = bdekit("umount", str(mounted.path))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_foreground_clean_unmount_on_signal(fuse_ok: None, work: Path, tmp_path: Path,
                                            sig: int) -> None:
    image, _index, _offset = make_container(work, "mbr")
    _volume, manifest = make_volume(work)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    # one of the two unlocks with the recovery password (from the environment)
    secret = unlock_args(manifest) if sig == signal.SIGINT else []
    env = {**os.environ, "BDEKIT_RECOVERY_PASSWORD": recovery_password(manifest)}
    proc = subprocess.Popen([sys.executable, "-m", "bdekit.cli.main", "mount", "--foreground",
                             str(image), str(mnt), *secret],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 30
        while not (mnt / VOLUME_FILE_NAME).exists():
            if proc.poll() is not None:
                err = proc.stderr.read() if proc.stderr else ""
                if _NOT_PERMITTED.search(err):
                    pytest.skip(f"mounting is not permitted here: {err.strip()}")
                raise AssertionError(f"bdekit mount -f exited: {err}")
            assert time.monotonic() < deadline, "the mount did not appear"
            time.sleep(0.05)
        with open(mnt / VOLUME_FILE_NAME, "rb") as fh:
            fh.seek(MiB)
            assert fh.read(4096) == plaintext(work)[MiB:MiB + 4096]
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        assert "mounted:" in err
        assert not is_mounted(str(mnt))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        force_unmount(mnt)


def test_mount_errors(fuse_ok: None, work: Path, tmp_path: Path) -> None:
    """Refused before anything is mounted (in-process: these fail before the fork)."""
    image, _index, _offset = make_container(work, "gpt")
    _volume, manifest = make_volume(work)
    code, _out, err = run_cli("mount", str(image), str(tmp_path / "missing"),
                              *unlock_args(manifest))
    assert code == 2 and "mount point does not exist" in err
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    code, _out, err = run_cli("mount", str(image), str(full), *unlock_args(manifest))
    assert code == 2 and "not empty" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _out, err = run_cli("mount", str(image), str(empty), "-rp", WRONG_RP)
    assert code == 4, err  # wrong key: nothing is mounted
    assert not is_mounted(str(empty))
    code, _out, err = run_cli("umount", str(empty))
    assert code == 2 and "not a FUSE mount point" in err


# --------------------------------------------------------------------------------------------
# The file system object, without FUSE
# --------------------------------------------------------------------------------------------
class _Volume:
    volume_size = 10_000

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def read_into(self, offset: int, buf: Any) -> int:
        if self.fail:
            raise ReadError("I/O error reading 512 bytes", path="x.img", offset=offset)
        mv = memoryview(buf).cast("B")
        n = max(0, min(len(mv), self.volume_size - offset))
        mv[:n] = bytes((offset + i) % 251 for i in range(n))
        return n


def test_volumefs_operations() -> None:
    ready: list[bool] = []
    fs = VolumeFS(_Volume(), on_ready=lambda: ready.append(True))
    root = fs.getattr("/")
    assert stat.S_ISDIR(root["st_mode"])
    attrs = fs.getattr("/" + VOLUME_FILE_NAME)
    assert attrs["st_size"] == 10_000 and attrs["st_mode"] == stat.S_IFREG | 0o444
    assert fs.getattr(None, 0)["st_size"] == 10_000  # fgetattr without a path
    with pytest.raises(OSError) as exc:
        fs.getattr("/nope")
    assert exc.value.errno == errno.ENOENT
    assert [name for name, _attrs, _off in fs.readdir("/", 0)] == [".", "..", VOLUME_FILE_NAME]
    assert all(attrs["st_ino"] for _name, attrs, _off in fs.readdir("/", 0))
    assert fs.open("/" + VOLUME_FILE_NAME, os.O_RDONLY) == 0
    for flags in (os.O_WRONLY, os.O_RDWR):
        with pytest.raises(OSError) as exc:
            fs.open("/" + VOLUME_FILE_NAME, flags)
        assert exc.value.errno == errno.EROFS
    assert fs.read(None, 100, 9950, 0) == bytes((9950 + i) % 251 for i in range(50))
    assert fs.read(None, 100, 10_000, 0) == b""
    fs.init("/")
    assert ready == [True]


def test_volumefs_read_error_is_eio() -> None:
    fs = VolumeFS(_Volume(fail=True))
    with pytest.raises(OSError) as exc:
        fs.read(None, 512, 0, 0)
    assert exc.value.errno == errno.EIO
    assert fs.read_errors == 1


def test_mount_options() -> None:
    from bdekit.fuse import mount_options

    opts = mount_options(image="/evidence/a,b.E01")
    assert opts["ro"] is True and opts["subtype"] == "bdekit"
    assert "," not in opts["fsname"]
    assert "allow_other" not in opts
    assert mount_options(allow_other=True)["allow_other"] is True
