"""The pytest plugin (bdekit.testing), run the way another project would use it: a test file
of its own, in a separate pytest session (pytester) with the plugin enabled."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

PROJECT_TESTS = r'''
import hashlib
import json

import pytest

import bdekit


def test_default_volume_decrypts_to_its_manifest(bde_volume):
    m = bde_volume.manifest
    assert m.method == "aes-xts-128" and m.volume_size == 1 << 20
    with bdekit.open_volume(bde_volume.path, **bde_volume.secret) as vol:
        data = vol.read(m.volume_size)
    assert hashlib.sha256(data).hexdigest() == m.windows[0]
    assert bde_volume.expected(0, m.volume_size) == data


@pytest.mark.parametrize("bde_volume", [
    {"method": "aes-cbc-256", "protector": "password", "sector_size": 4096},
    {"method": "aes-cbc-128-diffuser", "protector": "startup-key", "seed": 7},
    {"protector": "clear-key", "used_only": True},
], indirect=True)
def test_parametrized_volumes(bde_volume, tmp_path, bde_check):
    out = tmp_path / "plain.img"
    with bdekit.open_volume(bde_volume.path, **bde_volume.secret) as vol:
        out.write_bytes(vol.read(bde_volume.manifest.volume_size))
    assert bde_check(out, bde_volume).ok


def test_damaged_volume_and_cache(bde_synth, tmp_path, bde_check):
    vol = bde_synth(damage={"bad_sectors": [(65536, 4096)]}, seed=3)
    assert vol.mapfile is not None and vol.manifest.damage[0]["kind"] == "bad-sectors"
    assert bde_synth(damage={"bad_sectors": [(65536, 4096)]}, seed=3).path == vol.path
    other = bde_synth(seed=4)
    assert other.path != vol.path
    assert other.manifest.protectors[0]["recovery_password"] != \
        vol.manifest.protectors[0]["recovery_password"]
    # garbage where the bad sectors are is acceptable; one wrong byte elsewhere is not
    out = tmp_path / "plain.img"
    with bdekit.open_volume(vol.path, **vol.secret) as stream:
        data = bytearray(stream.read(vol.manifest.volume_size))
    out.write_bytes(data)
    assert bde_check(out, vol).ok
    data[300000] ^= 1
    out.write_bytes(data)
    score = bde_check(out, vol)
    assert not score.ok and score.wrong == 1
'''


def test_plugin_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_project=PROJECT_TESTS)
    result = pytester.runpytest("-p", "bdekit.testing", "-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)


def test_plugin_is_registered_for_pytest() -> None:
    """pyproject.toml declares the pytest11 entry point (so installing bdekit enables it)."""
    import tomllib
    from pathlib import Path

    data = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert data["project"]["entry-points"]["pytest11"] == {"bdekit.testing": "bdekit.testing"}
