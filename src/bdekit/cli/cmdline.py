"""The command line itself: masked for logs, byte positions, file modes, verbosity anywhere.

* :func:`masked_command_line` is the command as typed, for the ``-lf`` log, the mapfile header
  and the report, with the value of every secret option replaced by ``***``. Which options are
  secret is decided by the option (:func:`is_secret`: its name says password, PIN, secret,
  FVEK or VMK, and it is not a file name), never by the shape of the value: a password that
  starts with ``-`` is masked like any other. Tokens are walked as click parses them: the
  options of the group and of each subcommand, ``--opt=value``, flags that take no value,
  secret positional arguments (``keys check PASSWORD``).
* :data:`OFFSET` and :class:`RangeParam`: ``--offset`` and ``--range`` take decimal, ``0x``
  hexadecimal, and an ``s`` suffix for sectors (512 bytes for ``--offset``; the volume's
  sector size for ``--range``).
* :func:`parse_mode`: ``--mode`` (octal, like ``chmod``).
* :func:`verbosity_options`: ``-q``, ``-v`` and ``--debug`` also after the subcommand.
"""

from __future__ import annotations

import dataclasses
import logging
import shlex
from collections.abc import Callable, Sequence
from typing import Any

import click

from bdekit.errors import UsageError
from bdekit.logs import log_to_stderr

#: ``ctx.meta`` key of the arguments the command was run with (set by the group).
ARGV_KEY = "bdekit.argv"
#: What a secret value is replaced with.
MASK = "***"
_SECRET_WORDS = frozenset({"password", "passwords", "secret", "pin", "fvek", "vmk",
                           "passphrase"})
_PATH_WORDS = frozenset({"file", "files", "path", "dir"})


def is_secret(param: click.Parameter) -> bool:
    """Whether the value of ``param`` is a secret (decided by its name, never its value)."""
    words = set((param.name or "").lower().split("_"))
    return bool(words & _SECRET_WORDS) and not words & _PATH_WORDS


def _options(command: click.Command) -> dict[str, click.Option]:
    table: dict[str, click.Option] = {}
    for param in command.params:
        if isinstance(param, click.Option):
            for name in (*param.opts, *param.secondary_opts):
                table[name] = param
    return table


def _takes_value(option: click.Option) -> bool:
    return not option.is_flag and not option.count


def _optional_value(option: click.Option) -> bool:
    """An option whose value may be left out (``-pw`` prompts): click then takes a next token
    that starts with ``-`` as an option, not as the value."""
    return bool(getattr(option, "_flag_needs_value", False))


def _mask_tokens(root: click.Command, tokens: Sequence[str]) -> list[str]:
    out: list[str] = []
    command = root
    table = _options(command)
    positional = [p for p in command.params if isinstance(p, click.Argument)]
    i = 0
    only_args = False
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not only_args and token == "--":
            only_args = True
            out.append(token)
            continue
        name, eq, _value = token.partition("=")
        option = None if only_args or not token.startswith("-") or token == "-" \
            else table.get(name if eq else token)
        if option is not None:
            secret = is_secret(option)
            if eq:
                out.append(f"{name}={MASK}" if secret else token)
                continue
            out.append(token)
            if _takes_value(option) and i < len(tokens):
                nxt = tokens[i]
                if _optional_value(option) and nxt.startswith("-") and len(nxt) > 1:
                    continue
                out.append(MASK if secret else nxt)
                i += 1
            continue
        sub = command.get_command(click.Context(command), token) \
            if isinstance(command, click.Group) and not only_args else None
        if sub is not None:
            command = sub
            table = {**table, **_options(sub)}
            positional = [p for p in sub.params if isinstance(p, click.Argument)]
            out.append(token)
            continue
        arg = positional.pop(0) if positional else None
        out.append(MASK if arg is not None and is_secret(arg) else token)
    return out


def masked_command_line(ctx: click.Context | None = None,
                        argv: Sequence[str] | None = None) -> str:
    """``bdekit ARGS...`` with every secret value replaced by ``***`` (see module docstring).

    ``argv`` defaults to what the group recorded in ``ctx.meta`` (the arguments click
    parsed, also under a test runner)."""
    ctx = ctx or click.get_current_context(silent=True)
    if argv is None:
        argv = ctx.meta.get(ARGV_KEY, []) if ctx is not None else []
    root = ctx.find_root().command if ctx is not None else None
    tokens = _mask_tokens(root, list(argv)) if root is not None else [MASK for _ in argv]
    return shlex.join(["bdekit", *tokens])


# --------------------------------------------------------------------------------------------
# Positions: 0x hex, s for sectors
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Position:
    """A byte position as typed: ``value`` in bytes, or in sectors when ``sectors``."""

    value: int
    sectors: bool = False

    def resolve(self, sector_size: int) -> int:
        return self.value * sector_size if self.sectors else self.value


