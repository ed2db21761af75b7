"""Synthetic images: bdekit, libbde (pybde) and dislocker decrypt them to the manifest's
plaintext, for every method x sector size x protector; the builder reproduces Windows' own
bytes on the real images (ciphertext sector for sector, metadata blocks, protector datums, the
BEK file); same seed, same bytes."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import os
import shutil
import struct
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from construct import Container
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from bdekit import synth
from bdekit.cli.main import cli
from bdekit.crypto import ciphers, keys
from bdekit.errors import OutputExistsError, UsageError
from bdekit.escrow.secrets import Secrets
from bdekit.format import structs
from bdekit.format.constants import METHOD_LABELS, DatumType, EncryptionMethod
from bdekit.format.copies import read_metadata
from bdekit.image.bounded import read_bek
from bdekit.unlock import certificates
from bdekit.volume.bde import open_bde, open_volume
from tests.conftest import FIXTURES, REAL_DIR, REAL_IMAGES, real_kwargs, requires_real

METHODS = [label for method, label in METHOD_LABELS.items() if method != EncryptionMethod.NONE]
SECTOR_SIZES = [512, 4096]
KINDS = ["recovery-password", "password", "startup-key", "clear-key"]
PASSWORD = "Synth pass 1!"
SIZE = 3 << 20
SEED = 11

try:
    import pybde  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    pybde = None
DISLOCKER = shutil.which("dislocker-file")
MKNTFS = shutil.which("mkntfs") or ("/usr/sbin/mkntfs" if os.path.exists("/usr/sbin/mkntfs")
                                    else None)

requires_pybde = pytest.mark.skipif(pybde is None, reason="pybde (libbde-python) is absent")
requires_dislocker = pytest.mark.skipif(DISLOCKER is None, reason="dislocker-file is absent")


@pytest.fixture(scope="module", autouse=True)
def cached_stretch() -> Iterator[None]:
    """The stretch (1M SHA-256 rounds, ~0.45 s) is computed once per (hash, salt): images share
    their protectors' salts (a protector's secrets depend on the seed, not the method)."""
    real = keys.stretch_key
    cached = functools.lru_cache(maxsize=None)(real)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(keys, "stretch_key", cached)
        yield


class Images:
    """Builds each image once per module."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cache: dict[tuple[Any, ...], tuple[Path, synth.Manifest]] = {}

    def get(self, method: str, ss: int, variant: str = "keys", **kwargs: Any
            ) -> tuple[Path, synth.Manifest]:
        key = (method, ss, variant, tuple(sorted(kwargs.items())))
        if key not in self.cache:
            path = self.root / f"{method}-{ss}-{variant}-{len(self.cache)}.img"
            if variant == "keys":
                prots: list[Any] = [synth.RecoveryPasswordSpec(), synth.PasswordSpec(PASSWORD),
                                    synth.StartupKeySpec(self.root / "keys")]
            else:
                prots = [synth.ClearKeySpec()]
            kwargs.setdefault("size", SIZE)
            manifest = synth.build(path, method=method, sector_size=ss, seed=SEED,
                                   protectors=prots, **kwargs)
            self.cache[key] = (path, manifest)
        return self.cache[key]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    return Images(tmp_path_factory.mktemp("synth"))


def unlock_kwargs(manifest: synth.Manifest, kind: str) -> dict[str, str]:
    if kind == "clear-key":
        return {}
    entry = manifest.protector(kind)
    if kind == "recovery-password":
        return {"recovery_password": entry["recovery_password"]}
    if kind == "password":
        return {"password": entry["password"]}
    return {"bek": str(manifest.path.parent / entry["bek_file"])}  # type: ignore[union-attr]


def reader_digests(manifest: synth.Manifest, read: Callable[[int, int], bytes]) -> list[str]:
    return synth.window_digests(read, manifest.volume_size, manifest.zero_on_disk)


def bdekit_digests(path: Path, manifest: synth.Manifest, **kwargs: Any) -> list[str]:
    stream = open_volume(path, **kwargs)
    assert stream.size == manifest.volume_size
    return reader_digests(manifest, lambda off, n: stream.pread(n, off))


