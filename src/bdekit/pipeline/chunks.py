"""Reading one chunk of the decrypted volume, through read errors.

The volume reads its ciphertext through a :class:`~bdekit.image.salvage.SalvageSource`
wrapped around the image (retry, split down to sectors, zero-fill; areas an input ddrescue
mapfile marks as not rescued are never read). :class:`ChunkReader` opens a record sink around
each chunk's read and maps the unreadable *image* ranges to *volume* ranges through the read
plan (the first sectors of the volume come from the relocated header block, elsewhere in the
image), widened to whole sectors (one bad byte spoils the whole sector's plaintext); it zeroes
them in the chunk and returns them as :class:`~bdekit.image.ranges.Damage`.

``repair`` adds ``patches`` (bytes rebuilt from a backup, written over what was read: those
ranges are no longer damaged) and ``lost`` ranges (known unrecoverable: zeroed and reported in
every chunk they touch).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from bdekit.image.ranges import Damage, merge_damage, subtract_damage
from bdekit.image.salvage import Record, SalvageSource, find_salvage
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
    SOURCED = (RunKind.PLAIN, RunKind.ENCRYPTED, RunKind.RELOCATED, RunKind.VISTA_HEADER,
               RunKind.GUESSED)

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
                damage = subtract_damage(damage, lo, hi)  # rebuilt: no longer damaged
        for item in self.lost:
            lo, hi = max(offset, item.offset), min(end, item.end)
            if lo < hi:
                buf[lo - offset:hi - offset] = bytes(hi - lo)
                damage.append(Damage(lo, hi - lo, item.reason))
        return damage

    def is_hole(self, offset: int, length: int) -> bool:
        """Whether ``[offset, offset + length)`` of the volume needs no reading: every run of
        its plan is missing (beyond the end of the image) or zero, and no patch or lost range
        touches it. The decrypt loop neither reads nor writes such a chunk."""
        end = offset + length
        if any(p < end and p + len(data) > offset for p, data in self.patches):
            return False
        if any(d.offset < end and d.end > offset for d in self.lost):
            return False
        return all(run.kind in (RunKind.MISSING, RunKind.ZERO)
                   for run in self.volume.plan(offset, length))

    def _map(self, offset: int, buf: memoryview, sink: list[Record]) -> list[Damage]:
        """Zero the volume ranges of ``buf`` the image records spoil; return them."""
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
