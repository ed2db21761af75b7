"""The rule of issue 11 as a test assertion: exit 0 means the output is the reference byte for
byte; exit 6 means every byte that differs lies in the report's damage list and in the output
mapfile; any other exit leaves nothing under the output's name. (Not a test module; the
verdict itself is :func:`bdekit.synth.mutate.judge`, the damage harness's.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bdekit.image.mapfile import read_mapfile
from bdekit.synth.mutate import Verdict, judge


def verdict(code: int, out: Path, reference: Path | bytes, report: Path | None,
            mapfile: Path | None = None) -> Verdict:
    """Judge one repair run (``mapfile`` defaults to ``OUT.map``)."""
    ref = reference if isinstance(reference, bytes) else reference.read_bytes()
    damage: list[tuple[int, int]] = []
    if report is not None and report.exists():
        damage = [(d["offset"], d["offset"] + d["length"])
                  for d in json.loads(report.read_text())["damaged"]]
    mapfile = mapfile or Path(str(out) + ".map")
    marked = None
    if mapfile.exists():
        marked = [(pos, pos + size) for pos, size, _ in read_mapfile(mapfile).unrescued()]
    output = out.read_bytes() if out.exists() else None
    return judge(code, output, ref, damage, marked)


def assert_honest(code: int, out: Path, reference: Path | bytes, report: Path | None,
                  mapfile: Path | None = None) -> Verdict:
    result = verdict(code, out, reference, report, mapfile)
    assert result.ok, result.outcome
    return result


def unflagged(out: Path, report: Path) -> int:
    """Bytes of the output outside the damage list: what the run vouches for (equal to the
    reference when :func:`assert_honest` passes)."""
    size = out.stat().st_size
    covered = np.zeros(size, dtype=bool)
    for d in json.loads(report.read_text())["damaged"]:
        covered[d["offset"]:d["offset"] + d["length"]] = True
    return int(size - covered.sum())