# --------------------------------------------------------------------------------------------
# bdekit reads every method x sector size x protector back to the manifest plaintext
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("ss", SECTOR_SIZES)
@pytest.mark.parametrize("method", METHODS)
def test_bdekit_reads_manifest_plaintext(images: Images, method: str, ss: int,
                                         kind: str) -> None:
    path, manifest = images.get(method, ss, "clear" if kind == "clear-key" else "keys")
    assert bdekit_digests(path, manifest, **unlock_kwargs(manifest, kind)) == manifest.windows
    volume = open_bde(path)
    assert volume.metadata.method_name == method
    assert volume.sector_size == ss
    assert all(c.status == "ok" for c in volume.metadata.copies)


def test_decrypt_output_sha256_is_the_manifest_volume_sha256(images: Images,
                                                             tmp_path: Path) -> None:
    path, manifest = images.get("aes-xts-128", 512, "clear")
    out = tmp_path / "plain.img"
    result = CliRunner().invoke(cli, ["-q", "decrypt", str(path), str(out)])
    assert result.exit_code == 0, result.output
    assert hashlib.sha256(out.read_bytes()).hexdigest() == manifest.volume_sha256
    assert manifest.volume_sha256 is not None


def test_metadata_integrity_and_layout(images: Images) -> None:
    path, manifest = images.get("aes-cbc-256", 512, "keys")
    volume = open_bde(path)
    volume.unlock(Secrets(beks=[read_bek(manifest.path.parent  # type: ignore[union-attr]
                                         / manifest.protector("startup-key")["bek_file"])]))
    assert [c.integrity for c in volume.metadata.copies] == ["ok", "ok", "ok"]
    assert volume.unlocked is not None and volume.unlocked.fvek.hex() == manifest.fvek
    assert volume.unlocked.vmk is not None and volume.unlocked.vmk.hex() == manifest.vmk
    md = volume.metadata
    assert [c.offset for c in md.copies] == manifest.layout["metadata_offsets"]
    assert md.virtualization == (manifest.layout["relocated_offset"], 8192)
    assert md.block_header.virtualized_sectors == 16
    assert md.block_header.state_offset == manifest.volume_size
    assert (md.block_header.current_state, md.block_header.next_state) == (4, 4)
    raw = path.read_bytes()
    header = raw[:512]
    assert header[3:11] == b"-FVE-FS-" and header[510:512] == b"\x55\xaa"
    assert header[0x52:0x5A] == b"FAT32   " and header[13] == 8
    assert header[160:176] == uuid.UUID("4967d63b-2e29-4ad8-8399-f6a339e3d001").bytes_le
    assert struct.unpack_from("<3Q", header, 176) == tuple(manifest.layout["metadata_offsets"])
    assert header[0x28:0x30] == bytes(8)
    # the three copies are identical; Windows' order of datums; validation datum is 0x50 bytes
    size = manifest.layout["metadata_copy_size"]
    copies = [raw[o:o + size] for o in manifest.layout["metadata_offsets"]]
    assert copies[0] == copies[1] == copies[2]
    assert [(d.role, d.type) for d in md.datums] == [(7, 2), (2, 8), (2, 8), (2, 8), (3, 5),
                                                     (15, 15)]
    assert md.best.validation is not None and md.best.validation.size == 0x50
    # the reserved regions read as zeros
    stream = volume.open()
    for off, length in manifest.reserved:
        assert stream.pread(length, off) == bytes(length)


def test_boot_sector_gives_the_volume_size(images: Images) -> None:
    path, manifest = images.get("aes-xts-256", 4096, "clear")
    volume = open_bde(path)
    volume.unlock(Secrets())
    assert (volume.volume_size, volume.size_source) == (manifest.volume_size, "boot sector")
    boot = volume.open().pread(4096, 0)
    assert boot[3:11] == b"NTFS    " and boot[510:512] == b"\x55\xaa"
    assert struct.unpack_from("<Q", boot, 0x28)[0] == manifest.volume_size // 4096 - 1
    backup = volume.open().pread(4096, manifest.volume_size - 4096)
    assert backup == boot


# --------------------------------------------------------------------------------------------
# Peers: libbde (pybde) and dislocker
# --------------------------------------------------------------------------------------------


