"""``bdekit decrypt``: stream the decrypted volume into an image file, a device or a pipe.

The volume is read through the engine's salvage layer, so an unreadable sector does not stop
the job: it is retried, isolated, written as zeros and reported (exit 6), as is the missing
tail of a truncated capture. Damaged *metadata* is the business of ``bdekit repair``.

Every path the command reads or writes is checked first (:class:`~bdekit.pipeline.paths.
PathPlan`): nothing is unlocked or written when an output would land on an input or on
another output, or exists without ``--force``. ``-`` (or a pipe, FIFO, character device) is
written in order; everything else the command prints then goes to stderr.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from bdekit.cli.cmdline import (
    RangeParam,
    masked_command_line,
    mode_option,
    parse_mode,
    resolve_range,
)
from bdekit.cli.common import STDOUT_TAKEN, build_secrets, cli_unlock, unlock_options
from bdekit.cli.inputs import plan_unlock_inputs
from bdekit.cli.report import html_option, write_report_html
from bdekit.errors import EXIT_PARTIAL, UsageError
from bdekit.image.salvage import open_salvaged
from bdekit.pipeline.decrypt import DEFAULT_CHUNK, decrypt_to
from bdekit.pipeline.hashing import ALGORITHMS, parse_algorithms
from bdekit.pipeline.output import STDOUT
from bdekit.pipeline.paths import PathPlan, image_files
from bdekit.pipeline.report import Report
from bdekit.volume.bde import BdeVolume

F = TypeVar("F", bound=Callable[..., Any])


def decrypt_options(func: F) -> F:
    """Options ``decrypt`` and ``repair`` share (output, report, threads, hashes, mode)."""
    func = click.option("--force", "-f", "-Force", "force", is_flag=True,
                        help="overwrite an existing output, report or mapfile")(func)
    func = click.option("--report", "report_path", type=click.Path(dir_okay=False,
                                                                   allow_dash=True),
                        default=None, help="write the JSON report here ('-': standard "
                                           "output)")(func)
    func = click.option("--threads", type=click.IntRange(1, 256), default=None,
                        help="worker threads (default: CPU count)")(func)
    func = click.option("--chunk-size", type=click.IntRange(4096, 256 << 20),
                        default=DEFAULT_CHUNK, hidden=True)(func)
    func = click.option("--hash", "hash_algorithms", default=None, metavar="ALG[,ALG...]",
                        help=f"hashes of the output: any of {', '.join(ALGORITHMS)} "
                             "(default sha256), computed while it is written")(func)
    func = click.option("--hash-input", is_flag=True,
                        help="also hash the input image (all its segments) in the same read "
                             "pass")(func)
    func = click.option("--no-hash", is_flag=True, help="skip the hashes of the output")(func)
    return mode_option(html_option(func))  # type: ignore[return-value]


def hash_choice(kwargs: dict[str, Any]) -> tuple[str, ...]:
    """The algorithms of ``--hash`` (none with ``--no-hash``)."""
    return () if kwargs["no_hash"] else parse_algorithms(kwargs["hash_algorithms"])


def print_damage(report: Report, limit: int = 20) -> None:
    """One warning line per damaged range (the first ``limit``)."""
    for item in report.damaged[:limit]:
        how = "" if "guess" in item["reason"] or "uncertain" in item["reason"] \
            else " (written as zeros)"
        click.echo(f"bdekit: warning: {item['reason']}: offset {item['offset']}, "
                   f"{item['length']} bytes{how}", err=True)
    if len(report.damaged) > limit:
        click.echo(f"bdekit: warning: ... and {len(report.damaged) - limit} more damaged "
                   "range(s) (see --report)", err=True)


def examiner_report(ctx: click.Context, image: str, output: str) -> Report:
    """A report that starts with what an examiner files: version, the masked command line,
    absolute paths, every file of the image."""
    shown = output if output == STDOUT else os.path.abspath(output)
    command = masked_command_line(ctx)
    return Report(input=os.path.abspath(image), output=shown, command_line=command,
                  command=command,
                  input_files=[os.path.abspath(p) for p in image_files(image)
                               if os.path.lexists(p)])


def _plan(ctx: click.Context, image: str, output: str, kwargs: dict[str, Any]) -> PathPlan:
    plan = PathPlan(force=kwargs["force"])
    plan.add_image(image)
    plan_unlock_inputs(plan, kwargs)
    plan.set_output(output)
    plan.add_output("report", kwargs["report_path"], stream_ok=True)
    plan.add_output("HTML report", kwargs.get("html_path"))
    if output == STDOUT:
        ctx.meta[STDOUT_TAKEN] = True
        if kwargs["report_path"] == STDOUT:
            plan.problems.append(UsageError("--report - and the output - are both standard "
                                            "output"))
    return plan


def _run(ctx: click.Context, image: str, output: str, kwargs: dict[str, Any]) -> None:
    quiet = bool(ctx.obj and ctx.obj.get("quiet"))
    mode = parse_mode(kwargs["mode"])
    hashes = hash_choice(kwargs)
    report = examiner_report(ctx, image, output)
    html = kwargs.get("html_path")
    with _plan(ctx, image, output, kwargs).claim():
        secrets = build_secrets(kwargs)
        vsrc, salvage, base = open_salvaged(image, offset=kwargs.get("offset"),
                                            partition=kwargs.get("partition"))
        try:
            volume = BdeVolume(vsrc, path=image)
            cli_unlock(volume, secrets, ctx)
            span = resolve_range(kwargs["range"], volume.volume_size, volume.sector_size)
            report = decrypt_to(volume, output, force=kwargs["force"],
                                threads=kwargs["threads"], chunk_size=kwargs["chunk_size"],
                                progress=not quiet and sys.stderr.isatty(),
                                hash_output=bool(hashes), hashes=hashes, report=report,
                                mode=mode, span=span, input_base=base,
                                hash_input=salvage if kwargs["hash_input"] else None)
        finally:
            salvage.close()
        if kwargs["report_path"]:
            report.write(kwargs["report_path"], mode)
        write_report_html(html, report.to_json(), "decrypt")
    if not quiet:
        click.echo(report.summary(), err=True)
        print_damage(report)
    if report.damaged:
        ctx.exit(EXIT_PARTIAL)


@click.command()
@click.argument("image", type=click.Path(dir_okay=False))
@click.argument("output", type=click.Path(allow_dash=True))
@unlock_options
@decrypt_options
@click.option("--range", "range", type=RangeParam(), default=None,
              help="decrypt only START:END of the volume (bytes, 0x hexadecimal, or sectors "
                   "with an 's' suffix; either end may be left out)")
@click.pass_context
def decrypt(ctx: click.Context, image: str, output: str, **kwargs: Any) -> None:
    """Decrypt IMAGE into the plain volume image OUTPUT ('-': standard output).

    Unreadable sectors and the missing tail of a truncated image are written as zeros and
    reported (exit 6); for damaged metadata use `bdekit repair`.
    """
    _run(ctx, image, output, kwargs)


COMMANDS = [decrypt]
