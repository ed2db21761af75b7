"""What a new user expects (issue 12): container and FUSE bindings installed with bdekit,
``-q/-v/--debug`` anywhere, ``mount -F``, one ``--seed`` type, ``synth create`` bounded by the
free space and cleaned up on SIGTERM, ``info`` with a wrong key, and no silently ignored
secret."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import tomllib
import types
from pathlib import Path

import pytest

from bdekit import synth
from bdekit.errors import EXIT_KEY, EXIT_OK, EXIT_USAGE
from tests.cli.helpers import (
    IMAGE,
    MANIFEST,
    ROOT,
    RP,
    WRONG_RP,
    bdekit_cmd,
    copy_image,
    run_cli,
)


def test_container_and_fuse_bindings_are_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {dep.split(">")[0].split("=")[0].split("[")[0].strip().lower()
             for dep in project["dependencies"]}
    assert {"libewf-python", "libvhdi-python", "mfusepy"} <= names


def test_verbosity_options_after_the_subcommand(tmp_path: Path) -> None:
    out = tmp_path / "out.img"
    code, _o, err = run_cli("decrypt", str(IMAGE), str(out), "-rp", RP, "-q")
    assert code == EXIT_OK and err == "", err
    code, _o, err = run_cli("info", str(IMAGE), "-v")
    assert code == EXIT_OK and "INFO" in err, err
    code, _o, err = run_cli("info", str(IMAGE), "--debug")
    assert code == EXIT_OK and "DEBUG" in err, err


def test_mount_foreground_is_capital_f() -> None:
    code, out, _err = run_cli("mount", "--help")
    assert code == EXIT_OK
    assert "-F, --foreground" in out and "-f, --foreground" not in out


def test_one_seed_type_across_synth(tmp_path: Path) -> None:
    image = tmp_path / "s.img"
    code, _o, err = run_cli("-q", "synth", "create", str(image), "--size", "2M", "--seed",
                            "case-17")
    assert code == EXIT_OK, err
    code, _o, err = run_cli("-q", "synth", "damage", str(image), "--flip-bits", "3", "--seed",
                            "case-17")
    assert code == EXIT_OK, err


def test_synth_create_is_bounded_by_free_space(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    one_mib_free = types.SimpleNamespace(f_frsize=4096, f_bavail=256)
    monkeypatch.setattr(os, "statvfs", lambda path: one_mib_free)
    image = tmp_path / "big.img"
    code, _o, err = run_cli("synth", "create", str(image), "--size", "4M")
    assert code == EXIT_USAGE
    assert "free" in err and str(image) in err
    assert not list(tmp_path.glob("*big*"))


def test_synth_create_removes_its_temporary_file_on_sigterm(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen(bdekit_cmd("-q", "synth", "create", str(tmp_path / "s.img"),
                                       "--size", "512M"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".s.img.synth-*.tmp")):
        assert proc.poll() is None, "finished before it could be terminated"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 130
    assert not list(tmp_path.glob("*s.img*"))


@pytest.mark.parametrize("as_json", [False, True])
def test_info_with_a_wrong_key_still_shows_the_metadata(as_json: bool) -> None:
    code, out, err = run_cli("info", str(IMAGE), "-rp", WRONG_RP, *(["--json"] if as_json
                                                                   else []))
    assert code == EXIT_KEY
    assert "wrong" in err
    if as_json:
        data = json.loads(out)
        assert data["unlocked"] is None and "wrong" in data["unlock_error"]
        assert data["volume_guid"] == MANIFEST["volume_guid"]
        assert [p["guid"] for p in data["protectors"]] == [MANIFEST["protectors"][0]["guid"]]
    else:
        assert MANIFEST["volume_guid"] in out and "Key protectors:" in out
        assert "Unlocked:             no" in out


def test_info_with_a_missing_key_still_shows_the_metadata(tmp_path: Path) -> None:
    ring = tmp_path / "other.txt"
    ring.write_text("Identifier: {11111111-2222-3333-4444-555555555555}\n"
                    f"Recovery Key: {WRONG_RP}\n")
    code, out, err = run_cli("info", str(copy_image(tmp_path)), "--keyring", str(ring),
                             "--json")
    assert code == EXIT_KEY, err
    data = json.loads(out)
    assert data["unlocked"] is None and "matches a protector" in data["unlock_error"]


def test_a_secret_that_opens_nothing_is_not_ignored(tmp_path: Path) -> None:
    image = tmp_path / "suspended.img"
    manifest = synth.build(image, size="2M", seed="issue-12",
                           protectors=[synth.RecoveryPasswordSpec(None), synth.ClearKeySpec()])
    clear = next(p for p in manifest.protectors if p["type"] == "clear-key")
    code, out, err = run_cli("info", str(image), "-rp", WRONG_RP)
    assert code == EXIT_OK, err
    warning = [line for line in err.splitlines() if "warning" in line]
    assert len(warning) == 1
    assert "recovery-password" in warning[0] and clear["guid"] in warning[0]
    assert "Unlocked:" in out