def pybde_digests(path: Path, manifest: synth.Manifest, kind: str,
                  mask_vista_mft_mirror: bool = False) -> list[str]:
    assert pybde is not None
    volume = pybde.volume()
    kw = unlock_kwargs(manifest, kind)
    if "recovery_password" in kw:
        volume.set_recovery_password(kw["recovery_password"])
    if "password" in kw:
        volume.set_password(kw["password"])
    if "bek" in kw:
        volume.read_startup_key(kw["bek"])
    volume.open(str(path))
    try:
        assert volume.get_size() == manifest.volume_size
        data = bytearray(volume.read_buffer_at_offset(manifest.volume_size, 0))
    finally:
        volume.close()
    if mask_vista_mft_mirror:
        # libbde writes 0 where the decrypted Vista boot sector holds the MFT mirror cluster
        # (it does so on the real Vista image too); bdekit restores the cluster number.
        assert data[0x38:0x40] == bytes(8)
        data[0x38:0x40] = struct.pack("<Q", 2)
    return reader_digests(manifest, lambda off, n: bytes(data[off:off + n]))


@pytest.mark.peer
@requires_pybde
@pytest.mark.parametrize("ss", SECTOR_SIZES)
@pytest.mark.parametrize("method", METHODS)
def test_pybde_decrypts_to_manifest(images: Images, method: str, ss: int) -> None:
    path, manifest = images.get(method, ss, "keys")
    assert pybde_digests(path, manifest, "startup-key") == manifest.windows
    path, manifest = images.get(method, ss, "clear")
    assert pybde_digests(path, manifest, "clear-key") == manifest.windows


@pytest.mark.peer
@requires_pybde
@pytest.mark.parametrize("kind", ["recovery-password", "password"])
def test_pybde_stretched_protectors(images: Images, kind: str) -> None:
    path, manifest = images.get("aes-xts-128", 512, "keys")
    assert pybde_digests(path, manifest, kind) == manifest.windows


