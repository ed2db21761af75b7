"""Shared by the command-line tests of issue 12: the fixture image, its key, a CLI runner in
a child process (``python -m bdekit``), and small file helpers. Not a test module."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import FIXTURES, run_cli

IMAGE = FIXTURES / "xts128-rp.img"
MANIFEST = json.loads((FIXTURES / "xts128-rp.img.manifest.json").read_text())
RP = MANIFEST["protectors"][0]["recovery_password"]
PROTECTOR = MANIFEST["protectors"][0]["guid"]
#: SHA-256 of the plaintext volume, recorded by the synthetic image builder (not by decrypt)
VOLUME_SHA256 = MANIFEST["volume_sha256"]
#: well-formed (every block passes its check digit) but not this volume's
WRONG_RP = "000000-000000-000000-000000-000000-000000-000000-000011"
ROOT = Path(__file__).resolve().parents[2]

__all__ = [
    "IMAGE",
    "MANIFEST",
    "PROTECTOR",
    "RP",
    "VOLUME_SHA256",
    "WRONG_RP",
    "bdekit_cmd",
    "copy_image",
    "digest",
    "run_child",
    "run_cli",
]


def copy_image(tmp: Path, name: str = "evidence.img") -> Path:
    """A writable copy of the fixture image (the tests check it stays unchanged)."""
    target = tmp / name
    shutil.copyfile(IMAGE, target)
    return target


def digest(path: Path | bytes, algorithm: str = "sha256") -> str:
    data = path if isinstance(path, bytes) else Path(path).read_bytes()
    return hashlib.new(algorithm, data).hexdigest()


def bdekit_cmd(*args: str) -> list[str]:
    """The console script's entry point (from pyproject.toml), run by this Python."""
    import tomllib

    entry = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["bdekit"]
    module, func = entry.split(":")
    code = f"import importlib; importlib.import_module({module!r}).{func}()"
    return [sys.executable, "-c", code, *args]


def run_child(*args: str, cwd: Path | None = None, stdin: bytes | None = None,
              env: dict[str, str] | None = None, timeout: float = 120,
              stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[bytes]:
    """``bdekit ARGS`` in a child process (audit log in the test's temporary directory)."""
    full = dict(os.environ, **(env or {}))
    full["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    return subprocess.run(bdekit_cmd(*args), cwd=cwd, input=stdin, stdout=stdout,
                          stderr=subprocess.PIPE, env=full, timeout=timeout, check=False)
