"""Startup key and recovery key files (``{GUID}.BEK``).

A BEK file is a 48-byte dataset header (as in a metadata copy: total size, version, header size
48, copy size, GUID, nonce counter, method, creation FILETIME) followed by the datums; among
them an external key datum (type 9: key GUID, modification FILETIME, nested datums) whose nested
key datum (type 1) holds the 32-byte key, used as is (no stretching). The key's GUID is the GUID
of the startup-key protector it opens, which is also how Windows names the file.

Windows writes BEK files of 156-180 bytes; :data:`MAX_BEK_FILE` is the most bdekit reads of one
(the bounded read is :func:`bdekit.image.bounded.read_bek`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import uuid

from bdekit.errors import FormatError
from bdekit.format import structs
from bdekit.format.constants import (
    DatumType,
)
from bdekit.format.filetime import filetime_to_datetime
from bdekit.format.guid import key_id
from bdekit.format.metadata import parse_datums, parse_struct

log = logging.getLogger(__name__)

#: The largest file read as a BEK file (a real one is 156-180 bytes).
MAX_BEK_FILE = 4096


@dataclasses.dataclass(frozen=True)
class BekFile:
    guid: uuid.UUID
    key: bytes = dataclasses.field(repr=False)
    path: str
    created: dt.datetime | None = None

    @property
    def key_id(self) -> str:
        return key_id(self.guid)


def parse_bek(data: bytes, path: str = "<bek>") -> BekFile:
    """Parse a startup key / recovery key file (.BEK)."""
    if len(data) < 48 + 8:
        raise FormatError(f"{len(data)} bytes is too short for a BEK file (dataset header + "
                          "external key datum)", path=path, offset=0)
    header = parse_struct(structs.DATASET_HEADER, data[:48], "BEK dataset header", 0, path)
    if header.header_size != 48 or not 56 <= header.size <= len(data):
        raise FormatError(f"not a BEK file: dataset size {header.size}, header size "
                          f"{header.header_size} (expected 48)", path=path, offset=0)
    datums = parse_datums(data[48:header.size], 48, path)
    for datum in datums:
        if datum.type == DatumType.EXTERNAL_KEY:
            key_datum = datum.find(DatumType.KEY)
            if key_datum is None or len(key_datum.body.key) != 32:
                raise FormatError("BEK external key datum holds no 32-byte key", path=path,
                                  offset=datum.offset)
            return BekFile(datum.body.guid, bytes(key_datum.body.key), path,
                           filetime_to_datetime(datum.body.modified_time))
    raise FormatError("BEK file has no external key datum (type 9)", path=path, offset=48)
