"""Key protectors (VMK datums) and unlocking a volume with the secrets a user holds.

A protector is a top-level datum of type VMK (8), role 2: protector GUID, modification time,
protection type, then nested datums. How the VMK is wrapped depends on the type:

* recovery password (0x0800) and password (0x2000): a stretch key datum (salt) and an AES-CCM
  datum holding the VMK under the stretched key;
* startup key (0x0200): the 32-byte key of the ``{GUID}.BEK`` file (external key datum) unwraps
  the AES-CCM datum directly; the BEK's GUID is the protector GUID;
* clear key (0x0000, suspended protection): a key datum inside the protector is the key;
* certificate (0x1000): :mod:`bdekit.unlock.certificates`;
* TPM variants: the secret the TPM released (captured), with the PIN and startup key they
  need: :mod:`bdekit.unlock.tpm`;
* an auto-unlocked data volume's startup key protector: the external key recovered from the OS
  volume (:mod:`bdekit.unlock.autounlock`) opens it as a BEK would.

The full volume encryption key (FVEK) is the top-level AES-CCM datum of role 3, wrapped by the
VMK; its plaintext key datum's key type is the encryption method.

:func:`unlock` tries, in order: a raw FVEK, a raw VMK, the clear key of a suspended volume, then
every secret against every protector it matches (:meth:`KeyCandidate.match`). A wrong secret
shows as an AES-CCM authentication failure (:class:`WrongKeyError`); secrets that match no
protector are never tried against it. Every error names the image. Secrets are never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from bdekit.crypto import keys
from bdekit.errors import (
    BdeError,
    MetadataError,
    MissingKeyError,
    UnsupportedError,
    WrongKeyError,
)
from bdekit.escrow.secrets import (
    AttemptHook,
    AttemptOutcome,
    KeyCandidate,
    SecretKind,
    Secrets,
    UnlockResult,
    UnlockVia,
)
from bdekit.format.constants import (
    DatumType,
    EncryptionMethod,
    ProtectionType,
)
from bdekit.format.metadata import Metadata
from bdekit.format.protector import TPM_TYPES, Protector, protector_versions, protectors_of
from bdekit.unlock import tpm
from bdekit.unlock.vmk import decrypt_fvek, normalise_fvek, protector_key, unwrap_protector

log = logging.getLogger(__name__)


def unlock(metadata: Metadata, secrets: Secrets, *, path: str | None = None,
           on_attempt: AttemptHook | None = None) -> UnlockResult:
    """Unlock with the first secret that fits a protector and verifies; see module docstring."""
    try:
        return _unlock(metadata, secrets, path, on_attempt)
    except BdeError as exc:
        raise exc.with_context(path=path) from None


def _unlock(metadata: Metadata, secrets: Secrets, path: str | None,
            on_attempt: AttemptHook | None) -> UnlockResult:
    method = metadata.method
    if metadata.state == 1 and method == EncryptionMethod.NONE:
        return UnlockResult(fvek=b"", method=EncryptionMethod.NONE, via=UnlockVia.DECRYPTED)
    if secrets.fvek is not None:
        fvek = normalise_fvek(secrets.fvek, method, path)
        log.info("using the FVEK given (fingerprint %s)", keys.fvek_fingerprint(fvek))
        return UnlockResult(fvek=fvek, method=method, via=UnlockVia.FVEK, source="--fvek")
    if secrets.vmk is not None:
        try:
            fvek, key_type = decrypt_fvek(metadata, secrets.vmk)
        except WrongKeyError:
            raise WrongKeyError("the VMK given does not decrypt the FVEK (AES-CCM "
                                "authentication failed): wrong VMK", path=path) from None
        return UnlockResult(fvek=fvek, method=key_type or method, vmk=secrets.vmk,
                            via=UnlockVia.VMK, source="--vmk")
    protectors = protector_versions(metadata)
    result = _unlock_clear_key(metadata, protectors)
    if result is not None:
        return result
    return _unlock_with_candidates(metadata, protectors, secrets.all_candidates(), path,
                                   on_attempt)


def _unlock_clear_key(metadata: Metadata, protectors: list[Protector]) -> UnlockResult | None:
    """Suspended protection: the clear key of the volume, used without asking."""
    for protector in protectors:
        if protector.protection != ProtectionType.CLEAR_KEY:
            continue
        clear = protector.datum.find(DatumType.KEY)
        if clear is None:
            continue
        try:
            vmk = unwrap_protector(protector, bytes(clear.body.key))
        except WrongKeyError:
            log.warning("clear key protector %s does not verify", protector.guid)
            continue
        fvek, key_type = decrypt_fvek(metadata, vmk)
        log.info("volume protection is suspended: unlocked with the clear key of protector "
                 "%s", protector.guid)
        return UnlockResult(fvek, key_type or metadata.method, vmk, UnlockVia.CLEAR_KEY,
                            protector, "clear key on the volume")
    return None


def _open_protector(metadata: Metadata, protector: Protector, cand: KeyCandidate
                    ) -> bytes | None:
    """The VMK ``cand`` unwraps from ``protector`` (raises WrongKeyError), or None."""
    if cand.kind == SecretKind.CERTIFICATE:
        # loaded with a certificate only: its asymmetric cryptography costs start-up time
        from bdekit.unlock import certificates  # noqa: PLC0415

        return certificates.unwrap_vmk(protector, cand.value, metadata=metadata)
    if cand.kind == SecretKind.TPM:
        return tpm.open_tpm_protector(metadata, protector, cand.value)
    key = protector_key(protector, cand)
    if key is None:
        return None
    return unwrap_protector(protector, key)


def _unlock_with_candidates(metadata: Metadata, protectors: list[Protector],
                            candidates: list[KeyCandidate], path: str | None,
                            on_attempt: AttemptHook | None) -> UnlockResult:
    tried = 0
    wrong: list[str] = []
    for cand in candidates:
        for protector in protectors:
            if cand.match(protector) is None:
                continue
            tried += 1
            try:
                vmk = _open_protector(metadata, protector, cand)
            except WrongKeyError as exc:
                explained = (SecretKind.CERTIFICATE, SecretKind.TPM)
                reason = f" ({exc.message})" if cand.kind in explained else ""
                wrong.append(f"{cand.kind} from {cand.source} against protector "
                             f"{protector.key_id}{reason}")
                if on_attempt:
                    on_attempt(cand, protector, AttemptOutcome.WRONG_KEY)
                continue
            if vmk is None:
                continue
            fvek, key_type = decrypt_fvek(metadata, vmk)
            if on_attempt:
                on_attempt(cand, protector, AttemptOutcome.UNLOCKED)
            log.info("unlocked with %s (%s) via protector %s", cand.kind, cand.source,
                     protector.guid)
            return UnlockResult(fvek, key_type or metadata.method, vmk, UnlockVia(cand.kind),
                                protector, cand.source)
    if tried and metadata.vote_undecided:
        raise MetadataError("no protector opens with the secrets given, and the metadata "
                            "copies disagree where no majority decides: the protectors may be "
                            "damaged rather than the key wrong (" + "; ".join(wrong) + ")",
                            path=path)
    if tried:
        raise WrongKeyError("wrong key: " + "; ".join(wrong) + " (AES-CCM authentication "
                            "failed)", path=path)
    raise _nothing_fits(protectors_of(metadata) or protectors, candidates, path)


def _nothing_fits(protectors: Iterable[Protector], candidates: list[KeyCandidate],
                  path: str | None) -> BdeError:
    """The error when no secret matches any protector (nothing was tried)."""
    plist = list(protectors)
    listing = ", ".join(f"{p.type_name} {{{str(p.guid).upper()}}}" for p in plist) or "none"
    offline = [p for p in plist if p.protection not in TPM_TYPES]
    if plist and not offline:
        needs = "; ".join(f"{p.type_name}: {tpm.opens_with(p)}" for p in plist)
        return UnsupportedError(f"only TPM protectors ({listing}); without the original "
                                f"machine's TPM they open only with what it releases ({needs})",
                                path=path)
    if candidates:
        kinds = ", ".join(sorted({str(c.kind) for c in candidates}))
        beks = [c for c in candidates if c.kind == SecretKind.BEK]
        extra = ""
        if beks:
            extra = " (BEK file GUID " + ", ".join(
                "{" + str(c.value.guid).upper() + "}" for c in beks) + " matches no protector)"
        return WrongKeyError(f"no protector accepts the secret given ({kinds}){extra}; "
                             f"protectors: {listing}", path=path)
    return MissingKeyError(f"no key given; protectors: {listing} (use --recovery-password, "
                           "--password, --bek, --keyring, --certificate, --tpm-secret, "
                           "--auto-unlock-from, --fvek or --vmk)",
                           path=path)
