"""Unlock options for TPM protectors and auto-unlocked data volumes (part of every command's
unlock options, :func:`bdekit.cli.common.unlock_options`).

* ``--tpm-secret FILE|HEX`` (repeatable): what the TPM released, captured off the bus or from
  memory (:func:`bdekit.format.tpm.parse_unsealed` says which forms); a file holds the bytes or
  their hex. ``--pin`` (a bare ``--pin`` prompts; ``$BDEKIT_PIN`` when a TPM secret is given):
  the PIN of a TPM+PIN protector. A startup key for TPM+startup key protectors comes from
  ``--bek``. ``--vmk`` also takes the 0x2c-byte key datum a TPM-only protector releases.
* ``--auto-unlock-from OS_IMAGE`` with the OS volume's own unlock options (``--os-recovery-
  password``, ``--os-password``, ``--os-bek``, ``--os-vmk``, ``--os-tpm-secret`` + ``--os-pin``;
  ``--os-partition`` / ``--os-offset``), and the registry value(s) from ``--system-hive FILE``
  (that OS's SYSTEM hive, read with regipy) or ``--auto-unlock-data HEX``: the OS volume is
  unlocked (audited like any unlock), its auto-unlock key opens the values, and each value's
  external key becomes a secret for the data volume (:mod:`bdekit.unlock.autounlock`).

Secrets are never logged; a secret given as a file path is named by its path only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from bdekit.errors import UsageError
from bdekit.escrow.registry import read_auto_unlock_values
from bdekit.escrow.secrets import Secrets, TpmSecret, UnlockResult
from bdekit.format.autounlock import AutoUnlockData, parse_data_value
from bdekit.format.tpm import KEY_DATUM_SIZE, parse_unsealed
from bdekit.image.bounded import read_bek
from bdekit.unlock.autounlock import auto_unlock_key, external_keys
from bdekit.volume.bde import BdeVolume, open_bde

PIN_PROMPT = "\0prompt-pin"
#: The most bytes read of a --tpm-secret file (a capture in hex is under 200 bytes).
MAX_SECRET_FILE = 4096
_HEX_TEXT = re.compile(r"^[0-9A-Fa-f\s,:\\]+$")

OsUnlock = Callable[[BdeVolume, Secrets], UnlockResult]


def protector_options() -> list[Any]:
    """The click options of this module (added to every command's unlock options)."""
    return [
        click.option("--tpm-secret", "tpm_secret", multiple=True, metavar="FILE|HEX",
                     help="what the TPM released (sniffed or from memory): the 0x2c-byte key "
                          "datum (TPM, TPM+startup key) or the 0x50-byte AES-CCM blob "
                          "(TPM+PIN); a file of the bytes or their hex (repeatable)"),
        click.option("--pin", "pin", is_flag=False, flag_value=PIN_PROMPT, default=None,
                     metavar="PIN", help="PIN of a TPM+PIN protector; a bare --pin prompts. "
                                         "Also $BDEKIT_PIN."),
        click.option("--auto-unlock-from", "auto_unlock_from", default=None, metavar="OS_IMAGE",
                     type=click.Path(dir_okay=False),
                     help="open this auto-unlocked data volume through its OS volume's image "
                          "(with --os-* unlock options, and --system-hive or "
                          "--auto-unlock-data)"),
        click.option("--os-recovery-password", "os_recovery_password", multiple=True,
                     metavar="PASSWORD", help="recovery password of the --auto-unlock-from "
                                              "volume"),
        click.option("--os-password", "os_password", default=None, metavar="PASSWORD",
                     help="user password of the --auto-unlock-from volume"),
        click.option("--os-bek", "os_bek", multiple=True, type=click.Path(dir_okay=False),
                     help="startup key file of the --auto-unlock-from volume"),
        click.option("--os-vmk", "os_vmk", default=None, metavar="HEX",
                     help="VMK of the --auto-unlock-from volume"),
        click.option("--os-tpm-secret", "os_tpm_secret", multiple=True, metavar="FILE|HEX",
                     help="TPM secret of the --auto-unlock-from volume"),
        click.option("--os-pin", "os_pin", default=None, metavar="PIN",
                     help="TPM PIN of the --auto-unlock-from volume"),
        click.option("--os-partition", "os_partition", type=int, default=None,
                     help="partition N of the --auto-unlock-from disk image"),
        click.option("--os-offset", "os_offset", type=int, default=None,
                     help="the OS volume starts at this byte offset of its image"),
        click.option("--system-hive", "system_hive", default=None, metavar="FILE",
                     type=click.Path(dir_okay=False),
                     help="the OS volume's SYSTEM registry hive (FVEAutoUnlock values; needs "
                          "bdekit[registry])"),
        click.option("--auto-unlock-data", "auto_unlock_data", multiple=True, metavar="HEX",
                     help="an FVEAutoUnlock\\{GUID}\\Data value in hex (112 bytes; regedit's "
                          "hex:70,00,... accepted); repeatable"),
    ]


def _hex_bytes(text: str, name: str) -> bytes:
    """Bytes from hex with optional spaces, colons, commas, ``0x`` or regedit's ``hex:``."""
    cleaned = text.strip()
    for prefix in ("hex:", "0x"):
        if cleaned.lower().startswith(prefix):
            cleaned = cleaned[len(prefix):]
    if not _HEX_TEXT.match(cleaned or "-"):
        raise UsageError(f"{name} is not hexadecimal")
    digits = re.sub(r"[\s,:\\]", "", cleaned)
    try:
        return bytes.fromhex(digits)
    except ValueError:
        raise UsageError(f"{name} is not hexadecimal (odd number of digits?)") from None


def read_secret_bytes(value: str, name: str) -> tuple[bytes, str]:
    """(bytes, source) of FILE|HEX: a file of raw bytes or of their hex, else hex text."""
    path = Path(value)
    if path.is_file():
        try:
            with open(path, "rb") as fh:
                data = fh.read(MAX_SECRET_FILE + 1)
        except OSError as exc:
            raise UsageError(f"cannot read {name} file: {exc.strerror}", path=value) from None
        if len(data) > MAX_SECRET_FILE:
            raise UsageError(f"too large for a {name} file (at most {MAX_SECRET_FILE} bytes are "
                             "read; a TPM secret is 44 or 80 bytes, or their hex)", path=value)
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            return data, value
        if text.strip() and _HEX_TEXT.match(text.strip().removeprefix("hex:")):
            return _hex_bytes(text, f"{name} file {value}"), value
        return data, value
    return _hex_bytes(value, name), name


def parse_vmk(value: str | None, name: str = "--vmk") -> bytes | None:
    """A VMK in hex: the bare 32 bytes, or the key datum a TPM-only protector releases."""
    if value is None:
        return None
    data = _hex_bytes(value, name)
    if len(data) in (KEY_DATUM_SIZE, KEY_DATUM_SIZE + 2):
        unsealed = parse_unsealed(data, name)
        return unsealed.key
    if len(data) != 32:
        raise UsageError(f"{name} has {len(data)} bytes; expected 32 (or the 0x2c-byte key "
                         "datum a TPM releases)")
    return data


def _tpm_secrets(values: tuple[str, ...], name: str) -> list[TpmSecret]:
    out = []
    for value in values:
        data, source = read_secret_bytes(value, name)
        out.append(TpmSecret(parse_unsealed(data, source), source))
    return out


def _pins(kwargs: dict[str, Any], want_env: bool) -> list[str]:
    pin = kwargs.pop("pin", None)
    if pin == PIN_PROMPT:
        pin = click.prompt("TPM PIN", hide_input=True, err=True)
    if pin is None and want_env:
        pin = os.environ.get("BDEKIT_PIN")
    return [pin] if pin else []


def collect(kwargs: dict[str, Any], secrets: Secrets, unlock_os: OsUnlock) -> None:
    """Add the secrets of this module's options to ``secrets`` (pops the options)."""
    secrets.tpm_secrets += _tpm_secrets(tuple(kwargs.pop("tpm_secret", ()) or ()),
                                        "--tpm-secret")
    secrets.pins += _pins(kwargs, bool(secrets.tpm_secrets))
    os_image = kwargs.pop("auto_unlock_from", None)
    hive = kwargs.pop("system_hive", None)
    data = tuple(kwargs.pop("auto_unlock_data", ()) or ())
    os_kwargs = {k: kwargs.pop(k, None) for k in (
        "os_recovery_password", "os_password", "os_bek", "os_vmk", "os_tpm_secret", "os_pin",
        "os_partition", "os_offset")}
    if os_image is None:
        if hive or data or any(v for v in os_kwargs.values()):
            raise UsageError("--system-hive, --auto-unlock-data and the --os-* options need "
                             "--auto-unlock-from OS_IMAGE: the registry values are wrapped "
                             "under that OS volume's auto-unlock key")
        return
    if not hive and not data:
        raise UsageError("--auto-unlock-from needs the registry value(s) too: --system-hive "
                         "FILE (the OS volume's SYSTEM hive) or --auto-unlock-data HEX "
                         "(reading the hive from inside the OS volume is not supported)")
    values: list[AutoUnlockData] = []
    if hive:
        values += read_auto_unlock_values(hive)
    values += [parse_data_value(_hex_bytes(v, "--auto-unlock-data")) for v in data]
    key = _os_auto_unlock_key(os_image, os_kwargs, unlock_os)
    secrets.candidates += external_keys(key, values)


def _os_auto_unlock_key(os_image: str, opts: dict[str, Any], unlock_os: OsUnlock) -> bytes:
    """Unlock the OS volume with the --os-* secrets; its auto-unlock key."""
    os_secrets = Secrets(recovery_passwords=list(opts["os_recovery_password"] or ()),
                         passwords=[opts["os_password"]] if opts["os_password"] else [],
                         beks=[read_bek(p) for p in opts["os_bek"] or ()],
                         vmk=parse_vmk(opts["os_vmk"], "--os-vmk"),
                         tpm_secrets=_tpm_secrets(tuple(opts["os_tpm_secret"] or ()),
                                                  "--os-tpm-secret"),
                         pins=[opts["os_pin"]] if opts["os_pin"] else [])
    volume = open_bde(os_image, offset=opts["os_offset"], partition=opts["os_partition"])
    try:
        result = unlock_os(volume, os_secrets)
        if result.vmk is None:
            raise UsageError("the OS volume opened without its VMK; give a secret that opens "
                             "a protector", path=os_image)
        return auto_unlock_key(volume.metadata, result.vmk, volume.path)
    finally:
        volume.source.close()


__all__ = ["collect", "parse_vmk", "protector_options", "read_secret_bytes"]
