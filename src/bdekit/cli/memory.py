"""``bdekit keys from-memory`` and ``bdekit keys export``: keys for and from other places.

``keys from-memory IMAGE MEMORY... [--json] [--save FILE]``
    Searches memory images (raw, LiME, crash dumps) for the volume's keys three ways (key
    schedules, per-Windows-version structures, key datums; see :mod:`bdekit.memory`), checks
    every candidate against the volume and prints the keys that pass, where each was found and
    how; stale or foreign candidates are counted. ``--save`` writes the key as a JSON key file
    (0600) that ``--fvek-file`` / ``--vmk-file`` read back. Exit 4 when no key passes.

``keys export IMAGE [unlock options] [--format dislocker|libbde|hex|json] [--output FILE]``
    Writes the FVEK (and the VMK when known) for other tools (0600; the output may not be an
    input). ``--print-recovery-password`` prints the recovery password(s) Windows escrows
    under the VMK; ``--write-bek DIR`` regenerates the ``{GUID}.BEK`` of each startup-key
    protector. (``--recovery-password`` and ``--bek`` are taken by the unlock options.) Every
    export is recorded in the audit log, never the key.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from bdekit.cli.common import (
    build_secrets,
    cli_unlock,
    command_name,
    emit_json,
    is_quiet,
    unlock_options,
)
from bdekit.cli.keys import keys as keys_group
from bdekit.errors import MissingKeyError, UsageError
from bdekit.escrow import audit, keyfiles
from bdekit.escrow.secrets import AttemptOutcome, SecretKind, UnlockResult
from bdekit.format.constants import EncryptionMethod, enum_label
from bdekit.image.files import write_atomic
from bdekit.memory.keyopts import memory_keys
from bdekit.memory.search import MemoryReport
from bdekit.pipeline.output import check_output
from bdekit.unlock import escrowed
from bdekit.volume.bde import BdeVolume, open_bde


def _trail(ctx: click.Context, volume: BdeVolume,
           audit_log: str | None = None) -> audit.AuditLog:
    return audit.AuditLog(audit_log, command=command_name(ctx), image=volume.path,
                          volume_guid=volume.metadata.volume_guid)


def _check_output(path: str, inputs: list[str], force: bool) -> None:
    """Refuse an output that is one of the inputs, or exists (unless ``force``)."""
    for item in filter(None, inputs):
        check_output(item, path, force=True)  # the input itself, whatever ``force``
    check_output(None, path, force)


@keys_group.command("from-memory")
@click.argument("image", type=click.Path(dir_okay=False))
@click.argument("memory", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--save", default=None, metavar="FILE", type=click.Path(dir_okay=False),
              help="write the key found as a JSON key file (0600) for --fvek-file/--vmk-file")
@click.option("--force", "-f", is_flag=True, help="overwrite an existing --save file")
@click.option("--max-errors", type=click.IntRange(0, 64), default=10, show_default=True,
              help="flipped bits tolerated in an AES key schedule")
@click.option("--partition", type=int, default=None, help="partition N of a disk image")
@click.option("--offset", type=int, default=None, help="volume byte offset in the image")
@click.option("--audit-log", default=None, metavar="FILE", type=click.Path(dir_okay=False),
              help="audit trail (default: $BDEKIT_AUDIT_LOG or the user's state directory)")
@click.pass_context
def from_memory(ctx: click.Context, image: str, memory: tuple[str, ...], as_json: bool,
                save: str | None, force: bool, max_errors: int, partition: int | None,
                offset: int | None, audit_log: str | None) -> None:
    """Find the keys of the volume in IMAGE in memory images MEMORY (raw, LiME, crash dump)."""
    if save:
        _check_output(save, [image, *memory], force)
    volume = open_bde(image, offset=offset, partition=partition)
    progress = not as_json and not is_quiet(ctx) and sys.stderr.isatty()
    report = memory_keys(volume, list(memory), progress=progress, stop_early=False,
                         max_errors=max_errors)
    trail = _trail(ctx, volume, audit_log)
    for found in report.found:
        where = found.locations[0]
        trail.used(SecretKind.VMK if found.result.vmk else SecretKind.FVEK,
                   f"memory image {where.image} at physical address 0x{where.phys:x} "
                   f"({where.how})", AttemptOutcome.FOUND_IN_MEMORY)
    if as_json:
        emit_json(dict(report.describe(show_keys=True), image=volume.path,
                       volume_guid=str(volume.metadata.volume_guid).upper()))
    else:
        _print_report(report)
    if save:
        best = report.found[0].result
        info = {"volume_guid": str(volume.metadata.volume_guid).upper(), "source": "memory"}
        write_atomic(save, keyfiles.render("json", best.fvek, best.method, best.vmk, info))
        trail.used(SecretKind.VMK if best.vmk else SecretKind.FVEK, f"saved to {save}",
                   AttemptOutcome.EXPORTED)
        if not is_quiet(ctx):
            click.echo(f"bdekit: key saved to {save} (mode 0600)", err=True)


def _print_report(report: MemoryReport) -> None:
    echo = click.echo
    for item in report.images:
        echo(f"Memory image:  {item['path']} ({item['format']}, {item['bytes']} bytes)")
    echo(f"Scanned:       {report.scanned} bytes in {report.seconds:.1f} s "
         f"({report.rate:.0f} MB/s)")
    for found in report.found:
        res = found.result
        echo(f"{'VMK' if res.vmk else 'FVEK'} ({enum_label(EncryptionMethod, res.method)}), "
             f"checked against the volume:")
        if res.vmk:
            echo(f"    VMK:  {res.vmk.hex()}")
        echo(f"    FVEK: {res.fvek.hex()}")
        for loc in found.locations:
            echo(f"    found in {loc.image} at physical address 0x{loc.phys:x} (file offset "
                 f"{loc.file_offset}): {loc.how}")
    echo(f"Candidates:    {report.schedules} AES key schedules, {report.structures} "
         f"structures; {report.rejected} candidate key(s) of this kind rejected "
         "(stale or another volume's)")


@keys_group.command("export")
@click.argument("image", type=click.Path(dir_okay=False))
@unlock_options
@click.option("--format", "fmt", type=click.Choice(keyfiles.FORMATS), default="hex",
              show_default=True, help="key file format")
@click.option("--output", "-o", default=None, metavar="FILE", type=click.Path(dir_okay=False),
              help="write here (mode 0600) instead of standard output")
@click.option("--force", "-f", is_flag=True, help="overwrite an existing output")
@click.option("--print-recovery-password", "print_rp", is_flag=True,
              help="print the recovery password(s) escrowed under the VMK")
@click.option("--write-bek", "bek_dir", default=None, metavar="DIR",
              type=click.Path(file_okay=False),
              help="regenerate the {GUID}.BEK file of each startup-key protector in DIR")
@click.pass_context
def export(ctx: click.Context, image: str, fmt: str, output: str | None, force: bool,
           print_rp: bool, bek_dir: str | None, **kwargs: Any) -> None:
    """Write the keys of the volume in IMAGE for other tools (after any unlock)."""
    inputs = [image, *(kwargs.get("memory") or ()), kwargs.get("fvek_file") or "",
              kwargs.get("vmk_file") or "", *(kwargs.get("bek") or ())]
    if output:
        _check_output(output, inputs, force)
    audit_log = kwargs.get("audit_log")
    secrets = build_secrets(kwargs)
    volume = open_bde(image, offset=kwargs.get("offset"), partition=kwargs.get("partition"))
    result = cli_unlock(volume, secrets, ctx)
    trail = _trail(ctx, volume, audit_log)
    if print_rp or bek_dir:
        _escrowed(ctx, volume, result, trail, print_rp, bek_dir, force, inputs)
        if not output:
            return
    info = {"volume_guid": str(volume.metadata.volume_guid).upper(),
            "fvek_fingerprint": result.fingerprint}
    data = keyfiles.render(fmt, result.fvek, result.method, result.vmk, info)
    if output:
        write_atomic(output, data)
    elif fmt == "dislocker" and sys.stdout.isatty():
        raise UsageError("the dislocker key file is binary: give --output FILE")
    else:
        click.echo(data, nl=False)
    trail.used(SecretKind.FVEK, f"exported as {fmt} to {output or 'standard output'}",
               AttemptOutcome.EXPORTED, result.protector)
    if output and not is_quiet(ctx):
        click.echo(f"bdekit: {fmt} key file written to {output} (mode 0600)", err=True)


def _escrowed(ctx: click.Context, volume: BdeVolume, result: UnlockResult,
              trail: audit.AuditLog, print_rp: bool, bek_dir: str | None, force: bool,
              inputs: list[str]) -> None:
    if result.vmk is None:
        raise MissingKeyError("the escrowed secrets are wrapped under the VMK, and this unlock "
                              "gave only the FVEK: unlock with a protector's secret, --vmk, "
                              "--vmk-file or a memory image that holds the VMK",
                              path=volume.path)
    if print_rp:
        found = escrowed.recovery_passwords(volume.metadata, result.vmk)
        if not found:
            raise MissingKeyError("no recovery password protector with an escrowed recovery "
                                  "key", path=volume.path)
        for item in found:
            p = item.protector
            state = "verified" if item.verified else "NOT verified: it does not open the " \
                "protector"
            click.echo(f"{item.value!s}  (protector {{{str(p.guid).upper()}}}, key ID "
                       f"{p.key_id}; {state})")
            trail.used(SecretKind.RECOVERY_PASSWORD, "escrowed under the VMK",
                       AttemptOutcome.DISCLOSED, p)
    if bek_dir:
        beks = escrowed.startup_keys(volume.metadata, result.vmk)
        if not beks:
            raise MissingKeyError("no startup key protector with an escrowed external key",
                                  path=volume.path)
        Path(bek_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
        for item in beks:
            target = os.path.join(bek_dir, str(item.protector.bek_name))
            _check_output(target, inputs, force)
            assert isinstance(item.value, bytes)
            write_atomic(target, item.value)
            trail.used(SecretKind.BEK, f"regenerated as {target}", AttemptOutcome.EXPORTED,
                       item.protector)
            if not is_quiet(ctx):
                click.echo(f"bdekit: startup key written to {target} (mode 0600"
                           f"{'' if item.verified else '; NOT verified'})", err=True)


COMMANDS: list[Any] = []
