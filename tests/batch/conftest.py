"""Shared evidence of the batch tests (built once per session; small: 1-4 MiB volumes)."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path

import pytest

from tests.batch import fleet
from tests.conftest import run_cli


@dataclasses.dataclass
class Small:
    """A handful of volumes: BEK, recovery password (escrowed or not), damaged, on a disk."""

    root: Path
    ev: Path                       # the evidence directory
    keys: Path                     # BEK files of the escrowed startup keys
    escrow: Path                   # the escrow CSV
    volumes: dict[str, fleet.Volume]
    lone_bek: Path                 # a BEK file that is in no keyring (job list key_file)


def _clean_plaintext(image: Path, manifest: fleet.synth.Manifest, out: Path) -> bytes:
    """The decrypted clean volume, checked against the builder's own SHA-256."""
    code, _o, err = run_cli("-q", "decrypt", str(image), str(out), "--fvek", manifest.fvek)
    assert code == 0, err
    data = out.read_bytes()
    assert hashlib.sha256(data).hexdigest() == manifest.volume_sha256
    return data


@pytest.fixture(scope="session")
def small(tmp_path_factory: pytest.TempPathFactory) -> Small:
    root = tmp_path_factory.mktemp("batch-small")
    ev, keys, parts = root / "ev", root / "keys", root / "parts"
    ev.mkdir()
    vols: dict[str, fleet.Volume] = {}
    m = fleet.build(ev / "bek.img", seed=11, kind="bek", keys=keys)
    vols["bek"] = fleet.Volume(ev / "bek.img", m)
    m = fleet.build(ev / "escrowed.img", seed=12, kind="rp", keys=keys, method="aes-cbc-256",
                    ss=4096)
    vols["escrowed"] = fleet.Volume(ev / "escrowed.img", m)
    m = fleet.build(ev / "nokey.img", seed=13, kind="rp", keys=keys, method="aes-xts-256")
    vols["nokey"] = fleet.Volume(ev / "nokey.img", m, escrowed=False)
    m = fleet.build(parts / "inner.img", seed=14, kind="bek", keys=keys,
                    method="aes-cbc-128-diffuser")
    (n, off), = fleet.gpt_disk(ev / "disk.img", [parts / "inner.img"])
    vols["disk-p2"] = fleet.Volume(ev / "disk.img", m, partition=n, offset=off)
    m = fleet.build(ev / "damaged.img", seed=15, kind="bek", keys=keys, size="4M")
    clean = _clean_plaintext(ev / "damaged.img", m, root / "damaged.clean")
    bad = fleet.bad_sectors(ev / "damaged.img", [(300 * 1024, 4096), (1536 * 1024 + 512, 512)])
    vols["damaged"] = fleet.Volume(ev / "damaged.img", m, damage=bad,
                                   expected=fleet.expected_damaged_sha(clean, bad))
    lone = root / "lone"
    m = fleet.build(ev / "lone.img", seed=16, kind="bek", keys=lone)
    vols["lone"] = fleet.Volume(ev / "lone.img", m, escrowed=False)
    lone_bek = next(lone.glob("*.BEK"))
    escrow = fleet.escrow_csv(root / "escrow.csv", [vols["escrowed"].manifest])
    return Small(root, ev, keys, escrow, vols, lone_bek)


@pytest.fixture
def evidence_copy(small: Small, tmp_path: Path) -> Path:
    """A private copy of the small evidence directory (for tests that add files)."""
    return Path(shutil.copytree(small.ev, tmp_path / "ev"))
