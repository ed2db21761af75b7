"""On-disk structures of BitLocker, declared with ``construct`` and nothing else.

Logic lives elsewhere (``metadata.py``, ``volume.py``); this module only says how bytes are laid
out, so every structure here both parses and builds (the synthetic image builder writes them).
All integers are little-endian; GUIDs are Microsoft mixed-endian (``uuid.UUID(bytes_le=...)``).

Volume header (sector 0 of the volume, 512 bytes)
    A FAT/NTFS-style boot sector whose OEM field (offset 3) reads ``-FVE-FS-`` (``MSWIN4.1`` on
    BitLocker To Go). Windows 7+ put a *GUID record* after the boot code: the BitLocker GUID (or
    the used-space-only "EOW" GUID) followed by three u64 byte offsets of the metadata copies and,
    for EOW, two u64 offsets of the EOW information blocks. The record is at offset 160 on
    NTFS-style headers and 424 on To Go (FAT32) headers; readers search the sector for it. Vista
    has no record: the cluster number of the first metadata copy is the u64 at offset 56.

FVE metadata block (three copies)
    64-byte block header (signature, block size: bytes on v1, 16-byte units on v2, version,
    states, conversion boundary, offsets of the three copies, relocated header offset), then the
    dataset: a 48-byte dataset header and a list of datums. The block is padded to its block
    size; right after it a 8-byte validation header (u16 unknown, u16 version, CRC32 of the
    padded block) and an AES-CCM datum holding the SHA-256 of the padded block.

Datums
    8-byte header (size of the whole datum, role, type, version) and a type-specific body. VMK,
    external key, stretch key and use key bodies end in nested datums, so a datum is a tree.
    Types bdekit does not know are kept as raw bytes (new Windows builds add types).

EOW (used-space-only) structures
    Information block ``FVE-EOW``, bitmap block ``FVE-EOWBM`` and bitmap records ``FVE-EOWBR``
    (one bit per chunk, set = encrypted).
"""

from __future__ import annotations

import uuid

from construct import (
    Adapter,
    Array,
    Bytes,
    Check,
    Const,
    Construct,
    ExprAdapter,
    FixedSized,
    GreedyBytes,
    GreedyRange,
    Int8ul,
    Int16ul,
    Int32ul,
    Int64ul,
    LazyBound,
    Prefixed,
    Struct,
    Switch,
    Terminated,
    this,
)

from bdekit.format.constants import FVE_SIGNATURE, DatumType


class GuidAdapter(Adapter):
    """16 bytes in Microsoft mixed-endian order <-> ``uuid.UUID``."""

    def _decode(self, obj: bytes, context: object, path: str) -> uuid.UUID:
        return uuid.UUID(bytes_le=bytes(obj))

    def _encode(self, obj: uuid.UUID | str, context: object, path: str) -> bytes:
        return (obj if isinstance(obj, uuid.UUID) else uuid.UUID(str(obj))).bytes_le


Guid = GuidAdapter(Bytes(16))

# --------------------------------------------------------------------------------------------
# Volume header
# --------------------------------------------------------------------------------------------

#: The BIOS parameter block fields BitLocker and bdekit care about (first 64 bytes of sector 0).
BOOT_SECTOR_PREFIX = Struct(
    "jump" / Bytes(3),
    "oem_id" / Bytes(8),
    "bytes_per_sector" / Int16ul,  # 11
    "sectors_per_cluster" / Int8ul,  # 13
    "reserved_sectors" / Int16ul,  # 14
    "fat_count" / Int8ul,  # 16
    "root_entries" / Int16ul,  # 17
    "total_sectors_16" / Int16ul,  # 19
    "media_descriptor" / Int8ul,  # 21
    "sectors_per_fat_16" / Int16ul,  # 22
    "sectors_per_track" / Int16ul,  # 24
    "heads" / Int16ul,  # 26
    "hidden_sectors" / Int32ul,  # 28
    "total_sectors_32" / Int32ul,  # 32
    "unknown_36" / Int32ul,  # 36 (NTFS: 0x00800080)
    "total_sectors_64" / Int64ul,  # 40 (NTFS total sectors)
    "mft_cluster" / Int64ul,  # 48 (NTFS $MFT cluster)
    "metadata_lcn" / Int64ul,  # 56 (NTFS $MFTMirr; Vista BitLocker: first metadata cluster)
)

