"""``bdekit keys``: find the escrowed keys that fit a volume, and check a recovery password.

``keys find IMAGE --keyring FILE|DIR ... [--certificate FILE|DIR] [--json]``
    Lists, per protector of the volume, the escrow entries (and certificates) that match it by
    GUID, key ID, thumbprint or (for a certificate protector that records no thumbprint) public
    key, without unlocking anything and without showing any key. A ``--certificate`` directory
    is searched for ``.pfx``/``.p12``/``.pem``/``.crt``/``.cer``/``.der`` files (a file that
    cannot be read, e.g. a .pfx without its password, is skipped with a warning). Exit 0 when at
    least one protector has a candidate, 4 when none has.

``keys check PASSWORD [--json]``
    Explains each block of a recovery password (check digit, range, length); exit 0 when it is
    well-formed, 2 when it is not, with the number of corrections ``--fix-typos`` would test.
    ``-`` reads the password from standard input (keeps it out of the shell history).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import click

from bdekit.cli.cmdline import OFFSET
from bdekit.cli.common import emit_json
from bdekit.cli.inputs import read_recovery_password_file, require_input
from bdekit.crypto import keys as keylib
from bdekit.errors import EXIT_USAGE, BdeError, MissingKeyError, RecoveryPasswordFormatError
from bdekit.escrow.keyring import Keyring, KeyringEntry, load_keyring
from bdekit.escrow.secrets import SecretKind
from bdekit.format.protector import Protector
from bdekit.unlock.certificates import Certificate, load_certificate, match_certificate
from bdekit.volume.bde import open_bde


@click.group()
def keys() -> None:
    """Find escrowed keys for a volume; check a recovery password."""


@keys.command("find")
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--keyring", "keyring_paths", multiple=True, metavar="FILE|DIR",
              type=click.Path(exists=True), help="escrow export or directory (repeatable)")
@click.option("--certificate", "cert_paths", multiple=True, metavar="FILE|DIR",
              type=click.Path(exists=True),
              help="certificate to match by thumbprint or public key (.pfx/.p12, PEM or DER), "
                   "or a directory of them (repeatable)")
@click.option("--certificate-password", default=None, metavar="PASSWORD",
              envvar="BDEKIT_CERTIFICATE_PASSWORD", help="password of a .pfx")
@click.option("--partition", type=int, default=None, help="partition N of a disk image")
@click.option("--offset", type=OFFSET, default=None,
              help="volume offset in the image (bytes, 0x hex, or 512-byte sectors with 's')")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def find(image: str, keyring_paths: tuple[str, ...], cert_paths: tuple[str, ...],
         certificate_password: str | None, partition: int | None, offset: int | None,
         as_json: bool) -> None:
    """List the escrowed keys and certificates that match IMAGE's protectors (no unlocking)."""
    if not keyring_paths and not cert_paths:
        raise click.UsageError("give at least one --keyring or --certificate")
    require_input(image)
    ring = load_keyring(keyring_paths) if keyring_paths else Keyring()
    certs = _load_certificates(cert_paths, certificate_password)
    volume = open_bde(image, offset=offset, partition=partition)
    volume_guid = volume.metadata.volume_guid
    protectors = volume.protectors
    rows = [_protector_row(protector, ring, certs) for protector in protectors]
    packages = [dict(e.describe(), match=how) for e in ring.key_packages()
                if (how := _package_match(e, protectors, volume_guid)) is not None]
    data = {"image": volume.path, "volume_guid": str(volume_guid).upper(),
            "keyring_entries": len(ring), "keyring_files": len(ring.files),
            "protectors": rows, "key_packages": packages}
    if as_json:
        emit_json(data)
    else:
        _print_find(data, certs)
    if not any(row["candidates"] for row in rows):
        raise MissingKeyError(f"none of the {len(ring)} escrowed keys"
                              f"{' or certificates' if certs else ''} matches a protector of "
                              "this volume", path=volume.path)


def _protector_row(protector: Protector, ring: Keyring, certs: list[Certificate]
                   ) -> dict[str, Any]:
    """``protector.describe()`` with the escrow entries and certificates that match it."""
    row = protector.describe()
    cands: list[dict[str, Any]] = []
    for entry, how in ring.matches(protector):
        item = entry.describe()
        item["match"] = how
        cands.append(item)
    for cert in certs:
        fit = match_certificate(protector, cert)
        if fit is not None and fit != "unidentified":
            cands.append({"source": cert.path, "kind": SecretKind.CERTIFICATE,
                          "match": fit, "subject": cert.subject,
                          "thumbprint": cert.thumbprint,
                          "has_private_key": cert.private_key is not None})
    row["candidates"] = cands
    return row


