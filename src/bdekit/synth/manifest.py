"""The manifest of a synthetic image: a JSON record of its keys, secrets, layout and plaintext.

``IMAGE.manifest.json`` (:func:`default_manifest_path`) next to the image, written atomically.
Scalars first (format, generator, image, seed, method, sizes, volume GUID, description,
creation time, FVEK, VMK, state), then the protectors (type, GUID, key ID and the secret:
recovery password, password, BEK file, clear key or certificate), the layout (metadata
offsets, region size, relocated block), the ``reserved`` ranges (read as zeros), the
``zero_on_disk`` ranges (used-only volumes), the ``damage`` records of
:mod:`bdekit.synth.damage`, and the plaintext digests.  Keys a later version adds are kept
when an older one rewrites the file.

Plaintext digests
    ``windows[i]`` = SHA-256 of volume bytes ``[i MiB, (i+1) MiB)`` as a reader must return
    them: metadata copies and the relocated block as zeros, and the ``zero_on_disk`` ranges
    (used-only volumes) as zeros too -- a reader returns noise there, so a checker zeroes those
    ranges first (:func:`window_digests` does).  ``volume_sha256`` is the SHA-256 of the whole
    decrypted volume (what ``bdekit decrypt`` reports for its output); null on used-only
    volumes, whose decrypted free space is noise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from bdekit._version import __version__
from bdekit.errors import UsageError
from bdekit.image.files import write_atomic
from bdekit.synth.options import WINDOW

MANIFEST_FORMAT = "bdekit-synth-manifest"

MANIFEST_VERSION = 1


def default_manifest_path(image: str | os.PathLike[str]) -> Path:
    """``IMAGE.manifest.json`` next to the image."""
    path = Path(image)
    return path.with_name(path.name + ".manifest.json")


@dataclasses.dataclass
class Manifest:
    """The JSON record of a synthetic image: keys, secrets, layout, plaintext digests, damage."""

    image: str
    method: str
    method_id: int
    sector_size: int
    volume_size: int
    image_size: int
    seed: int | str
    fvek: str
    vmk: str
    volume_guid: str
    description: str
    created: str
    state: dict[str, Any]
    used_only: bool
    source: dict[str, Any]
    protectors: list[dict[str, Any]]
    layout: dict[str, Any]
    reserved: list[list[int]]
    zero_on_disk: list[list[int]]
    window_size: int
    windows: list[str]
    volume_sha256: str | None
    damage: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    format: str = MANIFEST_FORMAT
    format_version: int = MANIFEST_VERSION
    generator: str = f"bdekit {__version__}"
    #: keys of a loaded manifest this class does not know (written back unchanged)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    path: Path | None = dataclasses.field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("path")
        extra = out.pop("extra")
        # scalars first, then the long lists, for a readable file
        order = ["format", "format_version", "generator", "image", "image_size", "seed",
                 "method", "method_id", "sector_size", "volume_size", "volume_guid",
                 "description", "created", "fvek", "vmk", "state", "used_only", "source",
                 "protectors", "layout", "reserved", "zero_on_disk", "damage", "window_size",
                 "volume_sha256", "windows"]
        result = {key: out[key] for key in order}
        result.update((k, v) for k, v in extra.items() if k not in result)
        return result

    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write atomically (temporary name, rename)."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise UsageError("manifest path unknown")
        write_atomic(target, json.dumps(self.to_dict(), indent=1) + "\n")
        self.path = target
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Manifest:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read manifest: {exc}", path=path) from None
        if data.get("format") != MANIFEST_FORMAT:
            raise UsageError("not a bdekit synth manifest", path=path)
        fields = {f.name for f in dataclasses.fields(cls)} - {"path", "extra"}
        manifest = cls(**{k: v for k, v in data.items() if k in fields})
        manifest.extra = {k: v for k, v in data.items() if k not in fields}
        manifest.path = Path(path)
        return manifest

    @property
    def image_path(self) -> Path:
        base = self.path.parent if self.path is not None else Path.cwd()
        return base / self.image

    def protector(self, kind: str) -> dict[str, Any]:
        """The first protector entry of ``kind`` (``recovery-password``, ``password`` ...)."""
        for entry in self.protectors:
            if entry.get("type") == kind:
                return entry
        raise KeyError(kind)


def window_digests(read: Callable[[int, int], bytes], volume_size: int,
                   zero_on_disk: Iterable[Sequence[int]] = (),
                   window: int = WINDOW) -> list[str]:
    """Per-window SHA-256 of a decrypted volume as the manifest defines them: ``read(offset,
    length)`` returns decrypted bytes; ranges that are zero on disk are zeroed first."""
    zeros = sorted((int(a), int(n)) for a, n in zero_on_disk)
    out: list[str] = []
    for start in range(0, volume_size, window):
        length = min(window, volume_size - start)
        data = bytearray(read(start, length))
        data.extend(bytes(length - len(data)))
        for a, n in zeros:
            lo, hi = max(a, start), min(a + n, start + length)
            if lo < hi:
                data[lo - start:hi - start] = bytes(hi - lo)
        out.append(hashlib.sha256(data).hexdigest())
    return out
