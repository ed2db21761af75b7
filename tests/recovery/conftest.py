"""Fixtures of the recovery tests: synthetic BitLocker volumes around a real NTFS (mkntfs), so
that sectors carry file-system structure the way a real volume's do; the reference plaintext
is the NTFS image itself (independent of any decryptor)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from bdekit import synth

MiB = 1 << 20
_CACHE: dict[tuple[str, int], NtfsVolume] = {}


@dataclasses.dataclass
class NtfsVolume:
    raw: Path  # the plaintext: an NTFS made by mkntfs
    image: Path  # the BitLocker image around it
    manifest: synth.Manifest

    @property
    def fvek(self) -> str:
        return self.manifest.fvek

    @property
    def layout(self) -> dict:  # type: ignore[type-arg]
        return self.manifest.layout

    def copy(self, dst: Path) -> Path:
        shutil.copyfile(self.image, dst)
        dst.chmod(0o644)
        return dst

    def recovery_password(self) -> str:
        return str(next(p["recovery_password"] for p in self.manifest.protectors
                        if p.get("type") == "recovery-password"))


def build_ntfs_volume(factory: pytest.TempPathFactory, method: str,
                      sector_size: int = 512) -> NtfsVolume:
    key = (method, sector_size)
    if key in _CACHE:
        return _CACHE[key]
    if shutil.which("mkntfs") is None:
        pytest.skip("mkntfs is not installed")
    work = factory.mktemp(f"ntfs-{method}-{sector_size}")
    raw = work / "ntfs.raw"
    with open(raw, "wb") as fh:
        fh.truncate(16 * MiB)
    subprocess.run(["mkntfs", "-F", "-Q", "-s", str(sector_size), "-c", "4096", str(raw)],
                   check=True, capture_output=True)
    # some files' worth of text, so that sectors beyond the file system's own structures hold
    # something other than zeros (written at the data area's end, where mkntfs leaves zeros)
    text = json.dumps({"lorem": ["ipsum dolor sit amet"] * 4000}).encode()
    with open(raw, "r+b") as fh:
        fh.seek(12 * MiB)
        fh.write(text[:2 * MiB])
    image = work / "vol.img"
    manifest = synth.build(image, source=raw, method=method, seed=f"ntfs-{method}",
                           sector_size=sector_size)
    _CACHE[key] = NtfsVolume(raw, image, manifest)
    return _CACHE[key]
