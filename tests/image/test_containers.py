"""Evidence as responders hold it: a synthetic BitLocker volume inside GPT and MBR disks, an
E01 (one and several segments), split raw segments, fixed and dynamic VHD and a VHDX.

``bdekit info`` and ``bdekit decrypt`` must work on each and give the plaintext of the bare
volume, which must match the synth manifest's per-MiB digests.  The volume is made by
:func:`bdekit.synth.build` from an NTFS file system made with ``mkntfs`` holding one file
(``ntfscp``), so tests/test_mount.py can mount that NTFS through the bdekit mount; without
the NTFS tools, from synth's generated plaintext.  Containers whose tool (sfdisk,
ewfacquire, qemu-img) or reader (pyewf, pyvhdi) is missing are skipped.

The builders here are shared with tests/test_scan.py and tests/test_mount.py; they cache
their output under the session's base temporary directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bdekit.cli.main import cli

MiB = 1 << 20
GPT_BASIC_DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
GPT_EFI = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
#: Where the volume lies in the disks built here.
GPT_OFFSET = 2 * MiB
MBR_OFFSET = 3 * MiB
NTFS_SIZE = 24 * MiB
SECRET_NAME = "evidence.bin"


def secret_bytes() -> bytes:
    """The file put inside the synthetic NTFS (deterministic)."""
    return random.Random(5).randbytes(300_000)


def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run the CLI in-process; the "bdekit" logger is left as it was found (the CLI sets it
    up not to propagate, which would blind later tests' caplog)."""
    logger = logging.getLogger("bdekit")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    try:
        result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved
    return result.exit_code, result.stdout, result.stderr


def _tool(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}")
                                       if os.access(p, os.X_OK)), None)


def _run(cmd: list[str], **kwargs: Any) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): "
                           f"{proc.stderr.strip() or proc.stdout.strip()}")


def _marker(path: Path) -> Path:
    # hidden, so that no segment globbing (split, EWF) ever sees it
    return path.with_name(f".{path.name}.done")


def _done(path: Path) -> bool:
    """Whether ``path`` was completely built (by this or another test module)."""
    return path.exists() and _marker(path).exists()


def _mark(path: Path) -> Path:
    _marker(path).write_text("")
    return path


# --------------------------------------------------------------------------------------------
# The synthetic volume
# --------------------------------------------------------------------------------------------
def make_ntfs(work: Path) -> Path | None:
    """A 24 MiB NTFS holding SECRET_NAME, or None without mkntfs / ntfscp."""
    out = work / "ntfs.img"
    if _done(out):
        return out
    mkntfs, ntfscp = _tool("mkntfs"), _tool("ntfscp")
    if not (mkntfs and ntfscp):
        return None
    with open(out, "wb") as fh:
        fh.truncate(NTFS_SIZE)
    secret = work / SECRET_NAME
    secret.write_bytes(secret_bytes())
    try:
        _run([mkntfs, "-F", "-Q", "-q", "-L", "evidence", str(out)])
        _run([ntfscp, "-q", str(out), str(secret), SECRET_NAME])
    except RuntimeError:
        return None
    return _mark(out)


def make_volume(work: Path) -> tuple[Path, dict[str, Any]]:
    """(bare BitLocker volume, its synth manifest as a dict); AES-XTS-128."""
    from bdekit import synth
    work.mkdir(parents=True, exist_ok=True)
    out = work / "volume.img"
    manifest_path = work / "volume.img.manifest.json"
    if not _done(out):
        ntfs = make_ntfs(work)
        kwargs: dict[str, Any] = {"source": str(ntfs)} if ntfs else {"size": NTFS_SIZE}
        synth.build(out, method="aes-xts-128", seed=11, force=True, manifest=manifest_path,
                    **kwargs)
        _mark(out)
    manifest = json.loads(manifest_path.read_text())
    manifest["ntfs"] = _done(work / "ntfs.img")
    return out, manifest


def unlock_args(manifest: dict[str, Any]) -> list[str]:
    """Fast unlock arguments (the FVEK: no key stretching)."""
    return ["--fvek", manifest["fvek"]]


def recovery_password(manifest: dict[str, Any]) -> str:
    for prot in manifest["protectors"]:
        if prot.get("type") == "recovery-password":
            return str(prot["recovery_password"])
    raise AssertionError("the synth volume has no recovery password")


def plaintext(work: Path) -> bytes:
    """The decrypted bare volume, as ``bdekit decrypt`` writes it."""
    volume, manifest = make_volume(work)
    out = work / "bare.plain"
    if not _done(out):
        code, _o, err = run_cli("-q", "decrypt", str(volume), str(out), "--force",
                                *unlock_args(manifest))
        assert code == 0, err
        _mark(out)
    return out.read_bytes()


def window_digests(data: bytes, window: int = MiB) -> list[str]:
    return [hashlib.sha256(data[i:i + window]).hexdigest() for i in range(0, len(data), window)]


