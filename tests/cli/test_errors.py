"""Errors and exit codes as the README documents them, one line each; ``open_volume`` as
``io.RawIOBase`` specifies (issue 12)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

import bdekit
from bdekit.errors import EXIT_KEY, EXIT_OK, EXIT_OTHER, EXIT_USAGE, UsageError
from bdekit.escrow.secrets import Secrets
from bdekit.pipeline import output as output_mod
from bdekit.pipeline.decrypt import decrypt_to
from bdekit.pipeline.journal import Journal
from bdekit.volume.bde import open_bde
from tests.cli.helpers import IMAGE, MANIFEST, RP, VOLUME_SHA256, copy_image, digest, run_cli
from tests.conftest import FIXTURES


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("bdekit: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


@pytest.mark.parametrize("command", [["info"], ["decrypt", "OUT"], ["scan"]])
def test_a_missing_input_is_a_usage_error(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "no-such.img"
    args = [command[0], str(missing), *(str(tmp_path / a) for a in command[1:])]
    code, _out, err = run_cli(*args)
    assert code == EXIT_USAGE
    assert str(missing) in _one_line(err)


def test_a_malformed_bek_is_a_usage_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.BEK"
    junk.write_bytes(bytes(range(160)))
    code, _out, err = run_cli("info", str(IMAGE), "--bek", str(junk))
    assert code == EXIT_USAGE
    assert str(junk) in _one_line(err)


def test_a_key_package_given_as_a_keyring_is_a_usage_error(tmp_path: Path) -> None:
    kpg = tmp_path / "volume.kpg"
    code, _out, err = run_cli("-q", "keypackage", "export", str(IMAGE), str(kpg), "-rp", RP)
    assert code == EXIT_OK, err
    code, _out, err = run_cli("info", str(IMAGE), "--keyring", str(kpg))
    assert code == EXIT_USAGE
    line = _one_line(err)
    assert str(kpg) in line and "key package" in line and "-kp" in line


def test_password_file_encodings(tmp_path: Path) -> None:
    image = FIXTURES / "xts256-pw.img"
    password = json.loads((FIXTURES / "xts256-pw.img.manifest.json").read_text()
                          )["protectors"][0]["password"]
    utf16 = tmp_path / "utf16.txt"
    utf16.write_bytes(("\ufeff" + password + "\r\n").encode("utf-16-le"))
    code, out, err = run_cli("info", str(image), "--password-file", str(utf16))
    assert code == EXIT_OK and "Unlocked:" in out, err
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("café\n".encode("latin-1"))
    code, _out, err = run_cli("info", str(image), "--password-file", str(latin))
    assert code == EXIT_USAGE
    line = _one_line(err)
    assert str(latin) in line and "UTF-8" in line and "offset 3" in line
    assert "caf" not in line.replace(str(latin), "")


def test_a_vmk_of_the_wrong_length_is_a_usage_error() -> None:
    code, _out, err = run_cli("info", str(IMAGE), "--vmk", MANIFEST["vmk"][:32])
    assert code == EXIT_USAGE
    assert "--vmk" in _one_line(err)


def test_a_corrupt_journal_is_refused_naming_it(tmp_path: Path) -> None:
    volume = open_bde(str(IMAGE))
    volume.unlock(Secrets(recovery_passwords=[RP]))
    out = tmp_path / "out.img"
    journal = Journal(str(out) + ".bdekit-journal", {"job": 1})
    Path(journal.path).write_text(json.dumps({"format": "bdekit-journal", "params": {"job": 1},
                                              "done": "half", "damage": 3}))
    Path(str(out) + ".bdekit-partial").write_bytes(b"")
    with pytest.raises(UsageError) as info:
        decrypt_to(volume, str(out), journal=journal, resume=True)
    assert info.value.path == journal.path and "corrupt" in info.value.message


def test_a_complete_journal_is_checked_against_the_output(tmp_path: Path) -> None:
    volume = open_bde(str(IMAGE))
    volume.unlock(Secrets(recovery_passwords=[RP]))
    out = tmp_path / "out.img"
    out.write_bytes(bytes(volume.volume_size))  # the right size, the wrong bytes
    journal = Journal(str(out) + ".bdekit-journal", {"job": 1})
    Path(journal.path).write_text(json.dumps({
        "format": "bdekit-journal", "version": 1, "params": {"job": 1}, "done":
        volume.volume_size, "partial": str(out) + ".bdekit-partial", "damage": [],
        "complete": True, "sha256": VOLUME_SHA256}))
    with pytest.raises(UsageError) as info:
        decrypt_to(volume, str(out), journal=journal, resume=True)
    assert info.value.path == journal.path and "SHA-256" in info.value.message


def test_a_full_disk_names_the_file_and_reaches_the_log(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, data: object, offset: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(output_mod, "pwrite_all", full)
    out, log = tmp_path / "out.img", tmp_path / "repair.log"
    code, _out, err = run_cli("repair", str(copy_image(tmp_path)), str(out), "-rp", RP,
                              "-lf", str(log))
    assert code == EXIT_OTHER
    line = _one_line(err)
    assert str(out) in line and "No space left on device" in line
    assert str(out) in log.read_text() and "No space left on device" in log.read_text()


def test_click_usage_errors_are_one_line() -> None:
    code, _out, err = run_cli("decrypt", str(IMAGE))
    assert code == EXIT_USAGE
    assert "OUTPUT" in _one_line(err) and len(err.strip().splitlines()) == 1
    code, _out, err = run_cli("info", str(IMAGE), "--no-such-option")
    assert code == EXIT_USAGE and len(err.strip().splitlines()) == 1


def test_a_bare_pw_without_a_terminal_is_one_line() -> None:
    code, _out, err = run_cli("info", str(IMAGE), "-pw", input="")
    assert code == EXIT_USAGE
    assert "terminal" in _one_line(err) and len(err.strip().splitlines()) == 1


def test_open_volume_is_a_raw_io_base() -> None:
    with bdekit.open_volume(str(IMAGE), recovery_password=RP) as volume:
        assert digest(volume.read(None)) == VOLUME_SHA256
        volume.seek(0)
        assert digest(volume.read(-1)) == VOLUME_SHA256
        volume.seek(10)
        with pytest.raises(OSError) as neg:
            volume.seek(-11, os.SEEK_CUR)
        assert neg.value.errno == errno.EINVAL and volume.tell() == 10
        with pytest.raises(TypeError):
            volume.seek(1.5)  # type: ignore[arg-type]
        with pytest.raises(OSError):
            volume.pread(16, -1)  # type: ignore[attr-defined]
        assert volume.seek(volume.size + 100) == volume.size + 100  # type: ignore[attr-defined]
        assert volume.read(10) == b""


def test_wrong_key_exit_code_unchanged() -> None:
    code, _out, _err = run_cli("info", str(IMAGE), "-rp",
                               "000000-000000-000000-000000-000000-000000-000000-000011")
    assert code == EXIT_KEY
