"""The rule, on damaged images: exit 0 means exact, exit 6 means every wrong byte is listed,
any other exit leaves nothing behind. A seeded sample of mutants of a synthetic fixture (and
of real Windows images when present) through ``decrypt`` and ``repair``; every mutant of the
used-space-only structures, the boot sectors and the Vista header of a synthetic
used-space-only volume (:mod:`tests.eow_subject`, expected plaintext from its plaintext alone)
and of the Vista fixture; all mutants in ``tools/damage_harness.py``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, REAL_PASSWORD, requires_real
from tests.eow_subject import build_eow_subject
from tests.harness import Subject, load_subject, run_mutant, sample, summary

CLEAR = FIXTURES / "cbc256-clear.img"
RP_IMAGE = FIXTURES / "xts128-rp.img"
RP = "015026-497662-343442-191037-086713-242187-380908-588159"
VISTA = FIXTURES / "vista-diffuser128.img"
VISTA_RP = "518166-459778-027753-182765-002090-292666-254342-449647"
SEED = 11
#: the mutant classes of issue 11, classes 4-6 (used-space-only, boot sectors, Vista size)
BOOT_AND_EOW = ("eow", "relocated", "header.", "vista.")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mutants")


def _check(subject: Subject, count: int, workdir: Path, command: str) -> None:
    results = [(m.name, run_mutant(subject, m, workdir, command))
               for m in sample(subject, count, SEED)]
    wrong = [f"{name}: {v.outcome}" for name, v in results if not v.ok]
    counts = summary(results)
    assert counts["mutants"] == count
    assert not wrong, "\n".join(wrong)


def _check_classes(subject: Subject, prefixes: tuple[str, ...], workdir: Path,
                   command: str) -> None:
    chosen = [m for m in sample(subject, None, SEED) if m.name.startswith(prefixes)]
    results = [(m.name, run_mutant(subject, m, workdir, command)) for m in chosen]
    wrong = [f"{name}: {v.outcome}" for name, v in results if not v.ok]
    assert chosen and not wrong, "\n".join(wrong)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["decrypt", "repair"])
def test_used_space_only_bitmaps_and_boot_sectors(workdir: Path, command: str) -> None:
    subject, _where, _img = build_eow_subject(workdir)
    _check_classes(subject, BOOT_AND_EOW, workdir, command)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["decrypt", "repair"])
def test_vista_header_and_size(workdir: Path, command: str) -> None:
    subject = load_subject("vista-diffuser128", VISTA, ["-rp", VISTA_RP], workdir)
    _check_classes(subject, BOOT_AND_EOW, workdir, command)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["decrypt", "repair"])
def test_used_space_only_fixture(workdir: Path, command: str) -> None:
    subject = load_subject("cbc256-clear", CLEAR, [], workdir)
    _check(subject, 60, workdir, command)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["decrypt", "repair"])
def test_recovery_password_fixture(workdir: Path, command: str) -> None:
    subject = load_subject("xts128-rp", RP_IMAGE, ["-rp", RP], workdir)
    _check(subject, 40, workdir, command)


@requires_real
@pytest.mark.real
@pytest.mark.slow
def test_real_used_space_only_image(workdir: Path, real_image: Callable[[str], Path]) -> None:
    subject = load_subject("eow_partial", real_image("eow_partial"),
                           ["-pw", REAL_PASSWORD], workdir)
    _check(subject, 20, workdir, "decrypt")