# --------------------------------------------------------------------------------------------
# Disks and containers
# --------------------------------------------------------------------------------------------
def _place(volume: Path, disk: Path, disk_size: int, offset: int) -> None:
    with open(disk, "wb") as dst:
        dst.truncate(disk_size)
    with open(volume, "rb") as src, open(disk, "r+b") as dst:
        dst.seek(offset)
        shutil.copyfileobj(src, dst, 4 * MiB)


def make_gpt(work: Path, *, second_bitlocker: bool = False) -> Path:
    """GPT disk: 1 EFI (1 MiB, empty), 2 basic data = the volume at 2 MiB [, 3 = a copy]."""
    name = "gpt2.img" if second_bitlocker else "gpt.img"
    disk = work / name
    if _done(disk):
        return disk
    sfdisk = _tool("sfdisk")
    if not sfdisk:
        pytest.skip("sfdisk is not installed (Debian: fdisk)")
    volume, _m = make_volume(work)
    size = volume.stat().st_size
    sectors = size // 512
    disk_size = GPT_OFFSET + size * (2 if second_bitlocker else 1) + MiB
    _place(volume, disk, disk_size, GPT_OFFSET)
    script = ("label: gpt\n"
              f"start=2048, size=2048, type={GPT_EFI}, name=\"EFI\"\n"
              f"start=4096, size={sectors}, type={GPT_BASIC_DATA}, name=\"data\"\n")
    if second_bitlocker:
        script += f"start={4096 + sectors}, size={sectors}, type={GPT_BASIC_DATA}\n"
    _run([sfdisk, "--no-reread", "--no-tell-kernel", "-q", str(disk)], input=script)
    if second_bitlocker:
        with open(volume, "rb") as src, open(disk, "r+b") as dst:
            dst.seek(GPT_OFFSET + size)
            shutil.copyfileobj(src, dst, 4 * MiB)
    return _mark(disk)


def make_mbr(work: Path) -> Path:
    """MBR disk: 1 Linux (1 MiB), 2 extended holding 5 = the volume (type 0x07) at 3 MiB."""
    disk = work / "mbr.img"
    if _done(disk):
        return disk
    sfdisk = _tool("sfdisk")
    if not sfdisk:
        pytest.skip("sfdisk is not installed (Debian: fdisk)")
    volume, _m = make_volume(work)
    size = volume.stat().st_size
    sectors = size // 512
    _place(volume, disk, MBR_OFFSET + size, MBR_OFFSET)
    script = ("label: dos\n"
              "start=2048, size=2048, type=83\n"
              f"start=4096, size={sectors + 2048}, type=5\n"
              f"start=6144, size={sectors}, type=7\n")
    _run([sfdisk, "--no-reread", "--no-tell-kernel", "-q", str(disk)], input=script)
    return _mark(disk)


def make_container(work: Path, kind: str) -> tuple[Path, int, int]:
    """(image to open, BitLocker partition number, volume offset) for ``kind``."""
    if kind == "bare":
        return make_volume(work)[0], 0, 0
    if kind == "gpt":
        return make_gpt(work), 2, GPT_OFFSET
    if kind == "mbr":
        return make_mbr(work), 5, MBR_OFFSET
    if kind == "split":
        disk = make_mbr(work)
        first = work / "split" / "disk.001"
        if not _done(first):
            first.parent.mkdir(exist_ok=True)
            data = disk.read_bytes()
            seg = 7 * MiB
            for i in range(0, len(data), seg):
                (first.parent / f"disk.{i // seg + 1:03d}").write_bytes(data[i:i + seg])
            _mark(first)
        return first, 5, MBR_OFFSET
    if kind in ("e01", "e01-segments"):
        pytest.importorskip("pyewf", reason="libewf-python (bdekit[ewf]) is not installed")
        ewfacquire = _tool("ewfacquire")
        if not ewfacquire:
            pytest.skip("ewfacquire is not installed (Debian: ewf-tools)")
        disk = make_gpt(work)
        target = work / kind / "disk"
        image = Path(str(target) + ".E01")
        if not _done(image):
            target.parent.mkdir(exist_ok=True)
            segment = "10MiB" if kind == "e01-segments" else "1.4GiB"
            _run([ewfacquire, "-u", "-t", str(target), "-f", "encase6", "-c", "none",
                  "-S", segment, str(disk)], stdin=subprocess.DEVNULL)
            _mark(image)
        return image, 2, GPT_OFFSET
    if kind in ("vhd-fixed", "vhd-dynamic", "vhdx"):
        qemu_img = _tool("qemu-img")
        if not qemu_img:
            pytest.skip("qemu-img is not installed (Debian: qemu-utils)")
        if kind != "vhd-fixed":
            pytest.importorskip("pyvhdi", reason="libvhdi-python (bdekit[vhd]) is not installed")
        disk = make_gpt(work)
        ext = "vhdx" if kind == "vhdx" else "vhd"
        image = work / f"{kind}.{ext}"
        if not _done(image):
            opts = {"vhd-fixed": ["-O", "vpc", "-o", "subformat=fixed,force_size=on"],
                    "vhd-dynamic": ["-O", "vpc", "-o", "subformat=dynamic,force_size=on"],
                    "vhdx": ["-O", "vhdx"]}[kind]
            _run([qemu_img, "convert", "-f", "raw", *opts, str(disk), str(image)])
            _mark(image)
        return image, 2, GPT_OFFSET
    raise AssertionError(kind)


