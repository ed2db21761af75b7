"""The FVE metadata copy of a synthetic volume: block header, dataset, datums, validation.

Each copy (three identical ones, see :mod:`bdekit.synth.layout` for where they lie):

* 64-byte block header: size in 16-byte units of the padded block (bytes on v1), version 2
  (1 on Vista), states (encrypted -> encrypted; paused (3) -> encrypted (4) with
  ``state=partial:OFFSET``), conversion boundary = encrypted bytes (0 on Vista), 16
  virtualized sectors at 512 bytes / 8 KiB in general, the three copy offsets, the relocated
  block offset (Vista: the NTFS MFT mirror cluster);
* 48-byte dataset header: size = copy size = 48 + datums, version 1, volume GUID, next nonce
  counter, method, u16 0, creation FILETIME;
* the datums, in Windows' order: description (unicode, role 7), one VMK datum per protector
  (role 2, see :mod:`bdekit.synth.protectors`), the FVEK (AES-CCM, role 3, under the VMK;
  plaintext key datum with key type = method, 16/32/64 key bytes), on an OS volume
  (``os_volume``) the auto-unlock key (AES-CCM, role 0x000b, under the VMK; key datum 0x2002;
  where Windows places it among the datums is not known), virtualization info (role
  15, type 15: offset and size of the relocated block; the 76 trailing bytes Windows 10
  appends -- OS build number and flags of unknown meaning -- are left out, readers ignore
  them; none on Vista);
* zero padding to a multiple of 16;
* right after the padded block the validation header (u16 0 -- Windows leaves junk there --,
  u16 version 2 (1 on Vista), CRC32 of the padded block) and a 0x50-byte AES-CCM datum under
  the VMK whose plaintext is a key datum (key type 0x2005) holding the SHA-256 of the padded
  block; the nonce's FILETIME has its top bit set, as Windows 10 writes it on freshly encrypted
  volumes (the real suspended volume's has it clear; Vista's never has it).

The rest of the copy's reserved region is zeros.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from construct import Container

from bdekit.errors import UsageError
from bdekit.format import structs
from bdekit.format.constants import DatumRole, EncryptionMethod, KeyType, VolumeState
from bdekit.format.datum_build import (
    dataset_header,
    payload_key,
    unicode_datum,
    virtualization_datum,
)
from bdekit.format.layout import round_up
from bdekit.synth.layout import Layout
from bdekit.synth.seeded import NonceSource, SeededRandom
from bdekit.unlock.vmk import wrap_key

#: Top bit of the validation nonce's FILETIME on Windows 7+ volumes.
_VALIDATION_FILETIME_FLAG = 1 << 63


def build_metadata_block(block_header: Mapping[str, Any], dataset_header: Mapping[str, Any],
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
    digest = payload_key(hashlib.sha256(block).digest(), KeyType.VALIDATION)
    return header + structs.DATUM.build(wrap_key(vmk, nonce, digest))


@dataclasses.dataclass
class VolumeKeys:
    """The keys and identity of a synthetic volume, drawn from the seed."""

    method: EncryptionMethod
    fvek: bytes
    vmk: bytes
    volume_guid: uuid.UUID
    created: int  # FILETIME of the dataset header
    #: an OS volume's auto-unlock key (role 0x000b datum), or None
    auto_unlock_key: bytes | None = None

    @classmethod
    def draw(cls, seed: int | str, method: EncryptionMethod, created: int) -> VolumeKeys:
        volume_rng = SeededRandom(seed, "volume")
        fvek = SeededRandom(seed, "fvek").bytes(method.fvek_size)
        vmk = volume_rng.bytes(32)
        return cls(method, fvek, vmk, volume_rng.guid(), created)


@dataclasses.dataclass
class MetadataCopy:
    """One metadata copy as written (all three are the same bytes)."""

    block_header: Container
    block: bytes  # the padded block
    copy: bytes  # the padded block and its validation
    region: bytes  # the copy padded with zeros to the reserved region


def metadata_datums(description: str, protectors: Sequence[Any], volume: VolumeKeys,
                    nonces: NonceSource, layout: Layout) -> list[Container]:
    """The datums of the dataset, in Windows' order; draws their nonces and times."""
    nonces.tick(60.0)
    datums: list[Container] = [unicode_datum(description, int(DatumRole.DESCRIPTION))]
    for prot in protectors:
        nonces.tick(10.0)
        datums.append(prot.build_datum(volume.vmk, nonces))
    nonces.tick(5.0)
    datums.append(nonces.wrap(volume.vmk, payload_key(volume.fvek, int(volume.method)),
                              int(DatumRole.FULL_VOLUME_ENCRYPTION_KEY)))
    if volume.auto_unlock_key is not None:
        datums.append(nonces.wrap(volume.vmk, payload_key(volume.auto_unlock_key,
                                                          KeyType.EXTERNAL),
                                  int(DatumRole.AUTO_UNLOCK)))
    if layout.version >= 2:
        datums.append(virtualization_datum(layout.relocated_offset, layout.relocated_size))
    return datums


def block_header(layout: Layout, first: bytes) -> Container:
    """The block header (size 0: :func:`build_metadata_block` sets it); ``first`` is the
    plaintext start of the volume (Vista keeps its MFT mirror cluster here)."""
    vista = layout.version == 1
    partial = layout.encrypted_end < layout.volume_size
    header = Container(
        size=0, version=layout.version,
        current_state=int(VolumeState.PAUSED if partial else VolumeState.ENCRYPTED),
        next_state=int(VolumeState.ENCRYPTED),
        state_offset=layout.encrypted_end if not vista else 0, state_size=0,
        virtualized_sectors=layout.virtualized_sectors,
        metadata_offsets=list(layout.metadata_offsets),
        virtualized_offset=layout.relocated_offset)
    if vista:
        header.virtualized_offset = structs.BOOT_SECTOR_PREFIX.parse(
            first[:64]).metadata_lcn  # the NTFS MFT mirror cluster
    return header


def build_metadata_copy(layout: Layout, volume: VolumeKeys, protectors: Sequence[Any],
                        description: str, nonces: NonceSource, first: bytes) -> MetadataCopy:
    """The metadata copy of the volume (module docstring); raises :class:`UsageError` when it
    does not fit its reserved region."""
    datums = metadata_datums(description, protectors, volume, nonces, layout)
    validation_ft = nonces.tick(1.0) | (_VALIDATION_FILETIME_FLAG if layout.version >= 2
                                        else 0)
    validation_nonce = nonces.next(validation_ft)
    header = block_header(layout, first)
    dataset = dataset_header(volume.volume_guid, nonce_counter=nonces.counter,
                             method=int(volume.method), creation_time=volume.created)
    block = build_metadata_block(header, dataset, datums)
    copy = block + validation_bytes(block, volume.vmk, validation_nonce, version=layout.version)
    if len(copy) > layout.region_size:
        raise UsageError(f"metadata ({len(copy)} bytes) does not fit its {layout.region_size}-"
                         "byte region: too many protectors")
    return MetadataCopy(header, block, copy, copy + bytes(layout.region_size - len(copy)))
