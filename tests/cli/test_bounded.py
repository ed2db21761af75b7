"""Auxiliary inputs are bounded: a device, a huge file or a disk image given where a key file
belongs is refused at once, and a pathological keyring file fails alone (issue 12).

The commands run in a child process limited to 2 GiB of address space and 60 s, so that an
unbounded read fails the test instead of the machine.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from bdekit.errors import EXIT_OK, EXIT_USAGE
from tests.cli.helpers import IMAGE, PROTECTOR, RP, bdekit_cmd, copy_image, run_cli


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def _run_limited(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parents[2] / "src"), *sys.path]))
    return subprocess.run(bdekit_cmd(*args), capture_output=True, text=True, timeout=60,
                          preexec_fn=_limited, env=env, check=False)


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("bdekit: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("command,option", [
    ("info", "--bek"), ("info", "--password-file"), ("info", "--keyring"),
    ("info", "--certificate"), ("info", "--recovery-password-file"),
    ("repair", "-kp"), ("repair", "--mapfile")])
def test_dev_zero_is_refused(tmp_path: Path, command: str, option: str) -> None:
    args = [command, str(IMAGE)]
    if command == "repair":
        args += [str(tmp_path / "out.img"), "-rp", RP]
    proc = _run_limited(*args, option, "/dev/zero")
    if option == "-kp":  # repair skips a key package it cannot read, saying why
        assert proc.returncode in (EXIT_OK, EXIT_USAGE), proc.stderr
        assert any("/dev/zero" in line and "character device" in line
                   for line in proc.stderr.splitlines()), proc.stderr
        return
    assert proc.returncode == EXIT_USAGE, proc.stderr
    line = _one_line(proc.stderr)
    assert "/dev/zero" in line and "character device" in line


def test_a_large_file_given_as_a_bek_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.bek"
    big.write_bytes(bytes(5000))
    code, _out, err = run_cli("info", str(IMAGE), "--bek", str(big))
    assert code == EXIT_USAGE
    line = _one_line(err)
    assert str(big) in line and "156-180 bytes" in line


def test_a_disk_image_given_as_a_keyring_is_refused_at_once(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    with open(image, "wb") as fh:  # sparse: 100 MiB that cost nothing to make
        fh.truncate(100 << 20)
    proc = _run_limited("info", str(IMAGE), "--keyring", str(image))
    assert proc.returncode == EXIT_USAGE, proc.stderr
    line = _one_line(proc.stderr)
    assert str(image) in line and "too large for a keyring file" in line


def test_a_deeply_nested_json_keyring_fails_alone(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000 + "]" * 100000)
    good = tmp_path / "recovery key.txt"
    good.write_text(f"Identifier: {{{PROTECTOR}}}\nRecovery Key: {RP}\n")
    code, out, err = run_cli("info", str(copy_image(tmp_path)), "--keyring", str(deep),
                             "--keyring", str(good))
    assert code == EXIT_OK, err
    assert "Unlocked:" in out
    assert "RecursionError" not in err and "Traceback" not in err
    assert any(str(deep) in line and "nested" in line for line in err.splitlines())
