"""The command line as a user runs it: exit codes and one-line errors (CliRunner)."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import struct
import subprocess
import sys
import uuid
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from bdekit import synth
from bdekit.cli.main import COMMAND_MODULES, cli, load_command
from bdekit.errors import (
    EXIT_FORMAT,
    EXIT_KEY,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
)
from tests.conftest import REAL_DIR, REAL_PASSWORD, REAL_RP, requires_real
from tests.conftest import run_cli as run

RP_BAD_CHECK = REAL_RP.replace("422114", "422115")
WRONG_RP = "000000-000000-000000-000000-000000-000000-000000-000011"


def assert_one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("bdekit: error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def make_bek(guid: uuid.UUID, key: bytes) -> bytes:
    return synth.build_bek(guid, key, 0)


def test_non_bitlocker_file(tmp_path: Path) -> None:
    path = tmp_path / "plain.img"
    path.write_bytes(b"\xebR\x90NTFS    " + bytes(497) + b"\x55\xaa" + bytes(4096))
    code, _out, err = run("info", str(path))
    assert code == EXIT_FORMAT
    line = assert_one_line_error(err)
    assert str(path) in line and "offset 0" in line and "BitLocker" in line


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.img"
    path.write_bytes(b"")
    code, _out, err = run("info", str(path))
    assert code == EXIT_FORMAT
    line = assert_one_line_error(err)
    assert "empty" in line and str(path) in line


def test_missing_file(tmp_path: Path) -> None:
    code, _out, err = run("info", str(tmp_path / "nope.img"))
    assert code not in (EXIT_OK,)
    assert_one_line_error(err)


@requires_real
def test_info_password(real_image) -> None:  # type: ignore[no-untyped-def]
    code, out, _err = run("info", str(real_image("aes-xts_128")), "-pw", REAL_PASSWORD)
    assert code == EXIT_OK
    assert "aes-xts-128" in out and "Unlocked:" in out
    assert "4eb949c4" not in out  # the FVEK itself only with --show-keys
    code, out, _err = run("info", str(real_image("aes-xts_128")), "-pw", REAL_PASSWORD,
                          "--show-keys")
    assert "4eb949c473f0edfc379ad041670ddb9c4da0abdb4482a2c8bb47250493aa1ed5" in out


@requires_real
def test_info_json_fields(real_image) -> None:  # type: ignore[no-untyped-def]
    code, out, _err = run("info", str(real_image("recovery_password")), "--json",
                          "--recovery-password", REAL_RP.replace("-", " "))
    assert code == EXIT_OK
    data = json.loads(out)
    assert data["encryption_method"] == "aes-xts-128"
    assert data["metadata_version"] == 2
    assert len(data["metadata_copies"]) == 3
    types = {p["type"] for p in data["protectors"]}
    assert types == {"recovery-password", "password"}
    rp = next(p for p in data["protectors"] if p["type"] == "recovery-password")
    assert data["unlocked"]["protector"] == rp["guid"]
    assert rp["key_id"] == rp["guid"][:8]
    assert data["unlocked"]["via"] == "recovery-password"
    assert "fvek" not in data["unlocked"]


@requires_real
def test_env_password(real_image) -> None:  # type: ignore[no-untyped-def]
    code, out, _err = run("info", str(real_image("aes-xts_128")),
                          env={"BDEKIT_PASSWORD": REAL_PASSWORD})
    assert code == EXIT_OK and "Unlocked:" in out


@requires_real
def test_password_file_and_prompt(real_image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pwfile = tmp_path / "pw.txt"
    pwfile.write_text(REAL_PASSWORD + "\n")
    code, out, _err = run("info", str(real_image("aes-xts_128")), "--password-file",
                          str(pwfile))
    assert code == EXIT_OK and "Unlocked:" in out
    result = CliRunner().invoke(cli, ["info", str(real_image("aes-xts_128")), "-pw"],
                                input=REAL_PASSWORD + "\n")
    assert result.exit_code == EXIT_OK and "Unlocked:" in result.stdout
    assert REAL_PASSWORD not in result.stdout + result.stderr


@requires_real
def test_wrong_password(real_image) -> None:  # type: ignore[no-untyped-def]
    code, _out, err = run("info", str(real_image("aes-xts_128")), "-pw", "wrong!")
    assert code == EXIT_KEY
    line = assert_one_line_error(err)
    assert "wrong" in line and "password" in line
    assert "wrong!" not in err  # never echo the secret


@requires_real
def test_wrong_recovery_password(real_image) -> None:  # type: ignore[no-untyped-def]
    code, _out, err = run("info", str(real_image("recovery_password")), "-rp", WRONG_RP)
    assert code == EXIT_KEY
    line = assert_one_line_error(err)
    assert "recovery-password" in line and "wrong" in line


@requires_real
def test_mistyped_recovery_password(real_image) -> None:  # type: ignore[no-untyped-def]
    code, _out, err = run("info", str(real_image("recovery_password")), "-rp", RP_BAD_CHECK)
    assert code == EXIT_USAGE
    line = assert_one_line_error(err)
    assert "block 4 of 8, 422115, fails its check digit" in line


def test_hint_follows_the_message_on_the_same_line(tmp_path: Path) -> None:
    """A malformed recovery password: the error names the image and the block; the hint
    (--fix-typos, keys check) follows in parentheses on the same line, exit 2."""
    image = tmp_path / "rp.img"
    rp = "111111-111111-111111-111111-111111-111111-111111-111111"
    synth.build(image, size="2M", seed="hint", protectors=[synth.RecoveryPasswordSpec(rp)])
    typo = rp.replace("111111", "111112", 1)  # 111112 is not divisible by 11
    code, _out, err = run("info", str(image), "-rp", typo)
    assert code == EXIT_USAGE
    line = assert_one_line_error(err)
    assert line.startswith(f"bdekit: error: {image}: ")
    assert "block 1 of 8, 111112, fails its check digit" in line
    assert line.endswith(" (--fix-typos tests its likely corrections; `bdekit keys check` "
                         "explains each block)")


def test_hint_is_printed_by_the_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any command's BdeError: message, then its hint; the hint is not part of the message."""
    from bdekit.cli import keys as keys_cli

    def failing(password: str) -> list[object]:
        raise UsageError("bad thing", path="some.file", offset=16, hint="try this")

    monkeypatch.setattr(keys_cli.keylib, "check_recovery_password", failing)
    code, _out, err = run("keys", "check", "123")
    assert code == EXIT_USAGE
    assert assert_one_line_error(err) == (
        "bdekit: error: some.file: at offset 16 (0x10): bad thing (try this)")
    exc = UsageError("bad thing", hint="try this")
    assert str(exc) == exc.one_line() == "bad thing"


