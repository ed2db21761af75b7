"""Shared fixtures: the real Windows images (skipped when ../shared is absent) and helpers."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import struct
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REAL_DIR = Path(os.environ.get("BDEKIT_REAL_IMAGES", ROOT.parent / "shared" / "real-images"))
FIXTURES = ROOT / "fixtures"

REAL_PASSWORD = "password12!@"
REAL_RP = "284867-596541-514998-422114-660297-261613-215424-199408"
VISTA_RP = "517506-503998-044583-576191-587004-635965-501270-087802"

#: image -> (unlock kwargs for open_volume, method label, FVEK hex or None), from the README.
REAL_IMAGES: dict[str, tuple[dict[str, str], str, str | None]] = {
    "aes-xts_128": ({"password": REAL_PASSWORD}, "aes-xts-128",
                    "4eb949c473f0edfc379ad041670ddb9c4da0abdb4482a2c8bb47250493aa1ed5"),
    "aes_256": ({"password": REAL_PASSWORD}, "aes-cbc-256",
                "dd3885ef9948c8dc6ad1b54a6c4a4b6fb74b44d1d9775ac7ed186c35f1b59022"),
    "aes_128_diffuser": ({"password": REAL_PASSWORD}, "aes-cbc-128-diffuser",
                         "10730f695df62a49cd3aa1b1c9ae3edf2229c338a3740830e2b19d2b83f9cada"
                         "268af0e0613921085edc89e1b804de354fd265acf4e5c410b47764bb9565666b"),
    "recovery_password": ({"recovery_password": REAL_RP}, "aes-xts-128", None),
    "startup_key": ({"bek": "startup_key.bek"}, "aes-xts-128", None),
    "suspended": ({}, "aes-xts-128", None),
    "decrypted": ({}, "none", None),
    "vista": ({"recovery_password": VISTA_RP}, "aes-cbc-128-diffuser", None),
    "eow_partial": ({"password": REAL_PASSWORD}, "aes-cbc-128", None),
}


@pytest.fixture(autouse=True)
def _isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """No test writes the user's audit log; the CLI's logging setup does not leak."""
    import logging

    monkeypatch.setenv("BDEKIT_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    yield
    logger = logging.getLogger("bdekit")
    logger.handlers[:] = []
    logger.setLevel(logging.NOTSET)
    logger.propagate = True


@pytest.fixture(scope="session")
def xts(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A synthetic AES-XTS-128 volume (tests/test_repair_support.py, built once)."""
    from tests.repair_support import synth_image

    return synth_image(tmp_path_factory, "xts", method="aes-xts-128")


@pytest.fixture(scope="session")
def cbc4k(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A synthetic AES-CBC-256 volume with 4096-byte sectors (built once)."""
    from tests.repair_support import synth_image

    return synth_image(tmp_path_factory, "cbc4k", method="aes-cbc-256", sector_size=4096)


def have_real() -> bool:
    return (REAL_DIR / "reference-digests.json").is_file()


requires_real = pytest.mark.skipif(not have_real(), reason="../shared/real-images is absent")


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not have_real():
        pytest.skip("../shared/real-images is absent")
    return tmp_path_factory.mktemp("real-images")


def _real_image(cache: Path, name: str) -> Path:
    out = cache / f"{name}.bin"
    if not out.exists():
        tmp = out.with_suffix(".tmp")
        with gzip.open(REAL_DIR / f"{name}.bin.gz", "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.chmod(tmp, 0o444)  # evidence is read-only
        tmp.rename(out)
    return out


@pytest.fixture(scope="session")
def real_image(real_cache: Path):  # type: ignore[no-untyped-def]
    """Function returning the decompressed path of a real image by name."""
    return lambda name: _real_image(real_cache, name)


def real_kwargs(name: str) -> dict[str, str]:
    kwargs = dict(REAL_IMAGES[name][0])
    if "bek" in kwargs:
        kwargs["bek"] = str(REAL_DIR / kwargs["bek"])
    return kwargs


def reference_digests() -> dict[str, dict]:  # type: ignore[type-arg]
    return json.loads((REAL_DIR / "reference-digests.json").read_text())  # type: ignore[no-any-return]


def window_digests(image: Path, plain_read) -> dict[str, list]:  # type: ignore[no-untyped-def,type-arg]
    """Digests as reference-digests.json defines them (see the real images' README).

    ``plain_read(offset, length)`` returns decrypted volume bytes.
    """
    out: dict[str, list] = {}  # type: ignore[type-arg]
    size = image.stat().st_size
    window = 1 << 20
    with open(image, "rb") as fh:
        for wstart in range(0, size, window):
            fh.seek(wstart)
            cipher = fh.read(window)
            sectors = [i for i in range(0, len(cipher), 512)
                       if (wstart + i < 8192) or any(cipher[i:i + 512])]
            if not sectors:
                continue
            plain = plain_read(wstart, len(cipher))
            h = hashlib.sha256()
            for i in sectors:
                h.update(struct.pack("<Q", i))
                h.update(plain[i:i + 512])
            out[str(wstart)] = [len(sectors), h.hexdigest()]
    return out


def run_cli(*args: str, env: dict[str, str] | None = None,
            input: str | None = None) -> tuple[int, str, str]:
    """Run the bdekit CLI in-process: (exit code, stdout, stderr)."""
    from click.testing import CliRunner

    from bdekit.cli.main import cli

    result = CliRunner().invoke(cli, list(args), env=env, input=input, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


class BytesSource:
    """An in-memory image source (same interface as bdekit.sources.ImageSource)."""

    kind = "memory"

    def __init__(self, data: bytes | bytearray, path: str = "<memory>") -> None:
        self.data = data
        self.size = len(self.data)
        self.path = path

    def read_at(self, offset: int, length: int) -> bytes:
        return self.data[offset:offset + length]

    def readinto_at(self, offset: int, buf) -> int:  # type: ignore[no-untyped-def]
        chunk = self.data[offset:offset + len(buf)]
        buf[:len(chunk)] = chunk
        return len(chunk)

    def close(self) -> None:
        pass
