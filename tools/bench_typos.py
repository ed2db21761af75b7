#!/usr/bin/env python3
"""Measure the cost of ``--fix-typos``: one key stretch, and candidates per second by processes.

Prints the median time of one full recovery password stretch (1,048,576 SHA-256 rounds) in this
process, then the wall-clock rate at which :mod:`bdekit.typos` tests candidates with 1, 2, ...
worker processes (up to ``--max-workers``, default: the CPUs this process may use). Candidates
are real corrections of a mistyped recovery password tested against a protector they never
unlock, so every candidate costs a full stretch plus the AES-CCM check, as in a real search
(including process start-up and the bounded submission window).

    python tools/bench_typos.py [--candidates 16] [--stretches 3] [--max-workers N]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

from bdekit.crypto import keys
from bdekit.unlock import typos

# A mistyped recovery password with many level-2 corrections (any text works).
TYPO = "482867-596541-514998-422114-660297-261613-215424-199408"


def one_stretch(repeats: int) -> float:
    initial = keys.recovery_password_hash(bytes(16))
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        keys.stretch_key(initial, i.to_bytes(16, "little"))  # a new salt: no remembered key
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _cpu() -> float:
    """CPU seconds of this process and of its reaped children (the worker processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def candidates_per_second(count: int, workers: int) -> tuple[float, float]:
    """(candidates per wall-clock second, CPU seconds per candidate)."""
    salt = os.urandom(16)
    # A wrapped VMK no candidate opens: nonce, MAC, ciphertext of 44 bytes (a key datum).
    targets: list[typos.Target] = [(salt, [(os.urandom(12), os.urandom(16), os.urandom(44))])]
    pool = keys.typo_candidates(TYPO, 2)
    cands = iter([next(pool) for _ in range(count)])
    tried = 0

    def report(_candidate: str, _index: int | None) -> None:
        nonlocal tried
        tried += 1

    start = time.perf_counter()
    cpu = _cpu()
    if workers == 1:
        for cand in cands:
            report(cand, typos.try_candidate(cand, targets)[0])
    else:
        typos._parallel(cands, targets, workers, report)
    elapsed = time.perf_counter() - start
    assert tried == count, (tried, count)
    return count / elapsed, (_cpu() - cpu) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=16,
                        help="candidates per measurement (default 16)")
    parser.add_argument("--stretches", type=int, default=3,
                        help="single stretches to time (median; default 3)")
    parser.add_argument("--max-workers", type=int, default=typos.cpu_count())
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"CPUs usable: {typos.cpu_count()} (os.cpu_count() = {os.cpu_count()}); load average "
          f"{load:.2f} (other work on the machine slows every figure below)")
    single = one_stretch(args.stretches)
    print(f"one stretch (1,048,576 SHA-256 rounds): {single:.3f} s "
          f"(= {1 / single:.2f} candidates/s on one core)")
    base = None
    for workers in range(1, args.max_workers + 1):
        rate, cpu = candidates_per_second(args.candidates, workers)
        base = base or rate
        print(f"{workers} process{'es' if workers > 1 else '  '}: {rate:6.2f} candidates/s "
              f"(x{rate / base:.2f}), {cpu:.3f} CPU s per candidate; 2000 candidates in "
              f"{2000 / rate / 60:.1f} min")


if __name__ == "__main__":
    main()
