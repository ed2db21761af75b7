"""``bdekit info``: what a responder needs to find the right key (and, with one, the FVEK).

JSON fields (``--json``): see README.md, "info --json fields". Per protector, besides what the
metadata says (GUID, type, certificate thumbprint, key size and public key fingerprint, the
TPM-sealed object's inferred PCRs), ``opens_with`` says in words which secret would open it
offline (:func:`bdekit.unlock.tpm.opens_with`).
"""

from __future__ import annotations

from typing import Any

import click

from bdekit.cli.common import build_secrets, cli_unlock, emit_json, unlock_options
from bdekit.cli.inputs import require_input
from bdekit.cli.report import guard_html, html_option, write_info_html
from bdekit.errors import BdeError, KeyError_
from bdekit.format.constants import ProtectionType
from bdekit.format.tpm import describe_sealed
from bdekit.unlock.tpm import opens_with
from bdekit.volume.bde import BdeVolume, open_bde


@click.command()
@click.argument("image", type=click.Path(dir_okay=False))
@unlock_options
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--show-keys", is_flag=True, help="print the FVEK and VMK themselves (secret!)")
@html_option
def info(image: str, as_json: bool, show_keys: bool, **kwargs: Any) -> None:
    """Show a BitLocker volume's metadata and protectors; unlock it if a secret is given.

    A wrong or missing key still shows all the metadata (``unlocked: null`` and
    ``unlock_error``), then the error, exit 4."""
    require_input(image)
    html = guard_html(kwargs, [image])
    secrets = build_secrets(kwargs)
    volume = open_bde(image, offset=kwargs.get("offset"), partition=kwargs.get("partition"))
    unlocked = None
    failure: KeyError_ | None = None
    if not secrets.empty or _has_clear_key(volume):
        try:
            unlocked = cli_unlock(volume, secrets, json_mode=as_json)
        except KeyError_ as exc:
            failure = exc
    data = volume.describe()
    _explain_protectors(volume, data["protectors"])
    data["unlocked"] = unlocked.describe(show_keys) if unlocked else None
    if failure is not None:
        data["unlock_error"] = failure.display()
    write_info_html(html, volume, data)
    if as_json:
        emit_json(data)
    else:
        _print_human(data)
    if failure is not None:
        raise failure


def _explain_protectors(volume: BdeVolume, rows: list[dict[str, Any]]) -> None:
    """Add ``opens_with`` (and, for TPM protectors, ``tpm_sealed``) to each protector row."""
    by_guid = {str(p.guid).upper(): p for p in volume.protectors}
    for row in rows:
        protector = by_guid.get(row["guid"])
        if protector is None:
            continue
        row["opens_with"] = opens_with(protector)
        sealed = describe_sealed(protector.datum)
        if sealed is not None:
            row["tpm_sealed"] = sealed


def _has_clear_key(volume: BdeVolume) -> bool:
    try:
        return any(p.protection == ProtectionType.CLEAR_KEY for p in volume.protectors)
    except BdeError:
        return False


def _print_human(d: dict[str, Any]) -> None:
    echo = click.echo
    echo(f"Volume:               {d['path']}")
    if d.get("image_offset"):
        echo(f"Volume starts at:     image offset {d['image_offset']} ({d['container']})")
    echo(f"Metadata version:     {d['metadata_version']} ({d['header_kind']})")
    echo(f"Encryption method:    {d['encryption_method']}")
    echo(f"Volume GUID:          {{{d['volume_guid']}}}")
    echo(f"Created:              {d['created']}")
    echo(f"Description:          {d['description']}")
    echo(f"Conversion state:     {d['state']} (boundary {d['state_offset']})")
    echo(f"Used space only:      {'yes' if d['used_space_only'] else 'no'}")
    echo(f"Sector size:          {d['sector_size']}")
    echo(f"Image size:           {d['image_size']}")
    if d["volume_size"] is not None:
        echo(f"Volume size:          {d['volume_size']} (from {d['volume_size_source']})")
    echo("Metadata copies:")
    for c in d["metadata_copies"]:
        used = "  <- in use" if c["index"] == d["metadata_copy_used"] else ""
        integrity = f", integrity {c['integrity']}" if c["integrity"] != "unchecked" else ""
        echo(f"  {c['index']}: offset {c['offset']}: {c['status']}{integrity}{used}")
    echo("Key protectors:")
    for p in d["protectors"]:
        echo(f"  {p['type']}: ID {{{p['guid']}}} (key ID {p['key_id']})"
             f"{', ' + p['modified'] if p['modified'] else ''}")
        if p.get("bek_file"):
            echo(f"      startup key file: {p['bek_file']}")
        if p.get("thumbprint"):
            echo(f"      certificate thumbprint: {p['thumbprint']}")
        if p.get("key_size"):
            echo(f"      public key: RSA {p['key_size']} bits, SHA-256 of SubjectPublicKeyInfo "
                 f"{p['public_key_fingerprint']}")
        if p.get("tpm_sealed"):
            pcrs = ", ".join(str(n) for n in p["tpm_sealed"]["pcrs_inferred"]) or "none"
            echo(f"      TPM-sealed object: {p['tpm_sealed']['sealed_object_bytes']} bytes, "
                 f"PCRs {pcrs} (inferred)")
        if p.get("opens_with"):
            echo(f"      opens with: {p['opens_with']}")
    u = d.get("unlocked")
    if d.get("unlock_error"):
        echo(f"Unlocked:             no ({d['unlock_error']})")
    if u:
        who = f"protector {{{u['protector']}}}" if u["protector"] else u["source"]
        echo(f"Unlocked:             with {u['via']} via {who}")
        echo(f"FVEK fingerprint:     {u['fvek_fingerprint']}")
        if "fvek" in u:
            echo(f"FVEK:                 {u['fvek']}")
            echo(f"VMK:                  {u['vmk']}")


COMMANDS = [info]
