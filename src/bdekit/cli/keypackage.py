"""``bdekit keypackage``: export a volume's key package, show what a package holds.

``export IMAGE OUT.kpg [unlock options]`` writes the bdekit key package format described in
:mod:`bdekit.keypackage`. With a secret the volume is unlocked first: the package is then
checked (its VMK must open its FVEK to the volume's key) and records the volume size read from
the decrypted boot sector; without one, only the layout facts readable without a key go in.
"""

from __future__ import annotations

from typing import Any

import click

from bdekit.cli.cmdline import mode_option, parse_mode
from bdekit.cli.common import build_secrets, cli_unlock, emit_json, unlock_options
from bdekit.cli.inputs import plan_unlock_inputs
from bdekit.errors import BdeError
from bdekit.escrow.keypackage import (
    build_package,
    package_metadata,
    parse_key_package,
    read_key_package,
)
from bdekit.format.constants import ProtectionType
from bdekit.format.metadata import Metadata
from bdekit.image.files import write_atomic
from bdekit.pipeline.paths import PathPlan
from bdekit.unlock.vmk import decrypt_fvek
from bdekit.volume.bde import open_bde


@click.group("keypackage")
def keypackage() -> None:
    """Key packages: what decrypts a volume whose metadata is destroyed (repair -kp)."""


@keypackage.command("export")
@click.argument("image", type=click.Path(dir_okay=False))
@click.argument("output", type=click.Path(dir_okay=False))
@unlock_options
@click.option("--force", "-f", is_flag=True, help="overwrite an existing package")
@click.option("--recovery-only", is_flag=True,
              help="only the recovery password and recovery key protectors (no password "
                   "protector)")
@mode_option
@click.pass_context
def export(ctx: click.Context, image: str, output: str, force: bool, recovery_only: bool,
           mode: str | None, **kwargs: Any) -> None:
    """Write the key package of the volume in IMAGE to OUTPUT (.kpg).

    OUTPUT must not be the image or any file the command reads, and an existing OUTPUT is
    replaced only with --force; it is created with mode 600 (--mode)."""
    file_mode = parse_mode(mode)
    plan = PathPlan(force=force)
    plan.add_image(image)
    plan_unlock_inputs(plan, kwargs)
    plan.add_output("key package", output)
    plan.check()
    secrets = build_secrets(kwargs)
    volume = open_bde(image, offset=kwargs.get("offset"), partition=kwargs.get("partition"))
    result = None
    has_clear = any(p.protection == ProtectionType.CLEAR_KEY for p in volume.protectors)
    if not secrets.empty or has_clear:
        result = cli_unlock(volume, secrets, ctx)
    md = volume.metadata
    if result is not None and md.best.integrity != "ok":
        for copy in md.copies:
            if copy.integrity == "ok":
                md = Metadata(header=md.header, copies=md.copies, best=copy, source=md.source)
                break
    verified = result is not None and volume.size_source == "boot sector"
    data = build_package(md, sector_size=volume.sector_size,
                         volume_size=volume.volume_size if result is not None else 0,
                         volume_size_verified=verified, recovery_only=recovery_only)
    pkg = parse_key_package(data, output)
    if result is not None and result.vmk is not None:
        fvek, _type = decrypt_fvek(package_metadata(pkg), result.vmk)
        if fvek != result.fvek:
            raise BdeError("internal error: the package's FVEK differs from the volume's")
    write_atomic(output, data, mode=file_mode)
    info = pkg.describe()
    click.echo(f"Key package written: {output} ({len(data)} bytes)")
    click.echo(f"Volume GUID:   {{{info['volume_guid']}}}")
    click.echo(f"Method:        {info['encryption_method']}")
    for prot in info["protectors"]:
        click.echo(f"Protector:     {prot['type']} {{{prot['guid']}}} (key ID {prot['key_id']})")
    size = info["volume_size"]
    click.echo(f"Volume size:   {size if size else 'unknown (no key given)'}"
               + (" (from the boot sector)" if info["volume_size_verified"] else ""))
    click.echo(f"Relocated header block: {info['relocated_header']}")
    if result is None:
        click.echo("bdekit: warning: no key given: the package was not checked and does not "
                   "record the volume size", err=True)
    click.echo("Keep it with the recovery password: the package alone decrypts nothing.",
               err=True)


@keypackage.command("show")
@click.argument("package", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def show(package: str, as_json: bool) -> None:
    """Show what a key package (ours or a foreign datum set) holds."""
    pkg = read_key_package(package)
    info = pkg.describe()
    if as_json:
        emit_json(info)
        return
    click.echo(f"Key package:   {package} ({'bdekit' if pkg.kind == 'bdekit' else pkg.kind})")
    guid = info["volume_guid"]
    click.echo(f"Volume GUID:   {('{' + guid + '}') if guid else 'unknown'}")
    click.echo(f"Method:        {info['encryption_method'] or 'unknown'}")
    for prot in info["protectors"]:
        click.echo(f"Protector:     {prot['type']} {{{prot['guid']}}} (key ID {prot['key_id']})")
    click.echo(f"FVEK datums:   {info['fvek_datums']}")
    click.echo(f"Sector size:   {info['sector_size'] or 'unknown'}")
    click.echo(f"Volume size:   {info['volume_size'] or 'unknown'}")
    click.echo(f"Relocated header block: {info['relocated_header'] or 'unknown'}")
    click.echo(f"Metadata offsets: {info['metadata_offsets'] or 'unknown'}")
    for note in info["notes"]:
        click.echo(f"Note: {note}")


COMMANDS = [keypackage]
