"""Which secret may open which protector: the one rule (escrow.secrets.match_protector).

The expectations are the format's (docs: protection types): a recovery password opens only a
recovery password protector (0x0800), a user password only a password protector (0x2000), a
BEK file only the protector whose GUID it carries, a certificate only a protector holding an
asymmetric encrypted key datum (type 12); an identifier escrowed with a secret must be the
protector's. The keyring, the candidates of an unlock and ``keys find`` must all agree.
"""

from __future__ import annotations

import hashlib
import uuid

import pytest
from construct import Container, ListContainer

from bdekit.escrow.keyring import KeyringEntry
from bdekit.escrow.secrets import KeyCandidate, Match, SecretKind, match_protector
from bdekit.format import structs
from bdekit.format.bek import BekFile
from bdekit.format.constants import DatumType
from bdekit.format.metadata import parse_datum
from bdekit.format.protector import Protector

GUID = uuid.UUID("3C116B76-C67B-484E-B439-CE2ED68B561E")
OTHER = uuid.UUID(int=7)
THUMB = hashlib.sha1(b"a certificate").hexdigest().upper()


def raw(type_: int, data: bytes) -> Container:
    return Container(role=0, type=type_, version=1, body=Container(data=data))


def protector(protection: int, children: list[Container] | None = None,
              guid: uuid.UUID = GUID) -> Protector:
    vmk = Container(role=2, type=DatumType.VOLUME_MASTER_KEY, version=1,
                    body=Container(guid=guid, modified_time=0, unknown=0, protection=protection,
                                   datums=ListContainer(children or [])))
    return Protector(parse_datum(structs.DATUM.build(vmk), 0))


RECOVERY = protector(0x0800)
PASSWORD = protector(0x2000)
STARTUP = protector(0x0200)
CERT = protector(0x0400, [raw(DatumType.PUBLIC_KEY_INFO, bytes.fromhex(THUMB)),
                          raw(DatumType.ASYMMETRIC_ENCRYPTED_KEY, bytes(256))])


@pytest.mark.parametrize(("prot", "kind", "ids", "expected"), [
    (RECOVERY, SecretKind.RECOVERY_PASSWORD, {}, Match.UNIDENTIFIED),
    (RECOVERY, SecretKind.RECOVERY_PASSWORD, {"guid": GUID}, Match.GUID),
    (RECOVERY, SecretKind.RECOVERY_PASSWORD, {"guid": OTHER}, None),
    (RECOVERY, SecretKind.RECOVERY_PASSWORD, {"key_id": "3c116b76"}, Match.KEY_ID),
    (RECOVERY, SecretKind.RECOVERY_PASSWORD, {"key_id": "00000007"}, None),
    (RECOVERY, SecretKind.PASSWORD, {}, None),
    (PASSWORD, SecretKind.RECOVERY_PASSWORD, {"guid": GUID}, None),
    (PASSWORD, SecretKind.PASSWORD, {}, Match.UNIDENTIFIED),
    (STARTUP, SecretKind.BEK, {"guid": GUID}, Match.GUID),
    (RECOVERY, SecretKind.BEK, {"guid": GUID}, Match.GUID),  # a recovery key file
    (STARTUP, SecretKind.BEK, {"guid": OTHER}, None),
    (STARTUP, SecretKind.BEK, {}, None),
    (STARTUP, SecretKind.RECOVERY_PASSWORD, {}, None),
    (CERT, SecretKind.CERTIFICATE, {}, Match.UNIDENTIFIED),
    (CERT, SecretKind.CERTIFICATE, {"thumbprint": THUMB}, Match.THUMBPRINT),
    (CERT, SecretKind.CERTIFICATE, {"thumbprint": "00" * 20}, None),
    (RECOVERY, SecretKind.CERTIFICATE, {}, None),
    (RECOVERY, SecretKind.FVEK, {}, None),
    (CERT, SecretKind.KEY_PACKAGE, {}, None),
])
def test_match_protector(prot: Protector, kind: SecretKind, ids: dict[str, object],
                         expected: Match | None) -> None:
    assert match_protector(prot, kind, **ids) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("prot", [RECOVERY, PASSWORD, STARTUP, CERT])
@pytest.mark.parametrize(("guid", "key_id"), [(None, None), (GUID, None), (OTHER, None),
                                              (None, "3C116B76"), (None, "00000007")])
def test_keyring_and_unlock_candidates_agree(prot: Protector, guid: uuid.UUID | None,
                                             key_id: str | None) -> None:
    rp = "111111-111111-111111-111111-111111-111111-111111-111111"
    entry = KeyringEntry(SecretKind.RECOVERY_PASSWORD, rp, "f.csv", "row 2", guid=guid,
                         key_id=key_id)
    expected = match_protector(prot, SecretKind.RECOVERY_PASSWORD, guid=guid, key_id=key_id)
    assert entry.match(prot) == expected
    assert entry.candidate().match(prot) == expected
    assert KeyCandidate(SecretKind.RECOVERY_PASSWORD, rp, guid=guid,
                        key_id=key_id).match(prot) == expected


def test_a_bek_matches_by_the_guid_in_the_file() -> None:
    bek = BekFile(guid=GUID, key=bytes(32), path="x.BEK")
    assert KeyCandidate(SecretKind.BEK, bek).match(STARTUP) == Match.GUID
    assert KeyringEntry(SecretKind.BEK, bek, "usb", "BEK").match(STARTUP) == Match.GUID
    assert KeyCandidate(SecretKind.BEK, bek).match(protector(0x0200, guid=OTHER)) is None


def test_kinds_keep_their_strings() -> None:
    """JSON output and the audit log show these strings; the enum must not change them."""
    assert [str(k) for k in SecretKind] == ["recovery-password", "password", "bek", "fvek",
                                            "vmk", "certificate", "key-package", "tpm",
                                            "auto-unlock"]
    assert f"{SecretKind.RECOVERY_PASSWORD}" == "recovery-password"
    assert str(Match.KEY_ID) == "key id"
