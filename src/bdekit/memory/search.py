"""The keys-from-memory search: scan memory images, pair, validate, report.

Every memory image is read once, in chunks (:mod:`.images`); each chunk goes through the
expanded key schedule search (:mod:`.schedule`) and the structure search (:mod:`.structures`).
Candidates are checked against the volume as they come (:mod:`.validate`):

* VMK key datums: the FVEK datum's AES-CCM MAC decides;
* structures that name both keys (pool ``FVEc`` with the diffuser, BCrypt XTS key objects,
  FVEK key datums) and single keys: the sectors decide;
* key schedules: for the methods with one key, each key of the method's size; for XTS and
  CBC + diffuser, pairs of schedules first within ``PAIR_WINDOW`` bytes of each other in
  memory (Windows keeps the data key and the tweak key together), in both orders, then every
  pair when the scan is over (at most ``MAX_PAIRS``).

Only keys that pass are reported, with every place they were found and by which way;
candidates that do not pass (stale keys of earlier volumes, other software's keys) are
counted. Keys never reach the log.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from bdekit.crypto import keys as keylib
from bdekit.escrow.secrets import SecretKind, UnlockResult, UnlockVia
from bdekit.format.constants import EncryptionMethod, enum_label
from bdekit.memory.images import CHUNK, PAGE, open_memory
from bdekit.memory.schedule import MAX_ERRORS, ScheduleSearch
from bdekit.memory.structures import MAX_SPAN, StructureSearch
from bdekit.memory.validate import Validator, fvek_bytes, key_size, needs_pair
from bdekit.volume.bde import BdeVolume

log = logging.getLogger(__name__)

PAIR_WINDOW = 8192
MAX_PAIRS = 20_000
#: Places kept per key (a key can repeat on thousands of pages).
MAX_LOCATIONS = 16
ProgressFn = Callable[[int, int], None]


@dataclasses.dataclass(frozen=True)
class Location:
    """Where a key was found: memory image, physical address, file offset, which way."""

    image: str
    phys: int
    file_offset: int
    how: str

    def describe(self) -> dict[str, Any]:
        return {"image": self.image, "physical_address": f"0x{self.phys:x}",
                "file_offset": self.file_offset, "found_by": self.how}


@dataclasses.dataclass
class FoundKey:
    """A validated key: the unlock result it gives and where it was found."""

    result: UnlockResult
    locations: list[Location] = dataclasses.field(default_factory=list)

    def describe(self, show_keys: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": str(SecretKind.VMK if self.result.vmk is not None else SecretKind.FVEK),
            "method": enum_label(EncryptionMethod, self.result.method),
            "fvek_fingerprint": keylib.fvek_fingerprint(self.result.fvek),
            "found": [loc.describe() for loc in self.locations],
        }
        if show_keys:
            out["fvek"] = self.result.fvek.hex()
            out["vmk"] = self.result.vmk.hex() if self.result.vmk else None
        return out


@dataclasses.dataclass
class MemoryReport:
    images: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    scanned: int = 0
    seconds: float = 0.0
    found: list[FoundKey] = dataclasses.field(default_factory=list)
    schedules: int = 0  # AES key schedules found (any key)
    structures: int = 0  # structure / datum candidates
    candidates: int = 0  # distinct candidate keys of this volume's kind
    tested: int = 0  # keys and pairs tried against the volume
    stopped_early: bool = False

    @property
    def rejected(self) -> int:
        """Candidate keys that did not unlock the volume (stale or someone else's)."""
        used = sum(1 + (r.result.vmk is None and needs_pair(r.result.method))
                   for r in self.found)
        return max(0, self.candidates - used)

    @property
    def rate(self) -> float:
        """MB/s."""
        return self.scanned / self.seconds / 1e6 if self.seconds else 0.0

    def describe(self, show_keys: bool = False) -> dict[str, Any]:
        return {"images": self.images, "bytes_scanned": self.scanned,
                "seconds": round(self.seconds, 3), "mb_per_s": round(self.rate, 1),
                "keys": [f.describe(show_keys) for f in self.found],
                "aes_schedules_found": self.schedules, "structures_found": self.structures,
                "candidates": self.candidates, "rejected_candidates": self.rejected,
                "stopped_early": self.stopped_early}


class _Search:
    def __init__(self, validator: Validator, report: MemoryReport) -> None:
        self.v = validator
        self.report = report
        self.size = key_size(validator.method)
        self.pairs = needs_pair(validator.method)
        self.keys: dict[bytes, list[Location]] = {}
        self.order: list[tuple[int, int, bytes]] = []  # (image index, phys, key)
        self.vmks: dict[bytes, list[Location]] = {}
        self.tested: set[bytes] = set()
        self.by_fvek: dict[bytes, FoundKey] = {}

    # -- collecting ----------------------------------------------------------------------
    def add_key(self, key: bytes, where: Location, image: int) -> bool:
        if len(key) != self.size:
            return False
        if key not in self.keys:
            self.keys[key] = []
            self.order.append((image, where.phys, key))
            self.report.candidates += 1
        if len(self.keys[key]) < MAX_LOCATIONS:
            self.keys[key].append(where)
        return True

    def add_vmk(self, vmk: bytes, where: Location) -> None:
        if vmk not in self.vmks:
            self.vmks[vmk] = []
            self.report.candidates += 1
            result = self.v.check_vmk(vmk)
            if result is not None:
                self._accept(result, [where])
                return
        if len(self.vmks[vmk]) < MAX_LOCATIONS:
            self.vmks[vmk].append(where)
        for found in self.by_fvek.values():
            if found.result.vmk == vmk and len(found.locations) < MAX_LOCATIONS:
                found.locations.append(where)

    # -- validating ----------------------------------------------------------------------
    def try_fvek(self, fvek: bytes, where: list[Location]) -> bool:
        if fvek in self.by_fvek:
            self.by_fvek[fvek].locations += [w for w in where
                                             if w not in self.by_fvek[fvek].locations]
            return True
        if fvek in self.tested:
            return False
        self.tested.add(fvek)
        self.report.tested += 1
        if not self.v.check_fvek(fvek):
            return False
        self._accept(UnlockResult(fvek, self.v.method, via=UnlockVia.FVEK), where)
        return True

    def _accept(self, result: UnlockResult, where: list[Location]) -> None:
        found = self.by_fvek.get(result.fvek)
        if found is None:
            found = FoundKey(result)
            self.by_fvek[result.fvek] = found
            self.report.found.append(found)
            log.info("memory: validated %s (fingerprint %s)",
                     "VMK" if result.vmk else "FVEK", keylib.fvek_fingerprint(result.fvek))
        elif result.vmk is not None and found.result.vmk is None:
            found.result = result
        found.locations += [w for w in where if w not in found.locations]
        del found.locations[MAX_LOCATIONS:]

    def try_structure(self, keys: tuple[bytes, ...], where: Location, image: int) -> None:
        if len(keys) == 2 and self.pairs and all(len(k) == self.size for k in keys):
            self.try_fvek(fvek_bytes(self.v.method, *keys), [where])
        for key in keys:
            if self.add_key(key, where, image) and not self.pairs:
                self.try_fvek(fvek_bytes(self.v.method, key), self.keys[key])

    def try_single(self, key: bytes) -> None:
        if not self.pairs:
            self.try_fvek(fvek_bytes(self.v.method, key), self.keys[key])

    def try_nearby(self, start: int) -> None:
        """Pairs among keys found since ``self.order[start]`` and their neighbours."""
        if not self.pairs:
            return
        for i in range(start, len(self.order)):
            image, phys, key = self.order[i]
            for j in range(len(self.order) - 1, -1, -1):
                o_image, o_phys, other = self.order[j]
                if o_image != image or phys - o_phys > PAIR_WINDOW:
                    break  # found in scan order: earlier entries lie further back
                if j == i or o_phys - phys > PAIR_WINDOW:
                    continue
                for a, b in ((key, other), (other, key)):
                    self.try_fvek(fvek_bytes(self.v.method, a, b),
                                  self.keys[a][:1] + self.keys[b][:1])

    def try_all_pairs(self) -> None:
        if not self.pairs or self.report.found:
            return
        keys = list(self.keys)
        if len(keys) * (len(keys) - 1) > MAX_PAIRS:
            log.warning("memory: %d candidate keys make %d pairs; trying the first %d",
                        len(keys), len(keys) * (len(keys) - 1), MAX_PAIRS)
        count = 0
        for a in keys:
            for b in keys:
                if a == b:
                    continue
                count += 1
                if count > MAX_PAIRS:
                    return
                if self.try_fvek(fvek_bytes(self.v.method, a, b),
                                 self.keys[a][:1] + self.keys[b][:1]):
                    return


def search_memory(volume: BdeVolume, paths: Sequence[str], *,
                  progress: ProgressFn | None = None, chunk: int = CHUNK,
                  max_errors: int = MAX_ERRORS, stop_early: bool = False) -> MemoryReport:
    """Search the memory images at ``paths`` for keys of ``volume`` (see module docstring)."""
    report = MemoryReport()
    search = _Search(Validator(volume), report)
    images = [open_memory(p) for p in paths]
    report.images = [{"path": m.path, "format": m.kind, "bytes": m.size} for m in images]
    total = sum(m.size for m in images)
    schedules = ScheduleSearch(max_errors)
    structures = StructureSearch()
    started = time.perf_counter()
    overlap = max(PAGE, MAX_SPAN)
    for index, image in enumerate(images):
        for piece in image.chunks(chunk, overlap):
            _scan_chunk(search, schedules, structures, piece, image.path, index)
            report.scanned += piece.limit
            if progress is not None:
                progress(report.scanned, total)
            if stop_early and report.found:
                report.stopped_early = True
                break
        if report.stopped_early:
            break
    search.try_all_pairs()
    report.seconds = time.perf_counter() - started
    report.tested = search.v.tried
    log.info("memory: %d bytes in %.1f s (%.0f MB/s), %d schedules, %d structures, %d "
             "candidates, %d validated", report.scanned, report.seconds, report.rate,
             report.schedules, report.structures, report.candidates, len(report.found))
    return report


def _scan_chunk(search: _Search, schedules: ScheduleSearch, structures: StructureSearch,
                piece: Any, path: str, index: int) -> None:
    def where(offset: int, how: str) -> Location:
        return Location(path, piece.phys + offset, piece.file_offset + offset, how)

    start = len(search.order)
    for s_hit in structures.search(piece.data, piece.limit):
        search.report.structures += 1
        loc = where(s_hit.offset, s_hit.how)
        if s_hit.kind == SecretKind.VMK:
            search.add_vmk(s_hit.keys[0], loc)
        else:
            search.try_structure(s_hit.keys, loc, index)
    for hit in schedules.search(piece.data, piece.limit):
        search.report.schedules += 1
        how = f"expanded AES-{hit.size * 8} key schedule ({hit.layout}" + \
              (f", {hit.errors} bit errors)" if hit.errors else ")")
        for key in hit.keys:
            if search.add_key(key, where(hit.offset, how), index):
                search.try_single(key)
    search.try_nearby(start)
