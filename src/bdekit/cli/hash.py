"""``bdekit hash IMAGE [--json]``: hashes for hashcat (-m 22100) and John the Ripper.

Prints one ``$bitlocker$`` line per password / recovery-password protector and attack type
(see :mod:`bdekit.unlock.crackhash`) on standard output, and which protector each belongs to
on standard error (in ``--json``: alongside each line). Only the metadata is read. When the
volume header or every metadata copy is damaged, the image is scanned for metadata blocks as
``repair`` does (that reads the whole image).
"""

from __future__ import annotations

from typing import Any

import click

from bdekit.cli.common import emit_json, is_quiet
from bdekit.errors import BdeError, MetadataError, NotBitLockerError, UnsupportedError
from bdekit.format.copies import read_metadata
from bdekit.format.metadata import Metadata, VolumeHeader, parse_volume_header
from bdekit.format.protector import protectors_of
from bdekit.image import locate
from bdekit.image.sources import ImageSource, open_source
from bdekit.recovery.metadata_scan import metadata_from_scan, scan_metadata, source_reader
from bdekit.recovery.open_damaged import locate_tolerant
from bdekit.unlock.crackhash import CrackHash, metadata_hashes


def _metadata(image: str, offset: int | None, partition: int | None) -> Metadata:
    try:
        source: ImageSource | None = locate.volume_source(image, offset=offset,
                                                          partition=partition)
    except NotBitLockerError:
        source = None
    if source is not None:
        try:
            return read_metadata(source_reader(source), source.path or image, int(source.size))
        except (MetadataError, NotBitLockerError) as exc:
            click.echo(f"bdekit: warning: {exc.one_line()}; scanning the image for metadata "
                       "blocks", err=True)
    vsrc, _base = locate_tolerant(open_source(image), offset, partition)
    result = scan_metadata(vsrc, path=image)
    groups = result.groups()
    if not groups:
        raise MetadataError("no BitLocker metadata block found in the image", path=image)
    try:
        header: VolumeHeader | None = parse_volume_header(bytes(vsrc.read_at(0, 512)), image)
    except BdeError:
        header = None
    return metadata_from_scan(groups[0], result.eow_offsets, header)


@click.command("hash")
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--partition", type=int, default=None, help="partition N of a disk image")
@click.option("--offset", type=int, default=None, help="volume byte offset in the image")
@click.pass_context
def hash_command(ctx: click.Context, image: str, as_json: bool, partition: int | None,
                 offset: int | None) -> None:
    """Print $bitlocker$ hashes of IMAGE's password and recovery-password protectors."""
    md = _metadata(image, offset, partition)
    lines, notes = metadata_hashes(md)
    quiet = is_quiet(ctx)
    if not lines:
        listing = ", ".join(f"{p.type_name} {{{str(p.guid).upper()}}}"
                            for p in protectors_of(md)) or "none"
        raise UnsupportedError("no password or recovery-password protector to crack "
                               f"(protectors: {listing})" + (f"; {'; '.join(notes)}"
                                                             if notes else ""), path=image)
    if as_json:
        emit_json({"image": image, "volume_guid": str(md.volume_guid).upper(),
                   "metadata_source": md.source, "hashes": [h.describe() for h in lines],
                   "notes": notes})
        return
    for note in notes:
        click.echo(f"bdekit: warning: {note}", err=True)
    for item in lines:
        if not quiet:
            click.echo(_label(item), err=True)
        click.echo(item.line)


def _label(item: CrackHash) -> str:
    tools = "hashcat -m 22100, john --format=bitlocker" if item.attack_type < 2 \
        else "john --format=bitlocker-opencl"
    check = "with MAC check" if item.attack_type in (1, 3) else "fast check"
    return (f"# {item.protector.type_name} protector {{{str(item.protector.guid).upper()}}} "
            f"(key ID {item.protector.key_id}), type {item.attack_type} ({check}; {tools})")


COMMANDS: list[Any] = [hash_command]