@requires_real
def test_wrong_bek(real_image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    real_bek = (REAL_DIR / "startup_key.bek").read_bytes()
    guid = uuid.UUID(bytes_le=real_bek[16:32])
    # right GUID, wrong key: the MAC fails
    wrong_key = tmp_path / "wrong-key.bek"
    wrong_key.write_bytes(make_bek(guid, bytes(32)))
    code, _out, err = run("info", str(real_image("startup_key")), "--bek", str(wrong_key))
    assert code == EXIT_KEY
    assert "wrong" in assert_one_line_error(err)
    # a BEK of another volume: no protector has its GUID
    other = tmp_path / "other.bek"
    other_guid = uuid.UUID("12345678-1234-1234-1234-123456789abc")
    other.write_bytes(make_bek(other_guid, bytes(32)))
    code, _out, err = run("info", str(real_image("startup_key")), "-rk", str(other))
    assert code == EXIT_KEY
    line = assert_one_line_error(err)
    assert str(other_guid).upper() in line and "matches no protector" in line
    # not a BEK at all
    junk = tmp_path / "junk.bek"
    junk.write_bytes(b"hello")
    code, _out, err = run("info", str(real_image("startup_key")), "-rk", str(junk))
    assert code == EXIT_USAGE  # a malformed .BEK is a usage error (issue 12)
    assert str(junk) in assert_one_line_error(err)


@requires_real
def test_bek_unlocks(real_image) -> None:  # type: ignore[no-untyped-def]
    code, out, _err = run("info", str(real_image("startup_key")), "--bek",
                          str(REAL_DIR / "startup_key.bek"))
    assert code == EXIT_OK and "with bek" in out


def xts_copy(real_image, tmp_path: Path) -> tuple[Path, tuple[int, int, int]]:  # type: ignore[no-untyped-def]
    """A writable copy of the real AES-XTS image and its three metadata copy offsets."""
    path = tmp_path / "copy.img"
    shutil.copyfile(real_image("aes-xts_128"), path)
    os.chmod(path, 0o644)
    with open(path, "rb") as fh:
        return path, struct.unpack_from("<3Q", fh.read(512), 176)


@requires_real
def test_all_copies_zeroed(real_image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path, offsets = xts_copy(real_image, tmp_path)
    with open(path, "r+b") as fh:
        for off in offsets:
            fh.seek(off)
            fh.write(bytes(65536))
    code, _out, err = run("info", str(path), "-pw", REAL_PASSWORD)
    assert code == EXIT_FORMAT
    line = assert_one_line_error(err)
    assert "no usable BitLocker metadata" in line


@requires_real
def test_one_copy_damaged_is_a_warning(real_image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path, (first, _second, _third) = xts_copy(real_image, tmp_path)
    with open(path, "r+b") as fh:
        fh.seek(first + 200)
        fh.write(b"\xff" * 16)  # inside the datums: CRC fails
    code, out, err = run("info", str(path), "-pw", REAL_PASSWORD)
    assert code == EXIT_OK
    assert "1: offset" in out and "crc mismatch" in out
    assert "2: offset" in out and "<- in use" in out.split("2: offset")[1].splitlines()[0]
    assert "warning" in err.lower()


@requires_real
def test_tpm_only_is_unsupported(real_image, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Turn the only protector of the password image into a TPM protector: exit 5."""
    path, offsets = xts_copy(real_image, tmp_path)
    with open(path, "r+b") as fh:
        for off in offsets:
            fh.seek(off)
            block = bytearray(fh.read(608))
            # VMK datum at dataset offset 130 (block offset 64 + 130); protection at +34
            pos = 64 + 130 + 34
            assert block[pos:pos + 2] == b"\x00\x20"
            block[pos:pos + 2] = b"\x00\x01"
            fh.seek(off)
            fh.write(block)
            fh.write(struct.pack("<HHI", 0, 2, zlib.crc32(block)))
    code, _out, err = run("info", str(path), "-pw", REAL_PASSWORD)
    assert code == 5
    line = assert_one_line_error(err)
    assert "TPM" in line and "55FAEDED" in line.upper()


@pytest.mark.parametrize("args", [["info"], ["info", "--nope", "x"], ["decrypt", "x"]])
def test_usage_errors(args: list[str]) -> None:
    code, _out, _err = run(*args)
    assert code == EXIT_USAGE


def test_bad_fvek_hex(tmp_path: Path) -> None:
    path = tmp_path / "x.img"
    path.write_bytes(bytes(1024))
    code, _out, err = run("info", str(path), "--fvek", "zz")
    assert code == EXIT_USAGE
    assert "--fvek" in assert_one_line_error(err)


@requires_real
def test_wrong_fvek_is_a_key_error(real_image) -> None:  # type: ignore[no-untyped-def]
    """A raw FVEK carries no MAC; a boot sector that does not decrypt gives it away."""
    code, _out, err = run("info", str(real_image("aes-xts_128")), "--fvek", "11" * 32)
    assert code == EXIT_KEY
    assert "FVEK" in assert_one_line_error(err)
    good = "4eb949c473f0edfc379ad041670ddb9c4da0abdb4482a2c8bb47250493aa1ed5"
    code, out, _err = run("info", str(real_image("aes-xts_128")), "--fvek", good)
    assert code == EXIT_OK and "with fvek" in out


def test_decrypt_to_character_device_needs_force() -> None:
    """/dev/null as output: refused without --force, then written in place (no sync error)."""
    from tests.conftest import FIXTURES

    manifest = json.loads((FIXTURES / "xts128-rp.img.manifest.json").read_text())
    rp = manifest["protectors"][0]["recovery_password"]
    image = str(FIXTURES / "xts128-rp.img")
    code, _out, err = run("decrypt", image, "/dev/null", "-rp", rp)
    assert code == EXIT_USAGE and "--force" in assert_one_line_error(err)
    code, _out, err = run("decrypt", image, "/dev/null", "-rp", rp, "--force")
    assert code == EXIT_OK, err
    assert manifest["volume_sha256"] in err  # the summary line names the output's SHA-256


def test_command_table_matches_the_modules() -> None:
    """Every command a module declares is in the lazy table under its own name, and every
    name of the table loads the command of that name."""
    declared = {command.name: module
                for modules in COMMAND_MODULES.values() for module in modules
                for command in importlib.import_module(module).COMMANDS}
    assert set(declared) == set(COMMAND_MODULES)
    for name, modules in COMMAND_MODULES.items():
        assert declared[name] == modules[0]
        command = load_command(name)
        assert command is not None and command.name == name
    assert load_command("no-such-command") is None
    assert {"from-memory", "export"} <= set(load_command("keys").commands)  # type: ignore[union-attr]


def test_decrypt_does_not_load_the_other_commands() -> None:
    """``bdekit decrypt`` imports its own command only: not batch's pools and Dask, synth,
    mount, the memory search or the other command modules (start-up time)."""
    code = ("import sys\nfrom bdekit.cli.main import cli\n"
            "try:\n    cli.main(['decrypt', '--help'], standalone_mode=False)\n"
            "except SystemExit:\n    pass\n"
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('bdekit'))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    loaded = set(proc.stdout.split())
    assert "bdekit.cli.decrypt" in loaded
    for module in ("bdekit.batch.cluster", "bdekit.batch.local", "bdekit.synth",
                   "bdekit.cli.mount", "bdekit.cli.synth", "bdekit.cli.batch",
                   "bdekit.cli.repair", "bdekit.cli.keys", "bdekit.fuse"):
        assert module not in loaded, module


#: Modules an intact volume's decrypt must not load on the native path (start-up time): the
#: pure ciphers' numpy, the progress bar, X.509, the memory search, HTML pages, batch.
_NOT_FOR_A_PLAIN_DECRYPT = ("numpy", "tqdm", "cryptography.x509", "bdekit.memory.search",
                            "bdekit.report.pages", "bdekit.batch.spec", "bdekit.format.majority",
                            "bdekit.crypto.plausibility", "bdekit.escrow.keyring",
                            "bdekit.unlock.certificates",
                            "cryptography.hazmat.primitives.serialization.ssh")


def _decrypt_and_list_modules(tmp_path: Path, pure: bool) -> tuple[set[str], str]:
    """Run ``bdekit decrypt`` of the XTS fixture in a fresh interpreter; (modules loaded
    once it is done, SHA-256 of the output)."""
    from tests.conftest import FIXTURES

    manifest = json.loads((FIXTURES / "xts128-rp.img.manifest.json").read_text())
    out = tmp_path / ("pure.img" if pure else "native.img")
    code = ("import sys\nfrom bdekit.cli.main import cli\n"
            "rc = cli.main(sys.argv[1:], standalone_mode=False)\n"
            "print(' '.join(sorted(sys.modules)))\nsys.exit(rc)")
    env = {**os.environ, "BDEKIT_PURE": "1" if pure else "0"}
    proc = subprocess.run([sys.executable, "-c", code, "-q", "decrypt",
                           str(FIXTURES / "xts128-rp.img"), str(out), "--no-hash", "-rp",
                           manifest["protectors"][0]["recovery_password"]],
                          capture_output=True, text=True, env=env, check=True)
    import hashlib

    assert hashlib.sha256(out.read_bytes()).hexdigest() == manifest["volume_sha256"]
    return set(proc.stdout.split()), manifest["volume_sha256"]


def test_plain_decrypt_loads_no_numpy_on_the_native_path(tmp_path: Path) -> None:
    """An intact volume decrypted with the native kernel loads neither numpy nor the other
    modules only damage, memory keys, certificates or reports need; the pure path does load
    numpy (so the check can fail), and both give the manifest's plaintext."""
    from bdekit.crypto import native

    if not native.available():
        pytest.skip("the native kernel is not built")
    loaded, _sha = _decrypt_and_list_modules(tmp_path, pure=False)
    assert "bdekit.pipeline.decrypt" in loaded
    assert sorted(set(_NOT_FOR_A_PLAIN_DECRYPT) & loaded) == []
    loaded_pure, _sha = _decrypt_and_list_modules(tmp_path, pure=True)
    assert "numpy" in loaded_pure


def test_console_script_exit_runs_atexit_flushes_and_keeps_the_status(tmp_path: Path) -> None:
    """The console script ends without the interpreter's teardown, but after the atexit
    handlers, with stdout flushed into a pipe and the command's exit status."""
    marker = tmp_path / "atexit-ran"
    teardown = tmp_path / "teardown-ran"
    code = ("import atexit, sys\n"
            f"atexit.register(lambda: open({str(marker)!r}, 'w').write('yes'))\n"
            "class Late:\n"
            f"    def __del__(self, _open=open): _open({str(teardown)!r}, 'w').write('y')\n"
            "late = Late()\n"
            "from bdekit.cli.entry import main\n"
            "sys.argv = ['bdekit'] + sys.argv[1:]\n"
            "main()\n")
    proc = subprocess.run([sys.executable, "-c", code, "--version"], capture_output=True,
                          text=True)
    assert proc.returncode == EXIT_OK and "bdekit" in proc.stdout
    assert marker.read_text() == "yes"
    assert not teardown.exists()  # the fast exit was taken: no teardown of module globals
    proc = subprocess.run([sys.executable, "-c", code, "decrypt", str(tmp_path / "none.img"),
                           str(tmp_path / "out.img")], capture_output=True, text=True)
    assert proc.returncode == EXIT_USAGE and proc.stderr.startswith("bdekit: error:")
    assert not (tmp_path / "out.img").exists()
