"""Key protectors as the metadata lists them: one VMK datum (type 8, role 2) per protector.

A VMK datum holds the protector GUID (the key ID helpdesks match on), a modification FILETIME,
the protection type (recovery password, password, startup key, TPM..., certificate) and nested
datums: a stretch key (salt) for passwords, the VMK wrapped by AES-CCM under the protector's
key, a description string, and for certificate protectors a public key info datum naming the
certificate. :class:`Protector` reads those; unwrapping the VMK is :mod:`bdekit.unlock.vmk`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import uuid
from typing import Any

from bdekit.format.certificate import CertificateInfo, certificate_info
from bdekit.format.constants import (
    DatumRole,
    DatumType,
    ProtectionType,
    enum_label,
)
from bdekit.format.filetime import filetime_to_datetime
from bdekit.format.guid import key_id
from bdekit.format.metadata import Datum, Metadata

log = logging.getLogger(__name__)


TPM_TYPES = {ProtectionType.TPM, ProtectionType.TPM_PIN, ProtectionType.TPM_STARTUP_KEY,
             ProtectionType.TPM_PIN_STARTUP_KEY}


@dataclasses.dataclass
class Protector:
    datum: Datum

    @property
    def guid(self) -> uuid.UUID:
        guid: uuid.UUID = self.datum.body.guid
        return guid

    @property
    def key_id(self) -> str:
        return key_id(self.guid)

    @property
    def protection(self) -> int:
        return int(self.datum.body.protection)

    @property
    def type_name(self) -> str:
        return enum_label(ProtectionType, self.protection)

    @property
    def modified(self) -> dt.datetime | None:
        return filetime_to_datetime(self.datum.body.modified_time)

    @property
    def salt(self) -> bytes | None:
        stretch = self.datum.find(DatumType.STRETCH_KEY)
        return bytes(stretch.body.salt) if stretch is not None else None

    @property
    def label(self) -> str:
        datum = self.datum.find(DatumType.UNICODE)
        return datum.text if datum else ""

    @property
    def wrapped_vmks(self) -> list[Datum]:
        """Direct AES-CCM children: the VMK wrapped under the protector key."""
        return self.datum.find_all(DatumType.AES_CCM_ENCRYPTED_KEY)

    @property
    def bek_name(self) -> str | None:
        if self.protection in (ProtectionType.STARTUP_KEY, ProtectionType.TPM_STARTUP_KEY,
                               ProtectionType.TPM_PIN_STARTUP_KEY):
            return "{" + str(self.guid).upper() + "}.BEK"
        return None

    @property
    def certificate(self) -> CertificateInfo | None:
        """Thumbprint and public key of a certificate protector (None for the others)."""
        return certificate_info(self.datum)

    @property
    def thumbprint(self) -> str | None:
        cert = self.certificate
        return cert.thumbprint if cert is not None else None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "guid": str(self.guid).upper(),
            "key_id": self.key_id,
            "type": self.type_name,
            "protection": self.protection,
            "modified": self.modified.isoformat() if self.modified else None,
        }
        if self.label:
            out["label"] = self.label
        if self.bek_name:
            out["bek_file"] = self.bek_name
        cert = self.certificate
        if cert is not None:
            out.update(cert.describe())
        return out


def protectors_of(metadata: Metadata) -> list[Protector]:
    """The protectors of the copy that serves (what ``info`` lists)."""
    return [Protector(d) for d in metadata.find_all(DatumType.VOLUME_MASTER_KEY,
                                                    DatumRole.VOLUME_MASTER_KEY)]


def datum_versions(metadata: Metadata, type_: int, role: int) -> list[Datum]:
    """Every distinct version of the datums of ``type_`` / ``role`` across the copies: the
    serving copy's first, then the other copies' and the majority's where their bytes differ
    (a datum damaged in one copy may be intact in another; AES-CCM tells which)."""
    seen: set[bytes] = set()
    out: list[Datum] = []
    sources = [metadata.best, *metadata.copies]
    if metadata.vote_copy is not None:
        sources.append(metadata.vote_copy)
    for copy in sources:
        if not copy.usable:
            continue
        for datum in copy.datums:
            if datum.type == type_ and datum.role == role and datum.raw not in seen:
                seen.add(datum.raw)
                out.append(datum)
    return out


def protector_versions(metadata: Metadata) -> list[Protector]:
    """Every distinct version of every protector across the copies (see datum_versions)."""
    return [Protector(d) for d in datum_versions(metadata, DatumType.VOLUME_MASTER_KEY,
                                                 DatumRole.VOLUME_MASTER_KEY)]

