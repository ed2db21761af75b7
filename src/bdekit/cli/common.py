"""Options every command shares: unlock secrets, volume selection, output, logging.

Secrets may come from a flag, an environment variable (``BDEKIT_RECOVERY_PASSWORD``,
``BDEKIT_PASSWORD``, ``BDEKIT_CERTIFICATE_PASSWORD``), a file (``--password-file``,
``--keyring``, ``--certificate``) or a prompt (a bare ``-pw``); none of them is ever logged.

Commands that unlock call :func:`cli_unlock` rather than ``volume.unlock``: it records every key
use in the audit trail (:mod:`bdekit.audit`), tries only the escrowed keys that match the
volume's protectors (:mod:`bdekit.keyring`), repairs a mistyped recovery password with
``--fix-typos`` (:mod:`bdekit.typos`), says which escrow entry unlocked and reminds the user to
rotate a recovery password or key once used.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from bdekit.errors import KeyError_, MissingKeyError, RecoveryPasswordFormatError, UsageError
from bdekit.escrow.secrets import KeyCandidate, Secrets, UnlockResult
from bdekit.format.bek import read_bek

if TYPE_CHECKING:
    from bdekit.escrow.keyring import Keyring

log = logging.getLogger(__name__)

PROMPT = "\0prompt"

F = Callable[..., Any]


def _parse_hex(value: str | None, name: str) -> bytes | None:
    if value is None:
        return None
    text = value.strip().replace(" ", "").replace(":", "")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise UsageError(f"{name} is not hexadecimal") from None
    if len(key) not in (16, 32, 64):
        raise UsageError(f"{name} has {len(key)} bytes; expected 16, 32 or 64")
    return key


def unlock_options(func: F) -> F:
    """Decorator adding the unlock options shared by every command."""
    options = [
        click.option("-rp", "--recovery-password", "-RecoveryPassword", "recovery_password",
                     multiple=True, metavar="PASSWORD",
                     help="48-digit recovery password (dashes, spaces or none). Also "
                          "$BDEKIT_RECOVERY_PASSWORD."),
        click.option("-pw", "--password", "-Password", "password", is_flag=False,
                     flag_value=PROMPT, default=None, metavar="PASSWORD",
                     help="user password; a bare -pw prompts for it. Also $BDEKIT_PASSWORD."),
        click.option("--password-file", type=click.Path(dir_okay=False), default=None,
                     help="read the password from the first line of this file"),
        click.option("-rk", "--bek", "-RecoveryKey", "bek", multiple=True,
                     type=click.Path(dir_okay=False),
                     help="startup key / recovery key file ({GUID}.BEK)"),
        click.option("--fvek", default=None, metavar="HEX",
                     help="full volume encryption key in hex (e.g. from memory forensics)"),
        click.option("--vmk", default=None, metavar="HEX", help="volume master key in hex"),
        click.option("--keyring", "keyring", multiple=True, metavar="FILE|DIR",
                     type=click.Path(exists=True),
                     help="escrowed recovery keys: Windows recovery key text files, CSV "
                          "(Entra ID / Intune / MBAM / ConfigMgr), Graph or AD DS JSON, LDIF, "
                          "BEK files, or a directory of them; only keys whose ID matches a "
                          "protector are tried (repeatable)"),
        click.option("--certificate", "certificate", multiple=True, metavar="FILE",
                     type=click.Path(dir_okay=False),
                     help="DRA / smart card certificate with its private key: PKCS#12 "
                          "(.pfx/.p12) or PEM (repeatable)"),
        click.option("--certificate-key", default=None, metavar="FILE",
                     type=click.Path(dir_okay=False),
                     help="private key of a PEM --certificate kept in a separate file"),
        click.option("--certificate-password", default=None, metavar="PASSWORD",
                     help="password of the .pfx or of the encrypted private key. Also "
                          "$BDEKIT_CERTIFICATE_PASSWORD."),
        click.option("--fix-typos", "fix_typos", is_flag=False, flag_value=1, default=None,
                     type=click.IntRange(1, 2), metavar="[=1|2]",
                     help="correct a mistyped recovery password: 1 (the bare option) fixes "
                          "blocks that fail their check digit, 2 also undetectable typos in "
                          "blocks that pass; candidates are tested in parallel"),
        click.option("--max-candidates", type=click.IntRange(1), default=None, metavar="N",
                     help="refuse a --fix-typos search of more than N candidates "
                          "(default 2000; each costs a ~0.5 s key stretch per core)"),
        click.option("--audit-log", default=None, metavar="FILE",
                     type=click.Path(dir_okay=False),
                     help="append the audit trail of key use here (default: $BDEKIT_AUDIT_LOG "
                          "or $XDG_STATE_HOME/bdekit/audit.jsonl)"),
        click.option("--partition", type=int, default=None,
                     help="use partition N of a partitioned disk image"),
        click.option("--offset", type=int, default=None,
                     help="the volume starts at this byte offset of the image"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_secrets(kwargs: dict[str, Any]) -> Secrets:
    """Collect the secrets of the unlock options (pops them from ``kwargs``)."""
    secrets = Secrets()
    rps = list(kwargs.pop("recovery_password", ()) or ())
    env_rp = os.environ.get("BDEKIT_RECOVERY_PASSWORD")
    if env_rp and not rps:
        rps.append(env_rp)
    secrets.recovery_passwords = rps
    password = kwargs.pop("password", None)
    password_file = kwargs.pop("password_file", None)
    if password == PROMPT:
        password = click.prompt("Password", hide_input=True, err=True)
    if password_file:
        try:
            with open(password_file, encoding="utf-8-sig") as fh:
                password = fh.readline().rstrip("\r\n")
        except OSError as exc:
            raise UsageError(f"cannot read password file: {exc.strerror}",
                             path=password_file) from None
    if password is None:
        password = os.environ.get("BDEKIT_PASSWORD")
    if password is not None:
        secrets.passwords.append(password)
    for bek in kwargs.pop("bek", ()) or ():
        secrets.beks.append(read_bek(bek))
    secrets.fvek = _parse_hex(kwargs.pop("fvek", None), "--fvek")
    secrets.vmk = _parse_hex(kwargs.pop("vmk", None), "--vmk")
    settings = UnlockSettings(
        audit_log=kwargs.pop("audit_log", None),
        fix_typos=kwargs.pop("fix_typos", None),
        max_candidates=kwargs.pop("max_candidates", None),
    )
    cert_password = kwargs.pop("certificate_password", None)
    if cert_password is None:
        cert_password = os.environ.get("BDEKIT_CERTIFICATE_PASSWORD")
    cert_key = kwargs.pop("certificate_key", None)
    cert_paths = list(kwargs.pop("certificate", ()) or ())
    if cert_key and len(cert_paths) != 1:
        raise UsageError("--certificate-key needs exactly one --certificate")
    if cert_paths:
        from bdekit.unlock.certificates import load_certificate

        for cert_path in cert_paths:
            secrets.certificates.append(load_certificate(cert_path, cert_password, cert_key))
    ring_paths = list(kwargs.pop("keyring", ()) or ())
    if ring_paths:
        from bdekit.escrow.keyring import load_keyring

        settings.keyring = load_keyring(ring_paths)
        # All of them for now (so that ``secrets.empty`` is false); cli_unlock keeps only the
        # ones that match the volume's protectors.
        settings.keyring_candidates = settings.keyring.candidates()
        secrets.candidates += settings.keyring_candidates
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.meta[SETTINGS_KEY] = settings
    return secrets


# --------------------------------------------------------------------------------------------
# Unlocking from the command line: audit trail, keyring matching, typo repair
# --------------------------------------------------------------------------------------------

SETTINGS_KEY = "bdekit.unlock_settings"


@dataclasses.dataclass
class UnlockSettings:
    """The non-secret unlock options, kept in ``ctx.meta`` by :func:`build_secrets`."""

    audit_log: str | None = None
    fix_typos: int | None = None
    max_candidates: int | None = None
    keyring: Keyring | None = None
    keyring_candidates: list[KeyCandidate] = dataclasses.field(default_factory=list)


def _settings(ctx: click.Context | None) -> UnlockSettings:
    ctx = ctx or click.get_current_context(silent=True)
    if ctx is None:
        return UnlockSettings()
    settings = ctx.meta.get(SETTINGS_KEY)
    return settings if isinstance(settings, UnlockSettings) else UnlockSettings()


def _quiet(ctx: click.Context | None) -> bool:
    root = ctx.find_root() if ctx is not None else None
    return bool(root is not None and isinstance(root.obj, dict) and root.obj.get("quiet"))


def cli_unlock(volume: Any, secrets: Secrets, ctx: click.Context | None = None, *,
               json_mode: bool = False) -> UnlockResult:
    """Unlock ``volume`` the way every command does (see the module docstring).

    Prints (stderr) which escrow entry or file unlocked and the rotation reminder; prints the
    corrected recovery password of a ``--fix-typos`` search on stdout (stderr when
    ``json_mode``, to keep stdout machine-readable). Raises as ``volume.unlock`` does.
    """
    from bdekit.crypto import keys
    from bdekit.escrow import audit
    from bdekit.unlock import typos

    ctx = ctx or click.get_current_context(silent=True)
    settings = _settings(ctx)
    quiet = _quiet(ctx)
    sub = ctx.command_path.split(" ", 1)[1:] if ctx is not None else []
    command = " ".join(["bdekit", *sub])  # whatever the program was called
    trail = audit.AuditLog(settings.audit_log, command=command, image=volume.path,
                           volume_guid=volume.metadata.volume_guid)
    protectors = volume.protectors
    if settings.keyring is not None:
        ring_ids = {id(c) for c in settings.keyring_candidates}
        others = [c for c in secrets.candidates if id(c) not in ring_ids]
        matching = settings.keyring.candidates(protectors)
        log.info("keyring: %d of %d escrowed keys match a protector of this volume",
                 len(matching), len(settings.keyring))
        secrets.candidates = matching + others
        if not matching and secrets.empty:
            listing = ", ".join(f"{p.type_name} {p.key_id}" for p in protectors) or "none"
            raise MissingKeyError(f"none of the {len(settings.keyring)} escrowed keys in the "
                                  f"keyring matches a protector of this volume (protectors: "
                                  f"{listing})", path=volume.path)
    typed_bad: list[str] = []
    if settings.fix_typos:
        good = []
        for rp in secrets.recovery_passwords:
            try:
                keys.parse_recovery_password(rp)
            except RecoveryPasswordFormatError:
                typed_bad.append(rp)
            else:
                good.append(rp)
        secrets.recovery_passwords = good
    corrected: str | None = None
    try:
        if secrets.empty and typed_bad and not _has_clear_key(protectors):
            raise MissingKeyError("only mistyped recovery passwords were given")
        result = volume.unlock(secrets, on_attempt=trail.attempt)
    except RecoveryPasswordFormatError as exc:
        exc.message += " (--fix-typos tests its likely corrections; `bdekit keys check` " \
                       "explains each block)"
        exc.args = (exc.one_line(),)
        raise
    except KeyError_ as first_error:
        typed = typed_bad + secrets.recovery_passwords
        if not settings.fix_typos or not typed:
            raise
        level = int(settings.fix_typos)
        limit = settings.max_candidates or typos.DEFAULT_MAX_CANDIDATES
        found = None
        last: Exception = first_error
        for text in typed:
            try:
                found = typos.search(
                    volume.metadata, text, level=level, max_candidates=limit,
                    on_attempt=trail.attempt, path=volume.path,
                    announce=None if quiet else (lambda m: click.echo(m, err=True)))
                break
            except KeyError_ as exc:
                last = exc
        if found is None:
            raise last from None
        volume.set_key(found.result)
        result = found.result
        corrected = found.password
    if result.via in ("fvek", "vmk", "clear-key"):
        trail.used(result.via, result.source, "unlocked", result.protector)
    if corrected is not None:
        click.echo(f"Corrected recovery password: {corrected}", err=json_mode)
    if not quiet:
        if result.source and result.source not in ("command line", "--fvek", "--vmk") \
                and result.via not in ("clear-key", "decrypted"):
            who = (f" (protector {{{str(result.protector.guid).upper()}}})"
                   if result.protector else "")
            click.echo(f"bdekit: unlocked with {result.via} from {result.source}{who}",
                       err=True)
        reminder = audit.rotation_reminder(result.via, result.protector)
        if reminder:
            click.echo(reminder, err=True)
    return result


def _has_clear_key(protectors: list[Any]) -> bool:
    return any(p.protection == 0 for p in protectors)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def setup_logging(verbose: int, quiet: bool, debug: bool) -> None:
    level = logging.WARNING
    if verbose:
        level = logging.INFO
    if debug:
        level = logging.DEBUG
    if quiet:
        level = logging.ERROR
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("bdekit: %(levelname)s: %(message)s"))
    root = logging.getLogger("bdekit")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def pass_common(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper
