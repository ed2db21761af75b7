"""Evidence for the batch tests: synthetic BitLocker volumes (bdekit.synth), bare or inside GPT
and MBR disks, split sets, a damaged one with its ddrescue mapfile, and an escrow CSV.

Every volume keeps its synth manifest: what a job's output must be is the manifest's
``volume_sha256`` (the SHA-256 of the decrypted volume, computed by the builder from the
plaintext it encrypted, not by the decrypt path under test), and for a damaged image the
manifest's damage records say which sectors are gone.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bdekit import synth
from bdekit.crypto import keys as crypto_keys
from bdekit.synth import damage
from tests.image.test_partitions import GptPart, build_gpt_image, build_mbr, mbr_entry

MiB = 1 << 20
SECTOR = 512
BASIC = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
EFI = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"


@dataclasses.dataclass
class Volume:
    """One BitLocker volume of the evidence and what its job must produce."""

    image: Path                      # the file the job opens (bare volume, disk, first segment)
    manifest: synth.Manifest
    partition: int | None = None     # as `bdekit scan` numbers it
    offset: int = 0                  # where the volume starts in the image
    escrowed: bool = True            # whether its key is in the keyring
    #: damaged ranges (volume offsets, lengths), from the manifest's damage records
    damage: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    #: the output's SHA-256 when it is not the manifest's (a damaged volume)
    expected: str | None = None

    @property
    def sha256(self) -> str:
        sha = self.expected or self.manifest.volume_sha256
        assert sha
        return sha


def protector_specs(kind: str, keys: Path) -> list[Any]:
    return {"rp": [synth.RecoveryPasswordSpec()],
            "bek": [synth.StartupKeySpec(keys)],
            "pw+rp": [synth.PasswordSpec("not in any keyring"), synth.RecoveryPasswordSpec()],
            "bek+rp": [synth.StartupKeySpec(keys), synth.RecoveryPasswordSpec()],
            "clear": [synth.ClearKeySpec()]}[kind]


def build(path: Path, *, seed: int, kind: str, keys: Path, method: str = "aes-xts-128",
          ss: int = 512, size: str = "2M", **kwargs: Any) -> synth.Manifest:
    """A bare synthetic volume (its BEK files, if any, go to ``keys``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    keys.mkdir(parents=True, exist_ok=True)
    return synth.build(path, size=size, method=method, sector_size=ss, seed=seed,
                       protectors=protector_specs(kind, keys), **kwargs)


def _copy_into(volume: Path, disk: Path, offset: int) -> None:
    with open(volume, "rb") as src, open(disk, "r+b") as dst:
        dst.seek(offset)
        shutil.copyfileobj(src, dst, 4 * MiB)


def gpt_disk(disk: Path, volumes: list[Path]) -> list[tuple[int, int]]:
    """A GPT disk: an EFI partition (1 MiB), then each volume in a basic data partition.
    Returns (partition number, offset) of each volume."""
    lba = 4096
    parts = [GptPart(2048, 4095, EFI, "EFI system partition")]
    placed: list[tuple[int, int]] = []
    for n, vol in enumerate(volumes, start=2):
        sectors = vol.stat().st_size // SECTOR
        parts.append(GptPart(lba, lba + sectors - 1, BASIC, f"data {n}"))
        placed.append((n, lba * SECTOR))
        lba += sectors
    size = lba * SECTOR + MiB
    disk.write_bytes(build_gpt_image(size, parts))
    for vol, (_n, offset) in zip(volumes, placed, strict=True):
        _copy_into(vol, disk, offset)
    return placed


def mbr_disk(disk: Path, volume: Path) -> tuple[int, int]:
    """An MBR disk: a Linux partition (1 MiB), then the volume (type 0x07) as partition 2."""
    sectors = volume.stat().st_size // SECTOR
    start = 4096
    image = bytearray((start + sectors) * SECTOR + MiB)
    image[0:512] = build_mbr([mbr_entry(0x83, 2048, 2048), mbr_entry(0x07, start, sectors)])
    disk.write_bytes(image)
    _copy_into(volume, disk, start * SECTOR)
    return 2, start * SECTOR


def split(image: Path, directory: Path, stem: str, segment: int = MiB) -> Path:
    """``stem.001``, ``stem.002``... in ``directory``; returns the first segment."""
    data = image.read_bytes()
    for i in range(0, len(data), segment):
        (directory / f"{stem}.{i // segment + 1:03d}").write_bytes(data[i:i + segment])
    return directory / f"{stem}.001"


def bad_sectors(image: Path, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overwrite ``ranges`` with garbage and write ``IMAGE.map`` marking them bad (synth
    damage); returns the damaged ranges as the manifest records them."""
    records = damage.apply(image, bad_sectors=ranges, seed=3)
    return [(r["offset"], r["length"]) for r in records]


def recovery_password(manifest: synth.Manifest) -> tuple[str, str]:
    entry = manifest.protector("recovery-password")
    return entry["guid"], entry["recovery_password"]


def escrow_csv(path: Path, manifests: list[synth.Manifest], noise: int = 40) -> Path:
    """An Intune / Entra ID style export holding the recovery passwords of ``manifests`` among
    ``noise`` unrelated ones."""
    rows = [["Device Name", "Recovery Key ID", "Recovery Key", "Created"]]
    for n in range(noise):
        other = build_noise_password(n)
        rows.append([f"noise{n}", other[0], other[1], "2024-01-01"])
    for n, manifest in enumerate(manifests):
        guid, rp = recovery_password(manifest)
        rows.append([f"laptop{n}", guid, rp, "2024-02-02"])
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


def build_noise_password(n: int) -> tuple[str, str]:
    """A well-formed recovery password and GUID that belong to no volume."""
    digest = hashlib.sha256(f"noise{n}".encode()).digest()
    guid = f"{n + 0x10000:08X}-0000-4000-8000-{n:012X}"
    return guid, crypto_keys.format_recovery_password(digest[:16])


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(MiB), b""):
            h.update(block)
    return h.hexdigest()


def expected_damaged_sha(clean_plaintext: bytes, damaged: list[tuple[int, int]]) -> str:
    data = bytearray(clean_plaintext)
    for off, n in damaged:
        data[off:off + n] = bytes(n)
    return hashlib.sha256(data).hexdigest()


def summary_rows(out: Path) -> dict[str, dict[str, Any]]:
    data = json.loads((out / "summary.json").read_text())
    return {row["job"]: row for row in data["jobs"]}


def csv_rows(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "summary.csv", newline="") as fh:
        return {row["job"]: row for row in csv.DictReader(fh)}


# --------------------------------------------------------------------------------------------
# A Dask cluster on 127.0.0.1: one scheduler, N workers, random free ports
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """``dask scheduler`` and ``dask worker --no-nanny`` processes (killed by :meth:`stop`)."""

    def __init__(self, work: Path, workers: int = 2, env: dict[str, str] | None = None) -> None:
        self.work = work
        self.env = dict(os.environ, **(env or {}))
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.workers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
        self._spawn("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                                  "--no-dashboard", "--idle-timeout", "600s"])
        for n in range(1, workers + 1):
            self.add_worker(f"w{n}")
        self.wait(workers)

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.work / f"{name}.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "dask", *args], stdout=log,
                                stderr=subprocess.STDOUT, env=self.env, cwd=self.work)
        log.close()
        self.procs.append(proc)
        return proc

    def add_worker(self, name: str) -> None:
        port = free_port()
        proc = self._spawn(name, ["worker", self.address, "--nthreads", "1", "--no-nanny",
                                  "--host", "127.0.0.1", "--worker-port", str(port),
                                  "--name", name, "--no-dashboard", "--death-timeout", "60"])
        self.workers[name] = (proc, f"tcp://127.0.0.1:{port}")

    def client(self) -> Any:
        from distributed import Client

        return Client(self.address, timeout=30, set_as_default=False)

    def wait(self, n: int, timeout: float = 90) -> None:
        client = self.client()
        try:
            client.wait_for_workers(n, timeout=timeout)
        finally:
            client.close()

    def kill(self, name: str) -> None:
        proc, _address = self.workers[name]
        proc.kill()
        proc.wait(timeout=30)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 20
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
