"""``bdekit scan IMAGE``: the partitions of a disk image and which of them are BitLocker.

For each partition (or the bare volume when the image has no partition table): its number
(what ``--partition N`` takes), offset, size and type; for BitLocker ones the header kind
(``win7``, ``eow`` used-space-only, ``togo`` To Go, ``vista``), the encryption method, the
volume GUID, the description and the protector types, all read from the metadata without a
key.  Then, for a damaged disk, BitLocker metadata blocks found by signature outside every
recognised BitLocker volume, with the start of the volume each belongs to (inferred from the
copy offsets its header records; try ``--offset`` there, or hand it to ``repair``).

``--search`` chooses where those blocks are looked for (see
:func:`bdekit.recovery.survey.scan_image`):
``auto`` (space outside partitions, partitions with unrecognised content, BitLocker
partitions whose metadata is unreadable; the whole image when nothing is recognised),
``all`` (the whole image: slow on big disks) or ``none``.

JSON (``--json``): ``path``, ``container``, ``image_size``, ``partition_table`` (``mbr``,
``gpt``, ``none``, ``damaged``), ``partition_table_error``, ``volumes`` (one object per
partition: ``index``, ``offset``, ``size``, ``scheme``, ``type``, ``type_name``, ``name``,
``truncated``, ``extended``, ``bitlocker`` (kind or ""), ``filesystem``,
``metadata_version``, ``encryption_method``, ``volume_guid``, ``description``, ``state``,
``created``, ``protectors``, ``metadata_copies``, ``error``), ``bitlocker_count``,
``metadata_search`` (``mode``, ``ranges``, ``bytes``) and ``stray_metadata_blocks``
(``offset``, ``version``, ``size``, ``metadata_offsets``, ``volume_start``, ``copy_index``,
``volume_header``, ``partition``, ``status``, ``volume_guid``, ``encryption_method``,
``description``).
Exit status 0 whether or not BitLocker was found (a damaged table is reported, not fatal).
"""

from __future__ import annotations

import sys

import click
from tqdm import tqdm

from bdekit.cli.common import emit_json
from bdekit.cli.inputs import require_input
from bdekit.cli.report import guard_html, html_option, write_scan_html
from bdekit.image.sources import open_source
from bdekit.recovery.survey import SEARCH_MODES, ScanEntry, ScanReport, scan_image


@click.command()
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--search", type=click.Choice(SEARCH_MODES), default="auto", show_default=True,
              help="where to look for stray BitLocker metadata blocks: outside recognised "
                   "volumes (auto), the whole image (all), or nowhere (none)")
@html_option
@click.pass_context
def scan(ctx: click.Context, image: str, as_json: bool, search: str,
         html_path: str | None) -> None:
    """List the partitions of IMAGE, which are BitLocker, and stray metadata blocks."""
    html = guard_html({"html_path": html_path}, [image])
    quiet = bool(ctx.obj and ctx.obj.get("quiet"))
    require_input(image)
    with open_source(image) as source:
        bar = None
        if not quiet and not as_json and sys.stderr.isatty() and search != "none":
            bar = tqdm(total=None, unit="B", unit_scale=True, desc="searching", leave=False,
                       file=sys.stderr)
        try:
            report = scan_image(source, search=search,
                                progress=bar.update if bar is not None else None)
        finally:
            if bar is not None:
                bar.close()
    write_scan_html(html, report.to_json())
    if as_json:
        emit_json(report.to_json())
    else:
        _print_human(report)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def _print_human(r: ScanReport) -> None:
    echo = click.echo
    echo(f"Image:            {r.path} ({r.container}, {r.image_size} bytes, "
         f"{_size(r.image_size)})")
    table = r.table if r.table != "none" else "none"
    if r.table_error:
        table += f" ({r.table_error})"
    echo(f"Partition table:  {table}")
    if r.entries:
        echo(f"{'#':>3}  {'offset':>14}  {'size':>14}  type")
    for e in r.entries:
        index = "-" if e.index is None else str(e.index)
        line = f"{index:>3}  {e.offset:>14}  {e.size:>14}  {e.type_name}"
        if e.name:
            line += f" {e.name!r}"
        if e.truncated:
            line += " [extends past the end of the image]"
        echo(line)
        echo("       " + _content(e))
    n = sum(1 for e in r.entries if e.bitlocker)
    if n == 0:
        echo("No BitLocker volume recognised by its header.")
    elif n > 1:
        echo(f"{n} BitLocker volumes: choose one with --partition N.")
    if r.search == "none":
        return
    where = "the whole image" if r.searched == [(0, r.image_size)] else \
        f"{len(r.searched)} range(s) outside recognised volumes"
    if not r.searched:
        echo("Stray metadata blocks: not searched (every area is a recognised volume).")
        return
    if not r.blocks:
        echo(f"Stray metadata blocks: none (searched {_size(r.searched_bytes)} in {where}).")
        return
    echo(f"Stray metadata blocks ({len(r.blocks)}, searched {_size(r.searched_bytes)} in "
         f"{where}):")
    for b in r.blocks:
        inside = f"partition {b.partition}" if b.partition is not None else "no partition"
        echo(f"  offset {b.offset} (v{b.version}, {b.size} bytes, in {inside}): {b.status}")
        if b.volume_guid:
            echo(f"      volume {{{b.volume_guid}}} {b.encryption_method}"
                 + (f" {b.description!r}" if b.description else ""))
        if b.volume_start is not None:
            hint = f"try --offset {b.volume_start}" if b.volume_header else \
                "no volume header there: a case for 'bdekit repair'"
            echo(f"      copy {b.copy_index} of a volume starting at offset {b.volume_start} "
                 f"({hint})")


def _content(e: ScanEntry) -> str:
    if e.extended:
        return "extended partition (holds the logical partitions)"
    if not e.bitlocker:
        return e.filesystem or "not BitLocker (unrecognised content)"
    kind = {"win7": "BitLocker", "eow": "BitLocker (used space only)",
            "togo": "BitLocker To Go", "vista": "BitLocker (Vista)"}.get(e.bitlocker,
                                                                        e.bitlocker)
    if e.error:
        return f"{kind}: metadata unreadable: {e.error}"
    text = f"{kind}, {e.encryption_method}, {{{e.volume_guid}}}, {e.state}"
    if e.description:
        text += f", {e.description!r}"
    if e.protectors:
        text += f"; protectors: {', '.join(e.protectors)}"
    return text


COMMANDS = [scan]
