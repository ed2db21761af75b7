"""``bdekit mount IMAGE MOUNTPOINT`` and ``bdekit umount MOUNTPOINT``: the decrypted volume as
a file, through FUSE (see :mod:`bdekit.fuse`).

``mount`` opens and unlocks the volume first, so a wrong key, a missing extra or a bad
mount point is an error (with its usual exit code) before anything is mounted.  Then:

* ``-F`` / ``--foreground``: serve in this process until unmounted (``bdekit umount``,
  ``fusermount -u``) or interrupted (SIGINT/SIGTERM/SIGHUP: libfuse unmounts cleanly).
* otherwise (the default): fork a daemon that serves the mount; this process waits until the
  mount is live (libfuse's init callback reports through a pipe), prints where the file is
  and exits 0; if the mount fails, it reports why and exits non-zero.  The daemon detaches
  (new session, ``/`` as working directory, stdin/stdout on ``/dev/null``; stderr too once
  the mount is live, or ``--log-file``).

``umount`` runs ``fusermount3 -u`` (or ``fusermount -u``, or ``umount`` as root) and waits
until the mount point is released.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from bdekit.cli.common import build_secrets, cli_unlock, unlock_options
from bdekit.cli.inputs import plan_unlock_inputs, require_input
from bdekit.errors import EXIT_OTHER, BdeError, UnsupportedError, UsageError
from bdekit.fuse import VOLUME_FILE_NAME, fuse_problem, is_mounted, serve
from bdekit.image.files import PRIVATE_MODE
from bdekit.pipeline.paths import PathPlan
from bdekit.volume.bde import BdeVolume, open_bde

log = logging.getLogger(__name__)

#: How long the parent waits for the daemon's mount to become live.
MOUNT_TIMEOUT = 60.0
#: How long ``umount`` waits for the mount point to be released.
UMOUNT_TIMEOUT = 10.0


def _check_mountpoint(mountpoint: str) -> str:
    path = os.path.abspath(mountpoint)
    if not os.path.exists(path):
        raise UsageError("mount point does not exist", path=path)
    if not os.path.isdir(path):
        raise UsageError("mount point is not a directory", path=path)
    if is_mounted(path):
        raise UsageError("something is already mounted there (bdekit umount it first)",
                         path=path)
    try:
        if os.listdir(path):
            raise UsageError("mount point is not empty", path=path)
    except PermissionError:
        raise UsageError("mount point is not readable", path=path) from None
    return path


@click.command()
@click.argument("image", type=click.Path(dir_okay=False))
@click.argument("mountpoint", type=click.Path(file_okay=False))
@unlock_options
@click.option("--foreground", "-F", is_flag=True,
              help="serve in the foreground until unmounted or interrupted (-f means force "
                   "in every other command)")
@click.option("--allow-other", is_flag=True,
              help="let other users read the mount (needs user_allow_other in /etc/fuse.conf "
                   "when not root)")
@click.option("--log-file", type=click.Path(dir_okay=False), default=None,
              help="where the background daemon logs (default: nowhere)")
@click.option("--single-thread", is_flag=True, hidden=True, help="serve one request at a time")
@click.option("--fuse-debug", is_flag=True, hidden=True, help="libfuse's own debug output")
@click.pass_context
def mount(ctx: click.Context, image: str, mountpoint: str, foreground: bool,
          allow_other: bool, log_file: str | None, single_thread: bool, fuse_debug: bool,
          **kwargs: Any) -> None:
    """Mount the decrypted volume of IMAGE, read-only, as MOUNTPOINT/bde1."""
    quiet = bool(ctx.obj and ctx.obj.get("quiet"))
    problem = fuse_problem()
    if problem:
        raise UnsupportedError(f"cannot mount: {problem}")
    target = _check_mountpoint(mountpoint)
    require_input(image)
    plan = PathPlan()
    plan.add_image(image)
    plan_unlock_inputs(plan, kwargs)
    plan.add_output("log file", log_file, append=True, atomic=False, stream_ok=True)
    plan.check()
    secrets = build_secrets(kwargs)
    volume = open_bde(image, offset=kwargs.get("offset"), partition=kwargs.get("partition"))
    cli_unlock(volume, secrets, ctx)
    file_path = os.path.join(target, VOLUME_FILE_NAME)
    serve_kwargs = {"image": image, "allow_other": allow_other,
                    "single_thread": single_thread, "fuse_debug": fuse_debug}

    if foreground:
        def ready() -> None:
            if not quiet:
                click.echo(f"bdekit: mounted: {file_path} ({volume.volume_size} bytes); "
                           "Ctrl-C or 'bdekit umount' to unmount", err=True)

        _serve(volume, target, ready, log_file, serve_kwargs)
        return
    pid = _daemonize_and_serve(volume, target, log_file, serve_kwargs)
    if not quiet:
        click.echo(f"bdekit: mounted: {file_path} ({volume.volume_size} bytes), served by "
                   f"process {pid}; unmount with: bdekit umount {target}", err=True)


def _serve(volume: BdeVolume, target: str, ready: Callable[[], None], log_file: str | None,
           serve_kwargs: dict[str, Any]) -> None:
    if log_file:
        _add_log_file(log_file)
    serve(volume, target, on_ready=ready, **serve_kwargs)


def _add_log_file(log_file: str) -> None:
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_MODE)
    os.close(fd)  # created 0600: the log names the image and the keys' sources
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s bdekit[%(process)d]: %(levelname)s: "
                                           "%(message)s"))
    root = logging.getLogger("bdekit")
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)


def _daemonize_and_serve(volume: BdeVolume, target: str, log_file: str | None,
                         serve_kwargs: dict[str, Any]) -> int:
    """Fork a daemon serving the mount; return its pid once the mount is live."""
    if log_file:
        log_file = os.path.abspath(log_file)
    sys.stdout.flush()
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the daemon
        os.close(read_fd)
        _daemon_main(volume, target, log_file, serve_kwargs, write_fd)  # never returns
    os.close(write_fd)
    try:
        status = _wait_ready(read_fd, pid)
    finally:
        os.close(read_fd)
    if status == "ok":
        return pid
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    raise BdeError(status, path=target)


def _wait_ready(read_fd: int, pid: int) -> str:
    """``"ok"`` once the daemon reports the mount live, else why it failed."""
    deadline = time.monotonic() + MOUNT_TIMEOUT
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            return f"the mount did not become live within {MOUNT_TIMEOUT:.0f} s"
        ready, _, _ = select.select([read_fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(read_fd, 4096)
        if not chunk:
            break
        data += chunk
        if data.startswith(b"ok\n"):
            return "ok"
    text = data.decode("utf-8", "replace").strip()
    if text.startswith("error:"):
        return text[len("error:"):].strip()
    _pid, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return f"the mount failed (daemon exited with status {code}; see the message above)"


def _daemon_main(volume: BdeVolume, target: str, log_file: str | None,
                 serve_kwargs: dict[str, Any], status_fd: int) -> None:
    """The forked daemon: detach, serve, report readiness or failure on ``status_fd``.

    Whatever happens, it ends in ``os._exit`` (the ``finally``): the child never returns
    into the parent's code, even on an exception not caught here."""
    code = EXIT_OTHER
    failure = "the daemon stopped unexpectedly"
    try:
        os.setsid()
        os.chdir("/")
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)  # stderr stays until the mount is live: libfuse reports there

        def ready() -> None:
            nonlocal status_fd
            os.dup2(devnull, 2)
            if status_fd >= 0:
                os.write(status_fd, b"ok\n")
                os.close(status_fd)
                status_fd = -1

        _serve(volume, target, ready, log_file, serve_kwargs)
        code = 0
    except BdeError as exc:
        code, failure = exc.exit_code, exc.message
    except (OSError, RuntimeError, ValueError, TypeError) as exc:
        failure = f"{type(exc).__name__}: {exc}"
    finally:
        if code and status_fd >= 0:
            with contextlib.suppress(OSError):
                os.write(status_fd, f"error: {failure}\n".encode())
        with contextlib.suppress(OSError):
            logging.shutdown()
        os._exit(code)


