"""Key protectors (VMK datums) and unlocking a volume with the secrets a user holds.

A protector is a top-level datum of type VMK (8), role 2: protector GUID, modification time,
protection type, then nested datums. How the VMK is wrapped depends on the type:

* recovery password (0x0800) and password (0x2000): a stretch key datum (salt) and an AES-CCM
  datum holding the VMK under the stretched key;
* startup key (0x0200): the 32-byte key of the ``{GUID}.BEK`` file (external key datum) unwraps
  the AES-CCM datum directly; the BEK's GUID is the protector GUID;
* clear key (0x0000, suspended protection): a key datum inside the protector is the key;
* TPM variants: need the original machine's TPM, unsupported offline.

The full volume encryption key (FVEK) is the top-level AES-CCM datum of role 3, wrapped by the
VMK; its plaintext key datum's key type is the encryption method.

A wrong secret shows as an AES-CCM authentication failure (:class:`WrongKeyError`); secrets that
fit no protector are never tried against it. Secrets are never logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from bdekit.crypto import keys
from bdekit.errors import (
    MissingKeyError,
    UnsupportedError,
    WrongKeyError,
)
from bdekit.escrow.secrets import AttemptHook, KeyCandidate, Secrets, UnlockResult
from bdekit.format.constants import (
    DatumType,
    EncryptionMethod,
    ProtectionType,
)
from bdekit.format.metadata import Metadata
from bdekit.format.protector import TPM_TYPES, Protector, protectors_of
from bdekit.unlock.vmk import _protector_key, _unwrap_vmk, decrypt_fvek, fits, normalise_fvek

log = logging.getLogger(__name__)


def unlock(metadata: Metadata, secrets: Secrets, *, path: str | None = None,
           on_attempt: AttemptHook | None = None) -> UnlockResult:
    """Unlock with the first secret that fits a protector and verifies; see module docstring."""
    method = metadata.method
    protectors = protectors_of(metadata)
    if metadata.state == 1 and method == EncryptionMethod.NONE:
        return UnlockResult(fvek=b"", method=EncryptionMethod.NONE, via="decrypted")
    if secrets.fvek is not None:
        fvek = normalise_fvek(secrets.fvek, method, path)
        log.info("using the FVEK given (fingerprint %s)", keys.fvek_fingerprint(fvek))
        return UnlockResult(fvek=fvek, method=method, via="fvek", source="--fvek")
    if secrets.vmk is not None:
        try:
            fvek, key_type = decrypt_fvek(metadata, secrets.vmk)
        except WrongKeyError:
            raise WrongKeyError("the VMK given does not decrypt the FVEK (AES-CCM "
                                "authentication failed): wrong VMK", path=path) from None
        return UnlockResult(fvek=fvek, method=key_type or method, vmk=secrets.vmk, via="vmk",
                            source="--vmk")
    # Clear key: suspended protection, used without asking.
    for protector in protectors:
        if protector.protection == ProtectionType.CLEAR_KEY:
            clear = protector.datum.find(DatumType.KEY)
            if clear is None:
                continue
            try:
                vmk = _unwrap_vmk(protector, bytes(clear.body.key))
            except WrongKeyError:
                log.warning("clear key protector %s does not verify", protector.guid)
                continue
            fvek, key_type = decrypt_fvek(metadata, vmk)
            log.info("volume protection is suspended: unlocked with the clear key of protector "
                     "%s", protector.guid)
            return UnlockResult(fvek, key_type or method, vmk, "clear-key", protector,
                                "clear key on the volume")
    candidates = secrets.all_candidates()
    tried = 0
    wrong: list[str] = []
    for cand in candidates:
        for protector in protectors:
            if not fits(protector, cand):
                continue
            tried += 1
            try:
                if cand.kind == "certificate":
                    from bdekit.unlock import certificates

                    vmk = certificates.unwrap_vmk(protector, cand.value, metadata=metadata)
                else:
                    key = _protector_key(protector, cand)
                    if key is None:
                        continue
                    vmk = _unwrap_vmk(protector, key)
            except WrongKeyError as exc:
                reason = f" ({exc.message})" if cand.kind == "certificate" else ""
                wrong.append(f"{cand.kind} from {cand.source} against protector "
                             f"{protector.key_id}{reason}")
                if on_attempt:
                    on_attempt(cand, protector, "wrong key")
                continue
            fvek, key_type = decrypt_fvek(metadata, vmk)
            if on_attempt:
                on_attempt(cand, protector, "unlocked")
            log.info("unlocked with %s (%s) via protector %s", cand.kind, cand.source,
                     protector.guid)
            return UnlockResult(fvek, key_type or method, vmk, cand.kind, protector, cand.source)
    if tried:
        raise WrongKeyError("wrong key: " + "; ".join(wrong) + " (AES-CCM authentication "
                            "failed)", path=path)
    _raise_nothing_fits(protectors, candidates, path)
    raise AssertionError("unreachable")


def _raise_nothing_fits(protectors: Iterable[Protector], candidates: list[KeyCandidate],
                        path: str | None) -> None:
    plist = list(protectors)
    listing = ", ".join(f"{p.type_name} {{{str(p.guid).upper()}}}" for p in plist) or "none"
    offline = [p for p in plist if p.protection not in TPM_TYPES]
    if plist and not offline:
        raise UnsupportedError(f"only TPM protectors ({listing}); they need the original "
                               "machine's TPM and cannot be unlocked offline", path=path)
    if candidates:
        kinds = ", ".join(sorted({c.kind for c in candidates}))
        beks = [c for c in candidates if c.kind == "bek"]
        extra = ""
        if beks:
            extra = " (BEK file GUID " + ", ".join(
                "{" + str(c.value.guid).upper() + "}" for c in beks) + " matches no protector)"
        raise WrongKeyError(f"no protector accepts the secret given ({kinds}){extra}; "
                            f"protectors: {listing}", path=path)
    raise MissingKeyError(f"no key given; protectors: {listing} (use --recovery-password, "
                          "--password, --bek, --keyring, --certificate, --fvek or --vmk)",
                          path=path)