def dislocker_digests(path: Path, manifest: synth.Manifest, kind: str, out: Path,
                      limit: int | None = None) -> list[str]:
    kw = unlock_kwargs(manifest, kind)
    args = [str(DISLOCKER), "-V", str(path)]
    if "recovery_password" in kw:
        args.append("-p" + kw["recovery_password"])
    elif "password" in kw:
        args.append("-u" + kw["password"])
    elif "bek" in kw:
        args += ["-f", kw["bek"]]
    else:
        args.append("-c")
    out.unlink(missing_ok=True)
    proc = subprocess.run([*args, "--", str(out)], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stdout.decode(errors="replace")[-500:]
    data = out.read_bytes()
    size = limit if limit is not None else manifest.volume_size
    assert len(data) == size
    digests = reader_digests(manifest, lambda off, n: data[off:off + n])
    return digests[:size // synth.WINDOW]


@pytest.mark.peer
@requires_dislocker
@pytest.mark.parametrize("ss", SECTOR_SIZES)
@pytest.mark.parametrize("method", METHODS)
def test_dislocker_decrypts_to_manifest(images: Images, method: str, ss: int,
                                        tmp_path: Path) -> None:
    path, manifest = images.get(method, ss, "keys")
    assert dislocker_digests(path, manifest, "startup-key", tmp_path / "o") == manifest.windows
    path, manifest = images.get(method, ss, "clear")
    assert dislocker_digests(path, manifest, "clear-key", tmp_path / "o") == manifest.windows


@pytest.mark.peer
@requires_dislocker
@pytest.mark.parametrize("kind", ["recovery-password", "password"])
def test_dislocker_stretched_protectors(images: Images, kind: str, tmp_path: Path) -> None:
    path, manifest = images.get("aes-xts-128", 512, "keys")
    assert dislocker_digests(path, manifest, kind, tmp_path / "o") == manifest.windows


# --------------------------------------------------------------------------------------------
# Layout variants: used space only, partial conversion, Vista, --from
# --------------------------------------------------------------------------------------------


def test_used_only_is_sparse_and_zero_on_disk(images: Images) -> None:
    path, manifest = images.get("aes-xts-128", 512, "clear", size=16 << 20, used_only=True)
    assert manifest.used_only and manifest.volume_sha256 is None
    assert manifest.zero_on_disk
    raw = path.read_bytes()
    for off, length in manifest.zero_on_disk:
        assert raw[off:off + length] == bytes(length)
    assert path.stat().st_blocks * 512 < 4 << 20  # sparse: 16 MiB volume, ~1 MiB allocated
    # bdekit returns noise there, as Windows does; masked, the digests match
    assert bdekit_digests(path, manifest) == manifest.windows
    stream = open_volume(path)
    off, length = manifest.zero_on_disk[-1]
    assert stream.pread(512, off) != bytes(512)


@pytest.mark.peer
@requires_pybde
def test_used_only_pybde(images: Images) -> None:
    path, manifest = images.get("aes-cbc-128-diffuser", 4096, "clear", size=16 << 20,
                                used_only=True)
    assert pybde_digests(path, manifest, "clear-key") == manifest.windows


@pytest.mark.parametrize("method", ["aes-xts-128", "aes-cbc-256-diffuser"])
def test_partial_state(images: Images, method: str, tmp_path: Path) -> None:
    path, manifest = images.get(method, 512, "clear", state="partial:2M")
    assert manifest.state == {"current": 3, "next": 4, "encrypted_bytes": 2 << 20,
                              "partial": True}
    md = open_bde(path).metadata
    assert (md.block_header.current_state, md.block_header.state_offset) == (3, 2 << 20)
    assert bdekit_digests(path, manifest) == manifest.windows
    # at and above the boundary the image holds the plaintext (but for the metadata copies)
    stream = open_volume(path)
    raw = path.read_bytes()
    reserved = [range(a, a + n) for a, n in manifest.reserved]
    for off in range(2 << 20, manifest.volume_size, 65536):
        if not any(off in r for r in reserved):
            assert raw[off:off + 65536] == stream.pread(65536, off)
    if pybde is not None:
        assert pybde_digests(path, manifest, "clear-key") == manifest.windows
    if DISLOCKER is not None:  # dislocker stops its output at the conversion boundary
        assert (dislocker_digests(path, manifest, "clear-key", tmp_path / "o", limit=2 << 20)
                == manifest.windows[:2])


@pytest.mark.parametrize("method", ["aes-cbc-128-diffuser", "aes-cbc-256"])
def test_vista_layout(images: Images, method: str) -> None:
    path, manifest = images.get(method, 512, "keys", vista=True)
    volume = open_bde(path)
    assert volume.metadata.version == 1 and volume.header.kind == "vista"
    assert manifest.layout["relocated_offset"] is None
    for kind in ("startup-key", "recovery-password"):
        assert bdekit_digests(path, manifest, **unlock_kwargs(manifest, kind)) \
            == manifest.windows
    raw = path.read_bytes()
    assert raw[3:11] == b"-FVE-FS-"
    assert struct.unpack_from("<Q", raw, 0x38)[0] * 4096 == manifest.layout[
        "metadata_offsets"][0]
    stream = open_volume(path, **unlock_kwargs(manifest, "startup-key"))
    assert raw[512:8192] == stream.pread(8192 - 512, 512)  # sectors 1..15 stay plaintext
    if pybde is not None:
        assert pybde_digests(path, manifest, "startup-key",
                             mask_vista_mft_mirror=True) == manifest.windows


def test_vista_refuses_xts(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="Vista"):
        synth.build(tmp_path / "v.img", size="2M", method="aes-xts-128", vista=True)
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(MKNTFS is None, reason="mkntfs is absent")
def test_from_ntfs_volume(tmp_path: Path) -> None:
    source = tmp_path / "ntfs.img"
    with open(source, "wb") as fh:
        fh.truncate(24 << 20)
    proc = subprocess.run([str(MKNTFS), "-F", "-Q", "-q", "-L", "SYNTH", str(source)],
                          capture_output=True)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "enc.img"
    manifest = synth.build(out, source=source, method="aes-cbc-128", used_only=True,
                           protectors=[synth.ClearKeySpec()])
    assert manifest.volume_size == 24 << 20 and manifest.source["kind"] == "file"
    plain = source.read_bytes()
    for off, length in manifest.reserved:  # metadata placed where the source is free
        assert plain[off:off + length] == bytes(length)
    stream = open_volume(out)
    assert stream.size == len(plain)
    decrypted = bytearray(stream.pread(len(plain), 0))
    for off, length in manifest.zero_on_disk:
        decrypted[off:off + length] = bytes(length)
    assert decrypted == plain
    assert bdekit_digests(out, manifest) == manifest.windows


def test_from_refuses_other_size(tmp_path: Path) -> None:
    source = tmp_path / "src.img"
    source.write_bytes(bytes(2 << 20))
    with pytest.raises(UsageError, match="differs"):
        synth.build(tmp_path / "o.img", source=source, size="4M")


# --------------------------------------------------------------------------------------------
# Determinism, refusal, CLI
# --------------------------------------------------------------------------------------------


def file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    results = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        image = tmp_path / name / "x.img"
        manifest = synth.build(image, size="2M", method="aes-cbc-128-diffuser", seed=5,
                               protectors=[synth.RecoveryPasswordSpec(),
                                           synth.StartupKeySpec(tmp_path / name / "keys")])
        bek = next((tmp_path / name / "keys").iterdir())
        results.append((file_sha(image), manifest.to_dict(), bek.name, bek.read_bytes()))
    assert results[0] == results[1]
    other = synth.build(tmp_path / "c.img", size="2M", method="aes-cbc-128-diffuser", seed=6,
                        protectors=[synth.RecoveryPasswordSpec()])
    assert other.fvek != results[0][1]["fvek"]
    assert file_sha(tmp_path / "c.img") != results[0][0]


def test_protector_secrets_do_not_depend_on_the_method(tmp_path: Path) -> None:
    a = synth.build(tmp_path / "a.img", size="1M", method="aes-xts-128", seed=9,
                    protectors=[synth.ClearKeySpec()])
    b = synth.build(tmp_path / "b.img", size="1M", method="aes-cbc-256", seed=9,
                    protectors=[synth.ClearKeySpec()])
    assert a.protectors == b.protectors
    assert a.fvek[:32] == b.fvek[:32]


def test_output_refused_unless_force(tmp_path: Path) -> None:
    image = tmp_path / "x.img"
    synth.build(image, size="1M", protectors=[synth.ClearKeySpec()])
    before = file_sha(image)
    with pytest.raises(OutputExistsError):
        synth.build(image, size="1M", seed=1, protectors=[synth.ClearKeySpec()])
    assert file_sha(image) == before
    synth.build(image, size="1M", seed=1, protectors=[synth.ClearKeySpec()], force=True)
    assert file_sha(image) != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.img", "x.img.manifest.json"]


@pytest.mark.parametrize("kwargs, match", [
    ({"size": "1M", "sector_size": 1000}, "sector size"),
    ({"size": "512K"}, "minimum"),
    ({"size": 1048577}, "multiple"),
    ({"size": "4M", "state": "partial:3"}, "multiple"),
    ({"size": "4M", "state": "half"}, "partial:OFFSET"),
    ({"size": "4M", "method": "aes-gcm"}, "unknown encryption method"),
    ({"size": "4M", "method": "none"}, "not 'none'"),
    ({"size": "4M", "method": 0x9000}, "unknown encryption method"),
    ({"size": "4M", "protectors": [synth.PasswordSpec("")]}, "non-empty"),
    ({"size": "4M", "protectors": [synth.RecoveryPasswordSpec("1-2-3")]}, "recovery password"),
])
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        synth.build(tmp_path / "x.img", **kwargs)
    assert not (tmp_path / "x.img").exists()


@pytest.mark.parametrize("text, value", [("4096", 4096), ("0x1000", 4096), ("64K", 65536),
                                         ("64M", 64 << 20), ("1G", 1 << 30), ("2TiB", 2 << 40),
                                         ("3 m", 3 << 20)])
def test_parse_size(text: str, value: int) -> None:
    assert synth.parse_size(text) == value


def test_cli_create_and_decrypt(tmp_path: Path) -> None:
    runner = CliRunner()
    image = tmp_path / "cli.img"
    result = runner.invoke(cli, ["synth", "create", str(image), "--size", "2M", "--method",
                                 "aes-cbc-128", "--sector-size", "4096", "--seed", "3",
                                 "--recovery-password", "--startup-key", str(tmp_path / "k"),
                                 "--clear-key", "--json"])
    assert result.exit_code == 0, result.output
    manifest = synth.Manifest.load(tmp_path / "cli.img.manifest.json")
    assert [p["type"] for p in manifest.protectors] == ["recovery-password", "startup-key",
                                                        "clear-key"]
    assert manifest.method == "aes-cbc-128" and manifest.sector_size == 4096
    assert (tmp_path / "k" / manifest.protector("startup-key")["bek_name"]).exists()
    out = tmp_path / "plain.img"
    result = runner.invoke(cli, ["-q", "decrypt", str(image), str(out)])
    assert result.exit_code == 0, result.output
    assert file_sha(out) == manifest.volume_sha256
    result = runner.invoke(cli, ["synth", "create", str(image), "--size", "2M"])
    assert result.exit_code == 2 and "exists" in result.output


def test_cli_recovery_password_value(tmp_path: Path) -> None:
    value = "111111-222222-333333-444444-555555-666666-000000-121121"
    result = CliRunner().invoke(cli, ["synth", "create", str(tmp_path / "r.img"), "--size",
                                      "1M", "--recovery-password", value, "--password", "pw",
                                      "--state", "partial:512K"])
    assert result.exit_code == 0, result.output
    assert value in result.output
    manifest = synth.Manifest.load(tmp_path / "r.img.manifest.json")
    assert manifest.protector("recovery-password")["recovery_password"] == value
    assert manifest.protector("password")["password"] == "pw"
    assert manifest.state["encrypted_bytes"] == 512 << 10


# --------------------------------------------------------------------------------------------
# Windows compatibility, shown on the real images
# --------------------------------------------------------------------------------------------

REAL_CIPHER_IMAGES = ["aes-xts_128", "aes_256", "aes_128_diffuser"]


def nonzero_runs(raw: bytes, skip: list[tuple[int, int]], limit: int) -> list[tuple[int, int]]:
    """Runs of 512-byte sectors whose ciphertext is not all zero, outside ``skip``."""
    runs: list[tuple[int, int]] = []
    for off in range(8192, len(raw) - 511, 512):
        if any(a <= off < a + n for a, n in skip) or not any(raw[off:off + 512]):
            continue
        if runs and runs[-1][0] + runs[-1][1] == off:
            runs[-1] = (runs[-1][0], runs[-1][1] + 512)
        else:
            runs.append((off, 512))
        if sum(n for _, n in runs) >= limit:
            break
    return runs


@requires_real
@pytest.mark.real
@pytest.mark.parametrize("name", REAL_CIPHER_IMAGES)
def test_encryptor_reproduces_windows_ciphertext(real_image, name: str) -> None:  # type: ignore[no-untyped-def]
    """Plaintext decrypted by bdekit + the README FVEK -> our encryptor -> Windows' bytes."""
    path = real_image(name)
    fvek = bytes.fromhex(REAL_IMAGES[name][2])  # type: ignore[arg-type]
    volume = open_bde(path)
    volume.unlock(Secrets(fvek=fvek))
    stream = volume.open()
    cipher = ciphers.make_cipher(volume.metadata.method, fvek, 512)
    raw = path.read_bytes()
    # the relocated header block: the original boot sectors, encrypted at their new position
    voff, vsize = volume.metadata.virtualization  # type: ignore[misc]
    boot = stream.pread(vsize, 0)
    assert boot[3:11] == b"NTFS    "
    assert synth.encrypt_sectors(cipher, boot, voff) == raw[voff:voff + vsize]
    # every written data sector (the captures hold 24 KiB of them after the header block)
    skip = [(o, 0x10000) for o in volume.header.metadata_offsets] + [(voff, vsize)]
    runs = nonzero_runs(raw, skip, 16 << 20)
    assert sum(n for _, n in runs) >= 16 << 10
    for off, length in runs:
        plain = stream.pread(length, off)
        assert synth.encrypt_sectors(cipher, plain, off) == raw[off:off + length], off


class ReplayNonces:
    """A nonce source that hands out the nonces (and times) Windows used, in order."""

    def __init__(self, nonces: list[bytes], times: list[int]) -> None:
        self.nonces = list(nonces)
        self.times = list(times)
        self.filetime = int.from_bytes(nonces[0][:8], "little") if nonces else 0

    def wrap(self, key: bytes, inner: Container, role: int = 0,
             filetime: int | None = None) -> Container:
        return synth.aes_ccm_datum(key, self.nonces.pop(0), inner, role)

    def tick(self, max_seconds: float = 0) -> int:
        return self.times.pop(0)


def aes_ccm_nonces(datum: Any) -> list[bytes]:
    return [bytes(d.body.nonce) for d in datum.walk()
            if d.type == DatumType.AES_CCM_ENCRYPTED_KEY]


REAL_METADATA = ["aes-xts_128", "aes_256", "aes_128_diffuser", "recovery_password",
                 "startup_key", "suspended", "eow_partial", "decrypted", "vista"]


@requires_real
@pytest.mark.real
@pytest.mark.parametrize("name", REAL_METADATA)
def test_block_writer_reproduces_windows_metadata(real_image, name: str) -> None:  # type: ignore[no-untyped-def]
    """Parsed datums -> our block writer -> Windows' padded block and CRC, byte for byte."""
    path = real_image(name)
    raw = path.read_bytes()
    md = read_metadata(lambda off, n: raw[off:off + n], str(path), len(raw))
    copy = md.best
    block = bytes(raw[copy.offset:copy.offset + copy.block_size])
    header = structs.FVE_BLOCK_HEADER.parse(block[:64])
    dataset = structs.DATASET_HEADER.parse(block[64:112])
    datums = structs.DATUM_LIST.parse(block[112:64 + dataset.size])
    assert synth.build_metadata_block(header, dataset, datums) == block
    validation = raw[copy.offset + len(block):copy.offset + len(block) + 8]
    ours = synth.validation_bytes(block, bytes(32), bytes(12), version=header.version)
    assert ours[2:8] == validation[2:8]  # version and CRC32 (Windows' first u16 is junk)


@requires_real
@pytest.mark.real
@pytest.mark.parametrize("name, kind", [("aes-xts_128", "password"),
                                        ("recovery_password", "recovery-password"),
                                        ("startup_key", "startup-key"),
                                        ("suspended", "clear-key")])
def test_protector_writer_reproduces_windows_datums(real_image, name: str, kind: str) -> None:  # type: ignore[no-untyped-def]
    """With Windows' keys, salts, GUIDs, times and nonces, our protector, FVEK and validation
    datums (and the BEK file) are Windows' bytes."""
    path = real_image(name)
    kwargs = real_kwargs(name)
    volume = open_bde(path)
    secrets = Secrets()
    if "password" in kwargs:
        secrets.passwords.append(kwargs["password"])
    if "recovery_password" in kwargs:
        secrets.recovery_passwords.append(kwargs["recovery_password"])
    bek = read_bek(kwargs["bek"]) if "bek" in kwargs else None
    if bek is not None:
        secrets.beks.append(bek)
    result = volume.unlock(secrets)
    vmk = result.vmk
    assert vmk is not None and result.protector is not None
    real = result.protector.datum
    body = real.body
    nonces = ReplayNonces(aes_ccm_nonces(real), [int(body.modified_time)])
    salt = result.protector.salt
    prot: Any
    if kind == "password":
        prot = synth.protectors._PasswordProtector(body.guid, kwargs["password"], salt)
    elif kind == "recovery-password":
        text = kwargs["recovery_password"]
        prot = synth.protectors._RecoveryPasswordProtector(
            body.guid, text, keys.parse_recovery_password(text), salt)
    elif kind == "startup-key":
        assert bek is not None
        prot = synth.protectors._StartupKeyProtector(body.guid, bek.key, Path("."))
    else:
        prot = synth.protectors._ClearKeyProtector(body.guid,
                                                   bytes(real.find(DatumType.KEY).body.key))
    assert structs.DATUM.build(prot.build_datum(vmk, nonces)) == real.raw
    if kind == "startup-key":
        assert prot.bek() == (REAL_DIR / "startup_key.bek").read_bytes()
    # the FVEK datum and the validation datum
    fvek_datum = volume.metadata.find(DatumType.AES_CCM_ENCRYPTED_KEY, 3)
    assert fvek_datum is not None
    ours = synth.aes_ccm_datum(vmk, bytes(fvek_datum.body.nonce),
                               synth.payload_key(result.fvek, volume.metadata.method), role=3)
    assert structs.DATUM.build(ours) == fvek_datum.raw
    copy = volume.metadata.best
    assert copy.validation is not None
    raw = path.read_bytes()
    tail = synth.validation_bytes(copy.block, vmk, bytes(copy.validation.body.nonce))
    start = copy.offset + copy.block_size
    assert tail[2:] == raw[start + 2:start + 8 + copy.validation.size]


@requires_real
@pytest.mark.real
def test_volume_header_matches_windows_bpb(real_image) -> None:  # type: ignore[no-untyped-def]
    """Our header equals Windows' in every BPB field and the GUID record (boot code aside)."""
    raw = real_image("aes-xts_128").read_bytes()[:512]
    offsets = struct.unpack_from("<3Q", raw, 176)
    ours = synth.build_volume_header(512, offsets, hidden_sectors=0x80)
    assert ours[:0x5A] == raw[:0x5A]
    assert ours[160:216] == raw[160:216]
    assert ours[510:] == raw[510:]


def test_extension_point_certificate_protector(tmp_path: Path) -> None:
    """Any object with guid / protection / build_datum / manifest plugs in (certificates.py)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bdekit synth DRA")])
    now = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=365)).sign(key, hashes.SHA256()))
    spec = synth.CertificateSpec(cert)
    prepared = spec.prepare(synth.SeededRandom(0, "protector:0"))
    assert isinstance(prepared, synth.SynthProtector)
    image = tmp_path / "cert.img"
    manifest = synth.build(image, size="1M", protectors=[spec])
    assert manifest.protectors[0]["guid"] == str(prepared.guid).upper()
    assert manifest.protectors[0]["type"] == "certificate"
    secrets = Secrets(certificates=[certificates.Certificate(cert, key)])
    volume = open_bde(image)
    result = volume.unlock(secrets)
    assert result.fvek.hex() == manifest.fvek


# --------------------------------------------------------------------------------------------
# fixtures/ (written by tools/make_fixtures.py)
# --------------------------------------------------------------------------------------------

FIXTURES_DIR = FIXTURES
requires_fixtures = pytest.mark.skipif(
    not (FIXTURES_DIR / "xts128-rp.img.manifest.json").is_file(),
    reason="fixtures/ not generated (python tools/make_fixtures.py)")


@requires_fixtures
def test_fixtures_match_their_manifests() -> None:
    manifests = sorted(FIXTURES_DIR.glob("*.img.manifest.json"))
    assert len(manifests) >= 9
    for path in manifests:
        manifest = synth.Manifest.load(path)
        image = manifest.image_path
        assert image.stat().st_size == manifest.image_size
        assert bdekit_digests(image, manifest, fvek=manifest.fvek) == manifest.windows, image
    main = synth.Manifest.load(FIXTURES_DIR / "xts128-rp.img.manifest.json")
    rp = main.protector("recovery-password")["recovery_password"]
    stream = open_volume(main.image_path, recovery_password=rp)
    assert hashlib.sha256(stream.pread(main.volume_size, 0)).hexdigest() == main.volume_sha256


@requires_fixtures
def test_make_fixtures_reproduces_the_same_bytes(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_fixtures", FIXTURES_DIR.parent / "tools" / "make_fixtures.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.build_all(tmp_path)

    names = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())

    def snapshot(root: Path) -> dict[str, str]:
        out = {}
        for name in names:  # only what the tool writes: other fixtures may live there too
            path = root / name
            if not path.is_file():
                out[name] = "missing"
                continue
            data = path.read_bytes()
            if path.name.endswith(".manifest.json"):  # the generator's version may move on
                manifest = synth.Manifest.load(path)
                manifest.generator = ""
                data = repr(manifest.to_dict()).encode()
            out[name] = hashlib.sha256(data).hexdigest()
        return out

    assert snapshot(tmp_path) == snapshot(FIXTURES_DIR)