def parse_position(text: str, what: str) -> Position:
    """``4096``, ``0x1000``, ``8s``, ``0x8s`` -> :class:`Position` (UsageError otherwise)."""
    raw = text.strip().replace("_", "")
    sectors = raw.lower().endswith("s") and not raw.lower().endswith("0xs")
    body = raw[:-1] if sectors else raw
    try:
        value = int(body, 16) if body.lower().startswith("0x") else int(body, 10)
    except ValueError:
        raise UsageError(f"{what}: {text!r} is not a position (bytes, 0x hexadecimal, or an "
                         "'s' suffix for sectors)") from None
    if value < 0:
        raise UsageError(f"{what}: {text!r} is negative")
    return Position(value, sectors)


class OffsetParam(click.ParamType):
    """``--offset``: bytes, ``0x`` hex, or 512-byte sectors with ``s``."""

    name = "OFFSET"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_position(str(value), "--offset").resolve(512)
        except UsageError as exc:
            self.fail(exc.message, param, ctx)


OFFSET = OffsetParam()


class RangeParam(click.ParamType):
    """``--range START:END`` (either may be empty: the start or the end of the volume)."""

    name = "START:END"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> tuple[Position | None, Position | None]:
        if isinstance(value, tuple):
            return value
        start, colon, end = str(value).partition(":")
        if not colon:
            self.fail(f"{value!r} is not START:END", param, ctx)
        try:
            return (parse_position(start, "--range") if start.strip() else None,
                    parse_position(end, "--range") if end.strip() else None)
        except UsageError as exc:
            self.fail(exc.message, param, ctx)


def resolve_range(value: tuple[Position | None, Position | None] | None, size: int,
                  sector_size: int) -> tuple[int, int] | None:
    """``--range`` in volume bytes, checked against the volume."""
    if value is None:
        return None
    first = value[0].resolve(sector_size) if value[0] is not None else 0
    end = value[1].resolve(sector_size) if value[1] is not None else size
    if not 0 <= first < end:
        raise UsageError(f"--range: the start ({first}) must be before the end ({end})")
    if end > size:
        raise UsageError(f"--range: the end ({end}) is beyond the volume's {size} bytes")
    return first, end


# --------------------------------------------------------------------------------------------
# Modes, verbosity
# --------------------------------------------------------------------------------------------


def parse_mode(text: str | None) -> int:
    """``--mode 640`` / ``0640`` / ``0o640`` -> 0o640 (permission bits only)."""
    if text is None:
        return 0o600
    raw = text.strip().lower().removeprefix("0o")
    try:
        mode = int(raw, 8)
    except ValueError:
        raise UsageError(f"--mode: {text!r} is not an octal mode such as 600 or 640") from None
    if not 0 <= mode <= 0o777:
        raise UsageError(f"--mode: {text!r}: only permission bits (at most 777)")
    return mode


def mode_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--mode", "mode", default=None, metavar="OCTAL",
                        help="permissions of the files written (default 600: the decrypted "
                             "volume is as sensitive as the key)")(func)


def _verbosity(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if not value:
        return
    root = ctx.find_root()
    root.ensure_object(dict)
    settings = root.obj.setdefault("verbosity", {"verbose": 0, "quiet": False, "debug": False})
    if param.name == "verbose":
        settings["verbose"] = int(settings.get("verbose") or 0) + int(value)
    else:
        settings[param.name or ""] = value
    if param.name == "quiet":
        root.obj["quiet"] = True
    on_change = root.obj.get("on_verbosity")
    if callable(on_change):
        on_change(settings["verbose"], settings["quiet"], settings["debug"])


def verbosity_options() -> list[click.Option]:
    """``-v``, ``-q`` and ``--debug`` for a subcommand (the group's own work the same way)."""
    return [
        click.Option(["-v", "--verbose", "verbose"], count=True, expose_value=False,
                     callback=_verbosity, help="log what is done (INFO)"),
        click.Option(["-q", "--quiet", "quiet"], is_flag=True, expose_value=False,
                     callback=_verbosity, help="only errors; no progress bar"),
        click.Option(["--debug", "debug"], is_flag=True, expose_value=False,
                     callback=_verbosity, help="log every structure as it is parsed"),
    ]


__all__ = ["ARGV_KEY", "MASK", "OFFSET", "OffsetParam", "Position", "RangeParam",
           "is_secret", "masked_command_line", "mode_option", "parse_mode", "parse_position",
           "resolve_range", "setup_logging", "verbosity_options"]


def setup_logging(verbose: int, quiet: bool, debug: bool) -> None:
    """The ``bdekit`` logger on stderr at the level the verbosity options ask for."""
    level = logging.WARNING
    if verbose:
        level = logging.INFO
    if debug:
        level = logging.DEBUG
    if quiet:
        level = logging.ERROR
    log_to_stderr(level)