_CERT_SUFFIXES = (".pfx", ".p12", ".pem", ".crt", ".cer", ".der")


def _load_certificates(paths: tuple[str, ...], password: str | None) -> list[Certificate]:
    """The certificates of ``--certificate`` files, and of the certificate files in a
    ``--certificate`` directory (unreadable ones there are skipped with a warning)."""
    out: list[Certificate] = []
    for path in paths:
        if not Path(path).is_dir():
            out.append(load_certificate(path, password))
            continue
        for file in sorted(Path(path).rglob("*")):
            if not file.is_file() or file.suffix.lower() not in _CERT_SUFFIXES:
                continue
            try:
                out.append(load_certificate(file, password))
            except BdeError as exc:
                click.echo(f"bdekit: warning: skipped {file}: {exc.message}", err=True)
    return out


def _package_match(entry: KeyringEntry, protectors: list[Protector],
                   volume_guid: uuid.UUID | None) -> str | None:
    """How a keyring entry holding a key package fits this volume: by protector GUID, or by
    the volume GUID escrowed with it."""
    if entry.guid is not None and any(p.guid == entry.guid for p in protectors):
        return "guid"
    if entry.volume_guid is not None and entry.volume_guid == volume_guid:
        return "volume guid"
    return None


def _print_find(d: dict[str, Any], certs: list[Certificate]) -> None:
    echo = click.echo
    echo(f"Volume:        {d['image']}  {{{d['volume_guid']}}}")
    echo(f"Keyring:       {d['keyring_entries']} keys from {d['keyring_files']} files"
         + (f", {len(certs)} certificate{'s' if len(certs) != 1 else ''}" if certs else ""))
    for p in d["protectors"]:
        extra = f", thumbprint {p['thumbprint']}" if p.get("thumbprint") else ""
        echo(f"{p['type']} {{{p['guid']}}} (key ID {p['key_id']}{extra}):")
        if not p["candidates"]:
            echo("    no escrowed key")
        for c in p["candidates"]:
            details = ", ".join(f"{k} {c[k]}" for k in ("device", "created", "volume_type")
                                if c.get(k))
            echo(f"    {c['source']}: {c['kind']} (matched by {c['match']})"
                 + (f"; {details}" if details else ""))
    for k in d["key_packages"]:
        echo(f"key package: {k['source']} ({k['key_package_bytes']} bytes, matched by "
             f"{k['match']}); see the repair command's key package option")


@keys.command("check")
@click.argument("password")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_context
def check(ctx: click.Context, password: str, as_json: bool) -> None:
    """Explain each block of a recovery PASSWORD ('-' reads it from standard input)."""
    if password == "-":
        found = read_recovery_password_file("-")
        password = found[0].value
    checks = keylib.check_recovery_password(password)
    problem: str | None = None
    try:
        keylib.parse_recovery_password(password)
    except RecoveryPasswordFormatError as exc:
        problem = exc.message
    counts: dict[int, int | None] = {}
    for level in (1, 2):
        try:
            counts[level] = keylib.count_typo_candidates(password, level)
        except RecoveryPasswordFormatError:
            counts[level] = None
    if as_json:
        emit_json({"valid": problem is None, "problem": problem,
                   "blocks": [{"index": c.index, "text": c.text, "ok": c.ok, "value": c.value,
                               "reason": c.reason} for c in checks],
                   "fix_typos_candidates": {"1": counts[1], "2": counts[2]}})
    else:
        for c in checks:
            verdict = f"ok (value {c.value})" if c.ok else c.reason
            click.echo(f"block {c.index}: {c.text:<8} {verdict}")
        if problem is None:
            click.echo("valid: every block passes its check digit (a valid password can still "
                       f"be the wrong one: --fix-typos=2 would test {counts[2]} corrections)")
        else:
            click.echo(f"invalid: {problem}")
            if counts[1]:
                click.echo(f"--fix-typos would test {counts[1]} corrections "
                           f"(--fix-typos=2: {counts[2]})")
            elif counts[1] == 0:
                click.echo("--fix-typos finds no valid correction one typing error per block "
                           "away")
    if problem is not None:
        ctx.exit(EXIT_USAGE)


COMMANDS = [keys]
