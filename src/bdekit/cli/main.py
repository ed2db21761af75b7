"""Entry point: the click group, logging setup and the mapping of errors to exit codes.

A :class:`BdeError` becomes one line on stderr, ``bdekit: error: FILE: at offset N: message``,
followed by its hint in parentheses when it has one, and the exit code of its class.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import click

from bdekit._version import __version__
from bdekit.cli.common import setup_logging
from bdekit.errors import EXIT_OTHER, BdeError

log = logging.getLogger("bdekit")


class BdeGroup(click.Group):
    """Runs a command and turns a BdeError into one line on stderr and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BdeError as exc:
            click.echo(f"bdekit: error: {exc.display()}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("bdekit: interrupted", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except MemoryError:
            click.echo("bdekit: error: out of memory", err=True)
            ctx.exit(EXIT_OTHER)
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"bdekit: error: {where}{exc.strerror or exc}", err=True)
            ctx.exit(EXIT_OTHER)
        except Exception as exc:  # an internal error: one line, details with --debug
            if log.isEnabledFor(logging.DEBUG):
                log.exception("internal error")
            click.echo(f"bdekit: internal error: {type(exc).__name__}: {exc} "
                       "(run with --debug for details)", err=True)
            ctx.exit(EXIT_OTHER)


@click.group(cls=BdeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bdekit")
@click.option("-v", "--verbose", count=True, help="log what is done (INFO)")
@click.option("-q", "--quiet", is_flag=True, help="only errors; no progress bar")
@click.option("--debug", is_flag=True, help="log every structure as it is parsed, with offsets")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool, debug: bool) -> None:
    """Open, decrypt and repair BitLocker-encrypted disk images, offline."""
    setup_logging(verbose, quiet, debug)
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet


#: Modules whose ``COMMANDS`` list is added to the group (one line per module).
COMMAND_MODULES = [
    "bdekit.cli.keys",
    "bdekit.cli.info",
    "bdekit.cli.decrypt",
    "bdekit.cli.repair",
    "bdekit.cli.keypackage",
    "bdekit.cli.scan",
    "bdekit.cli.mount",
    "bdekit.cli.synth",
    "bdekit.cli.batch",
    "bdekit.cli.report",
]


def _register() -> None:
    for name in COMMAND_MODULES:
        for command in importlib.import_module(name).COMMANDS:
            cli.add_command(command)


_register()


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="bdekit")


if __name__ == "__main__":  # pragma: no cover
    main()
