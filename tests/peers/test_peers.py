"""Cross-checks with dissect.fve (the third peer; libbde and dislocker are in test_synth).

dissect.fve decrypts the bundled synthetic fixtures and the real images; bdekit must return the
same bytes. Skipped when dissect.fve is not installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bdekit.volume.bde import open_volume
from tests.conftest import FIXTURES, REAL_DIR, real_kwargs, requires_real

bde_mod = pytest.importorskip("dissect.fve.bde", reason="dissect.fve is absent")

pytestmark = pytest.mark.peer

FIXTURE_NAMES = ["xts128-rp", "xts256-pw", "cbc128-bek", "cbc256-clear", "diffuser128-rp",
                 "diffuser256-pw", "xts128-4k"]


def dissect_unlock(fh, kind: str, secret: str | None) -> object:  # type: ignore[no-untyped-def]
    bde = bde_mod.BDE(fh)
    if kind == "recovery-password":
        bde.unlock_with_recovery_password(secret)
    elif kind == "password":
        bde.unlock_with_passphrase(secret)
    elif kind == "startup-key":
        with open(secret, "rb") as bek:  # type: ignore[arg-type]
            bde.unlock_with_bek(bek)
    elif kind == "clear-key":
        bde.unlock_with_clear_key()
    return bde.open()


def fixture_secret(manifest: dict, path: Path) -> tuple[str, str | None, dict]:  # type: ignore[type-arg]
    prot = manifest["protectors"][0]
    kind = prot["type"]
    if kind == "recovery-password":
        return kind, prot["recovery_password"], {"recovery_password": prot["recovery_password"]}
    if kind == "password":
        return kind, prot["password"], {"password": prot["password"]}
    if kind == "startup-key":
        bek = next((FIXTURES / "keys").glob("*.BEK"))
        return kind, str(bek), {"bek": str(bek)}
    return kind, None, {}


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_dissect_agrees_on_fixture(name: str) -> None:
    path = FIXTURES / f"{name}.img"
    manifest = json.loads(Path(f"{path}.manifest.json").read_text())
    kind, secret, kwargs = fixture_secret(manifest, path)
    ours = open_volume(path, **kwargs)
    with open(path, "rb") as fh:
        theirs = dissect_unlock(fh, kind, secret)
        size = manifest["volume_size"]
        theirs.seek(0)  # type: ignore[attr-defined]
        expected = theirs.read(size)  # type: ignore[attr-defined]
    assert ours.read(size) == expected


@requires_real
@pytest.mark.real
@pytest.mark.parametrize("name", ["aes-xts_128", "aes_256", "aes_128_diffuser", "startup_key",
                                  "suspended"])
def test_dissect_agrees_on_real(real_image, name: str) -> None:  # type: ignore[no-untyped-def]
    path = real_image(name)
    kw = real_kwargs(name)
    kind, secret = "clear-key", None
    if "password" in kw:
        kind, secret = "password", kw["password"]
    elif "bek" in kw:
        kind, secret = "startup-key", str(REAL_DIR / "startup_key.bek")
    ours = open_volume(path, **kw)
    with open(path, "rb") as fh:
        theirs = dissect_unlock(fh, kind, secret)
        for offset in (0, 8192, 34603008, 35651584 + 16384):  # header, data near the copies
            theirs.seek(offset)  # type: ignore[attr-defined]
            ours.seek(offset)
            assert ours.read(1 << 16) == theirs.read(1 << 16), offset  # type: ignore[attr-defined]
