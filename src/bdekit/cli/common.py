"""Options every command shares: unlock secrets, volume selection, output, logging.

Secrets may come from a flag, an environment variable (``BDEKIT_RECOVERY_PASSWORD``,
``BDEKIT_PASSWORD``, ``BDEKIT_CERTIFICATE_PASSWORD``), a file (``--password-file``,
``--recovery-password-file``, ``--keyring``, ``--certificate``; ``-`` for standard input where
documented), or a prompt (a bare ``-pw``); none of them is ever logged, and the audit log names
where each came from (:mod:`bdekit.cli.inputs`). A flag's value is visible to other users of
the machine (``ps``): the files, standard input and the environment are not. Every file is read
bounded (:mod:`bdekit.image.bounded`).

:func:`build_secrets` turns the options into :class:`Secrets` and keeps the non-secret ones
(keyring, ``--fix-typos``, ``--max-candidates``, ``--audit-log``) as an
:class:`~bdekit.unlock.policy.UnlockPolicy` in the click context. Keys from outside
(``--memory``, ``--fvek-file``, ``--vmk-file``) need the volume: they are read, and memory keys
checked against the volume, by :func:`bdekit.memory.keyopts.load_key_options`, and given to
the unlock as ``--fvek`` / ``--vmk`` would be. Commands that unlock call
:func:`cli_unlock` rather than ``volume.unlock``: it runs that policy (audit trail, keyring
narrowing, typo repair; see :mod:`bdekit.unlock.policy`) and prints what it reports: the
corrected recovery password, which escrow entry unlocked and the rotation reminder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from bdekit.cli import inputs, protector_options
from bdekit.cli.cmdline import OFFSET
from bdekit.errors import UsageError
from bdekit.escrow.secrets import Secrets, UnlockResult
from bdekit.image.bounded import read_bek
from bdekit.unlock.policy import UnlockableVolume, UnlockPolicy

if TYPE_CHECKING:
    from bdekit.unlock.certificates import Certificate

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
                     help="48-digit recovery password (dashes, spaces or none); '-' reads it "
                          "from standard input. Also $BDEKIT_RECOVERY_PASSWORD. A value on "
                          "the command line is visible to other users: prefer the file, "
                          "standard input or the variable"),
        click.option("--recovery-password-file", "recovery_password_file", multiple=True,
                     type=click.Path(dir_okay=False, allow_dash=True), metavar="FILE",
                     help="read recovery passwords from this file, one per line ('-': "
                          "standard input)"),
        click.option("-pw", "--password", "-Password", "password", is_flag=False,
                     flag_value=PROMPT, default=None, metavar="PASSWORD",
                     help="user password; a bare -pw prompts for it. Also $BDEKIT_PASSWORD."),
        click.option("--password-file", type=click.Path(dir_okay=False, allow_dash=True),
                     default=None,
                     help="read the password from the first line of this file ('-': "
                          "standard input)"),
        click.option("-rk", "--bek", "-RecoveryKey", "bek", multiple=True,
                     type=click.Path(dir_okay=False),
                     help="startup key / recovery key file ({GUID}.BEK)"),
        click.option("--fvek", default=None, metavar="HEX",
                     help="full volume encryption key in hex (e.g. from memory forensics)"),
        click.option("--vmk", default=None, metavar="HEX", help="volume master key in hex"),
        click.option("--memory", "memory", multiple=True, metavar="FILE",
                     type=click.Path(exists=True, dir_okay=False),
                     help="memory image (raw, LiME, crash dump) to search for the volume's "
                          "keys; each is validated against the volume (repeatable)"),
        click.option("--fvek-file", default=None, metavar="FILE",
                     type=click.Path(exists=True, dir_okay=False),
                     help="FVEK file: dislocker/MemProcFS .fvek, raw bytes, FVEK[:TWEAK] hex"),
        click.option("--vmk-file", default=None, metavar="FILE",
                     type=click.Path(exists=True, dir_okay=False),
                     help="VMK file: 32 raw bytes, hex, or a VMK key datum"),
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
        click.option("--offset", type=OFFSET, default=None,
                     help="the volume starts at this offset of the image: bytes, 0x "
                          "hexadecimal, or 512-byte sectors with an 's' suffix"),
    ]
    options += protector_options.protector_options()  # TPM, PIN, auto-unlock
    for option in reversed(options):
        func = option(func)
    return func


def build_secrets(kwargs: dict[str, Any]) -> Secrets:
    """Collect the secrets of the unlock options (pops them from ``kwargs``)."""
    secrets = Secrets()
    for rp in inputs.recovery_passwords(kwargs):
        secrets.recovery_passwords.append(rp.value)
        secrets.sources.setdefault(rp.value, rp.source)
    password = _password(kwargs)
    if password is not None:
        secrets.passwords.append(password.value)
        secrets.sources.setdefault(password.value, password.source)
    for bek in kwargs.pop("bek", ()) or ():
        secrets.beks.append(read_bek(bek))
    secrets.fvek = _parse_hex(kwargs.pop("fvek", None), "--fvek")
    secrets.vmk = protector_options.parse_vmk(kwargs.pop("vmk", None))
    policy = UnlockPolicy(audit_log=kwargs.pop("audit_log", None),
                          fix_typos=kwargs.pop("fix_typos", None),
                          max_candidates=kwargs.pop("max_candidates", None))
    ctx = click.get_current_context(silent=True)
    _outside_keys(secrets, kwargs, policy, ctx)
    secrets.certificates += _certificates(kwargs)
    ring_paths = list(kwargs.pop("keyring", ()) or ())
    if ring_paths:
        from bdekit.escrow.keyring import load_keyring  # noqa: PLC0415 (rarely used)

        policy.keyring = load_keyring(ring_paths)
        # All of them for now (so that ``secrets.empty`` is false); the policy keeps only the
        # ones that match the volume's protectors.
        secrets.candidates += policy.keyring.candidates()
    if ctx is not None:
        ctx.meta[POLICY_KEY] = policy
    protector_options.collect(kwargs, secrets, cli_unlock)
    return secrets


def _password(kwargs: dict[str, Any]) -> inputs.Sourced | None:
    """The user password of ``--password-file`` / ``-pw`` / $BDEKIT_PASSWORD (pops them)."""
    value: str | None = kwargs.pop("password", None)
    password_file = kwargs.pop("password_file", None)
    if password_file:
        return inputs.read_password_file(password_file)
    if value == PROMPT:
        return inputs.prompt_password()
    if value is not None:
        return inputs.Sourced(value, inputs.FROM_COMMAND_LINE)
    env = os.environ.get(inputs.ENV_PASSWORD)
    return inputs.Sourced(env, f"${inputs.ENV_PASSWORD}") if env is not None else None


def _outside_keys(secrets: Secrets, kwargs: dict[str, Any], policy: UnlockPolicy,
                  ctx: click.Context | None) -> None:
    """The keys of ``--memory``, ``--fvek-file`` and ``--vmk-file`` (pops them); they need
    the volume, named by the command's IMAGE argument and ``--offset`` / ``--partition``."""
    memory = kwargs.pop("memory", ()) or ()
    fvek_file = kwargs.pop("fvek_file", None)
    vmk_file = kwargs.pop("vmk_file", None)
    if not (memory or fvek_file or vmk_file):
        return  # the memory search (numpy, tqdm) stays unloaded
    from bdekit.memory.keyopts import load_key_options  # noqa: PLC0415

    quiet = is_quiet(ctx)
    load_key_options(secrets, memory=memory, fvek_file=fvek_file, vmk_file=vmk_file,
                     image=ctx.params.get("image") if ctx else None,
                     offset=kwargs.get("offset"), partition=kwargs.get("partition"),
                     audit_log=policy.audit_log, command=command_name(ctx),
                     progress=sys.stderr.isatty() and not quiet,
                     echo=None if quiet else _echo_err)


