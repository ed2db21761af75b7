"""chunks: split from bdekit.engine (TODO docstring)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Any

from bdekit.image.ranges import Damage, _subtract, merge_damage
from bdekit.image.salvage import SalvageSource, find_salvage
from bdekit.volume.bde import BdeVolume
from bdekit.volume.planner import RunKind

log = logging.getLogger(__name__)


class ChunkReader:
    """Reads decrypted chunks of a volume, surviving read errors.

    ``salvage`` is the :class:`SalvageSource` under the volume, ``base`` the image offset of the
    volume in it. ``patches`` are ``(volume offset, bytes)`` written over what was read (a boot
    sector rebuilt from its backup); ``lost`` are volume ranges known to be unrecoverable
    (zeroed and reported in every chunk they touch). Returns the damage of each chunk.
    """

    #: kinds of runs whose bytes come from the image
    SOURCED = (RunKind.PLAIN, RunKind.ENCRYPTED, RunKind.RELOCATED, RunKind.VISTA_HEADER)

    def __init__(self, volume: BdeVolume, salvage: SalvageSource | None = None, base: int = 0,
                 *, patches: Sequence[tuple[int, bytes]] = (),
                 lost: Sequence[Damage] = ()) -> None:
        self.volume = volume
        if salvage is None:
            salvage, base = find_salvage(volume.source)
        self.salvage = salvage
        self.base = base
        self.patches = sorted(patches)
        self.lost = merge_damage(lost)
        self.delay = float(os.environ.get("BDEKIT_CHUNK_DELAY", "0") or 0)  # test throttle

    def __call__(self, offset: int, buf: memoryview) -> list[Damage]:
        damage: list[Damage] = []
        if self.salvage is None:
            self.volume.read_into(offset, buf)
        else:
            with self.salvage.collect() as sink:
                self.volume.read_into(offset, buf)
            if sink:
                damage = self._map(offset, buf, sink)
        end = offset + len(buf)
        for p_off, data in self.patches:
            lo, hi = max(offset, p_off), min(end, p_off + len(data))
            if lo < hi:
                buf[lo - offset:hi - offset] = data[lo - p_off:hi - p_off]
                damage = _subtract(damage, lo, hi)  # rebuilt: no longer damaged
        for item in self.lost:
            lo, hi = max(offset, item.offset), min(end, item.end)
            if lo < hi:
                buf[lo - offset:hi - offset] = bytes(hi - lo)
                damage.append(Damage(lo, hi - lo, item.reason))
        if self.delay:
            time.sleep(self.delay)
        return damage

    def _map(self, offset: int, buf: memoryview,
             sink: list[tuple[int, int, str]]) -> list[Damage]:
        ss = self.volume.sector_size
        out: list[Damage] = []
        bad = []
        for img_off, length, reason in sink:
            a = img_off - self.base
            b = a + length
            a -= a % ss
            b = -(-b // ss) * ss
            bad.append((a, b, reason))
        for run in self.volume.plan(offset, len(buf)):
            if run.kind not in self.SOURCED:
                continue
            src_a, src_b = run.source, run.source + run.length
            for a, b, reason in bad:
                lo, hi = max(a, src_a), min(b, src_b)
                if lo >= hi:
                    continue
                v = run.offset + (lo - src_a)
                buf[v - offset:v - offset + hi - lo] = bytes(hi - lo)
                out.append(Damage(v, hi - lo, reason))
        return out


def open_salvaged(path: str, *, offset: int | None = None, partition: int | None = None,
                  bad: Sequence[tuple[int, int, str]] = (), retries: int = 1,
                  locate_volume: bool = True) -> tuple[Any, SalvageSource, int]:
    """Open an image through a :class:`SalvageSource`; return (volume source, salvage source,
    volume offset in the image). ``locate_volume=False`` leaves partition finding to the
    caller (the volume source is then the whole image)."""
    from bdekit.image import locate
    from bdekit.image.sources import SliceSource, open_source

    image = open_source(path)
    salvage = SalvageSource(image, bad=bad, retries=retries)
    if not locate_volume:
        return salvage, salvage, 0
    try:
        vsrc = locate.volume_source(salvage, offset=offset, partition=partition)
    except BaseException:
        salvage.close()
        raise
    base = vsrc.offset if isinstance(vsrc, SliceSource) else 0
    return vsrc, salvage, base

