"""Secrets read from files, standard input, the environment or a prompt, and where each came
from; the unlock options' input files for the :class:`~bdekit.pipeline.paths.PathPlan`.

Sources, as the audit log's ``key_source`` names them: ``command line`` (the option's value),
``--password-file FILE``, ``--recovery-password-file FILE``, ``standard input`` (``-`` as
the file, or ``-rp -``), ``$BDEKIT_PASSWORD`` / ``$BDEKIT_RECOVERY_PASSWORD``, ``prompt``.
Command-line values are visible to other users of the machine (``ps``, ``/proc``): the files,
standard input and the environment are not.

A secret file is read bounded (:func:`bdekit.image.bounded.read_bounded`) and decoded as
UTF-8 (a BOM is skipped) or as UTF-16 when it starts with a UTF-16 byte order mark (Notepad's
"Unicode"); anything else is a one-line error saying which encoding failed and where, never
the bytes themselves.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

import click

from bdekit.errors import UsageError
from bdekit.image.bounded import STDIN, read_bounded
from bdekit.pipeline.paths import PathPlan, image_files

#: Where a secret came from when it is not a file.
FROM_COMMAND_LINE = "command line"
FROM_STDIN = "standard input"
FROM_PROMPT = "prompt"
ENV_PASSWORD = "BDEKIT_PASSWORD"
ENV_RECOVERY_PASSWORD = "BDEKIT_RECOVERY_PASSWORD"

_BOMS = ((b"\xef\xbb\xbf", "utf-8", "UTF-8"), (b"\xff\xfe", "utf-16-le", "UTF-16"),
         (b"\xfe\xff", "utf-16-be", "UTF-16"))


@dataclasses.dataclass
class Sourced:
    """A secret and where it came from (``source`` is what the audit log shows)."""

    value: str = dataclasses.field(repr=False)
    source: str


def decode_secret(data: bytes, path: str, kind: str) -> str:
    """Text of a secret file: UTF-8 (BOM skipped) or UTF-16 with a BOM (see module docstring)."""
    where = "<standard input>" if path == STDIN else path
    for bom, codec, label in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom):].decode(codec)
            except UnicodeDecodeError as exc:
                raise UsageError(f"the {kind} starts with a {label} byte order mark but is not "
                                 f"valid {label} (at byte {exc.start + len(bom)})",
                                 path=where) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"the {kind} is not UTF-8 text (invalid byte at offset {exc.start}) "
                         "and has no UTF-16 byte order mark: save it as UTF-8 or as UTF-16 "
                         "with a BOM", path=where) from None


def _source_of(path: str, option: str) -> str:
    return FROM_STDIN if path == STDIN else f"{option} {path}"


def read_password_file(path: str) -> Sourced:
    """The password on the first line of ``path`` (``-``: standard input)."""
    text = decode_secret(read_bounded(path, "password file", allow_stdin=True), path,
                         "password file")
    line = text.splitlines()[0] if text else ""
    return Sourced(line.rstrip("\r\n"), _source_of(path, "--password-file"))


def read_recovery_password_file(path: str) -> list[Sourced]:
    """Every non-empty line of ``path`` (``-``: standard input) as a recovery password."""
    text = decode_secret(read_bounded(path, "recovery password file", allow_stdin=True), path,
                         "recovery password file")
    found = [line.strip() for line in text.splitlines() if line.strip()]
    if not found:
        raise UsageError("no recovery password in this file",
                         path="<standard input>" if path == STDIN else path)
    source = _source_of(path, "--recovery-password-file")
    return [Sourced(rp, source) for rp in found]


def stdin_is_terminal() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def prompt_password() -> Sourced:
    """A bare ``-pw``: prompt on the terminal; without one, the first line of standard input
    (nothing there is a one-line error)."""
    if stdin_is_terminal():
        return Sourced(click.prompt("Password", hide_input=True, err=True), FROM_PROMPT)
    line = sys.stdin.readline() if sys.stdin is not None else ""
    if not line:
        raise UsageError("a bare -pw prompts for the password, but there is no terminal and "
                         "nothing on standard input: use --password-file FILE (- for standard "
                         f"input) or ${ENV_PASSWORD}")
    return Sourced(line.rstrip("\r\n"), FROM_STDIN)


def recovery_passwords(kwargs: dict[str, Any]) -> list[Sourced]:
    """``-rp`` values (``-rp -`` reads standard input), ``--recovery-password-file``, else
    ``$BDEKIT_RECOVERY_PASSWORD`` (pops the options)."""
    out: list[Sourced] = []
    for value in kwargs.pop("recovery_password", ()) or ():
        if value == STDIN:
            out += read_recovery_password_file(STDIN)
        else:
            out.append(Sourced(value, FROM_COMMAND_LINE))
    for path in kwargs.pop("recovery_password_file", ()) or ():
        out += read_recovery_password_file(path)
    env = os.environ.get(ENV_RECOVERY_PASSWORD)
    if env and not out:
        out.append(Sourced(env, f"${ENV_RECOVERY_PASSWORD}"))
    return out


def require_input(path: str) -> None:
    """A missing image (no file of it: a split set may be named by its base name) is a usage
    error, exit 2."""
    if not any(os.path.lexists(name) for name in image_files(path)):
        raise UsageError("no such file or directory", path=path)


def plan_unlock_inputs(plan: PathPlan, kwargs: dict[str, Any]) -> None:
    """Add the files the unlock options read to ``plan`` (nothing is popped)."""
    plan.add_inputs("BEK file", kwargs.get("bek"))
    plan.add_input("password file", kwargs.get("password_file"))
    plan.add_inputs("recovery password file", kwargs.get("recovery_password_file"))
    plan.add_inputs("keyring", kwargs.get("keyring"))
    plan.add_inputs("certificate", kwargs.get("certificate"))
    plan.add_input("certificate key", kwargs.get("certificate_key"))
    plan.add_input("OS volume image", kwargs.get("auto_unlock_from"))
    plan.add_inputs("OS volume BEK file", kwargs.get("os_bek"))
    plan.add_input("SYSTEM hive", kwargs.get("system_hive"))
    plan.add_audit_log(kwargs.get("audit_log"))


__all__ = ["FROM_COMMAND_LINE", "FROM_PROMPT", "FROM_STDIN", "Sourced", "decode_secret",
           "plan_unlock_inputs", "prompt_password", "read_password_file",
           "read_recovery_password_file", "recovery_passwords", "require_input",
           "stdin_is_terminal"]