def _certificates(kwargs: dict[str, Any]) -> list[Certificate]:
    """The certificates of ``--certificate`` (pops the certificate options)."""
    cert_password = kwargs.pop("certificate_password", None)
    if cert_password is None:
        cert_password = os.environ.get("BDEKIT_CERTIFICATE_PASSWORD")
    cert_key = kwargs.pop("certificate_key", None)
    cert_paths = list(kwargs.pop("certificate", ()) or ())
    if cert_key and len(cert_paths) != 1:
        raise UsageError("--certificate-key needs exactly one --certificate")
    if not cert_paths:
        return []  # the asymmetric cryptography of certificates stays unloaded
    from bdekit.unlock.certificates import load_certificate  # noqa: PLC0415

    return [load_certificate(path, cert_password, cert_key) for path in cert_paths]


# --------------------------------------------------------------------------------------------
# Unlocking from the command line: the unlock policy, its messages
# --------------------------------------------------------------------------------------------

POLICY_KEY = "bdekit.unlock_policy"


def is_quiet(ctx: click.Context | None) -> bool:
    root = ctx.find_root() if ctx is not None else None
    return bool(root is not None and isinstance(root.obj, dict) and root.obj.get("quiet"))


def _echo_err(message: str) -> None:
    click.echo(message, err=True)


def cli_policy(ctx: click.Context | None = None) -> UnlockPolicy:
    """The unlock policy of this command: the options :func:`build_secrets` kept, the command
    name for the audit log, and progress on stderr unless ``--quiet``."""
    ctx = ctx or click.get_current_context(silent=True)
    policy = ctx.meta.get(POLICY_KEY) if ctx is not None else None
    if not isinstance(policy, UnlockPolicy):
        policy = UnlockPolicy()
    return dataclasses.replace(policy, command=command_name(ctx),
                               announce=None if is_quiet(ctx) else _echo_err)


def command_name(ctx: click.Context | None) -> str:
    """The command for the audit log (``bdekit decrypt``, whatever the program was called)."""
    sub = ctx.command_path.split(" ", 1)[1:] if ctx is not None else []
    return " ".join(["bdekit", *sub])


def cli_unlock(volume: UnlockableVolume, secrets: Secrets, ctx: click.Context | None = None,
               *, json_mode: bool = False) -> UnlockResult:
    """Unlock ``volume`` with the command's :func:`cli_policy` and print what it reports.

    Prints (stderr) which escrow entry or file unlocked and the rotation reminder; prints the
    corrected recovery password of a ``--fix-typos`` search on stdout (stderr when
    ``json_mode``, to keep stdout machine-readable). Raises as the policy does.
    """
    ctx = ctx or click.get_current_context(silent=True)
    outcome = cli_policy(ctx).unlock(volume, secrets)
    if outcome.corrected is not None:
        click.echo(f"Corrected recovery password: {outcome.corrected}",
                   err=json_mode or stdout_taken(ctx))
    if not is_quiet(ctx):
        for line in outcome.notes:
            click.echo(line, err=True)
    return outcome.result


#: ``ctx.meta`` key set when standard output carries the command's data (``decrypt IMG -``)
STDOUT_TAKEN = "bdekit.stdout_taken"


def stdout_taken(ctx: click.Context | None = None) -> bool:
    """Whether standard output is the command's output: everything else goes to stderr."""
    ctx = ctx or click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get(STDOUT_TAKEN))


def emit_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, default=str))
