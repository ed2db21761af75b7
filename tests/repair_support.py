"""Helpers of the repair tests (no tests here): synthetic images, damage, checks, FUSE.

* :func:`synth_image` builds (once per session) a small synthetic BitLocker image with the
  synthetic builder and its reference plaintext, decrypted from the *undamaged* image;
* :func:`damage` writes zeros or noise over image ranges (what ``bdekit synth damage`` does);
* :func:`check_repaired` asserts that a repaired output equals the reference outside the ranges
  its mapfile marks ``-``, is zero inside them, and that those ranges are exactly the expected
  ones;
* :class:`EioMount` serves an image through a FUSE file system (mfusepy, in a subprocess) that
  answers EIO on chosen ranges: the real read path of a failing disk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bdekit import synth
from bdekit.escrow.secrets import Secrets
from bdekit.image.mapfile import merge_ranges, read_mapfile
from bdekit.image.ranges import merge_damage
from bdekit.pipeline.decrypt import decrypt_to
from bdekit.volume.bde import open_bde

MiB = 1 << 20


@dataclasses.dataclass
class Synth:
    image: Path
    reference: Path
    manifest: synth.Manifest
    recovery_password: str

    @property
    def vmk(self) -> str:
        return self.manifest.vmk

    @property
    def layout(self) -> dict[str, Any]:
        return self.manifest.layout

    @property
    def volume_size(self) -> int:
        return self.manifest.volume_size

    def copy(self, dst: Path) -> Path:
        shutil.copyfile(self.image, dst)
        os.chmod(dst, 0o644)
        return dst


def build_synth(directory: Path, name: str, **kwargs: Any) -> Synth:
    """Build a synthetic image (``synth.build`` keyword arguments) and its reference output."""
    directory.mkdir(parents=True, exist_ok=True)
    image = directory / f"{name}.img"
    kwargs.setdefault("size", "32M")
    kwargs.setdefault("seed", name)
    manifest = synth.build(image, force=True, **kwargs)
    ref = directory / f"{name}.plain"
    volume = open_bde(str(image))
    volume.unlock(Secrets(vmk=bytes.fromhex(manifest.vmk)))
    decrypt_to(volume, str(ref), force=True)
    volume.source.close()
    # the reference must be what the builder encrypted
    with open(ref, "rb") as fh:
        def read(offset: int, length: int) -> bytes:
            fh.seek(offset)
            return fh.read(length)

        assert synth.window_digests(read, manifest.volume_size,
                                    manifest.zero_on_disk) == manifest.windows
    rp = next((p["recovery_password"] for p in manifest.protectors
               if p.get("type") == "recovery-password"), "")
    return Synth(image, ref, manifest, rp)


_CACHE: dict[str, Synth] = {}


def synth_image(factory: pytest.TempPathFactory, name: str, **kwargs: Any) -> Synth:
    """A session-cached :func:`build_synth`."""
    key = name + json.dumps(kwargs, sort_keys=True, default=str)
    if key not in _CACHE:
        _CACHE[key] = build_synth(factory.mktemp("synth"), name, **kwargs)
    return _CACHE[key]


def damage(path: Path, *, zero: Sequence[tuple[int, int]] = (),
           garble: Sequence[tuple[int, int]] = (), seed: int = 7) -> None:
    rng = random.Random(seed)
    fd = os.open(path, os.O_RDWR)
    try:
        for off, n in zero:
            os.pwrite(fd, bytes(n), off)
        for off, n in garble:
            os.pwrite(fd, rng.randbytes(n), off)
    finally:
        os.close(fd)


def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    from bdekit.cli.main import cli

    full_env = {"BDEKIT_AUDIT_LOG": os.devnull}
    full_env.update(env or {})
    result = CliRunner().invoke(cli, list(args), env=full_env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def bad_ranges_of(mapfile: Path) -> list[tuple[int, int]]:
    mf = read_mapfile(mapfile)
    return merge_ranges((b.pos, b.size) for b in mf.blocks if b.status != "+")


def check_repaired(output: Path, reference: Path, expected_bad: Sequence[tuple[int, int]],
                   mapfile: Path | None = None, *, size: int | None = None) -> None:
    """Output == reference outside the damaged ranges, zeros inside; the mapfile lists exactly
    ``expected_bad``."""
    mapfile = mapfile or Path(str(output) + ".map")
    expected = merge_ranges(expected_bad)
    listed = bad_ranges_of(mapfile)
    assert listed == expected, f"mapfile lists {listed}, expected {expected}"
    mf = read_mapfile(mapfile)
    total = size if size is not None else reference.stat().st_size
    assert mf.size == total == output.stat().st_size
    out = output.read_bytes()
    ref = reference.read_bytes()
    if len(ref) < total:
        ref += bytes(total - len(ref))
    pos = 0
    for off, n in expected:
        assert out[pos:off] == ref[pos:off], _first_diff(out, ref, pos, off)
        assert not any(out[off:off + n]), f"damaged range {off}+{n} is not zero"
        pos = off + n
    assert out[pos:total] == ref[pos:total], _first_diff(out, ref, pos, total)


def _first_diff(a: bytes, b: bytes, start: int, end: int) -> str:
    for i in range(start, min(end, len(a), len(b))):
        if a[i] != b[i]:
            return f"first difference at offset {i}"
    return "lengths differ"


def damage_json(report: Path) -> list[tuple[int, int]]:
    data = json.loads(report.read_text())
    return [(d["offset"], d["length"]) for d in data["damaged"]]


def merged(items: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    return merge_ranges(items)


# --------------------------------------------------------------------------------------------
# FUSE: a file that answers EIO on chosen ranges
# --------------------------------------------------------------------------------------------

FUSE_SERVER = textwrap.dedent('''
    import errno, json, os, stat, sys
    import mfusepy as fuse

    class Ops(fuse.Operations):
        use_ns = True

        def __init__(self, path, bad):
            self.fd = os.open(path, os.O_RDONLY)
            self.size = os.fstat(self.fd).st_size
            self.bad = bad
            self.calls = 0

        def getattr(self, path, fh=None):
            if path == "/":
                return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
            if path == "/disk.img":
                return {"st_mode": stat.S_IFREG | 0o444, "st_nlink": 1, "st_size": self.size}
            raise fuse.FuseOSError(errno.ENOENT)

        def readdir(self, path, fh):
            return [".", "..", "disk.img"]

        def open(self, path, flags):
            return 0

        def read(self, path, size, offset, fh):
            for a, n in self.bad:
                if offset < a + n and offset + size > a:
                    raise fuse.FuseOSError(errno.EIO)
            return os.pread(self.fd, size, offset)

    src, mnt, bad = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    fuse.FUSE(Ops(src, bad), mnt, foreground=True, ro=True, direct_io=True)
''')


class EioMount:
    """``with EioMount(image, tmp_path, bad) as path:`` -- ``path`` reads like ``image`` except
    that any read touching a ``bad`` (offset, length) range fails with EIO."""

    def __init__(self, image: Path, workdir: Path, bad: Sequence[tuple[int, int]]) -> None:
        self.image = image
        self.mnt = workdir / "fuse-mnt"
        self.bad = [list(r) for r in bad]
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Path:
        if shutil.which("fusermount3") is None and shutil.which("fusermount") is None:
            pytest.skip("fusermount is not installed")
        if not os.path.exists("/dev/fuse"):
            pytest.skip("/dev/fuse is absent")
        try:
            import mfusepy  # noqa: F401
        except ImportError:
            pytest.skip("mfusepy is not installed")
        self.mnt.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", FUSE_SERVER, str(self.image), str(self.mnt),
             json.dumps(self.bad)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        target = self.mnt / "disk.img"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr \
                    else ""
                pytest.skip(f"FUSE mount not permitted here: {err.strip()[:200]}")
            if os.path.ismount(self.mnt) and target.exists():
                return target
            time.sleep(0.05)
        self.__exit__(None, None, None)
        pytest.skip("FUSE mount did not come up")
        raise AssertionError("unreachable")

    def __exit__(self, *exc: object) -> None:
        tool = shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount3"
        with contextlib.suppress(OSError):
            subprocess.run([tool, "-u", str(self.mnt)], capture_output=True, timeout=10,
                           check=False)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def cwd(path: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


__all__ = [
    "EioMount",
    "MiB",
    "Synth",
    "bad_ranges_of",
    "build_synth",
    "check_repaired",
    "cwd",
    "damage",
    "damage_json",
    "merge_damage",
    "merged",
    "run_cli",
    "synth_image",
]