#: GUID record of Windows 7+ headers; ``eow_offsets`` only exist after the EOW GUID.
GUID_RECORD = Struct(
    "guid" / Guid,
    "metadata_offsets" / Array(3, Int64ul),
)
EOW_GUID_RECORD = Struct(
    "guid" / Guid,
    "metadata_offsets" / Array(3, Int64ul),
    "eow_offsets" / Array(2, Int64ul),
)

GUID_RECORD_OFFSET = 160
TOGO_GUID_RECORD_OFFSET = 424

#: A whole Windows 7+ (NTFS-style) BitLocker volume header, as the image builder writes it.
WIN7_VOLUME_HEADER = Struct(
    "prefix" / BOOT_SECTOR_PREFIX,
    "boot_code_1" / Bytes(GUID_RECORD_OFFSET - 64),
    "record" / EOW_GUID_RECORD,
    "boot_code_2" / Bytes(510 - GUID_RECORD_OFFSET - EOW_GUID_RECORD.sizeof()),
    "signature" / Const(b"\x55\xaa"),
)

#: A BitLocker To Go volume header (FAT32-style, OEM ``MSWIN4.1``): the GUID record sits at 424.
TOGO_VOLUME_HEADER = Struct(
    "prefix" / BOOT_SECTOR_PREFIX,
    "boot_code_1" / Bytes(TOGO_GUID_RECORD_OFFSET - 64),
    "record" / GUID_RECORD,
    "boot_code_2" / Bytes(510 - TOGO_GUID_RECORD_OFFSET - GUID_RECORD.sizeof()),
    "signature" / Const(b"\x55\xaa"),
)

# --------------------------------------------------------------------------------------------
# FVE metadata block
# --------------------------------------------------------------------------------------------

FVE_BLOCK_HEADER = Struct(
    "signature" / Const(FVE_SIGNATURE),
    "size" / Int16ul,  # v1: bytes; v2: 16-byte units
    "version" / Int16ul,
    "current_state" / Int16ul,
    "next_state" / Int16ul,
    "state_offset" / Int64ul,  # conversion boundary (encrypted volume size)
    "state_size" / Int32ul,  # conversion log size
    "virtualized_sectors" / Int32ul,
    "metadata_offsets" / Array(3, Int64ul),
    "virtualized_offset" / Int64ul,  # v2: relocated header block offset; v1: MFT mirror cluster
)
assert FVE_BLOCK_HEADER.sizeof() == 64

DATASET_HEADER = Struct(
    "size" / Int32ul,  # whole dataset including this header
    "version" / Int32ul,
    "header_size" / Int32ul,
    "copy_size" / Int32ul,
    "volume_guid" / Guid,
    "nonce_counter" / Int32ul,
    "method" / Int16ul,
    "method_flags" / Int16ul,
    "creation_time" / Int64ul,
)
assert DATASET_HEADER.sizeof() == 48

#: Follows the padded metadata block: CRC32 of the block, then an AES-CCM datum (the SHA-256).
VALIDATION_HEADER = Struct(
    "unknown" / Int16ul,
    "version" / Int16ul,
    "crc32" / Int32ul,
)

# --------------------------------------------------------------------------------------------
# Datums
# --------------------------------------------------------------------------------------------

#: Nested datums fill the rest of their parent's body exactly.
NESTED = "datums" / GreedyRange(LazyBound(lambda: DATUM))

_KEY = Struct("key_type" / Int16ul, "key_flags" / Int16ul, "key" / GreedyBytes)
_UNICODE = Struct("data" / GreedyBytes)  # UTF-16LE, NUL-terminated; decoded by the caller
_STRETCH_KEY = Struct("key_type" / Int16ul, "key_flags" / Int16ul, "salt" / Bytes(16), NESTED,
                      Terminated)
_USE_KEY = Struct("key_type" / Int16ul, "key_flags" / Int16ul, NESTED, Terminated)
_AES_CCM = Struct(
    "nonce" / Bytes(12),  # FILETIME (8) + counter (4)
    "mac" / Bytes(16),
    "data" / GreedyBytes,
)
_TPM_ENCODED = Struct("unknown" / Int32ul, "data" / GreedyBytes)
_VMK = Struct(
    "guid" / Guid,
    "modified_time" / Int64ul,
    "unknown" / Int16ul,
    "protection" / Int16ul,
    NESTED,
    Terminated,
)
_EXTERNAL_KEY = Struct("guid" / Guid, "modified_time" / Int64ul, NESTED, Terminated)
_VIRTUALIZATION_INFO = Struct(
    "offset" / Int64ul,
    "size" / Int64ul,
    "rest" / GreedyBytes,  # Windows 10 appends 76 bytes of unknown meaning
)
_RAW = Struct("data" / GreedyBytes)

