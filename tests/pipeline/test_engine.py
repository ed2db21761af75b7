"""The decryption engine: output discipline (interrupt, refusals, devices, holes), bounded
memory, and reading through unreadable sectors (retry, split down to sectors, zero-fill)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bdekit.errors import EXIT_OK, EXIT_USAGE, ReadError
from bdekit.escrow.secrets import Secrets
from bdekit.image.ranges import UNREADABLE
from bdekit.image.salvage import SalvageSource
from bdekit.image.sources import ImageSource
from bdekit.pipeline.decrypt import Pace, decrypt_to
from bdekit.pipeline.journal import Journal
from bdekit.volume.bde import BdeVolume, open_bde
from tests.paced_cli import spawn
from tests.repair_support import MiB, Synth, run_cli, synth_image


@pytest.fixture(scope="session")
def big(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return synth_image(tmp_path_factory, "big", size="96M", method="aes-xts-128")


# --------------------------------------------------------------------------------------------
# output discipline
# --------------------------------------------------------------------------------------------


def test_sigint_leaves_no_partial_file(big: Synth, tmp_path: Path) -> None:
    out = tmp_path / "out.img"
    partial = Path(str(out) + ".bdekit-partial")
    proc = spawn(["decrypt", str(big.image), str(out), "--vmk", big.vmk, "--chunk-size",
                  str(MiB), "--threads", "2"], chunk_delay=0.03)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (partial.exists()
                                               and partial.stat().st_size > 4 * MiB):
        assert proc.poll() is None, "finished before it could be interrupted"
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _o, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert not out.exists() and not partial.exists()
    assert list(tmp_path.iterdir()) == []


def test_sigterm_leaves_no_partial_file(big: Synth, tmp_path: Path) -> None:
    out = tmp_path / "out.img"
    partial = Path(str(out) + ".bdekit-partial")
    proc = spawn(["decrypt", str(big.image), str(out), "--vmk", big.vmk, "--chunk-size",
                  str(MiB)], chunk_delay=0.03)
    deadline = time.monotonic() + 30
    while not partial.exists():
        assert proc.poll() is None, "finished before it could be terminated"
        assert time.monotonic() < deadline, "the partial output never appeared"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _o, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert not out.exists() and not partial.exists()


def test_refuses_input_as_output_and_existing_output(xts: Synth, tmp_path: Path) -> None:
    code, _o, err = run_cli("decrypt", str(xts.image), str(xts.image), "--vmk", xts.vmk, "-f")
    assert code == EXIT_USAGE and "input" in err
    link = tmp_path / "link.img"
    link.symlink_to(xts.image)
    code, _o, err = run_cli("decrypt", str(xts.image), str(link), "--vmk", xts.vmk, "-f")
    assert code == EXIT_USAGE and "input" in err
    out = tmp_path / "out.img"
    out.write_bytes(b"precious")
    code, _o, err = run_cli("decrypt", str(xts.image), str(out), "--vmk", xts.vmk)
    assert code == EXIT_USAGE and "--force" in err
    assert out.read_bytes() == b"precious"
    code, _o, err = run_cli("decrypt", str(xts.image), str(out), "--vmk", xts.vmk, "--force")
    assert code == EXIT_OK, err
    assert out.read_bytes() == xts.reference.read_bytes()


def test_zero_chunks_are_holes(tmp_path: Path) -> None:
    from bdekit import synth

    plain = tmp_path / "plain.img"
    data = bytearray(32 * MiB)
    data[:512] = synth.ntfs_boot_sector(len(data), 512)
    data[-512:] = data[:512]
    data[5 * MiB:5 * MiB + 3000] = os.urandom(3000)
    plain.write_bytes(data)
    img = tmp_path / "enc.img"
    manifest = synth.build(img, source=plain, seed=3)
    out = tmp_path / "out.img"
    code, _o, err = run_cli("decrypt", str(img), str(out), "--vmk", manifest.vmk,
                            "--chunk-size", str(MiB))
    assert code == EXIT_OK, err
    assert out.read_bytes() == bytes(data)
    # three 1 MiB chunks hold data (boot sector, the random bytes, the backup boot sector)
    assert out.stat().st_blocks * 512 <= 3 * MiB


def test_block_device_written_in_place(xts: Synth, tmp_path: Path) -> None:
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        pytest.skip("needs root and losetup")
    backing = tmp_path / "backing.img"
    with open(backing, "wb") as fh:
        fh.truncate(xts.volume_size)
    proc = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"no loop device: {proc.stderr.strip()}")
    dev = proc.stdout.strip()
    try:
        code, _o, err = run_cli("decrypt", str(xts.image), dev, "--vmk", xts.vmk)
        assert code == EXIT_USAGE and "device" in err  # a device is overwritten only on --force
        code, _o, err = run_cli("decrypt", str(xts.image), dev, "--vmk", xts.vmk, "--force")
        assert code == EXIT_OK, err
        assert not Path(dev + ".bdekit-partial").exists()
        with open(dev, "rb") as fh:
            assert fh.read(xts.volume_size) == xts.reference.read_bytes()
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def test_memory_bounded_by_chunks(big: Synth, tmp_path: Path) -> None:
    """Peak RSS of a 96 MiB decrypt with 1 MiB chunks stays far below the image size."""
    probe = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=False); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    base = [sys.executable, "-m", "bdekit.cli.main"]

    def peak(*args: str) -> int:
        out = subprocess.run([sys.executable, "-c", probe, *base, *args], capture_output=True,
                             text=True, check=True,
                             env=dict(os.environ, BDEKIT_AUDIT_LOG=os.devnull))
        return int(out.stdout.strip().splitlines()[-1]) * 1024

    idle = peak("info", str(big.image), "--vmk", big.vmk)
    busy = peak("decrypt", str(big.image), str(tmp_path / "o.img"), "--vmk", big.vmk,
                "--chunk-size", str(MiB), "--threads", "2")
    assert busy - idle < 32 * MiB, (idle, busy)


# --------------------------------------------------------------------------------------------
# reading through errors
# --------------------------------------------------------------------------------------------


class Flaky(ImageSource):
    """A memory image whose ``bad`` sectors raise ReadError; ``transient`` ones fail only the
    first ``fails`` times."""

    def __init__(self, size: int, bad: set[int], transient: set[int] = frozenset(),  # type: ignore[assignment]
                 fails: int = 1) -> None:
        super().__init__("flaky.img", size, "raw")
        self.data = bytes((i * 7) & 0xFF for i in range(size))
        self.bad = bad
        self.transient = dict.fromkeys(transient, fails)
        self.reads = 0

    def _read(self, offset: int, length: int) -> bytes:
        self.reads += 1
        for sector in range(offset // 512, -(-(offset + length) // 512)):
            if sector in self.bad:
                raise ReadError("I/O error", path=self.path, offset=sector * 512)
            if self.transient.get(sector, 0) > 0:
                self.transient[sector] -= 1
                raise ReadError("I/O error", path=self.path, offset=sector * 512)
        return self.data[offset:offset + length]


def test_salvage_splits_down_to_sectors() -> None:
    inner = Flaky(4 * MiB, bad={1000, 1003, 1004, 5000})
    src = SalvageSource(inner, retries=1)
    buf = bytearray(4 * MiB)
    with src.collect() as sink:
        assert src.readinto_at(0, buf) == 4 * MiB
    assert sorted(sink) == [(1000 * 512, 512, UNREADABLE), (1003 * 512, 512, UNREADABLE),
                            (1004 * 512, 512, UNREADABLE), (5000 * 512, 512, UNREADABLE)]
    expected = bytearray(inner.data)
    for sector in (1000, 1003, 1004, 5000):
        expected[sector * 512:(sector + 1) * 512] = bytes(512)
    assert buf == expected
    assert inner.reads < 200  # halving, not sector by sector


def test_salvage_retries_transient_errors() -> None:
    inner = Flaky(1 * MiB, bad=set(), transient={10}, fails=1)
    src = SalvageSource(inner, retries=1)
    buf = bytearray(1 * MiB)
    with src.collect() as sink:
        src.readinto_at(0, buf)
    assert sink == [] and buf == inner.data


def test_salvage_known_bad_ranges_are_not_read() -> None:
    inner = Flaky(1 * MiB, bad=set())
    src = SalvageSource(inner, bad=[(4096, 1024, "not rescued")])
    buf = bytearray(8192)
    with src.collect() as sink:
        src.readinto_at(0, buf)
    assert sink == [(4096, 1024, "not rescued")]
    assert buf[4096:5120] == bytes(1024) and buf[:4096] == inner.data[:4096]
    assert buf[5120:] == inner.data[5120:8192]
    # outside a sink, records go to .outside
    src.read_at(4000, 200)
    assert src.outside == [(4096, 104, "not rescued")]


# --------------------------------------------------------------------------------------------
# pace (a parameter of the loop, not an environment variable)
# --------------------------------------------------------------------------------------------


class _CountingJournal(Journal):
    def __init__(self, path: str) -> None:
        super().__init__(path, {"job": "test"})
        self.saves = 0

    def save(self, **kwargs: Any) -> None:
        self.saves += 1
        super().save(**kwargs)


def _unlocked(s: Synth) -> BdeVolume:
    volume = open_bde(str(s.image))
    volume.unlock(Secrets(vmk=bytes.fromhex(s.vmk)))
    return volume


@pytest.mark.parametrize(("interval", "at_least", "at_most"), [(0.0, 34, 34), (3600.0, 2, 2)])
def test_pace_journal_interval(xts: Synth, tmp_path: Path, interval: float, at_least: int,
                               at_most: int) -> None:
    """Interval 0: a checkpoint after each of the 32 chunks, plus the first and the final
    save; an hour: only those two."""
    volume = _unlocked(xts)
    assert volume.volume_size == 32 * MiB
    out = tmp_path / "out.img"
    journal = _CountingJournal(str(out) + ".bdekit-journal")
    try:
        decrypt_to(volume, str(out), chunk_size=MiB, threads=2, journal=journal,
                   pace=Pace(journal_interval=interval))
    finally:
        volume.source.close()
    assert at_least <= journal.saves <= at_most
    assert out.read_bytes() == xts.reference.read_bytes()


def test_pace_chunk_delay(xts: Synth, tmp_path: Path) -> None:
    volume = _unlocked(xts)
    started = time.monotonic()
    try:
        decrypt_to(volume, str(tmp_path / "out.img"), chunk_size=8 * MiB, threads=1,
                   pace=Pace(chunk_delay=0.1))
    finally:
        volume.source.close()
    assert time.monotonic() - started >= 4 * 0.1  # four 8 MiB chunks, one worker
