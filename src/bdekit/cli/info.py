"""``bdekit info``: what a responder needs to find the right key (and, with one, the FVEK).

JSON fields (``--json``): see README.md, "info --json fields".
"""

from __future__ import annotations

from typing import Any

import click

from bdekit.cli.common import build_secrets, cli_unlock, emit_json, unlock_options
from bdekit.cli.report import guard_html, html_option, write_info_html
from bdekit.errors import BdeError
from bdekit.format.constants import ProtectionType
from bdekit.volume.bde import BdeVolume, open_bde


@click.command()
@click.argument("image", type=click.Path(dir_okay=False))
@unlock_options
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--show-keys", is_flag=True, help="print the FVEK and VMK themselves (secret!)")
@html_option
def info(image: str, as_json: bool, show_keys: bool, **kwargs: Any) -> None:
    """Show a BitLocker volume's metadata and protectors; unlock it if a secret is given."""
    html = guard_html(kwargs, [image])
    secrets = build_secrets(kwargs)
    volume = open_bde(image, offset=kwargs.get("offset"), partition=kwargs.get("partition"))
    unlocked = None
    if not secrets.empty or _has_clear_key(volume):
        unlocked = cli_unlock(volume, secrets, json_mode=as_json)
    data = volume.describe()
    data["unlocked"] = unlocked.describe(show_keys) if unlocked else None
    write_info_html(html, volume, data)
    if as_json:
        emit_json(data)
        return
    _print_human(data)


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
    u = d.get("unlocked")
    if u:
        who = f"protector {{{u['protector']}}}" if u["protector"] else u["source"]
        echo(f"Unlocked:             with {u['via']} via {who}")
        echo(f"FVEK fingerprint:     {u['fvek_fingerprint']}")
        if "fvek" in u:
            echo(f"FVEK:                 {u['fvek']}")
            echo(f"VMK:                  {u['vmk']}")


COMMANDS = [info]
