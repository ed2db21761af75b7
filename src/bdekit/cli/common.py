"""Options every command shares: unlock secrets, volume selection, output, logging.

Secrets may come from a flag, an environment variable (``BDEKIT_RECOVERY_PASSWORD``,
``BDEKIT_PASSWORD``), a file (``--password-file``) or a prompt (a bare ``-pw``); none of them
is ever logged.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from bdekit.errors import UsageError
from bdekit.protectors import Secrets, read_bek

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
    return secrets


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
