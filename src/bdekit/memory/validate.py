"""Checking candidate keys against the volume before anything is reported.

* A VMK is right when it opens the FVEK datum (role 3): the AES-CCM MAC proves it.
* An FVEK has no MAC. It is right when the volume's sectors decrypt to valid structure: the
  boot sector (Windows 7+: the relocated copy, where it is encrypted) to an NTFS / FAT / exFAT
  boot sector with its 0x55AA signature, OEM name and a sane BPB (a wrong key passes with
  probability far below 2^-64). Where the boot sector is not encrypted (Vista keeps its header
  in plaintext; used-space-only volumes may leave the relocated sectors unencrypted), the
  first MFT record the boot sector names must decrypt to ``FILE`` (or ``BAAD``), or else
  one of up to 16 sampled 4 KiB runs of encrypted sectors whose ciphertext is not all zero
  must decrypt to structure (one byte value filling 1/32 of it; random bytes do that with
  probability ~e^-150). A key that passes no check on an encrypted sector is never accepted;
  a volume with no such sector in the image cannot confirm a raw FVEK (only a VMK, by its
  MAC).

The layout of the volume (relocation, encryption state per region) is taken from the volume
layer by planning reads with a placeholder key; each candidate then only decrypts the few
sectors sampled once.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from bdekit.crypto import ciphers
from bdekit.errors import BdeError, UnsupportedError, WrongKeyError
from bdekit.escrow.secrets import UnlockResult, UnlockVia
from bdekit.format.bootsector import parse_boot_sector
from bdekit.format.constants import EncryptionMethod, VolumeState
from bdekit.unlock.vmk import decrypt_fvek
from bdekit.volume.bde import BdeVolume

log = logging.getLogger(__name__)

#: Encrypted runs sampled when neither the boot sector nor the MFT record decides, and their
#: length in sectors (one decryption call each).
EXTRA_SAMPLES = 16
SAMPLE_SECTORS = 8
WINDOW = 1 << 20
MAX_SAMPLE_SCAN = 256 << 20


@dataclasses.dataclass(frozen=True)
class _Sample:
    what: str
    source: int  # where the ciphertext lies (the sector's IV / tweak position)
    data: bytes
    encrypted: bool


def key_size(method: int) -> int:
    """Bytes of one AES key of ``method`` (16 or 32)."""
    return 16 if method in (0x8000, 0x8002, 0x8004) else 32


def needs_pair(method: int) -> bool:
    """Whether ``method`` uses a data key and a tweak key (XTS, CBC + diffuser)."""
    return method in (0x8000, 0x8001, 0x8004, 0x8005)


def fvek_bytes(method: int, data_key: bytes, tweak_key: bytes | None = None) -> bytes:
    """The FVEK as its key datum holds it: CBC the key; XTS data key + tweak key; diffuser
    two 32-byte halves (AES-128 keys in the first 16 bytes of each)."""
    if method in (0x8000, 0x8001):
        assert tweak_key is not None
        return data_key.ljust(32, b"\0") + tweak_key.ljust(32, b"\0")
    if method in (0x8004, 0x8005):
        assert tweak_key is not None
        return data_key + tweak_key
    return data_key


class Validator:
    """Decides whether candidate keys unlock ``volume`` (a locked :class:`BdeVolume`)."""

    def __init__(self, volume: BdeVolume) -> None:
        md = volume.metadata
        self.metadata = md
        self.method = md.method
        self.path = volume.path
        if md.state == VolumeState.DECRYPTED or self.method == EncryptionMethod.NONE:
            raise UnsupportedError("the volume is not encrypted (decrypted, metadata left "
                                   "behind): it needs no key", path=volume.path)
        try:
            size = EncryptionMethod(self.method).fvek_size
        except ValueError:
            raise UnsupportedError(f"unknown encryption method 0x{self.method:04x}",
                                   path=volume.path) from None
        self.sector_size = volume.sector_size
        self.probe = BdeVolume(volume.source, path=volume.path, metadata=md)
        quiet = logging.getLogger("bdekit.volume")  # a zero key: its warnings mean nothing
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            self.probe.set_key(UnlockResult(fvek=bytes(size), method=self.method,
                                            via=UnlockVia.NONE))
        finally:
            quiet.setLevel(level)
        self.boot = self._boot_sample()
        self.tried = 0
        self._extra: list[_Sample] | None = None

    def _boot_sample(self) -> _Sample | None:
        """The relocated boot sector (Windows 7+), read where the metadata puts it: the probe's
        own plan cannot serve it, since a zero key never verifies a boot sector; a plaintext
        one (used-space-only volumes) is taken as such. Vista: sector 0 as planned."""
        virt = self.metadata.virtualization
        if self.metadata.version < 2 or virt is None:
            return self._sample("boot sector", 0)
        data = self.probe._read(virt[0], self.sector_size)
        if len(data) < self.sector_size or not any(data):
            return None
        return _Sample("boot sector", virt[0], data, parse_boot_sector(data) is None)

    def _sample(self, what: str, offset: int, sectors: int = 1) -> _Sample | None:
        length = sectors * self.sector_size
        runs = self.probe.plan(offset, length)
        if not runs or runs[0].length < length:
            return None
        run = runs[0]
        if run.kind.value in ("zero", "missing"):
            return None
        data = self.probe._read(run.source, length)
        if len(data) < length:
            return None
        return _Sample(what, run.source, data, bool(run.encrypted))

    def check_vmk(self, vmk: bytes) -> UnlockResult | None:
        """The unlock result of a VMK that opens the FVEK datum, else None."""
        self.tried += 1
        try:
            fvek, key_type = decrypt_fvek(self.metadata, vmk)
        except WrongKeyError:
            return None
        except BdeError as exc:
            log.debug("VMK candidate: %s", exc.message)
            return None
        return UnlockResult(fvek, key_type or self.method, vmk, via=UnlockVia.VMK)

    def check_fvek(self, fvek: bytes) -> bool:
        """Whether ``fvek`` (key datum layout for the volume's method) decrypts the volume."""
        self.tried += 1
        cipher = ciphers.make_cipher(self.method, fvek, self.sector_size)
        boot = self._plain(cipher, self.boot)
        if self.boot is not None and self.boot.encrypted:
            return boot is not None and parse_boot_sector(boot) is not None
        mft = self._mft_sample(boot)
        if mft is not None and mft.encrypted and any(mft.data):
            plain = self._plain(cipher, mft)
            if plain is not None and plain[:4] in (b"FILE", b"BAAD"):
                return True
        return any(_structured(self._plain(cipher, s) or b"") for s in self._extra_samples())

    def _plain(self, cipher: ciphers.SectorCipher, sample: _Sample | None) -> bytes | None:
        if sample is None:
            return None
        if not sample.encrypted:
            return sample.data
        out = bytearray(len(sample.data))
        cipher.decrypt(sample.data, out, sample.source)
        return bytes(out)

    def _mft_sample(self, boot: bytes | None) -> _Sample | None:
        if boot is None:
            return None
        data = bytearray(boot)
        if self.metadata.version == 1:
            data[3:11] = b"NTFS    "
        parsed = parse_boot_sector(bytes(data))
        if parsed is None or parsed.fs != "ntfs":
            return None
        cluster = parsed.bytes_per_sector * data[13]
        mft = int.from_bytes(data[0x30:0x38], "little") * cluster
        return self._sample("MFT record", mft) if cluster and mft else None

    def _extra_samples(self) -> list[_Sample]:
        """Up to EXTRA_SAMPLES encrypted runs whose ciphertext is not all zero, one per MiB of
        the volume from its start (at most MAX_SAMPLE_SCAN bytes read)."""
        if self._extra is not None:
            return self._extra
        self._extra = []
        span = self.sector_size * SAMPLE_SECTORS
        limit = min(self.probe.volume_size, self.probe.image_size, MAX_SAMPLE_SCAN)
        for window in range(0, limit, WINDOW):
            for run in self.probe.plan(window, min(WINDOW, self.probe.volume_size - window)):
                if not run.encrypted or run.kind.value not in ("encrypted", "relocated"):
                    continue
                data = self.probe._read(run.source, run.length - run.length % span)
                blocks = np.frombuffer(data, dtype=np.uint8)
                if not len(blocks):
                    continue
                nonzero = np.flatnonzero(blocks.reshape(-1, span).any(axis=1))
                if len(nonzero):
                    at = int(nonzero[0]) * span
                    self._extra.append(_Sample("sectors", run.source + at,
                                               data[at:at + span], True))
                    break
            if len(self._extra) >= EXTRA_SAMPLES:
                break
        return self._extra


def _structured(plain: bytes) -> bool:
    """One byte value fills at least 1/32 of the block (zeros of a file system structure,
    spaces of text): random bytes of 4 KiB reach that with probability ~e^-150."""
    if not plain:
        return False
    counts = np.bincount(np.frombuffer(plain, dtype=np.uint8), minlength=256)
    return int(counts.max()) * 32 >= len(plain)