def _unmount_commands(target: str, lazy: bool) -> list[list[str]]:
    cmds = []
    for tool in ("fusermount3", "fusermount"):
        exe = shutil.which(tool)
        if exe:
            cmds.append([exe, "-u", *(["-z"] if lazy else []), target])
    exe = shutil.which("umount")
    if exe and os.geteuid() == 0:
        cmds.append([exe, *(["-l"] if lazy else []), target])
    return cmds


@click.command()
@click.argument("mountpoint", type=click.Path(file_okay=False))
@click.option("--lazy", "-z", is_flag=True,
              help="detach now even when busy; the mount goes when its last user does")
def umount(mountpoint: str, lazy: bool) -> None:
    """Unmount a volume mounted with 'bdekit mount'."""
    target = os.path.abspath(mountpoint)
    if not is_mounted(target):
        raise UsageError("not a FUSE mount point (nothing to unmount)", path=target)
    cmds = _unmount_commands(target, lazy)
    if not cmds:
        raise BdeError("neither fusermount3 nor fusermount is installed (install fuse3)",
                       path=target)
    first_error = ""
    for cmd in cmds:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            break
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        first_error = first_error or (lines[-1] if lines else
                                      f"{os.path.basename(cmd[0])} exited with {proc.returncode}")
        if not is_mounted(target):  # went away meanwhile
            break
    else:
        detail = first_error
        if "busy" in detail.lower():
            detail += " (close what uses it, e.g. a mount of the file, or use --lazy)"
        raise BdeError(f"cannot unmount: {detail}", path=target)
    deadline = time.monotonic() + UMOUNT_TIMEOUT
    while is_mounted(target) and time.monotonic() < deadline:
        time.sleep(0.05)


COMMANDS = [mount, umount]
