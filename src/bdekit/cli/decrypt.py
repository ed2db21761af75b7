"""``bdekit decrypt``: stream the decrypted volume into an image file.

The volume is read through the engine's salvage layer, so an unreadable sector does not stop
the job: it is retried, isolated, written as zeros and reported (exit 6), as is the missing
tail of a truncated capture. Damaged *metadata* is the business of ``bdekit repair``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from bdekit.cli.common import build_secrets, cli_unlock, unlock_options
from bdekit.cli.report import guard_html, html_option, job_outputs, write_report_html
from bdekit.errors import EXIT_PARTIAL
from bdekit.image.salvage import open_salvaged
from bdekit.pipeline.decrypt import DEFAULT_CHUNK, decrypt_to
from bdekit.pipeline.report import Report
from bdekit.recovery.repair import command_line
from bdekit.volume.bde import BdeVolume

F = TypeVar("F", bound=Callable[..., Any])


def decrypt_options(func: F) -> F:
    """Options ``decrypt`` and ``repair`` share (output, report, threads)."""
    func = click.option("--force", "-f", "-Force", "force", is_flag=True,
                        help="overwrite an existing output")(func)
    func = click.option("--report", "report_path", type=click.Path(dir_okay=False),
                        default=None, help="write the JSON report here")(func)
    func = click.option("--threads", type=click.IntRange(1, 256), default=None,
                        help="worker threads (default: CPU count)")(func)
    func = click.option("--chunk-size", type=click.IntRange(4096, 256 << 20),
                        default=DEFAULT_CHUNK, hidden=True)(func)
    func = click.option("--no-hash", is_flag=True, help="skip the SHA-256 of the output")(func)
    func = html_option(func)
    return func


def print_damage(report: Report, limit: int = 20) -> None:
    """One warning line per damaged range (the first ``limit``)."""
    for item in report.damaged[:limit]:
        click.echo(f"bdekit: warning: {item['reason']}: offset {item['offset']}, "
                   f"{item['length']} bytes (written as zeros)", err=True)
    if len(report.damaged) > limit:
        click.echo(f"bdekit: warning: ... and {len(report.damaged) - limit} more damaged "
                   "range(s) (see --report)", err=True)


def _run(ctx: click.Context, image: str, output: str, kwargs: dict[str, Any]) -> None:
    quiet = bool(ctx.obj and ctx.obj.get("quiet"))
    html = guard_html(kwargs, [image], job_outputs(output))
    secrets = build_secrets(kwargs)
    vsrc, salvage, _base = open_salvaged(image, offset=kwargs.get("offset"),
                                         partition=kwargs.get("partition"))
    try:
        volume = BdeVolume(vsrc, path=image)
        cli_unlock(volume, secrets, ctx)
        report = decrypt_to(volume, output, force=kwargs["force"], threads=kwargs["threads"],
                            chunk_size=kwargs["chunk_size"],
                            progress=not quiet and sys.stderr.isatty(),
                            hash_output=not kwargs["no_hash"])
    finally:
        salvage.close()
    report.command = command_line(["bdekit", *sys.argv[1:]])
    if kwargs["report_path"]:
        report.write(kwargs["report_path"])
    write_report_html(html, report.to_json(), "decrypt")
    if not quiet:
        click.echo(report.summary(), err=True)
        print_damage(report)
    if report.damaged:
        ctx.exit(EXIT_PARTIAL)


@click.command()
@click.argument("image", type=click.Path(dir_okay=False))
@click.argument("output", type=click.Path())
@unlock_options
@decrypt_options
@click.pass_context
def decrypt(ctx: click.Context, image: str, output: str, **kwargs: Any) -> None:
    """Decrypt IMAGE into the plain volume image OUTPUT.

    Unreadable sectors and the missing tail of a truncated image are written as zeros and
    reported (exit 6); for damaged metadata use `bdekit repair`.
    """
    _run(ctx, image, output, kwargs)


COMMANDS = [decrypt]