CONTAINERS = ["bare", "gpt", "mbr", "split", "e01", "e01-segments", "vhd-fixed", "vhd-dynamic",
              "vhdx"]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.getbasetemp() / "bdekit-containers"
    path.mkdir(exist_ok=True)
    return path


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------
def test_bare_volume_matches_manifest(work: Path) -> None:
    _volume, manifest = make_volume(work)
    plain = plaintext(work)
    assert len(plain) == manifest["volume_size"]
    assert window_digests(plain) == manifest["windows"]


@pytest.mark.parametrize("kind", CONTAINERS)
def test_info_and_decrypt(work: Path, kind: str, tmp_path: Path) -> None:
    image, _index, _offset = make_container(work, kind)
    _volume, manifest = make_volume(work)
    code, out, err = run_cli("info", "--json", str(image), *unlock_args(manifest))
    assert code == 0, err
    info = json.loads(out)
    assert info["encryption_method"] == "aes-xts-128"
    assert info["volume_guid"] == manifest["volume_guid"].upper()
    assert info["unlocked"] is not None
    assert info["volume_size"] == manifest["volume_size"]

    target = tmp_path / "plain.img"
    code, _out, err = run_cli("-q", "decrypt", str(image), str(target), *unlock_args(manifest))
    assert code == 0, err
    data = target.read_bytes()
    assert data == plaintext(work)
    assert window_digests(data) == manifest["windows"]


@pytest.mark.parametrize("kind", ["gpt", "mbr", "split", "e01"])
def test_explicit_partition_and_offset(work: Path, kind: str) -> None:
    image, index, offset = make_container(work, kind)
    _volume, manifest = make_volume(work)
    for selection in (["--partition", str(index)], ["--offset", str(offset)]):
        code, out, err = run_cli("info", "--json", str(image), *selection)
        assert code == 0, err
        assert json.loads(out)["volume_guid"] == manifest["volume_guid"].upper()


def test_partition_that_is_not_bitlocker(work: Path) -> None:
    image, _index, _offset = make_container(work, "gpt")
    code, _out, err = run_cli("info", str(image), "--partition", "1")
    assert code == 3, err  # the EFI partition: not BitLocker
    code, _out, err = run_cli("info", str(image), "--partition", "9")
    assert code == 2
    assert "no partition 9" in err and "1, 2" in err
    mbr, _i, _o = make_container(work, "mbr")
    code, _out, err = run_cli("info", str(mbr), "--partition", "2")
    assert code == 2
    assert "extended partition" in err


def test_several_bitlocker_partitions(work: Path) -> None:
    disk = make_gpt(work, second_bitlocker=True)
    _volume, manifest = make_volume(work)
    code, _out, err = run_cli("info", str(disk))
    assert code == 2
    assert "several BitLocker partitions" in err
    assert "partition 2 at offset 2097152" in err and "partition 3 at offset" in err
    assert "--partition" in err
    code, out, err = run_cli("info", "--json", str(disk), "--partition", "3",
                             *unlock_args(manifest))
    assert code == 0, err
    assert json.loads(out)["unlocked"] is not None


def test_debug_logs_structures_with_offsets(work: Path) -> None:
    image, _index, _offset = make_container(work, "gpt")
    code, _out, err = run_cli("--debug", "info", str(image))
    assert code == 0, err
    assert "DEBUG: parsed MBR at offset 0 (0x0)" in err
    assert "DEBUG: parsed GPT header at offset 512 (0x200)" in err
    assert f"the volume starts at image offset {GPT_OFFSET} (0x{GPT_OFFSET:x})" in err
    _volume, manifest = make_volume(work)
    first_copy = manifest["layout"]["metadata_offsets"][0]
    assert f"parsed FVE metadata block header at offset {first_copy} (0x{first_copy:x})" in err
    assert "parsed dataset header at offset" in err
    assert "parsed datum at offset" in err
    # without --debug: none of it
    code, _out, err = run_cli("info", str(image))
    assert code == 0
    assert "DEBUG" not in err


def test_debug_on_mbr_logs_ebr(work: Path) -> None:
    image, _index, _offset = make_container(work, "mbr")
    code, _out, err = run_cli("--debug", "info", str(image))
    assert code == 0, err
    assert "parsed EBR at offset 2097152 (0x200000)" in err
    assert f"the volume starts at image offset {MBR_OFFSET}" in err


def test_open_volume_on_a_disk(work: Path) -> None:
    from bdekit.volume.bde import open_volume

    image, _index, _offset = make_container(work, "split")
    _volume, manifest = make_volume(work)
    stream = open_volume(image, fvek=manifest["fvek"])
    try:
        assert stream.size == manifest["volume_size"]
        assert stream.pread(4096, 5 * MiB + 512) == plaintext(work)[5 * MiB + 512:5 * MiB + 4608]
    finally:
        stream.volume.source.close()
