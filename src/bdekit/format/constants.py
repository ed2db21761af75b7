"""Numeric constants of the BitLocker on-disk format.

Names follow the public descriptions of the format (libbde's specification, dissect.fve's
structure names).  Values are facts of the format; every enum is an ``IntEnum`` so a value
read from disk that is not listed can still be carried around as a plain ``int``.
"""

from __future__ import annotations

import enum
import uuid

FVE_SIGNATURE = b"-FVE-FS-"
#: GUID record that follows the boot code on Windows 7+ volumes.
BITLOCKER_GUID = uuid.UUID("4967d63b-2e29-4ad8-8399-f6a339e3d001")
#: GUID record of volumes encrypted with "used space only" (encrypt-on-write, EOW).
EOW_GUID = uuid.UUID("92a84d3b-dd80-4d0e-9e4e-b1e3284eaed8")

#: Number of SHA-256 rounds of the password / recovery password stretch.
STRETCH_ROUNDS = 1 << 20


class EncryptionMethod(enum.IntEnum):
    NONE = 0x0000
    AES_128_CBC_DIFFUSER = 0x8000
    AES_256_CBC_DIFFUSER = 0x8001
    AES_128_CBC = 0x8002
    AES_256_CBC = 0x8003
    AES_128_XTS = 0x8004
    AES_256_XTS = 0x8005

    @property
    def label(self) -> str:
        return METHOD_LABELS[self]

    @property
    def fvek_size(self) -> int:
        """Bytes of key material the FVEK key datum carries for this method."""
        return {
            EncryptionMethod.NONE: 0,
            EncryptionMethod.AES_128_CBC_DIFFUSER: 64,
            EncryptionMethod.AES_256_CBC_DIFFUSER: 64,
            EncryptionMethod.AES_128_CBC: 16,
            EncryptionMethod.AES_256_CBC: 32,
            EncryptionMethod.AES_128_XTS: 32,
            EncryptionMethod.AES_256_XTS: 64,
        }[self]

    @classmethod
    def from_label(cls, label: str) -> EncryptionMethod:
        for method, name in METHOD_LABELS.items():
            if name == label.lower():
                return method
        raise ValueError(f"unknown encryption method {label!r}; expected one of "
                         + ", ".join(v for v in METHOD_LABELS.values() if v != "none"))


METHOD_LABELS: dict[EncryptionMethod, str] = {
    EncryptionMethod.NONE: "none",
    EncryptionMethod.AES_128_CBC_DIFFUSER: "aes-cbc-128-diffuser",
    EncryptionMethod.AES_256_CBC_DIFFUSER: "aes-cbc-256-diffuser",
    EncryptionMethod.AES_128_CBC: "aes-cbc-128",
    EncryptionMethod.AES_256_CBC: "aes-cbc-256",
    EncryptionMethod.AES_128_XTS: "aes-xts-128",
    EncryptionMethod.AES_256_XTS: "aes-xts-256",
}


class DatumType(enum.IntEnum):
    ERASED = 0
    KEY = 1
    UNICODE = 2
    STRETCH_KEY = 3
    USE_KEY = 4
    AES_CCM_ENCRYPTED_KEY = 5
    TPM_ENCODED_KEY = 6
    VALIDATION = 7
    VOLUME_MASTER_KEY = 8
    EXTERNAL_KEY = 9
    UPDATE = 10
    ERROR_LOG = 11
    ASYMMETRIC_ENCRYPTED_KEY = 12
    EXPORTED_KEY = 13
    PUBLIC_KEY_INFO = 14
    VIRTUALIZATION_INFO = 15
    SIMPLE_1 = 16
    SIMPLE_2 = 17
    CONCAT_HASH_KEY = 18
    SIMPLE_3 = 19
    SIMPLE_LARGE = 20
    BACKUP_INFO = 21


class DatumRole(enum.IntEnum):
    PROPERTY = 0
    VOLUME_MASTER_KEY = 2
    FULL_VOLUME_ENCRYPTION_KEY = 3
    VALIDATION = 4
    STARTUP_KEY = 6
    DESCRIPTION = 7
    AUTO_UNLOCK = 11
    FVEK_BACKUP = 12
    VIRTUALIZATION_INFO = 15
    VALIDATION_HASH = 17


