"""Entry point: the click group, logging setup and the mapping of errors to exit codes.

A :class:`BdeError` becomes one line on stderr, ``bdekit: error: FILE: at offset N: message``,
followed by its hint in parentheses when it has one, and the exit code of its class. A usage
error click finds (unknown option, missing argument, bad value) is one line too, exit 2. An
interrupt is ``bdekit: interrupted``, exit 130, never a traceback (the console script starts
in :mod:`bdekit.cli.entry`, which covers the imports as well). Writing to a pipe whose reader
has gone (``bdekit decrypt IMG - | head``) ends quietly with the exit status of SIGPIPE (141).
``-q``, ``-v`` and ``--debug`` work before or after the subcommand.
"""

from __future__ import annotations

import errno
import gc
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import click

from bdekit._version import __version__
from bdekit.cli.cmdline import ARGV_KEY, setup_logging, verbosity_options
from bdekit.errors import EXIT_OTHER, EXIT_USAGE, BdeError

log = logging.getLogger("bdekit")

#: The exit status of a process killed by SIGPIPE, as shells report it.
EXIT_SIGPIPE = 128 + int(getattr(signal, "SIGPIPE", 13))
EXIT_INTERRUPTED = 130


def _pipe_closed() -> None:
    """Standard output's reader has gone: nothing more is written there, not even at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass


class _PipeClosed(Exception):
    """Standard output's reader went away (click would turn EPIPE into exit 1)."""


class BdeGroup(click.Group):
    """Runs a command and turns a BdeError into one line on stderr and its exit code."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta.setdefault(ARGV_KEY, list(args))
        return super().parse_args(ctx, args)

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":
                exc.show()
                sys.exit(exc.exit_code)
            where = f"{exc.ctx.command_path}: " if exc.ctx is not None else ""
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            message = " ".join(exc.format_message().split())
            click.echo(f"bdekit: error: {where}{message}{hint}", err=True)
            sys.exit(EXIT_USAGE)
        except click.ClickException as exc:
            click.echo(f"bdekit: error: {' '.join(exc.format_message().split())}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("bdekit: aborted", err=True)
            sys.exit(EXIT_OTHER)
        except KeyboardInterrupt:
            click.echo("bdekit: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except _PipeClosed:
            _pipe_closed()
            sys.exit(EXIT_SIGPIPE)
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise _PipeClosed() from None
        except BdeError as exc:
            click.echo(f"bdekit: error: {exc.display()}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("bdekit: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except MemoryError:
            click.echo("bdekit: error: out of memory", err=True)
            ctx.exit(EXIT_OTHER)
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                raise _PipeClosed() from None
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"bdekit: error: {where}{exc.strerror or exc}", err=True)
            ctx.exit(EXIT_OTHER)
        except Exception as exc:  # an internal error: one line, details with --debug
            if log.isEnabledFor(logging.DEBUG):
                log.exception("internal error")
            click.echo(f"bdekit: internal error: {type(exc).__name__}: {exc} "
                       "(run with --debug for details)", err=True)
            ctx.exit(EXIT_OTHER)


#: Every command of the group: the module that defines it (in its ``COMMANDS`` list) and the
#: modules that add subcommands to it. A command's modules are imported when it runs (or when
#: the help lists it), so ``bdekit decrypt`` does not pay for batch, synth, mount or the report
#: pages at start-up.
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "keys": ("bdekit.cli.keys", "bdekit.cli.memory"),
    "info": ("bdekit.cli.info",),
    "decrypt": ("bdekit.cli.decrypt",),
    "repair": ("bdekit.cli.repair",),
    "keypackage": ("bdekit.cli.keypackage",),
    "scan": ("bdekit.cli.scan",),
    "mount": ("bdekit.cli.mount",),
    "umount": ("bdekit.cli.mount",),
    "synth": ("bdekit.cli.synth",),
    "batch": ("bdekit.cli.batch",),
    "hash": ("bdekit.cli.hash",),
    "report": ("bdekit.cli.report",),
}


def _with_verbosity(command: click.Command) -> None:
    """``-q``/``-v``/``--debug`` on ``command`` and its subcommands too."""
    taken = {opt for p in command.params for opt in getattr(p, "opts", ())}
    command.params += [o for o in verbosity_options() if not taken & set(o.opts)]
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _with_verbosity(sub)


#: commands whose options already include the verbosity options
_WITH_VERBOSITY: set[str] = set()


def load_command(name: str) -> click.Command | None:
    """The command ``name`` of :data:`COMMAND_MODULES`, its modules imported (None if there is
    no such command)."""
    modules = COMMAND_MODULES.get(name)
    if modules is None:
        return None
    loaded = [importlib.import_module(module) for module in modules]
    for command in loaded[0].COMMANDS:
        if command.name == name:
            if name not in _WITH_VERBOSITY:  # once per process, subcommands included
                _with_verbosity(command)
                _WITH_VERBOSITY.add(name)
            return command
    raise RuntimeError(f"{modules[0]} defines no command {name!r}")


class LazyGroup(BdeGroup):
    """The group whose commands are imported on first use (:data:`COMMAND_MODULES`)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return load_command(cmd_name)


#: ``ctx.obj`` key: the console script (not a caller of :data:`cli` in-process, such as a test
#: runner) freezes the imported modules out of the garbage collector.
FREEZE_KEY = "freeze_gc"


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bdekit")
@click.option("-v", "--verbose", count=True, help="log what is done (INFO)")
@click.option("-q", "--quiet", is_flag=True, help="only errors; no progress bar")
@click.option("--debug", is_flag=True, help="log every structure as it is parsed, with offsets")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool, debug: bool) -> None:
    """Open, decrypt and repair BitLocker-encrypted disk images, offline."""
    setup_logging(verbose, quiet, debug)
    ctx.ensure_object(dict)
    if ctx.obj.get(FREEZE_KEY):
        # The command's modules are loaded (click resolves the command first) and live as
        # long as the process: keep them out of the collector's scans during the job.
        gc.freeze()
    ctx.obj["quiet"] = quiet
    ctx.obj["verbosity"] = {"verbose": verbose, "quiet": quiet, "debug": debug}
    ctx.obj["on_verbosity"] = setup_logging


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="bdekit", obj={FREEZE_KEY: True})


if __name__ == "__main__":  # pragma: no cover
    main()
