"""A pytest plugin: synthetic BitLocker volumes, built on demand, for any project's tests.

Installed with bdekit and registered through the ``pytest11`` entry point, so a project that
tests its own BitLocker code only has to use the fixtures (or ``-p bdekit.testing`` when bdekit
is on the path without being installed):

``bde_synth``
    (session) a factory: ``bde_synth(method="aes-xts-128", protector="recovery-password",
    sector_size=512, size="1M", used_only=False, state=None, vista=False, damage=None,
    seed=0)`` returns a :class:`SynthVolume`.  Same arguments, same image: images are built once
    per session into the session's temporary directory and are deterministic from the seed
    (keys, GUIDs, plaintext).  ``protector``: ``recovery-password``, ``password``,
    ``startup-key`` or ``clear-key``.  ``damage``: keyword arguments of
    :func:`bdekit.synth.damage.apply`, e.g. ``{"zero_copies": [1, 2]}``,
    ``{"bad_sectors": [(65536, 4096)]}``, ``{"truncate": "768K"}``, ``{"zero_header": True}``.
``bde_volume``
    one :class:`SynthVolume` with the factory's defaults; parametrize it indirectly to vary
    it: ``@pytest.mark.parametrize("bde_volume", [{"method": "aes-cbc-256"}],
    indirect=True)``.
``bde_check``
    ``bde_check(output, volume, mapfile=None)`` scores a plaintext your code wrote against the
    volume's manifest (:func:`bdekit.synth.check.score`, what ``bdekit synth check`` runs) and
    returns the :class:`bdekit.synth.check.Score` (``.ok``, ``.wrong``, ``.wrong_ranges`` ...).

A :class:`SynthVolume` has ``path`` (the image; work on a copy if your code writes),
``manifest`` and ``manifest_path``, ``secret`` (``{"recovery_password": ...}``,
``{"password": ...}``, ``{"bek": path}`` or ``{}``: keyword arguments of
:func:`bdekit.open_volume`), ``mapfile`` (the ddrescue mapfile of bad sectors, or None), and
``expected(offset, length)``: the plaintext a correct reader returns there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bdekit import synth
from bdekit.synth import check as check_mod
from bdekit.synth import damage as damage_mod

__all__ = ["SynthVolume", "bde_check", "bde_synth", "bde_volume", "build_volume"]

PROTECTORS = ("recovery-password", "password", "startup-key", "clear-key")


@dataclasses.dataclass
class SynthVolume:
    path: Path
    manifest_path: Path
    manifest: synth.Manifest
    secret: dict[str, str]
    mapfile: Path | None = None

    def expected(self, offset: int, length: int) -> bytes:
        """The plaintext a correct reader returns at ``[offset, offset + length)`` (metadata
        copies and never-written space as zeros)."""
        exp = check_mod.expectation(self.manifest)
        if exp.source is None:
            raise ValueError("this volume's plaintext is not available (see bdekit synth check)")
        length = max(0, min(length, exp.size - offset))
        buf = np.empty(length, dtype=np.uint8)
        exp.source.fill(offset, buf)
        for ranges in (exp.reserved, exp.free):
            check_mod.paint_ranges(buf, offset, ranges, 0)
        return buf.tobytes()


def _spec(protector: str, seed: int | str, keys_dir: Path) -> Any:
    if protector == "recovery-password":
        return synth.RecoveryPasswordSpec()
    if protector == "password":
        return synth.PasswordSpec(f"bdekit-password-{seed}")
    if protector == "startup-key":
        return synth.StartupKeySpec(keys_dir)
    if protector == "clear-key":
        return synth.ClearKeySpec()
    raise ValueError(f"protector {protector!r}: expected one of {', '.join(PROTECTORS)}")


def _secret(manifest: synth.Manifest, base: Path) -> dict[str, str]:
    entry = manifest.protectors[0]
    kind = entry["type"]
    if kind == "recovery-password":
        return {"recovery_password": entry["recovery_password"]}
    if kind == "password":
        return {"password": entry["password"]}
    if kind == "startup-key":
        return {"bek": str(base / entry["bek_file"])}
    return {}


def build_volume(directory: Path, *, method: str = "aes-xts-128",
                 protector: str = "recovery-password", sector_size: int = 512,
                 size: int | str = "1M", used_only: bool = False, state: str | None = None,
                 vista: bool = False, damage: dict[str, Any] | None = None,
                 seed: int | str = 0) -> SynthVolume:
    """Build (or reuse, when built before in ``directory``) one synthetic volume."""
    params = {"method": method, "protector": protector, "sector_size": sector_size,
              "size": str(size), "used_only": used_only, "state": state, "vista": vista,
              "damage": damage, "seed": seed}
    key = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()
    where = directory / key[:16]
    image = where / "volume.img"
    manifest_path = where / "volume.img.manifest.json"
    if not manifest_path.exists():
        tmp = directory / f"{key[:16]}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        synth.build(tmp / "volume.img", size=size, method=method, sector_size=sector_size,
                    seed=seed, used_only=used_only, state=state, vista=vista,
                    protectors=[_spec(protector, seed, tmp / "keys")])
        if damage:
            damage_mod.apply(tmp / "volume.img", seed=int(seed) if str(seed).isdigit() else 0,
                             **damage)
        (tmp / "params.json").write_text(json.dumps(params, default=str, indent=1))
        tmp.rename(where)
    manifest = synth.Manifest.load(manifest_path)
    mapfile = damage_mod.default_mapfile_path(image)
    return SynthVolume(image, manifest_path, manifest, _secret(manifest, where),
                       mapfile if mapfile.exists() else None)


@pytest.fixture(scope="session")
def bde_synth(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., SynthVolume]:
    """Factory of synthetic BitLocker volumes (see the module docstring)."""
    directory = tmp_path_factory.mktemp("bdekit-synth")

    def make(**kwargs: Any) -> SynthVolume:
        return build_volume(directory, **kwargs)

    return make


@pytest.fixture
def bde_volume(request: pytest.FixtureRequest,
               bde_synth: Callable[..., SynthVolume]) -> Iterator[SynthVolume]:
    """One synthetic volume: the factory's defaults, or ``request.param`` (a dict)."""
    params = getattr(request, "param", None) or {}
    yield bde_synth(**params)


@pytest.fixture
def bde_check() -> Callable[..., check_mod.Score]:
    """``bde_check(output, volume, mapfile=None)``: the score of a plaintext (see above)."""

    def run(output: str | Path, volume: SynthVolume,
            mapfile: str | Path | None = None) -> check_mod.Score:
        return check_mod.score(str(output), str(volume.manifest_path),
                               mapfile=str(mapfile) if mapfile is not None else None)

    return run