class ProtectionType(enum.IntEnum):
    CLEAR_KEY = 0x0000
    TPM = 0x0100
    STARTUP_KEY = 0x0200
    TPM_STARTUP_KEY = 0x0300
    PUBLIC_KEY = 0x0400
    TPM_PIN = 0x0500
    #: 0x0700 (not 0x0600): seen on real TPM+PIN+startup key volumes (bit mask: TPM 0x0100,
    #: startup key 0x0200, PIN 0x0400).
    TPM_PIN_STARTUP_KEY = 0x0700
    RECOVERY_PASSWORD = 0x0800
    CERTIFICATE = 0x1000
    PASSWORD = 0x2000

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


class VolumeState(enum.IntEnum):
    DECRYPTED = 1
    SWITCHING_DIRTY = 2
    PAUSED = 3
    ENCRYPTED = 4
    SWITCHING = 5


def enum_label(enum_cls: type[enum.IntEnum], value: int) -> str:
    """Name of ``value`` in ``enum_cls``, or ``unknown(0x....)`` for values not listed."""
    try:
        member = enum_cls(value)
    except ValueError:
        return f"unknown(0x{value:04x})"
    label = getattr(member, "label", None)
    return label if isinstance(label, str) else member.name.lower()


class KeyType(enum.IntEnum):
    """Key type (u16) of a key datum (type 1) and of a use key datum (type 4): the key's purpose.

    Values as Windows 10 writes them (checked on the images of ``../shared/real-images``).  The
    FVEK's key datum carries the encryption method (:class:`EncryptionMethod`) instead.
    """

    #: The 16-byte recovery key of a recovery password, escrowed under the VMK.
    RECOVERY_KEY = 0x1000
    #: The clear key of a suspended volume (clear-key protector, stored in the clear).
    CLEAR = 0x2000
    #: The intermediate key a TPM releases for TPM+startup key and (inside the PIN-encrypted
    #: blob) for TPM+PIN protectors: the same value as :attr:`CLEAR`.
    TPM_INTERMEDIATE = 0x2000
    #: The external key of a startup key protector / BEK file (and its use key datum); also
    #: the auto-unlock key of an OS volume (role 0x000b datum).
    EXTERNAL = 0x2002
    #: The VMK, wrapped under a protector key.
    VMK = 0x2003
    #: SHA-256(UTF-16LE PIN) of a TPM+PIN protector, escrowed under the VMK (key flags 0x0010).
    PIN_HASH = 0x2004
    #: The SHA-256 of a metadata block (the validation datum after each copy).
    VALIDATION = 0x2005
    #: The use key datum of a certificate (smart card) protector (format notes, section 10).
    CERTIFICATE_ESCROW = 0x2006
    #: The stretched key of a password protector, escrowed under the VMK.
    PASSWORD_ESCROW = 0x2007
    #: The stretched key of a recovery password protector, escrowed under the VMK.
    RECOVERY_ESCROW = 0x2008


class StretchType(enum.IntEnum):
    """Key type (u16) of a stretch key datum (type 3): which secret is stretched."""

    RECOVERY_PASSWORD = 0x1000
    PASSWORD = 0x1001
    #: The PIN of a TPM+PIN protector (key flags 0x0010: the u32 0x00102004 of the notes).
    TPM_PIN = 0x2004


class EscrowRole(enum.IntEnum):
    """Roles of the AES-CCM datums nested in a recovery password's stretch key datum: the copies
    Windows escrows under the VMK.  Nested roles only (not in :class:`DatumRole`, whose labels
    name top-level datums)."""

    #: The 16-byte recovery key (key type :attr:`KeyType.RECOVERY_KEY`).
    RECOVERY_KEY = 18
    #: The stretched key (key type :attr:`KeyType.RECOVERY_ESCROW`).
    STRETCHED_KEY = 19
