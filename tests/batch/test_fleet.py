"""The issue's "done when": a directory of 20 synthetic images (mixed methods, sector sizes and
protectors, GPT and MBR disks, a split set, a Vista volume, a paused conversion, a suspended
volume, one damaged image with its ddrescue mapfile, one whose key is in no keyring) and an
escrow CSV give the right outputs and summary, locally and on a two-worker Dask cluster.

Right outputs: each job's output has the synth manifest's ``volume_sha256`` and per-MiB
window digests; the damaged one is the clean plaintext (checked against its manifest) with the
manifest's bad sectors zeroed, marked ``-`` in its mapfile; the keyless one failed (exit class
4) with nothing under its output name; the batch exits 1.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import pytest

from bdekit import synth
from bdekit.errors import EXIT_KEY, EXIT_OTHER
from tests.batch import fleet
from tests.batch.test_local import check_failed, check_ok, check_private
from tests.conftest import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

#: name -> (protectors, method, sector size, size, extra synth arguments)
BARE: dict[str, tuple[str, str, int, str, dict[str, object]]] = {
    "x128": ("rp", "aes-xts-128", 512, "2M", {}),
    "x256-4k": ("bek", "aes-xts-256", 4096, "2M", {}),
    "c128": ("rp", "aes-cbc-128", 512, "2M", {}),
    "c256-1k": ("bek", "aes-cbc-256", 1024, "2M", {}),
    "d128": ("pw+rp", "aes-cbc-128-diffuser", 512, "2M", {}),
    "d256-2k": ("bek", "aes-cbc-256-diffuser", 2048, "2M", {}),
    "vista": ("rp", "aes-cbc-128-diffuser", 512, "2M", {"vista": True}),
    "paused": ("bek", "aes-xts-128", 512, "2M", {"state": "partial:1M"}),
    "suspended": ("clear", "aes-xts-128", 512, "1M", {}),
    "x128-4k": ("rp", "aes-xts-128", 4096, "2M", {}),
    "small1": ("bek", "aes-xts-128", 512, "1M", {}),
    "small2": ("rp", "aes-cbc-256", 512, "1M", {}),
    "big": ("bek", "aes-xts-256", 512, "4M", {}),
    "d128-1m": ("bek", "aes-cbc-128-diffuser", 512, "1M", {}),
    "x256": ("rp", "aes-xts-256", 512, "2M", {}),
}


@dataclasses.dataclass
class Fleet:
    ev: Path
    keyring: list[str]
    volumes: dict[str, fleet.Volume]   # job name -> volume


@pytest.fixture(scope="module")
def twenty(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    root = tmp_path_factory.mktemp("fleet")
    ev, keys, parts = root / "ev", root / "keys", root / "parts"
    ev.mkdir()
    vols: dict[str, fleet.Volume] = {}
    for seed, (name, (kind, method, ss, size, extra)) in enumerate(BARE.items(), start=100):
        m = fleet.build(ev / f"{name}.img", seed=seed, kind=kind, keys=keys, method=method,
                        ss=ss, size=size, **extra)  # type: ignore[arg-type]
        vols[name] = fleet.Volume(ev / f"{name}.img", m)
    # a GPT disk with two BitLocker partitions, an MBR disk with one
    g1 = fleet.build(parts / "g1.img", seed=200, kind="rp", keys=keys)
    g2 = fleet.build(parts / "g2.img", seed=201, kind="bek", keys=keys, method="aes-cbc-256")
    (n1, o1), (n2, o2) = fleet.gpt_disk(ev / "laptop.img", [parts / "g1.img",
                                                             parts / "g2.img"])
    vols[f"laptop-p{n1}"] = fleet.Volume(ev / "laptop.img", g1, n1, o1)
    vols[f"laptop-p{n2}"] = fleet.Volume(ev / "laptop.img", g2, n2, o2)
    mb = fleet.build(parts / "mb.img", seed=202, kind="bek+rp", keys=keys, method="aes-xts-256")
    n, o = fleet.mbr_disk(ev / "desktop.raw", parts / "mb.img")
    vols[f"desktop-p{n}"] = fleet.Volume(ev / "desktop.raw", mb, n, o)
    # a split raw set (one image, two files)
    sp = fleet.build(parts / "usb.img", seed=203, kind="bek", keys=keys, method="aes-cbc-128")
    vols["usb"] = fleet.Volume(fleet.split(parts / "usb.img", ev, "usb"), sp)
    # a damaged image with its mapfile, and one whose key is in no keyring
    dm = fleet.build(ev / "damaged.img", seed=204, kind="bek", keys=keys, size="4M")
    out = root / "clean.plain"
    code, _o, err = run_cli("-q", "decrypt", str(ev / "damaged.img"), str(out), "--fvek",
                            dm.fvek)
    assert code == 0, err
    clean = out.read_bytes()
    assert hashlib.sha256(clean).hexdigest() == dm.volume_sha256
    bad = fleet.bad_sectors(ev / "damaged.img", [(256 * 1024, 8192), (1024 * 1024 + 1536, 700)])
    vols["damaged"] = fleet.Volume(ev / "damaged.img", dm, damage=bad,
                                   expected=fleet.expected_damaged_sha(clean, bad))
    nk = fleet.build(ev / "nokey.img", seed=205, kind="rp", keys=keys)
    vols["nokey"] = fleet.Volume(ev / "nokey.img", nk, escrowed=False)
    images = {p.name for p in ev.iterdir() if not p.name.endswith((".json", ".map"))}
    assert len(images) == 21 and {"usb.001", "usb.002"} <= images  # 20 images, one split
    escrowed = [v.manifest for v in vols.values() if v.escrowed and any(
        p["type"] == "recovery-password" for p in v.manifest.protectors)]
    escrow = fleet.escrow_csv(root / "intune-export.csv", escrowed, noise=200)
    return Fleet(ev, ["--keyring", str(escrow), "--keyring", str(keys)], vols)


def windows_of(path: Path, manifest: synth.Manifest) -> list[str]:
    with open(path, "rb") as fh:
        def read(offset: int, length: int) -> bytes:
            fh.seek(offset)
            return fh.read(length)

        return synth.window_digests(read, manifest.volume_size)


def check_fleet(out: Path, f: Fleet) -> None:
    rows = fleet.summary_rows(out)
    assert sorted(rows) == sorted(f.volumes)
    for name, vol in f.volumes.items():
        if name == "nokey":
            check_failed(out, name, rows[name], EXIT_KEY, "none of the")
            continue
        check_ok(out, name, vol, rows[name])
        if not vol.damage:
            assert windows_of(out / name / f"{name}.img", vol.manifest) == vol.manifest.windows
        assert rows[name]["partition"] == vol.partition
    assert rows["suspended"]["unlocked_via"] == "clear-key"
    assert rows["x128"]["key_source"].startswith("intune-export.csv:row ")
    assert rows["laptop-p3"]["key_source"].endswith(".BEK:BEK")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"jobs": 21, "ok": 19, "damaged": 1, "failed": 1, "skipped": 0}
    assert summary["exit_code"] == EXIT_OTHER
    check_private(out)


def test_twenty_images_locally(twenty: Fleet, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, _o, err = run_cli("batch", str(twenty.ev), "-o", str(out), *twenty.keyring,
                            "--workers", "2")
    assert code == EXIT_OTHER, err
    check_fleet(out, twenty)


def test_twenty_images_on_a_dask_cluster(twenty: Fleet, tmp_path: Path) -> None:
    pytest.importorskip("distributed", reason="dask[distributed] (bdekit[cluster]) is absent")
    cluster = fleet.Cluster(tmp_path, 2, env={"BDEKIT_AUDIT_LOG": os.devnull})
    try:
        out = tmp_path / "out"
        code, _o, err = run_cli("batch", str(twenty.ev), "-o", str(out), *twenty.keyring,
                                "--scheduler", cluster.address)
    finally:
        cluster.stop()
    assert code == EXIT_OTHER, err
    check_fleet(out, twenty)