_BODIES: dict[int, Construct] = {
    DatumType.KEY: _KEY,
    DatumType.UNICODE: _UNICODE,
    DatumType.STRETCH_KEY: _STRETCH_KEY,
    DatumType.USE_KEY: _USE_KEY,
    DatumType.AES_CCM_ENCRYPTED_KEY: _AES_CCM,
    DatumType.TPM_ENCODED_KEY: _TPM_ENCODED,
    DatumType.VOLUME_MASTER_KEY: _VMK,
    DatumType.EXTERNAL_KEY: _EXTERNAL_KEY,
    DatumType.VIRTUALIZATION_INFO: _VIRTUALIZATION_INFO,
}

#: One datum: the size field counts the whole datum, so the body is ``size - 8`` bytes.
DATUM: Construct = Prefixed(
    ExprAdapter(Int16ul, decoder=lambda obj, ctx: obj - 2, encoder=lambda obj, ctx: obj + 2),
    Struct(
        "role" / Int16ul,
        "type" / Int16ul,
        "version" / Int16ul,
        "body" / Switch(this.type, _BODIES, default=_RAW),
        Terminated,
    ),
)

#: A top-level datum list (the dataset body); parsed datum by datum by ``metadata.py`` so that
#: an error can name its offset, but this builds a whole list at once.
DATUM_LIST = GreedyRange(DATUM)

# --------------------------------------------------------------------------------------------
# BEK file (startup key / recovery key file)
# --------------------------------------------------------------------------------------------

BEK_FILE = Struct(
    "header" / DATASET_HEADER,
    Check(this.header.size >= DATASET_HEADER.sizeof()),
    "datums" / FixedSized(this.header.size - DATASET_HEADER.sizeof(), GreedyRange(DATUM)),
)

# --------------------------------------------------------------------------------------------
# EOW (used-space-only encryption) structures
# --------------------------------------------------------------------------------------------

EOW_INFORMATION = Struct(
    "signature" / Const(b"FVE-EOW\x00"),
    "header_size" / Int16ul,
    "size" / Int16ul,
    "sector_size" / Int32ul,
    "unknown_1" / Int32ul,
    "chunk_size" / Int32ul,
    "conversion_log_size" / Int32ul,
    "unknown_2" / Int32ul,
    "region_count" / Int32ul,
    "crc32" / Int32ul,
    "eow_offsets" / Array(2, Int64ul),
    "bitmap_offsets" / Array(this.region_count, Int64ul),
)

EOW_BITMAP_BLOCK = Struct(
    "signature" / Const(b"FVE-EOWBM\x00"),
    "header_size" / Int16ul,
    "size" / Int32ul,
    "unknown" / Int32ul,
    "region_offset" / Int64ul,
    "region_size" / Int64ul,
    "conversion_log_offset" / Int64ul,
    "record_offsets" / Array(2, Int32ul),
    "record_size" / Int32ul,
    "crc32" / Int32ul,
)

EOW_BITMAP_RECORD = Struct(
    "signature" / Const(b"FVE-EOWBR\x00"),
    "header_size" / Int16ul,
    "size" / Int32ul,
    "bitmap_size" / Int32ul,
    "sequence" / Int64ul,
    "flags" / Int32ul,
    "crc32" / Int32ul,
    "bitmap" / Bytes(this.bitmap_size),
)

__all__ = [
    "BEK_FILE",
    "BOOT_SECTOR_PREFIX",
    "DATASET_HEADER",
    "DATUM",
    "DATUM_LIST",
    "EOW_BITMAP_BLOCK",
    "EOW_BITMAP_RECORD",
    "EOW_GUID_RECORD",
    "EOW_INFORMATION",
    "FVE_BLOCK_HEADER",
    "GUID_RECORD",
    "GUID_RECORD_OFFSET",
    "TOGO_GUID_RECORD_OFFSET",
    "TOGO_VOLUME_HEADER",
    "VALIDATION_HEADER",
    "WIN7_VOLUME_HEADER",
    "Guid",
]
