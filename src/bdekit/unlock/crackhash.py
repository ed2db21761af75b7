"""Hashes of password and recovery-password protectors for hashcat and John the Ripper.

One line per protector and attack type, in the format of hashcat mode 22100 and John's
``bitlocker`` / ``bitlocker-opencl`` formats::

    $bitlocker$T$16$<salt>$1048576$12$<nonce>$60$<mac><encrypted VMK datum>

* ``T``: 0 (user password, known-plaintext check only) and 1 (with the AES-CCM MAC) for
  password protectors (0x2000); 2 and 3 the same for recovery-password protectors (0x0800).
  hashcat takes 0 and 1 only; John's OpenCL format takes all four.
* salt: the 16 bytes of the protector's stretch key datum (type 3), as on disk;
* 1048576: the SHA-256 rounds of the stretch;
* nonce (12 bytes), MAC (16 bytes) and the 44-byte ciphertext of the VMK key datum: from the
  AES-CCM datum (type 5) that is a **direct** child of the protector. Windows 10 nests further
  AES-CCM datums inside the stretch key (the recovery key and the stretched key escrowed under
  the VMK); they are not the protector's wrapped VMK and are never used here. Extractors that
  look for the AES-CCM datum at fixed offsets take those, or a description string, instead.

Only the metadata is read: no pass over the volume.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from bdekit.format.constants import STRETCH_ROUNDS, DatumType, ProtectionType
from bdekit.format.metadata import Metadata
from bdekit.format.protector import Protector, protectors_of

#: Ciphertext bytes of a wrapped VMK (the 44-byte key datum) that the crackers expect.
VMK_DATUM_SIZE = 44
ATTACK_TYPES: dict[int, tuple[int, int]] = {ProtectionType.PASSWORD: (0, 1),
                                            ProtectionType.RECOVERY_PASSWORD: (2, 3)}


@dataclasses.dataclass(frozen=True)
class CrackHash:
    """One ``$bitlocker$`` line and the protector it belongs to."""

    line: str
    attack_type: int
    protector: Protector
    copy_index: int

    def describe(self) -> dict[str, Any]:
        return {"hash": self.line, "attack_type": self.attack_type,
                "with_mac_check": self.attack_type in (1, 3),
                "hashcat_mode": 22100 if self.attack_type in (0, 1) else None,
                "john_format": "bitlocker-opencl" if self.attack_type in (2, 3)
                else "bitlocker",
                "protector": str(self.protector.guid).upper(),
                "key_id": self.protector.key_id, "type": self.protector.type_name,
                "metadata_copy": self.copy_index}


def protector_hashes(protector: Protector, copy_index: int = 0) -> tuple[list[CrackHash],
                                                                         list[str]]:
    """The hash lines of one protector, and why a protector gave none."""
    types = ATTACK_TYPES.get(protector.protection)
    if types is None:
        return [], []
    stretch = protector.datum.find(DatumType.STRETCH_KEY)
    name = f"{protector.type_name} protector {{{str(protector.guid).upper()}}}"
    if stretch is None:
        return [], [f"{name} has no stretch key datum"]
    salt = bytes(stretch.body.salt)
    out: list[CrackHash] = []
    notes: list[str] = []
    for wrapped in protector.wrapped_vmks:  # direct children only
        body = wrapped.body
        nonce, mac, data = bytes(body.nonce), bytes(body.mac), bytes(body.data)
        if len(data) != VMK_DATUM_SIZE or len(nonce) != 12 or len(mac) != 16:
            notes.append(f"{name}: AES-CCM datum at offset {wrapped.offset} holds "
                         f"{len(data)} bytes, not a {VMK_DATUM_SIZE}-byte VMK datum")
            continue
        for attack in types:
            line = (f"$bitlocker${attack}$16${salt.hex()}${STRETCH_ROUNDS}$12${nonce.hex()}"
                    f"$60${(mac + data).hex()}")
            out.append(CrackHash(line, attack, protector, copy_index))
    if not out and not notes:
        notes.append(f"{name} has no AES-CCM datum of its own")
    return out, notes


def metadata_hashes(metadata: Metadata) -> tuple[list[CrackHash], list[str]]:
    """Hash lines of every password / recovery-password protector, from every usable copy
    (identical lines once), and notes on protectors that gave none."""
    lines: list[CrackHash] = []
    notes: list[str] = []
    seen: set[str] = set()
    copies = [metadata.best] + [c for c in metadata.copies
                                if c is not metadata.best and c.usable]
    for copy in copies:
        view = Metadata(header=metadata.header, copies=metadata.copies, best=copy,
                        source=metadata.source)
        for protector in protectors_of(view):
            found, why = protector_hashes(protector, copy.index)
            for item in found:
                if item.line not in seen:
                    seen.add(item.line)
                    lines.append(item)
            notes += [n for n in why if n not in notes]
    return lines, notes
