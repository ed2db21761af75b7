"""``bdekit decrypt`` (and ``repair``): stream the decrypted volume into an image file."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from bdekit.cli.common import build_secrets, unlock_options
from bdekit.engine import decrypt_to
from bdekit.errors import EXIT_PARTIAL
from bdekit.volume import open_bde


def _decrypt_options(func: Any) -> Any:
    func = click.option("--force", "-f", "-Force", "force", is_flag=True,
                        help="overwrite an existing output")(func)
    func = click.option("--report", "report_path", type=click.Path(dir_okay=False),
                        default=None, help="write the JSON report here")(func)
    func = click.option("--threads", type=click.IntRange(1, 256), default=None,
                        help="worker threads (default: CPU count)")(func)
    func = click.option("--chunk-size", type=click.IntRange(4096, 256 << 20), default=4 << 20,
                        hidden=True)(func)
    func = click.option("--no-hash", is_flag=True, help="skip the SHA-256 of the output")(func)
    return func


def _run(ctx: click.Context, image: str, output: str, kwargs: dict[str, Any]) -> None:
    quiet = bool(ctx.obj and ctx.obj.get("quiet"))
    secrets = build_secrets(kwargs)
    volume = open_bde(image, offset=kwargs.get("offset"), partition=kwargs.get("partition"))
    volume.unlock(secrets)
    report = decrypt_to(volume, output, force=kwargs["force"], threads=kwargs["threads"],
                        chunk_size=kwargs["chunk_size"],
                        progress=not quiet and sys.stderr.isatty(),
                        hash_output=not kwargs["no_hash"])
    if kwargs["report_path"]:
        with open(kwargs["report_path"], "w", encoding="utf-8") as fh:
            json.dump(report.to_json(), fh, indent=2)
    if not quiet:
        click.echo(report.summary(), err=True)
        for item in report.damaged:
            click.echo(f"bdekit: warning: {item['reason']}: offset {item['offset']}, "
                       f"{item['length']} bytes (written as zeros)", err=True)
    if report.bytes_missing or report.bytes_unreadable:
        ctx.exit(EXIT_PARTIAL)


@click.command()
@click.argument("image", type=click.Path(dir_okay=False))
@click.argument("output", type=click.Path())
@unlock_options
@_decrypt_options
@click.pass_context
def decrypt(ctx: click.Context, image: str, output: str, **kwargs: Any) -> None:
    """Decrypt IMAGE into the plain volume image OUTPUT."""
    _run(ctx, image, output, kwargs)


@click.command()
@click.argument("image", type=click.Path(dir_okay=False))
@click.argument("output", type=click.Path())
@unlock_options
@_decrypt_options
@click.pass_context
def repair(ctx: click.Context, image: str, output: str, **kwargs: Any) -> None:
    """Salvage a damaged volume into OUTPUT (repair-bde compatible)."""
    _run(ctx, image, output, kwargs)
COMMANDS = [decrypt, repair]
