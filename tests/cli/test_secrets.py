"""Secrets: masked by option wherever the command line is written, named by their real source
in the audit log, readable from files and standard input, and a keyring entry with a bad
check digit is skipped without showing it (issue 12)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bdekit.errors import EXIT_OK
from tests.cli.helpers import PROTECTOR, RP, copy_image, run_cli
from tests.conftest import FIXTURES

PW_IMAGE = FIXTURES / "xts256-pw.img"
PASSWORD = json.loads((FIXTURES / "xts256-pw.img.manifest.json").read_text()
                      )["protectors"][0]["password"]


def _sources(tmp_path: Path) -> list[tuple[str, str]]:
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    return [(r["key_source"], r["outcome"]) for r in map(json.loads, lines)]


def test_a_secret_is_masked_by_its_option_not_its_shape(tmp_path: Path) -> None:
    image = copy_image(tmp_path)
    out, log, report = tmp_path / "out.img", tmp_path / "repair.log", tmp_path / "report.json"
    code, _o, err = run_cli("repair", str(image), str(out), "-rp", RP,
                            "--certificate-password", "-Secret", "-lf", str(log),
                            "--report", str(report))
    assert code == EXIT_OK, err
    mapfile = Path(str(out) + ".map").read_text()
    command = json.loads(report.read_text())["command_line"]
    for text in (mapfile, log.read_text(), command, err):
        assert "-Secret" not in text and RP not in text
    assert "--certificate-password '***'" in command and "-rp '***'" in command
    assert "--certificate-password" in mapfile and "***" in mapfile


@pytest.mark.parametrize("how", ["file", "stdin", "env", "prompt"])
def test_the_password_source_is_named(tmp_path: Path, how: str,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["-q", "info", str(PW_IMAGE)]
    stdin, env = None, None
    if how == "file":
        pw_file = tmp_path / "pw.txt"
        pw_file.write_text(PASSWORD + "\n")
        args += ["--password-file", str(pw_file)]
        expected = f"--password-file {pw_file}"
    elif how == "stdin":
        args += ["--password-file", "-"]
        stdin, expected = PASSWORD + "\n", "standard input"
    elif how == "env":
        env, expected = {"BDEKIT_PASSWORD": PASSWORD}, "$BDEKIT_PASSWORD"
    else:
        from bdekit.cli import inputs

        monkeypatch.setattr(inputs, "stdin_is_terminal", lambda: True)
        monkeypatch.setattr(inputs.click, "prompt", lambda *a, **k: PASSWORD)
        args += ["-pw"]
        expected = "prompt"
    code, _out, err = run_cli(*args, env=env, input=stdin)
    assert code == EXIT_OK, err
    assert _sources(tmp_path) == [(expected, "unlocked")]


@pytest.mark.parametrize("how", ["file", "stdin"])
def test_recovery_password_from_a_file_or_stdin(tmp_path: Path, how: str) -> None:
    image = copy_image(tmp_path)
    if how == "file":
        rp_file = tmp_path / "rp.txt"
        rp_file.write_text(RP + "\n")
        code, out, err = run_cli("info", str(image), "--recovery-password-file", str(rp_file))
        expected = f"--recovery-password-file {rp_file}"
    else:
        code, out, err = run_cli("info", str(image), "-rp", "-", input=RP + "\n")
        expected = "standard input"
    assert code == EXIT_OK, err
    assert "Unlocked:" in out and RP not in out + err
    assert _sources(tmp_path) == [(expected, "unlocked")]


def test_a_keyring_entry_with_a_bad_check_digit_is_skipped(tmp_path: Path) -> None:
    blocks = RP.split("-")
    blocks[3] = blocks[3][:5] + str((int(blocks[3][5]) + 1) % 10)
    bad = "-".join(blocks)
    ring = tmp_path / "escrow.txt"
    ring.write_text(f"Identifier: {{{PROTECTOR}}}\nRecovery Key: {bad}\n\n"
                    f"Identifier: {{{PROTECTOR}}}\nRecovery Key: {RP}\n")
    code, out, err = run_cli("info", str(copy_image(tmp_path)), "--keyring", str(ring))
    assert code == EXIT_OK, err
    assert "Unlocked:" in out
    warning = [line for line in err.splitlines() if "escrow.txt" in line and "line 2" in line]
    assert warning and "skipped" in warning[0]
    assert bad not in err and blocks[3] not in err
    assert _sources(tmp_path) == [("escrow.txt:line 5", "unlocked")]
