"""Synthetic BitLocker images with known keys, written in Windows' own layout.

:func:`build` writes a BitLocker volume image of any size, method, sector size and protector
set, deterministic from a seed, plus a JSON manifest (:class:`Manifest`) naming every key and
secret, the layout and the plaintext digest of every MiB, so that a harness can check any
tool's output.  Everything below was checked byte for byte against the Windows 10 images in
``../shared/real-images`` (tests/test_synth.py rebuilds their metadata blocks).

Windows 7+ layout written (``vista=False``)
    * Sector 0: the BitLocker volume header, in plaintext.  Windows writes a FAT32-style boot
      sector: jump ``EB 58 90``, OEM ``-FVE-FS-``, bytes per sector, sectors per cluster (8 for
      512-byte sectors; 4 KiB clusters in general), media ``F8``, 63 sectors per track, 255
      heads, hidden sectors copied from the NTFS boot sector, FAT32 fields (sectors per FAT
      0x1FE0, FSInfo sector 1, backup boot sector 6, drive 0x80, signature 0x29, label
      ``NO NAME``, type ``FAT32``), NTFS total sectors (0x28) zero; at offset 160 the GUID
      record: BitLocker GUID and the byte offsets of the three metadata copies (the two EOW
      offsets after them stay zero).  Windows' boot code and messages are not copied: those
      bytes are zero.  Sectors 1 .. 15 (the rest of the first 8 KiB) hold noise on Windows
      volumes (they are never read: the decrypted view serves them from the relocated block);
      they are seeded noise here.
    * Three metadata copies, identical, each reserving 64 KiB (rounded to the sector size) that
      read as zeros in the decrypted volume; placed at 8/16, 10/16 and 12/16 of the volume
      (64 KiB aligned; Windows 10 spreads them similarly, e.g. 54 %, 66 %, 77 %).  With
      ``source=`` the copies move to the nearest all-zero (free) region of the source, so the
      decrypted volume equals the source.  Each copy: 64-byte block header (size in 16-byte
      units of the padded block, version 2, states, conversion boundary = encrypted bytes, 16
      virtualized sectors at 512 bytes / 8 KiB in general, the three offsets, relocated block
      offset), 48-byte dataset header (size = copy size = 48 + datums, version 1, volume GUID,
      next nonce counter, method, u16 0, creation FILETIME), the datums, zero padding to a
      multiple of 16; right after the padded block the validation header (u16 0 -- Windows
      leaves junk there --, u16 version 2, CRC32 of the padded block) and a 0x50-byte AES-CCM
      datum under the VMK whose plaintext is a key datum (key type 0x2005) holding the SHA-256
      of the padded block; the nonce's FILETIME has its top bit set, as Windows 10 writes it on
      freshly encrypted volumes (the real suspended volume's has it clear).
    * Datums, in Windows' order: description (unicode, role 7), one VMK datum per protector
      (role 2, see below), the FVEK (AES-CCM, role 3, under the VMK; plaintext key datum with
      key type = method, 16/32/64 key bytes), virtualization info (role 15, type 15: offset and
      size of the relocated block; the 76 trailing bytes Windows 10 appends -- OS build number
      and flags of unknown meaning -- are left out, readers ignore them).
    * The relocated header block, 8 KiB right after the first copy's 64 KiB: the original first
      8 KiB of the volume (NTFS boot sector ...), encrypted with the relocated position as the
      sector offset.  It reads as zeros at its own position in the decrypted view.
    * Everything else: the ciphertext of the plaintext at the same offset.  ``state=OFFSET``
      (``--state partial:OFFSET``) stops the conversion there: bytes at or above it are
      plaintext, the block header says paused (3) -> encrypted (4) with that boundary.
    * ``used_only``: every all-zero plaintext sector is left unencrypted, i.e. zero on disk (a
      used-space-only volume that never wrote its free space); readers decrypt such sectors to
      noise, as Windows does.  The manifest lists them (``zero_on_disk``).

Protector datums (VMK datum: GUID, FILETIME, u16 0, protection; nested datums)
    Every wrapped key is an AES-CCM datum whose plaintext is a key datum (role 0, type 1,
    version 0 -- Windows writes version 0 inside AES-CCM datums, version 1 in the clear).
    Key types as Windows writes them: VMK 0x2003, escrowed stretched key 0x2007 (password) /
    0x2008 (recovery password), recovery key 0x1000 (16 bytes), external key 0x2002, clear key
    0x2000, SHA-256 validation 0x2005, FVEK = the method.  Besides the VMK wrapped under the
    protector key, each protector escrows its own secret under the VMK (so that Windows can
    show a recovery password or re-create a BEK from the VMK).

    * recovery password (0x0800): unicode ``DiskPassword``; stretch key (key type 0x1000, salt)
      holding the 16-byte recovery key (role 18) and the stretched key (role 19), both under the
      VMK; the VMK under the stretched key.
    * password (0x2000): stretch key (key type 0x1001, salt) holding the stretched key under the
      VMK; the VMK under the stretched key.
    * startup key (0x0200): unicode ``ExternalKey``; use key (type 4, key type 0x2002) holding
      the external key under the VMK; the VMK under the external key.  The ``{GUID}.BEK`` file:
      dataset header (size, version 1, header size 48, copy size, GUID = protector GUID, nonce
      counter 1, method 0, FILETIME) + external key datum (role 6, type 9: GUID, FILETIME,
      unicode ``ExternalKey``, key datum 0x2002 with the 32-byte key).
    * clear key (0x0000, VMK datum version 3; suspended protection): the clear key (key datum
      0x2000) and the VMK under it.
    * any object with ``guid``, ``protection``, ``build_datum(vmk, nonces)`` and ``manifest()``
      (see :class:`SynthProtector`), e.g. ``bdekit.certificates.CertificateSpec``.

    AES-CCM nonces are FILETIME (8) + counter (4); the counter runs up over the whole dataset and
    the dataset header holds the next free value.

Vista layout (``vista=True``, CBC methods only)
    Sector 0 is the NTFS boot sector with OEM ``-FVE-FS-`` and the MFT mirror cluster at 0x38
    replaced by the cluster number of the first metadata copy (the block header keeps the MFT
    mirror cluster); sectors 1 .. 15 stay plaintext; metadata version 1 (block size in bytes),
    copies reserve 16 KiB rounded up to the cluster, no relocated block and no virtualization
    datum; validation version 1, nonce FILETIME without the top bit.

Determinism
    Keys, GUIDs, salts, FILETIMEs, generated recovery passwords and the generated plaintext
    come from AES-CTR keystreams keyed by SHA-256 of the seed and a label (one stream per
    purpose and per protector, so a protector's secrets do not depend on the method); same
    arguments, same bytes.  Generated plaintext is random access (CTR counter = offset / 16).

Generated plaintext (no ``source``)
    An NTFS-like boot sector at offset 0 (``EB 52 90``, ``NTFS``, total sectors = size /
    sector size - 1, ``55AA``) and its backup in the last sector, so readers take the volume
    size from it; random bytes everywhere else, or with ``used_only`` only in eight "used"
    areas (size / 64, between 16 KiB and 960 KiB each, at k/8 of the volume) and zeros
    elsewhere -- which is what makes a 16 GiB used-only image build in seconds.

Streaming
    The volume is processed in chunks (4 MiB) by a pool of threads (OpenSSL, numpy and hashlib
    release the GIL), written in order with ``pwrite``; all-zero 64 KiB blocks are skipped so
    the output stays sparse; at most ``2 x threads`` chunks are in flight.  The image is written
    under a temporary name and renamed when complete.

Manifest plaintext digests
    ``windows[i]`` = SHA-256 of volume bytes ``[i MiB, (i+1) MiB)`` as a reader must return
    them: metadata copies and the relocated block as zeros, and the ``zero_on_disk`` ranges
    (used-only volumes) as zeros too -- a reader returns noise there, so a checker zeroes those
    ranges first (:func:`window_digests` does).  ``volume_sha256`` is the SHA-256 of the whole
    decrypted volume (what ``bdekit decrypt`` reports for its output); null on used-only
    volumes, whose decrypted free space is noise.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import re
import struct
import uuid
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from construct import Container, ListContainer
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from bdekit._version import __version__
from bdekit.crypto import ciphers, keys
from bdekit.errors import OutputExistsError, UsageError
from bdekit.format import structs
from bdekit.format.constants import (
    BITLOCKER_GUID,
    DatumRole,
    DatumType,
    EncryptionMethod,
    ProtectionType,
    VolumeState,
)
from bdekit.format.layout import round_down, round_up

log = logging.getLogger(__name__)


MiB = 1 << 20


#: Bytes per chunk of the streaming pipeline (a multiple of :data:`WINDOW`).
CHUNK = 4 * MiB


#: Manifest digest window.
WINDOW = MiB


#: Granularity of hole punching (all-zero blocks are not written).
SPARSE_BLOCK = 64 << 10


#: First bytes of the volume Windows 7+ relocate (and Vista leaves plaintext).
HEADER_BLOCK = 8192


#: Reserved size of a v2 metadata copy / the v1 minimum.
V2_REGION = 64 << 10


V1_REGION = 16 << 10


#: Smallest volume :func:`build` writes.
MIN_SIZE = MiB


MANIFEST_FORMAT = "bdekit-synth-manifest"


MANIFEST_VERSION = 1


# Key types of the key datums Windows writes (see the module docstring).
KEY_TYPE_CLEAR = 0x2000


KEY_TYPE_EXTERNAL = 0x2002


KEY_TYPE_VMK = 0x2003


KEY_TYPE_VALIDATION = 0x2005


KEY_TYPE_PASSWORD_ESCROW = 0x2007


KEY_TYPE_RECOVERY_ESCROW = 0x2008


KEY_TYPE_RECOVERY_KEY = 0x1000


STRETCH_TYPE_RECOVERY = 0x1000


STRETCH_TYPE_PASSWORD = 0x1001


ROLE_RECOVERY_KEY_ESCROW = 18


ROLE_STRETCHED_KEY_ESCROW = 19


#: 2021-01-01 00:00:00 UTC as FILETIME: the base of generated timestamps.
_FILETIME_2021 = 132539328000000000


_TICKS_PER_SECOND = 10_000_000


_ZEROS = bytes(CHUNK)


_ZERO_WINDOW = hashlib.sha256(bytes(WINDOW)).hexdigest()


_U64 = np.dtype("<u8")


_SIZE_RE = re.compile(r"^\s*(0x[0-9a-f]+|\d+)\s*([kmgtp]?)(i?b)?\s*$", re.IGNORECASE)


_SUFFIX = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50}


def parse_size(text: str | int) -> int:
    """``4096``, ``0x1000``, ``64K``, ``64M``, ``1G``, ``2TiB`` -> bytes (binary multiples)."""
    if isinstance(text, int):
        if text < 0:
            raise UsageError(f"size {text} is negative")
        return text
    match = _SIZE_RE.match(text)
    if not match:
        raise UsageError(f"{text!r} is not a size (e.g. 4096, 0x1000, 64K, 64M, 1G)")
    number, suffix = match.group(1), match.group(2).lower()
    return int(number, 0) << _SUFFIX[suffix]


def parse_state(state: str | int | None, volume_size: int, sector_size: int) -> int:
    """Encrypted bytes for ``state``: None / ``"encrypted"`` = all; ``"partial:OFFSET"`` or an int
    = a conversion stopped at OFFSET (sector aligned, inside the volume)."""
    if state is None:
        return volume_size
    if isinstance(state, str):
        text = state.strip().lower()
        if text in ("encrypted", "full"):
            return volume_size
        if not text.startswith("partial:"):
            raise UsageError(f"state {state!r}: expected 'encrypted' or 'partial:OFFSET'")
        offset = parse_size(text.split(":", 1)[1])
    else:
        offset = int(state)
    if offset % sector_size:
        raise UsageError(f"partial state offset {offset} is not a multiple of the sector size "
                         f"({sector_size})")
    if not HEADER_BLOCK <= offset <= volume_size:
        raise UsageError(f"partial state offset {offset} is outside the volume "
                         f"({HEADER_BLOCK}..{volume_size})")
    return offset


def default_manifest_path(image: str | os.PathLike[str]) -> Path:
    """``IMAGE.manifest.json`` next to the image."""
    path = Path(image)
    return path.with_name(path.name + ".manifest.json")




def _method(method: str | int | EncryptionMethod) -> EncryptionMethod:
    try:
        if isinstance(method, str):
            value = EncryptionMethod.from_label(method.replace("_", "-"))
        else:
            value = EncryptionMethod(int(method))
    except ValueError as exc:
        raise UsageError(str(exc) if isinstance(method, str)
                         else f"unknown encryption method {method!r}") from None
    if value == EncryptionMethod.NONE:
        raise UsageError("synthetic images need an encryption method, not 'none'")
    return value


class SeededRandom:
    """A deterministic byte stream: AES-256-CTR keystream keyed by SHA-256(seed, label)."""

    def __init__(self, seed: int | str, label: str) -> None:
        key = hashlib.sha256(f"bdekit-synth:{label}:{seed}".encode()).digest()
        self._ctx = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()

    def bytes(self, n: int) -> bytes:
        return self._ctx.update(bytes(n)) if n else b""

    def randbelow(self, n: int) -> int:
        """Uniform in [0, n) (bias below 2**-64)."""
        return int.from_bytes(self.bytes(16), "little") % n

    def guid(self) -> uuid.UUID:
        """A version-4 GUID."""
        return uuid.UUID(bytes=self.bytes(16), version=4)


class NonceSource:
    """Hands out BitLocker AES-CCM nonces (FILETIME + increasing counter) and a clock.

    Calling the object (or :meth:`next`) returns the next 12-byte nonce; :meth:`wrap` builds an
    AES-CCM datum; :meth:`tick` advances the clock (protectors are created a little apart, as
    on Windows); :meth:`random` draws deterministic bytes for protectors that need them.
    """

    def __init__(self, seed: int | str, counter: int = 1) -> None:
        self._rng = SeededRandom(seed, "clock")
        start = _FILETIME_2021 + self._rng.randbelow(3 * 365 * 86400) * _TICKS_PER_SECOND
        self.filetime = start + self._rng.randbelow(_TICKS_PER_SECOND)
        self.counter = counter
        self._random = SeededRandom(seed, "nonce-source")

    def tick(self, max_seconds: float = 2.0) -> int:
        """Advance the clock by up to ``max_seconds``; returns the new FILETIME."""
        self.filetime += 1 + self._rng.randbelow(int(max_seconds * _TICKS_PER_SECOND))
        return self.filetime

    def next(self, filetime: int | None = None) -> bytes:
        nonce = keys.make_nonce(self.filetime if filetime is None else filetime, self.counter)
        self.counter += 1
        return nonce

    __call__ = next

    def wrap(self, key: bytes, inner: Container, role: int = 0,
             filetime: int | None = None) -> Container:
        """An AES-CCM datum (type 5, version 1) holding ``inner`` encrypted under ``key``."""
        return aes_ccm_datum(key, self.next(filetime), inner, role)

    def random(self, n: int) -> bytes:
        return self._random.bytes(n)


def key_datum(key: bytes, key_type: int, role: int = 0, version: int = 1) -> Container:
    """A key datum (type 1): version 1 in the clear (clear key, BEK file)."""
    return Container(role=role, type=int(DatumType.KEY), version=version,
                     body=Container(key_type=int(key_type), key_flags=0, key=bytes(key)))


def payload_key(key: bytes, key_type: int) -> Container:
    """The key datum inside an AES-CCM datum: Windows writes these with version 0."""
    return key_datum(key, key_type, version=0)


def unicode_datum(text: str, role: int = 0) -> Container:
    """A unicode datum (type 2, version 1): UTF-16LE with a terminating NUL."""
    return Container(role=role, type=int(DatumType.UNICODE), version=1,
                     body=Container(data=(text + "\0").encode("utf-16-le")))


def aes_ccm_datum(key: bytes, nonce: bytes, inner: Container, role: int = 0) -> Container:
    """An AES-CCM encrypted key datum (type 5, version 1) of the datum ``inner``."""
    mac, data = keys.aes_ccm_encrypt(key, nonce, structs.DATUM.build(inner))
    return Container(role=role, type=int(DatumType.AES_CCM_ENCRYPTED_KEY), version=1,
                     body=Container(nonce=bytes(nonce), mac=mac, data=data))


def vmk_datum(guid: uuid.UUID, modified_time: int, protection: int,
              children: Sequence[Container], version: int = 1) -> Container:
    """A VMK protector datum (role 2, type 8)."""
    return Container(role=int(DatumRole.VOLUME_MASTER_KEY), type=int(DatumType.VOLUME_MASTER_KEY),
                     version=version,
                     body=Container(guid=guid, modified_time=modified_time, unknown=0,
                                    protection=int(protection), datums=ListContainer(children)))


def build_metadata_block(block_header: Any, dataset_header: Any,
                         datums: Sequence[Container]) -> bytes:
    """The padded FVE metadata block: 64-byte block header, dataset header, datums, zeros to a
    multiple of 16.  The size fields (block size: 16-byte units on v2, bytes on v1; dataset size
    and copy size) are computed here; every other field is taken from the arguments."""
    body = b"".join(structs.DATUM.build(d) for d in datums)
    dataset = dict(dataset_header)
    dataset.pop("_io", None)
    dataset["size"] = dataset["copy_size"] = structs.DATASET_HEADER.sizeof() + len(body)
    padded = round_up(structs.FVE_BLOCK_HEADER.sizeof() + dataset["size"], 16)
    header = dict(block_header)
    header.pop("_io", None)
    header["size"] = padded // 16 if header["version"] >= 2 else padded
    block = (structs.FVE_BLOCK_HEADER.build(header) + structs.DATASET_HEADER.build(dataset)
             + body)
    return block + bytes(padded - len(block))


def validation_bytes(block: bytes, vmk: bytes, nonce: bytes, version: int = 2) -> bytes:
    """What follows a padded block: validation header (u16 0, u16 version, CRC32 of the block)
    and the AES-CCM datum (under the VMK) of the key datum holding SHA-256(block)."""
    header = structs.VALIDATION_HEADER.build(
        Container(unknown=0, version=version, crc32=zlib.crc32(block)))
    digest = payload_key(hashlib.sha256(block).digest(), KEY_TYPE_VALIDATION)
    return header + structs.DATUM.build(aes_ccm_datum(vmk, nonce, digest))


def build_bek(guid: uuid.UUID, key: bytes, filetime: int) -> bytes:
    """A startup key file (``{GUID}.BEK``) in Windows' layout."""
    external = Container(
        role=int(DatumRole.STARTUP_KEY), type=int(DatumType.EXTERNAL_KEY), version=1,
        body=Container(guid=guid, modified_time=filetime, datums=ListContainer([
            unicode_datum("ExternalKey"), key_datum(key, KEY_TYPE_EXTERNAL)])))
    body = structs.DATUM.build(external)
    size = structs.DATASET_HEADER.sizeof() + len(body)
    header = Container(size=size, version=1, header_size=48, copy_size=size, volume_guid=guid,
                       nonce_counter=1, method=0, method_flags=0, creation_time=filetime)
    return structs.DATASET_HEADER.build(header) + body


