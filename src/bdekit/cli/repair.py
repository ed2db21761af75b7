"""``bdekit repair``: salvage a damaged BitLocker image, with repair-bde's command line.

``repair-bde <input> <output> [-rk FILE] [-rp PASSWORD] [-pw] [-kp FILE] [-lf FILE] [-f]``
works unchanged (the Windows spellings ``-RecoveryKey``, ``-RecoveryPassword``, ``-Password``,
``-KeyPackage``, ``-LogFile``, ``-Force`` too); bdekit adds ``--mapfile`` (the input's GNU
ddrescue mapfile), ``--output-mapfile``, ``--resume``, ``--report``, ``--threads`` and
``--retries``. See :mod:`bdekit.recovery.repair` for what it does.

Every path is checked before anything is unlocked or written (:class:`~bdekit.pipeline.paths.
PathPlan`): the image, key files, key packages and the input mapfile are inputs; the output,
its partial file, journal and lock, the output mapfile, the report and the ``-lf`` log are
outputs (the log is appended to with ``--resume``). A stream cannot be the output: the repair
keeps a journal and a mapfile beside it.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from bdekit.cli.cmdline import masked_command_line, parse_mode
from bdekit.cli.common import build_secrets, cli_unlock, unlock_options
from bdekit.cli.decrypt import decrypt_options, hash_choice, print_damage
from bdekit.cli.inputs import plan_unlock_inputs
from bdekit.cli.report import write_report_html
from bdekit.errors import EXIT_PARTIAL
from bdekit.format.constants import METHOD_LABELS, EncryptionMethod
from bdekit.pipeline.output import OutputKind
from bdekit.pipeline.paths import PathPlan
from bdekit.pipeline.report import Report
from bdekit.recovery.repair import RepairOptions, default_mapfile_path, repair

_METHODS = [label for method, label in METHOD_LABELS.items()
            if method != EncryptionMethod.NONE]


@click.command("repair", context_settings={"help_option_names": ["-h", "--help", "-?"]})
@click.argument("image", type=click.Path(dir_okay=False))
@click.argument("output", type=click.Path())
@unlock_options
@decrypt_options
@click.option("-kp", "--key-package", "-KeyPackage", "key_package", multiple=True,
              type=click.Path(exists=True), metavar="FILE|DIR",
              help="key package: bdekit's (.kpg, from `bdekit keypackage export`) or any file "
                   "holding a BitLocker datum set (manage-bde .KPG, AD DS msFVE-KeyPackage "
                   "export), or a directory of them; used when the volume's own metadata is "
                   "gone (repeatable)")
@click.option("-lf", "--log-file", "-LogFile", "log_file", type=click.Path(dir_okay=False),
              default=None, metavar="FILE",
              help="write a human-readable log of what was tried and what was lost here")
@click.option("--mapfile", "mapfile", type=click.Path(exists=True, dir_okay=False),
              default=None, metavar="MAP",
              help="GNU ddrescue mapfile of the input: areas not marked finished ('+') are "
                   "treated as unreadable")
@click.option("--output-mapfile", type=click.Path(dir_okay=False), default=None,
              metavar="MAP", help="where to write the output's ddrescue mapfile "
                                  "(default OUTPUT.map)")
@click.option("--resume", is_flag=True,
              help="continue an interrupted run from its journal (OUTPUT.bdekit-journal)")
@click.option("--retries", type=click.IntRange(0, 100), default=1, show_default=True,
              help="re-reads of a failing range before it is split, and of a failing sector")
@click.option("--method", type=click.Choice(_METHODS), default=None,
              help="encryption method of the volume when no metadata is left and --fvek is "
                   "given (salvage); inferred from the image when omitted")
@click.pass_context
def repair_command(ctx: click.Context, image: str, output: str, **kwargs: Any) -> None:
    """Salvage a damaged BitLocker volume or image IMAGE into OUTPUT (repair-bde compatible).

    Damaged metadata copies are skipped (CRC, then SHA-256 after unlocking); a lost volume
    header or lost copies are found by scanning the image; with none left, a key package
    (-kp) takes over. A damaged boot sector is rebuilt from its backup. Unreadable sectors
    are retried, isolated and zero-filled. OUTPUT.map (ddrescue format) marks with '-' every
    range that could not be recovered; the exit code is then 6.
    """
    quiet = bool(ctx.obj and ctx.obj.get("quiet"))
    mode = parse_mode(kwargs["mode"])
    hashes = hash_choice(kwargs)
    html = kwargs.get("html_path")
    with _plan(image, output, kwargs).claim():
        report = _repair(ctx, image, output, kwargs, quiet=quiet, mode=mode, hashes=hashes)
    write_report_html(html, report.to_json(), "repair")
    if report.damaged:
        ctx.exit(EXIT_PARTIAL)


def _plan(image: str, output: str, kwargs: dict[str, Any]) -> PathPlan:
    plan = PathPlan(force=kwargs["force"])
    plan.add_image(image)
    plan_unlock_inputs(plan, kwargs)
    plan.add_inputs("key package", kwargs["key_package"])
    plan.add_input("input mapfile", kwargs["mapfile"])
    if plan.set_output(output, journal=True, resume=kwargs["resume"]) == OutputKind.STREAM:
        return plan  # refused: no journal or mapfile beside a stream
    resume = kwargs["resume"]  # the products of the job being resumed may exist
    plan.add_output("output mapfile", kwargs["output_mapfile"] or default_mapfile_path(output),
                    may_exist=resume)
    plan.add_output("report", kwargs["report_path"], stream_ok=True, may_exist=resume)
    plan.add_output("HTML report", kwargs.get("html_path"), may_exist=resume)
    plan.add_output("log file", kwargs["log_file"], append=kwargs["resume"], atomic=False,
                    stream_ok=True)
    return plan


def _repair(ctx: click.Context, image: str, output: str, kwargs: dict[str, Any], *,
            quiet: bool, mode: int, hashes: tuple[str, ...]) -> Report:
    secrets = build_secrets(kwargs)
    opts = RepairOptions(
        input=image, output=output, secrets=secrets,
        key_packages=list(kwargs["key_package"]), offset=kwargs.get("offset"),
        partition=kwargs.get("partition"), force=kwargs["force"], resume=kwargs["resume"],
        threads=kwargs["threads"], chunk_size=kwargs["chunk_size"],
        mapfile=kwargs["mapfile"], output_mapfile=kwargs["output_mapfile"],
        report_path=kwargs["report_path"], log_path=kwargs["log_file"],
        retries=kwargs["retries"], progress=not quiet and sys.stderr.isatty(),
        hash_output=bool(hashes), hashes=hashes, hash_input=kwargs["hash_input"], mode=mode,
        command=masked_command_line(ctx),
        unlocker=lambda volume, sec: cli_unlock(volume, sec, ctx),
        method=EncryptionMethod.from_label(kwargs["method"]) if kwargs["method"] else None)
    report = repair(opts)
    if not quiet:
        click.echo(report.summary(), err=True)
        for line in report.repairs:
            click.echo(f"bdekit: repaired: {line}", err=True)
        print_damage(report)
        if report.output_mapfile:
            click.echo(f"bdekit: output mapfile: {report.output_mapfile}", err=True)
    return report


COMMANDS = [repair_command]
