#!/usr/bin/env python3
"""Run every damage-injection mutant of the fixtures (and real images, when present) through
``decrypt`` and ``repair`` and count the outcomes: exact, flagged (exit 6, every wrong byte
listed), refused, silent-wrong (the rule broken). The CI test runs a seeded sample of these.

    python tools/damage_harness.py [--count N] [--seed S] [--commands decrypt,repair] [--json]
                                   [--only NAME,...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import FIXTURES, REAL_DIR, REAL_PASSWORD, _real_image  # noqa: E402
from tests.eow_subject import build_eow_subject  # noqa: E402
from tests.harness import Subject, load_subject, run_mutant, sample, summary  # noqa: E402

RP = "015026-497662-343442-191037-086713-242187-380908-588159"
VISTA_RP = "518166-459778-027753-182765-002090-292666-254342-449647"


def subjects(work: Path) -> list[tuple[str, Path, list[str]]]:
    out = [("cbc256-clear", FIXTURES / "cbc256-clear.img", []),
           ("xts128-rp", FIXTURES / "xts128-rp.img", ["-rp", RP]),
           ("vista-diffuser128", FIXTURES / "vista-diffuser128.img", ["-rp", VISTA_RP])]
    if (REAL_DIR / "reference-digests.json").is_file():
        for name in ("aes-xts_128", "eow_partial"):
            out.append((name, _real_image(work, name), ["-pw", REAL_PASSWORD]))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=None, help="mutants per image (all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--commands", default="decrypt,repair")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", default="", help="subjects to run (comma-separated names)")
    args = parser.parse_args()
    totals: dict[str, int] = {}
    failures: list[str] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        eow = work / "eow"
        eow.mkdir()
        loaded: list[Subject] = [build_eow_subject(eow)[0]]  # expected from its plaintext
        loaded += [load_subject(name, image, unlock, work)
                   for name, image, unlock in subjects(work)
                   if not args.only or name in args.only.split(",")]
        for subject in loaded:
            name = subject.name
            if args.only and name not in args.only.split(","):
                continue
            for command in args.commands.split(","):
                results = [(m.name, run_mutant(subject, m, work, command))
                           for m in sample(subject, args.count, args.seed)]
                counts = summary(results)
                print(f"{name} {command}: {counts}", file=sys.stderr)
                failures += [f"{name} {command} {n}: {v.outcome}" for n, v in results
                             if not v.ok]
                for key, value in counts.items():
                    totals[key] = totals.get(key, 0) + value
    totals["seconds"] = round(time.monotonic() - started)
    print(json.dumps(totals) if args.json else totals)
    for line in failures:
        print(line, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