def ntfs_boot_sector(volume_size: int, sector_size: int, serial: int = 0,
                     hidden_sectors: int = 0) -> bytes:
    """An NTFS-like boot sector whose BPB gives the volume size (total sectors + 1)."""
    spc = max(1, 4096 // sector_size)
    clusters = volume_size // (sector_size * spc)
    prefix = Container(
        jump=b"\xeb\x52\x90", oem_id=b"NTFS    ", bytes_per_sector=sector_size,
        sectors_per_cluster=spc, reserved_sectors=0, fat_count=0, root_entries=0,
        total_sectors_16=0, media_descriptor=0xF8, sectors_per_fat_16=0, sectors_per_track=63,
        heads=255, hidden_sectors=hidden_sectors, total_sectors_32=0, unknown_36=0x00800080,
        total_sectors_64=volume_size // sector_size - 1, mft_cluster=max(4, clusters // 3),
        metadata_lcn=2)
    sector = bytearray(sector_size)
    sector[:64] = structs.BOOT_SECTOR_PREFIX.build(prefix)
    sector[0x40] = 0xF6  # clusters per MFT record: 2**10 bytes
    sector[0x44] = 0x01  # clusters per index block
    struct.pack_into("<Q", sector, 0x48, serial)
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def build_volume_header(sector_size: int, metadata_offsets: Sequence[int],
                        hidden_sectors: int = 0) -> bytes:
    """The Windows 7+ BitLocker volume header (FAT32-style BPB, GUID record at 160)."""
    spc = max(1, 4096 // sector_size)
    prefix = Container(
        jump=b"\xeb\x58\x90", oem_id=b"-FVE-FS-", bytes_per_sector=sector_size,
        sectors_per_cluster=spc, reserved_sectors=0, fat_count=0, root_entries=0,
        total_sectors_16=0, media_descriptor=0xF8, sectors_per_fat_16=0, sectors_per_track=63,
        heads=255, hidden_sectors=hidden_sectors, total_sectors_32=0,
        unknown_36=0x1FE0,  # FAT32 sectors per FAT, as Windows writes it
        total_sectors_64=0,  # FAT32 flags, version, root cluster
        mft_cluster=0x00060001,  # FAT32 FSInfo sector 1, backup boot sector 6
        metadata_lcn=0)
    boot1 = bytearray(structs.GUID_RECORD_OFFSET - 64)
    boot1[0] = 0x80  # drive number
    boot1[2] = 0x29  # extended boot signature
    boot1[7:18] = b"NO NAME    "
    boot1[18:26] = b"FAT32   "
    header = Container(
        prefix=prefix, boot_code_1=bytes(boot1),
        record=Container(guid=BITLOCKER_GUID, metadata_offsets=list(metadata_offsets),
                         eow_offsets=[0, 0]),
        boot_code_2=bytes(510 - structs.GUID_RECORD_OFFSET - structs.EOW_GUID_RECORD.sizeof()))
    sector = structs.WIN7_VOLUME_HEADER.build(header)
    return sector + bytes(sector_size - len(sector))


def encrypt_sectors(cipher: ciphers.SectorCipher, plaintext: bytes | bytearray | memoryview
                    | np.ndarray, offset: int) -> bytes:
    """Ciphertext of whole sectors whose first lies at physical byte ``offset`` of the volume.

    The one encryption path of the builder (the Windows-compatibility tests re-encrypt the
    real images' plaintext through it)."""
    out = bytearray(len(memoryview(plaintext).cast("B")))
    cipher.encrypt(plaintext, out, offset)
    return bytes(out)


@runtime_checkable
class SynthProtector(Protocol):
    """What :func:`build` needs of a protector (the extension point).

    ``build_datum`` returns the VMK datum (role 2, type 8) as a construct ``Container``; it
    wraps the VMK under its own key with ``nonces.wrap(key, payload_key(vmk, 0x2003))`` (or draws
    nonces by calling ``nonces()``).  ``manifest()`` returns the protector's manifest entry
    (``type``, ``guid`` and the secret).  Optional: ``check_files(force)`` before the build and
    ``write_files(manifest_dir)`` after it, for protectors that write files.
    """

    guid: uuid.UUID
    protection: int

    def build_datum(self, vmk: bytes, nonces: NonceSource) -> Container: ...

    def manifest(self) -> dict[str, Any]: ...


def _guid_text(guid: uuid.UUID) -> str:
    return str(guid).upper()


@dataclasses.dataclass
class RecoveryPasswordSpec:
    """A recovery password protector; ``value=None`` generates one from the seed."""

    value: str | None = None

    def prepare(self, rng: SeededRandom) -> _RecoveryPasswordProtector:
        guid = rng.guid()
        salt = rng.bytes(16)
        generated = keys.format_recovery_password(rng.bytes(16))
        text = self.value if self.value is not None else generated
        recovery_key = keys.parse_recovery_password(text)
        return _RecoveryPasswordProtector(guid, keys.format_recovery_password(recovery_key),
                                          recovery_key, salt)


@dataclasses.dataclass
class PasswordSpec:
    """A user password protector."""

    password: str

    def prepare(self, rng: SeededRandom) -> _PasswordProtector:
        if not self.password:
            raise UsageError("a password protector needs a non-empty password")
        return _PasswordProtector(rng.guid(), self.password, rng.bytes(16))


@dataclasses.dataclass
class StartupKeySpec:
    """A startup key protector; its ``{GUID}.BEK`` file is written into ``directory``."""

    directory: str | os.PathLike[str]

    def prepare(self, rng: SeededRandom) -> _StartupKeyProtector:
        return _StartupKeyProtector(rng.guid(), rng.bytes(32), Path(self.directory))


@dataclasses.dataclass
class ClearKeySpec:
    """A clear key (protection suspended): the VMK is readable without any secret."""

    def prepare(self, rng: SeededRandom) -> _ClearKeyProtector:
        return _ClearKeyProtector(rng.guid(), rng.bytes(32))


@dataclasses.dataclass
class _RecoveryPasswordProtector:
    guid: uuid.UUID
    password: str
    recovery_key: bytes
    salt: bytes
    protection: int = ProtectionType.RECOVERY_PASSWORD
    key: bytes = b""

    def build_datum(self, vmk: bytes, nonces: NonceSource) -> Container:
        self.key = keys.stretch_key(keys.recovery_password_hash(self.recovery_key), self.salt)
        stretch = Container(role=0, type=int(DatumType.STRETCH_KEY), version=1, body=Container(
            key_type=STRETCH_TYPE_RECOVERY, key_flags=0, salt=self.salt, datums=ListContainer([
                nonces.wrap(vmk, payload_key(self.recovery_key, KEY_TYPE_RECOVERY_KEY),
                            ROLE_RECOVERY_KEY_ESCROW),
                nonces.wrap(vmk, payload_key(self.key, KEY_TYPE_RECOVERY_ESCROW),
                            ROLE_STRETCHED_KEY_ESCROW)])))
        children = [unicode_datum("DiskPassword"), stretch,
                    nonces.wrap(self.key, payload_key(vmk, KEY_TYPE_VMK))]
        return vmk_datum(self.guid, nonces.tick(), self.protection, children)

    def manifest(self) -> dict[str, Any]:
        return {"type": "recovery-password", "guid": _guid_text(self.guid),
                "key_id": keys.key_id(self.guid), "protection": int(self.protection),
                "recovery_password": self.password, "recovery_key": self.recovery_key.hex(),
                "salt": self.salt.hex(), "protector_key": self.key.hex()}


@dataclasses.dataclass
class _PasswordProtector:
    guid: uuid.UUID
    password: str
    salt: bytes
    protection: int = ProtectionType.PASSWORD
    key: bytes = b""

    def build_datum(self, vmk: bytes, nonces: NonceSource) -> Container:
        self.key = keys.stretch_key(keys.password_hash(self.password), self.salt)
        stretch = Container(role=0, type=int(DatumType.STRETCH_KEY), version=1, body=Container(
            key_type=STRETCH_TYPE_PASSWORD, key_flags=0, salt=self.salt, datums=ListContainer([
                nonces.wrap(vmk, payload_key(self.key, KEY_TYPE_PASSWORD_ESCROW))])))
        children = [stretch, nonces.wrap(self.key, payload_key(vmk, KEY_TYPE_VMK))]
        return vmk_datum(self.guid, nonces.tick(), self.protection, children)

    def manifest(self) -> dict[str, Any]:
        return {"type": "password", "guid": _guid_text(self.guid),
                "key_id": keys.key_id(self.guid), "protection": int(self.protection),
                "password": self.password, "salt": self.salt.hex(),
                "protector_key": self.key.hex()}


@dataclasses.dataclass
class _StartupKeyProtector:
    guid: uuid.UUID
    key: bytes
    directory: Path
    protection: int = ProtectionType.STARTUP_KEY
    filetime: int = 0
    manifest_dir: Path | None = None

    @property
    def path(self) -> Path:
        return self.directory / ("{" + _guid_text(self.guid) + "}.BEK")

    def build_datum(self, vmk: bytes, nonces: NonceSource) -> Container:
        self.filetime = nonces.filetime
        use = Container(role=0, type=int(DatumType.USE_KEY), version=1, body=Container(
            key_type=KEY_TYPE_EXTERNAL, key_flags=0, datums=ListContainer([
                nonces.wrap(vmk, payload_key(self.key, KEY_TYPE_EXTERNAL))])))
        children = [unicode_datum("ExternalKey"), use,
                    nonces.wrap(self.key, payload_key(vmk, KEY_TYPE_VMK))]
        return vmk_datum(self.guid, nonces.tick(), self.protection, children)

    def bek(self) -> bytes:
        return build_bek(self.guid, self.key, self.filetime)

    def check_files(self, force: bool) -> None:
        if self.directory.exists() and not self.directory.is_dir():
            raise UsageError(f"startup key directory {self.directory} is not a directory")
        if self.path.exists() and not force and self.path.read_bytes() != self.bek():
            raise OutputExistsError(f"{self.path} exists with another key (use --force to "
                                    "overwrite)", path=self.path)

    def write_files(self, manifest_dir: Path) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_bytes(self.bek())
        os.replace(tmp, self.path)
        self.manifest_dir = manifest_dir

    def manifest(self) -> dict[str, Any]:
        where = self.path
        if self.manifest_dir is not None:
            where = Path(os.path.relpath(self.path, self.manifest_dir))
        return {"type": "startup-key", "guid": _guid_text(self.guid),
                "key_id": keys.key_id(self.guid), "protection": int(self.protection),
                "bek_file": str(where), "bek_name": self.path.name,
                "external_key": self.key.hex()}


@dataclasses.dataclass
class _ClearKeyProtector:
    guid: uuid.UUID
    key: bytes
    protection: int = ProtectionType.CLEAR_KEY

    def build_datum(self, vmk: bytes, nonces: NonceSource) -> Container:
        children = [key_datum(self.key, KEY_TYPE_CLEAR),
                    nonces.wrap(self.key, payload_key(vmk, KEY_TYPE_VMK))]
        return vmk_datum(self.guid, nonces.tick(), self.protection, children, version=3)

    def manifest(self) -> dict[str, Any]:
        return {"type": "clear-key", "guid": _guid_text(self.guid),
                "key_id": keys.key_id(self.guid), "protection": int(self.protection),
                "clear_key": self.key.hex()}


def _prepare(spec: Any, seed: int | str, index: int) -> Any:
    if hasattr(spec, "prepare"):
        return spec.prepare(SeededRandom(seed, f"protector:{index}"))
    if all(hasattr(spec, name) for name in ("guid", "protection", "build_datum", "manifest")):
        return spec
    raise UsageError(f"protector {spec!r} has neither prepare() nor guid/protection/"
                     "build_datum()/manifest()")


class _Generated:
    """Deterministic plaintext: a boot sector, its backup, random bytes in the used areas."""

    def __init__(self, seed: int | str, size: int, sector_size: int, used_only: bool) -> None:
        self.size = size
        self.sector_size = sector_size
        key = hashlib.sha256(f"bdekit-synth:plaintext:{seed}".encode()).digest()
        self._aes = algorithms.AES(key)
        serial = int.from_bytes(SeededRandom(seed, "serial").bytes(8), "little")
        self.boot = ntfs_boot_sector(size, sector_size, serial)
        if used_only:
            length = min(960 << 10, max(16 << 10, round_down(size // 64, 16 << 10)))
            starts = sorted({round_down(size * k // 8, SPARSE_BLOCK) for k in range(8)})
            areas = [(s, min(s + length, size)) for s in starts]
        else:
            areas = [(0, size)]
        self.areas = areas
        self.patches = [(0, self.boot), (size - sector_size, self.boot)]

    def describe(self) -> dict[str, Any]:
        return {"kind": "generated", "random_areas": [[a, b - a] for a, b in self.areas]}

    def maybe_nonzero(self, pos: int, n: int) -> bool:
        end = pos + n
        return (any(a < end and pos < b for a, b in self.areas)
                or any(off < end and pos < off + len(d) for off, d in self.patches))

    def fill(self, pos: int, buf: np.ndarray) -> bool:
        n = len(buf)
        end = pos + n
        any_data = False
        cursor = pos
        for a, b in self.areas:
            lo, hi = max(a, pos), min(b, end)
            if lo >= hi:
                continue
            if cursor < lo:
                buf[cursor - pos:lo - pos] = 0
            enc = Cipher(self._aes, modes.CTR((lo // 16).to_bytes(16, "big"))).encryptor()
            for piece in range(lo, hi, CHUNK):
                stop = min(piece + CHUNK, hi)
                # update_into wants 15 bytes of slack after the output: the last block of the
                # piece goes through update() instead
                body = max(0, stop - piece - 16)
                if body:
                    enc.update_into(_ZEROS[:body], buf[piece - pos:stop - pos])
                buf[piece - pos + body:stop - pos] = np.frombuffer(
                    enc.update(_ZEROS[:stop - piece - body]), np.uint8)
            cursor = hi
            any_data = True
        if cursor < end:
            buf[cursor - pos:] = 0
        for off, data in self.patches:
            lo, hi = max(off, pos), min(off + len(data), end)
            if lo < hi:
                buf[lo - pos:hi - pos] = np.frombuffer(data, np.uint8)[lo - off:hi - off]
                any_data = True
        return any_data

    def read(self, pos: int, n: int) -> bytes:
        buf = np.empty(n, np.uint8)
        self.fill(pos, buf)
        return buf.tobytes()

    def is_zero(self, pos: int, n: int) -> bool:
        return not self.maybe_nonzero(pos, n)


class _FileSource:
    """Plaintext from a volume image file (read with ``pread``; never written)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        try:
            self.fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise UsageError(f"cannot open source volume: {exc.strerror}", path=path) from None
        self.size = os.fstat(self.fd).st_size

    def close(self) -> None:
        os.close(self.fd)

    def describe(self) -> dict[str, Any]:
        return {"kind": "file", "path": self.path, "size": self.size}

    def maybe_nonzero(self, pos: int, n: int) -> bool:
        return True

    def fill(self, pos: int, buf: np.ndarray) -> bool:
        got = os.preadv(self.fd, [buf], pos)
        if got < len(buf):
            buf[got:] = 0
        return bool(buf.any())

    def read(self, pos: int, n: int) -> bytes:
        return os.pread(self.fd, n, pos).ljust(n, b"\0")

    def is_zero(self, pos: int, n: int) -> bool:
        step = MiB
        for off in range(pos, pos + n, step):
            if any(self.read(off, min(step, pos + n - off))):
                return False
        return True


@dataclasses.dataclass
class Layout:
    """Where everything lies on the volume (byte offsets)."""

    version: int  # metadata version: 2 (Windows 7+) or 1 (Vista)
    volume_size: int
    sector_size: int
    cluster_size: int
    metadata_offsets: list[int]
    region_size: int  # reserved bytes per metadata copy
    relocated_offset: int  # 0 on Vista
    relocated_size: int  # 0 on Vista
    encrypted_end: int  # the conversion boundary (state offset)

    @property
    def virtualized_sectors(self) -> int:
        return self.relocated_size // self.sector_size

    def reserved(self) -> list[tuple[int, int]]:
        """Ranges that read as zeros in the decrypted volume."""
        out = [(o, self.region_size) for o in self.metadata_offsets]
        if self.relocated_size:
            out.append((self.relocated_offset, self.relocated_size))
        return sorted(out)

    def describe(self) -> dict[str, Any]:
        return {"metadata_version": self.version,
                "header_offset": 0,
                "metadata_offsets": list(self.metadata_offsets),
                "metadata_region_size": self.region_size,
                "relocated_offset": self.relocated_offset or None,
                "relocated_size": self.relocated_size,
                "virtualized_sectors": self.virtualized_sectors,
                "state_offset": self.encrypted_end,
                "cluster_size": self.cluster_size}


def _plan_layout(size: int, ss: int, content: Any, *, vista: bool, search: bool,
                 encrypted_end: int) -> Layout:
    cluster = max(ss, 4096)
    if vista:
        region = round_up(V1_REGION, cluster)
        need = [region] * 3
        reloc_size = 0
    else:
        region = round_up(V2_REGION, ss)
        reloc_size = max(HEADER_BLOCK, ss)
        need = [region + reloc_size, region, region]
    align = 64 << 10
    taken: list[tuple[int, int]] = [(0, HEADER_BLOCK), (size - ss, ss)]
    offsets: list[int] = []
    for k, length in zip((8, 10, 12), need, strict=True):
        target = round_down(size * k // 16, align)
        offsets.append(_find_region(content, target, length, align, size, taken, search))
        taken.append((offsets[-1], length))
    return Layout(version=1 if vista else 2, volume_size=size, sector_size=ss,
                  cluster_size=cluster, metadata_offsets=offsets, region_size=region,
                  relocated_offset=0 if vista else offsets[0] + region,
                  relocated_size=reloc_size, encrypted_end=encrypted_end)


def _find_region(content: Any, target: int, length: int, align: int, size: int,
                 taken: list[tuple[int, int]], search: bool) -> int:
    """``target`` if free; with ``search``, the nearest aligned all-zero region of the source."""

    def fits(pos: int) -> bool:
        return (HEADER_BLOCK <= pos and pos + length <= size - HEADER_BLOCK
                and all(pos + length <= a or a + n <= pos for a, n in taken))

    candidates = [target]
    if search:
        steps = size // align + 1
        for i in range(1, steps):
            candidates += [target + i * align, target - i * align]
    first_fit = None
    for pos in candidates:
        if not fits(pos):
            continue
        if first_fit is None:
            first_fit = pos
        if not search or content.is_zero(pos, length):
            return pos
    if first_fit is None:
        raise UsageError(f"volume of {size} bytes is too small for the metadata layout")
    log.warning("no all-zero region of %d bytes for a metadata copy: its source data at %d is "
                "overwritten", length, first_fit)
    return first_fit


@dataclasses.dataclass
class Manifest:
    """The JSON record of a synthetic image: keys, secrets, layout, plaintext digests, damage."""

    image: str
    method: str
    method_id: int
    sector_size: int
    volume_size: int
    image_size: int
    seed: int | str
    fvek: str
    vmk: str
    volume_guid: str
    description: str
    created: str
    state: dict[str, Any]
    used_only: bool
    source: dict[str, Any]
    protectors: list[dict[str, Any]]
    layout: dict[str, Any]
    reserved: list[list[int]]
    zero_on_disk: list[list[int]]
    window_size: int
    windows: list[str]
    volume_sha256: str | None
    damage: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    format: str = MANIFEST_FORMAT
    format_version: int = MANIFEST_VERSION
    generator: str = f"bdekit {__version__}"
    #: keys of a loaded manifest this class does not know (written back unchanged)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    path: Path | None = dataclasses.field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("path")
        extra = out.pop("extra")
        # scalars first, then the long lists, for a readable file
        order = ["format", "format_version", "generator", "image", "image_size", "seed",
                 "method", "method_id", "sector_size", "volume_size", "volume_guid",
                 "description", "created", "fvek", "vmk", "state", "used_only", "source",
                 "protectors", "layout", "reserved", "zero_on_disk", "damage", "window_size",
                 "volume_sha256", "windows"]
        result = {key: out[key] for key in order}
        result.update((k, v) for k, v in extra.items() if k not in result)
        return result

    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write atomically (temporary name, rename)."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise UsageError("manifest path unknown")
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, target)
        self.path = target
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Manifest:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read manifest: {exc}", path=path) from None
        if data.get("format") != MANIFEST_FORMAT:
            raise UsageError("not a bdekit synth manifest", path=path)
        fields = {f.name for f in dataclasses.fields(cls)} - {"path", "extra"}
        manifest = cls(**{k: v for k, v in data.items() if k in fields})
        manifest.extra = {k: v for k, v in data.items() if k not in fields}
        manifest.path = Path(path)
        return manifest

    @property
    def image_path(self) -> Path:
        base = self.path.parent if self.path is not None else Path.cwd()
        return base / self.image

    def protector(self, kind: str) -> dict[str, Any]:
        """The first protector entry of ``kind`` (``recovery-password``, ``password`` ...)."""
        for entry in self.protectors:
            if entry.get("type") == kind:
                return entry
        raise KeyError(kind)


def window_digests(read: Callable[[int, int], bytes], volume_size: int,
                   zero_on_disk: Iterable[Sequence[int]] = (),
                   window: int = WINDOW) -> list[str]:
    """Per-window SHA-256 of a decrypted volume as the manifest defines them: ``read(offset,
    length)`` returns decrypted bytes; ranges that are zero on disk are zeroed first."""
    zeros = sorted((int(a), int(n)) for a, n in zero_on_disk)
    out: list[str] = []
    for start in range(0, volume_size, window):
        length = min(window, volume_size - start)
        data = bytearray(read(start, length))
        data.extend(bytes(length - len(data)))
        for a, n in zeros:
            lo, hi = max(a, start), min(a + n, start + length)
            if lo < hi:
                data[lo - start:hi - start] = bytes(hi - lo)
        out.append(hashlib.sha256(data).hexdigest())
    return out


@dataclasses.dataclass
class _ChunkResult:
    pos: int
    n: int
    digests: list[str]
    view: np.ndarray | None  # plaintext view (None: all zero)
    writes: list[tuple[int, memoryview]]
    zero_runs: list[tuple[int, int]]


class _Streamer:
    def __init__(self, *, content: Any, layout: Layout, cipher: ciphers.SectorCipher,
                 overlays: list[tuple[int, bytes]], used_only: bool, chunk: int) -> None:
        self.content = content
        self.layout = layout
        self.cipher = cipher
        self.overlays = sorted(overlays)
        self.used_only = used_only
        self.size = layout.volume_size
        self.ss = layout.sector_size
        self.enc_end = layout.encrypted_end
        self.reserved = layout.reserved()
        self.chunk = chunk
        # bytes never encrypted from the plaintext in place (overlaid): header block, copies,
        # relocated block
        self.covered = sorted([(0, HEADER_BLOCK), *self.reserved])

    def _intersects(self, ranges: Iterable[tuple[int, int]], pos: int, n: int) -> bool:
        return any(a < pos + n and pos < a + length for a, length in ranges)

    def process(self, pos: int) -> _ChunkResult:
        n = min(self.chunk, self.size - pos)
        ss = self.ss
        enc_n = max(0, min(n, self.enc_end - pos))
        overlays = [(o, d) for o, d in self.overlays if o < pos + n and pos < o + len(d)]
        if not self.content.maybe_nonzero(pos, n) and not overlays and (
                self.used_only or enc_n == 0):
            zero_runs = self._zero_runs_all(pos, enc_n)
            return _ChunkResult(pos, n, self._zero_digests(pos, n), None, [], zero_runs)
        plain = np.empty(n, np.uint8)
        nonzero = self.content.fill(pos, plain)
        for a, length in self.reserved:
            lo, hi = max(a, pos), min(a + length, pos + n)
            if lo < hi:
                plain[lo - pos:hi - pos] = 0
        digests = self._digests(pos, plain) if nonzero else self._zero_digests(pos, n)
        out = np.empty(n, np.uint8) if enc_n == n and not self.used_only else np.zeros(n, np.uint8)
        zero_runs: list[tuple[int, int]] = []
        if enc_n:
            if self.used_only:
                sectors = plain[:enc_n].view(_U64).reshape(-1, ss // 8).any(axis=1)
                self._mark_covered(sectors, pos)
                if sectors.any():
                    self.cipher.encrypt(plain[:enc_n], out[:enc_n], pos)
                    out[:enc_n].reshape(-1, ss)[~sectors] = 0
                zero_runs = _runs(~sectors, pos, ss)
            else:
                self.cipher.encrypt(plain[:enc_n], out[:enc_n], pos)
        if enc_n < n:
            out[enc_n:] = plain[enc_n:]
        for off, data in overlays:
            lo, hi = max(off, pos), min(off + len(data), pos + n)
            out[lo - pos:hi - pos] = np.frombuffer(data, np.uint8)[lo - off:hi - off]
        return _ChunkResult(pos, n, digests, plain if nonzero else None,
                            _sparse_writes(out, pos), zero_runs)

    def _mark_covered(self, sectors: np.ndarray, pos: int) -> None:
        """Overlaid sectors are never "zero on disk": mark them as data."""
        ss = self.ss
        end = pos + len(sectors) * ss
        for a, length in self.covered:
            lo, hi = max(a, pos), min(a + length, end)
            if lo < hi:
                sectors[(lo - pos) // ss:round_up(hi - pos, ss) // ss] = True

    def _zero_runs_all(self, pos: int, enc_n: int) -> list[tuple[int, int]]:
        if not enc_n:
            return []
        sectors = np.zeros(enc_n // self.ss, dtype=bool)
        self._mark_covered(sectors, pos)
        return _runs(~sectors, pos, self.ss)

    def _zero_digests(self, pos: int, n: int) -> list[str]:
        out = []
        for w in range(0, n, WINDOW):
            length = min(WINDOW, n - w)
            out.append(_ZERO_WINDOW if length == WINDOW
                       else hashlib.sha256(_ZEROS[:length]).hexdigest())
        return out

    def _digests(self, pos: int, plain: np.ndarray) -> list[str]:
        return [hashlib.sha256(plain[w:w + WINDOW]).hexdigest()
                for w in range(0, len(plain), WINDOW)]


def _runs(mask: np.ndarray, pos: int, ss: int) -> list[tuple[int, int]]:
    """(offset, length) byte runs of the True sectors of ``mask``."""
    if not mask.any():
        return []
    m = mask.astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], m, [0]))))
    return [(pos + int(a) * ss, int(b - a) * ss) for a, b in zip(edges[::2], edges[1::2],
                                                                   strict=True)]


def _sparse_writes(out: np.ndarray, pos: int) -> list[tuple[int, memoryview]]:
    """Runs of ``out`` made of 64 KiB blocks that are not all zero."""
    n = len(out)
    full = n // SPARSE_BLOCK * SPARSE_BLOCK
    flags = out[:full].view(_U64).reshape(-1, SPARSE_BLOCK // 8).any(axis=1).tolist()
    if full < n:
        flags.append(bool(out[full:].any()))
    writes: list[tuple[int, memoryview]] = []
    mv = memoryview(out)
    start = None
    for i, flag in enumerate([*flags, False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            a, b = start * SPARSE_BLOCK, min(i * SPARSE_BLOCK, n)
            writes.append((pos + a, mv[a:b]))
            start = None
    return writes


def _merge(runs: Iterable[tuple[int, int]]) -> list[list[int]]:
    out: list[list[int]] = []
    for a, n in runs:
        if out and out[-1][0] + out[-1][1] == a:
            out[-1][1] += n
        else:
            out.append([a, n])
    return out


def build(output: str | os.PathLike[str], *, size: int | str | None = None,
          method: str | int | EncryptionMethod = "aes-xts-128", sector_size: int = 512,
          seed: int | str = 0, source: str | os.PathLike[str] | None = None,
          used_only: bool = False, protectors: Sequence[Any] | None = None,
          state: str | int | None = None, description: str | None = None,
          vista: bool = False, force: bool = False,
          manifest: str | os.PathLike[str] | None = None, threads: int | None = None,
          chunk_size: int = CHUNK,
          progress: Callable[[int, int], None] | None = None) -> Manifest:
    """Write a synthetic BitLocker image to ``output`` and its manifest; return the manifest.

    ``size``: bytes or a string like ``64M`` (from ``source`` when given: its size is the
    volume size).  ``protectors``: specs (:class:`RecoveryPasswordSpec`, :class:`PasswordSpec`,
    :class:`StartupKeySpec`, :class:`ClearKeySpec`) or :class:`SynthProtector` objects; none
    means one generated recovery password.  ``state``: None (fully encrypted) or
    ``"partial:OFFSET"``.  ``progress(done, total)`` is called after each chunk.
    """
    out_path = Path(output)
    manifest_path = Path(manifest) if manifest is not None else default_manifest_path(out_path)
    meth = _method(method)
    if sector_size not in (512, 1024, 2048, 4096):
        raise UsageError(f"sector size {sector_size} is not 512, 1024, 2048 or 4096")
    if vista and meth in (EncryptionMethod.AES_128_XTS, EncryptionMethod.AES_256_XTS):
        raise UsageError("the Vista layout supports the CBC methods only (with or without "
                         "diffuser), not XTS")
    if chunk_size % WINDOW or chunk_size <= 0:
        raise UsageError(f"chunk size must be a positive multiple of {WINDOW}")
    for path in (out_path, manifest_path):
        if path.exists() and not force:
            raise OutputExistsError(f"{path} exists (use --force to overwrite)", path=path)
    src = _FileSource(source) if source is not None else None
    try:
        if src is not None:
            vol_size = src.size
            if size is not None and parse_size(size) != vol_size:
                raise UsageError(f"--size {size} differs from the source volume's size "
                                 f"({vol_size}); leave --size out with --from")
            if vol_size % sector_size:
                raise UsageError(f"source volume size {vol_size} is not a multiple of the "
                                 f"sector size {sector_size}")
        else:
            if size is None:
                raise UsageError("give a size (or a source volume)")
            vol_size = parse_size(size)
            if vol_size % sector_size:
                raise UsageError(f"size {vol_size} is not a multiple of the sector size "
                                 f"{sector_size}")
        if vol_size < MIN_SIZE:
            raise UsageError(f"size {vol_size} is below the minimum of {MIN_SIZE} bytes")
        if os.path.abspath(out_path) == (os.path.abspath(src.path) if src else None):
            raise OutputExistsError("the output is the source volume", path=out_path)
        return _build(out_path, manifest_path, meth, vol_size, sector_size, seed, src,
                      used_only, list(protectors) if protectors else [RecoveryPasswordSpec()],
                      state, description, vista, force, threads, chunk_size, progress)
    finally:
        if src is not None:
            src.close()


def _build(out_path: Path, manifest_path: Path, meth: EncryptionMethod, size: int, ss: int,
           seed: int | str, src: _FileSource | None, used_only: bool, specs: list[Any],
           state: str | int | None, description: str | None, vista: bool, force: bool,
           threads: int | None, chunk: int,
           progress: Callable[[int, int], None] | None) -> Manifest:
    encrypted_end = parse_state(state, size, ss)
    if vista and encrypted_end < size:
        raise UsageError("--state partial is not supported with the Vista layout (its readers "
                         "ignore the conversion boundary of metadata version 1)")
    content: Any = src if src is not None else _Generated(seed, size, ss, used_only)
    layout = _plan_layout(size, ss, content, vista=vista, search=src is not None,
                          encrypted_end=encrypted_end)
    volume_rng = SeededRandom(seed, "volume")
    fvek = SeededRandom(seed, "fvek").bytes(meth.fvek_size)
    vmk = volume_rng.bytes(32)
    volume_guid = volume_rng.guid()
    nonces = NonceSource(seed)
    created = nonces.filetime
    if description is None:
        when = _filetime_datetime(created)
        description = f"BDEKIT-SYNTH SyntheticVolume {when.month}/{when.day}/{when.year}"
    prepared = [_prepare(spec, seed, i) for i, spec in enumerate(specs)]

    # -- metadata ------------------------------------------------------------------------
    nonces.tick(60.0)
    datums: list[Container] = [unicode_datum(description, int(DatumRole.DESCRIPTION))]
    for prot in prepared:
        nonces.tick(10.0)
        datums.append(prot.build_datum(vmk, nonces))
    nonces.tick(5.0)
    datums.append(nonces.wrap(vmk, payload_key(fvek, int(meth)),
                              int(DatumRole.FULL_VOLUME_ENCRYPTION_KEY)))
    if not vista:
        datums.append(Container(role=int(DatumRole.VIRTUALIZATION_INFO),
                                type=int(DatumType.VIRTUALIZATION_INFO), version=1,
                                body=Container(offset=layout.relocated_offset,
                                               size=layout.relocated_size, rest=b"")))
    validation_ft = nonces.tick(1.0) | ((1 << 63) if not vista else 0)
    validation_nonce = nonces.next(validation_ft)
    first = content.read(0, HEADER_BLOCK)
    hidden = structs.BOOT_SECTOR_PREFIX.parse(first[:64]).hidden_sectors \
        if first[510:512] == b"\x55\xaa" else 0
    partial = encrypted_end < size
    block_header = Container(
        size=0, version=layout.version,
        current_state=int(VolumeState.PAUSED if partial else VolumeState.ENCRYPTED),
        next_state=int(VolumeState.ENCRYPTED),
        state_offset=encrypted_end if not vista else 0, state_size=0,
        virtualized_sectors=layout.virtualized_sectors,
        metadata_offsets=list(layout.metadata_offsets),
        virtualized_offset=layout.relocated_offset)
    if vista:
        block_header.virtualized_offset = structs.BOOT_SECTOR_PREFIX.parse(
            first[:64]).metadata_lcn  # the NTFS MFT mirror cluster
    dataset_header = Container(size=0, version=1, header_size=48, copy_size=0,
                               volume_guid=volume_guid, nonce_counter=nonces.counter,
                               method=int(meth), method_flags=0, creation_time=created)
    block = build_metadata_block(block_header, dataset_header, datums)
    copy = block + validation_bytes(block, vmk, validation_nonce, version=layout.version)
    if len(copy) > layout.region_size:
        raise UsageError(f"metadata ({len(copy)} bytes) does not fit its {layout.region_size}-"
                         "byte region: too many protectors")
    region = copy + bytes(layout.region_size - len(copy))
    for prot in prepared:
        check = getattr(prot, "check_files", None)
        if check is not None:
            check(force)

    # -- overlays: header, metadata copies, relocated block ------------------------------
    cipher = ciphers.make_cipher(meth, fvek, ss)
    overlays: list[tuple[int, bytes]] = [(off, region) for off in layout.metadata_offsets]
    if vista:
        head = bytearray(first)
        head[3:11] = b"-FVE-FS-"
        lcn = layout.metadata_offsets[0] // layout.cluster_size
        struct.pack_into("<Q", head, 0x38, lcn)
        if head[13] * ss != layout.cluster_size:
            raise UsageError("the Vista layout needs a source with 4 KiB clusters")
        overlays.append((0, bytes(head)))
    else:
        header = build_volume_header(ss, layout.metadata_offsets, hidden)
        noise = SeededRandom(seed, "header-noise").bytes(HEADER_BLOCK - ss)
        overlays.append((0, header + noise))
        overlays.append((layout.relocated_offset,
                         encrypt_sectors(cipher, first, layout.relocated_offset)))

    streamer = _Streamer(content=content, layout=layout, cipher=cipher, overlays=overlays,
                         used_only=used_only, chunk=chunk)
    tmp = out_path.with_name(f".{out_path.name}.synth-{os.getpid()}.tmp")
    windows: list[str] = []
    zero_runs: list[tuple[int, int]] = []
    whole = hashlib.sha256()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _stream(streamer, fd, size, chunk, threads, windows, zero_runs, whole, progress)
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    layout_info = layout.describe()
    layout_info["metadata_block_size"] = len(block)
    layout_info["metadata_copy_size"] = len(copy)
    manifest_dir = manifest_path.resolve().parent
    for prot in prepared:
        writer = getattr(prot, "write_files", None)
        if writer is not None:
            writer(manifest_dir)
    zero_list = _merge(zero_runs)
    source_info = content.describe()
    if src is not None:
        source_info["path"] = os.path.relpath(os.path.abspath(src.path), manifest_dir)
    result = Manifest(
        image=os.path.relpath(out_path.resolve(), manifest_dir),
        method=meth.label, method_id=int(meth), sector_size=ss, volume_size=size,
        image_size=size, seed=seed, fvek=fvek.hex(), vmk=vmk.hex(),
        volume_guid=_guid_text(volume_guid), description=description,
        created=_filetime_datetime(created).isoformat(),
        state={"current": int(block_header.current_state),
               "next": int(block_header.next_state),
               "encrypted_bytes": encrypted_end, "partial": partial},
        used_only=used_only, source=source_info,
        protectors=[prot.manifest() for prot in prepared],
        layout=layout_info, reserved=[[a, n] for a, n in layout.reserved()],
        zero_on_disk=zero_list, window_size=WINDOW, windows=windows,
        volume_sha256=None if used_only else whole.hexdigest())
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    result.save(manifest_path)
    return result


def _stream(streamer: _Streamer, fd: int, size: int, chunk: int, threads: int | None,
            windows: list[str], zero_runs: list[tuple[int, int]], whole: Any,
            progress: Callable[[int, int], None] | None) -> None:
    workers = threads or min(4, os.cpu_count() or 1)
    hash_whole = not streamer.used_only
    pending: collections.deque[Future[_ChunkResult]] = collections.deque()
    positions = iter(range(0, size, chunk))

    def drain_one() -> None:
        res = pending.popleft().result()
        for off, data in res.writes:
            view = data
            while len(view):
                written = os.pwrite(fd, view, off)
                view = view[written:]
                off += written
        windows.extend(res.digests)
        zero_runs.extend(res.zero_runs)
        if hash_whole:
            if res.view is not None:
                whole.update(res.view)
            else:
                for k in range(0, res.n, CHUNK):
                    whole.update(_ZEROS[:min(CHUNK, res.n - k)])
        if progress is not None:
            progress(res.pos + res.n, size)

    if workers <= 1:
        for pos in positions:
            fut: Future[_ChunkResult] = Future()
            fut.set_result(streamer.process(pos))
            pending.append(fut)
            drain_one()
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="synth") as pool:
        for pos in positions:
            pending.append(pool.submit(streamer.process, pos))
            if len(pending) >= 2 * workers:
                drain_one()
        while pending:
            drain_one()


def _filetime_datetime(filetime: int) -> dt.datetime:
    return dt.datetime(1601, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=filetime // 10)

