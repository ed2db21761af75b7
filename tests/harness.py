"""Damage-injection harness: run bdekit on mutants of an image and judge each run by the rule.

Not a test module: ``tests/pipeline/test_no_silent_wrong.py`` runs a seeded sample in CI and
``tools/damage_harness.py`` runs every mutant of every image. The mutants and the rule are
:mod:`bdekit.synth.mutate`; this module runs the CLI in-process on one mutant and collects
what the rule needs (exit code, output, report damage list, output mapfile).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
from collections.abc import Sequence
from pathlib import Path

from bdekit.image.mapfile import read_mapfile
from bdekit.synth import window_digests
from bdekit.synth.mutate import Mutant, Plaintext, Verdict, judge, mutants
from tests.conftest import run_cli

#: a reference plaintext larger than this stays in its file (the judge reads it in chunks)
IN_MEMORY_REFERENCE = 64 << 20


@dataclasses.dataclass
class Subject:
    """An image to mutate, how to unlock it and its verified plaintext (``reference``; for a
    large volume only ``reference_file`` holds it and ``reference`` is empty)."""

    name: str
    image: bytes
    unlock: list[str]
    reference: bytes
    reference_file: Path | None = None
    #: the image written once; each mutant is a copy of it with the patches written in
    base: Path | None = None

    def plaintext(self) -> Plaintext:
        return self.reference_file if self.reference_file is not None else self.reference


def reference_plaintext(image: Path, unlock: Sequence[str], workdir: Path,
                        manifest: dict[str, object] | None = None) -> Path:
    """Decrypt the undamaged image into ``workdir``; check it against the manifest's digests
    when given (read from the file, never whole)."""
    out = workdir / f"{image.name}.reference"
    code, _, err = run_cli("-q", "decrypt", str(image), str(out), "--force", *unlock)
    assert code in (0, 6), err  # 6: a truncated capture (the real images) has a missing tail
    if manifest is not None:
        with open(out, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            expected = manifest.get("volume_sha256")
            if expected:
                assert hashlib.file_digest(fh, "sha256").hexdigest() == expected
            else:
                got = window_digests(lambda o, n: os.pread(fh.fileno(), n, o), size,
                                     manifest.get("zero_on_disk", []))  # type: ignore[arg-type]
                assert got == manifest["windows"]
    return out


def load_subject(name: str, image: Path, unlock: list[str], workdir: Path) -> Subject:
    manifest_path = image.with_name(image.name + ".manifest.json")
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else None
    reference = reference_plaintext(image, unlock, workdir, manifest)
    if reference.stat().st_size > IN_MEMORY_REFERENCE:
        return Subject(name, image.read_bytes(), unlock, b"", reference_file=reference)
    return Subject(name, image.read_bytes(), unlock, reference.read_bytes())


def _mapfile_bad(path: Path) -> list[tuple[int, int]] | None:
    if not path.exists():
        return None
    return [(pos, pos + size) for pos, size, _ in read_mapfile(path).unrescued()]


def run_mutant(subject: Subject, mutant: Mutant, workdir: Path,
               command: str = "decrypt") -> Verdict:
    """Run ``command`` on the mutant; judge the run. The mutant is a copy of the subject's
    image file with the mutant's patches written in; the output is judged from its file."""
    img = _mutant_image(subject, mutant, workdir)
    out, report, mapfile = workdir / "out.img", workdir / "report.json", workdir / "out.map"
    for stale in (out, report, mapfile):
        stale.unlink(missing_ok=True)
    extra = ["--output-mapfile", str(mapfile)] if command == "repair" else []
    code, _, _ = run_cli("-q", command, str(img), str(out), "--report", str(report),
                         *extra, *subject.unlock)
    damage: list[tuple[int, int]] = []
    if report.exists():
        doc = json.loads(report.read_text())
        damage = [(d["offset"], d["offset"] + d["length"]) for d in doc.get("damaged", [])]
    return judge(code, out if out.exists() else None, subject.plaintext(), damage,
                 _mapfile_bad(mapfile) if command == "repair" else None)


def _mutant_image(subject: Subject, mutant: Mutant, workdir: Path) -> Path:
    """``workdir/mutant.img``: the subject's image (written once as ``<name>.base``) with the
    mutant's patches, read-only like evidence."""
    base = subject.base
    if base is None or not base.exists():
        base = subject.base = workdir / f"{subject.name}.base"
        base.write_bytes(subject.image)
    img = workdir / "mutant.img"
    if img.exists():
        img.chmod(0o600)
    shutil.copyfile(base, img)
    fd = os.open(img, os.O_WRONLY)
    try:
        for offset, data in mutant.patches:
            os.pwrite(fd, data, offset)
    finally:
        os.close(fd)
    img.chmod(0o444)
    return img


def sample(subject: Subject, count: int | None, seed: int) -> list[Mutant]:
    """``count`` mutants of the subject chosen with ``seed`` (all when ``count`` is None)."""
    image = subject.image
    found = mutants(lambda o, n: image[o:o + n], len(image), seed=seed)
    if count is None or count >= len(found):
        return found
    return random.Random(seed).sample(found, count)


def summary(verdicts: Sequence[tuple[str, Verdict]]) -> dict[str, int]:
    counts = {"mutants": len(verdicts), "exact": 0, "flagged": 0, "refused": 0,
              "silent_wrong": 0}
    for _, v in verdicts:
        key = "silent_wrong" if not v.ok else v.outcome
        counts[key] += 1
    return counts


def workdir_for(base: Path) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o700)
    return base
