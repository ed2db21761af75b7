#!/usr/bin/env python3
"""Random 4 KiB reads through a ``bdekit mount`` FUSE mount against the same kind of reads
through ``open_volume`` (the issue's target: the mount at >= 50 % of ``open_volume``).

    python tools/bench_fuse.py                          # a 256 MiB synthetic image
    python tools/bench_fuse.py --image X.img -rp 1111-... [--count 20000] [--rounds 5]

Without ``--image``: a 256 MiB AES-XTS-128 synthetic image (``bdekit synth create`` through
tools/bench.py's ``build_image`` when the command exists, else ``bdekit.synth.build``);
without bdekit.synth, the real ``eow_partial`` image of ../shared/real-images (361 MB of a
1 GiB used-space-only AES-CBC volume; reads are drawn from the part the image holds).

Reads are 4 KiB at distinct random 4 KiB-aligned offsets (the page cache never serves a
repeat), by one reader thread (``--threads N``: N readers sharing the list).  Direct reads
call ``BdeVolume.read_into`` (what ``open_volume``'s stream and the mount both use) into a
reused buffer; FUSE reads are ``os.pread`` on the mounted file, served by ``bdekit mount
--foreground`` in its own process, as a user would run it, with the file's page cache dropped
(``POSIX_FADV_DONTNEED``) before each round.  ``--rounds`` alternate the two so that load
from other processes hits both alike; the median of each and of the per-round ratios is
printed.  Nothing here is a unit test.

``fuse_vs_direct(image, unlock, ...)`` is the entry point tools/bench.py can call.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MiB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent
REAL_DIR = Path(os.environ.get("BDEKIT_REAL_IMAGES", ROOT.parent / "shared" / "real-images"))
REAL_PASSWORD = "password12!@"


def _timed_reads(read: Callable[[int], Any], offsets: list[int], threads: int) -> float:
    """reads/s of ``read(offset)`` over ``offsets``, by ``threads`` readers."""
    if threads <= 1:
        start = time.perf_counter()
        for off in offsets:
            read(off)
        return len(offsets) / (time.perf_counter() - start)
    parts = [offsets[i::threads] for i in range(threads)]
    workers = [threading.Thread(target=lambda p=p: [read(o) for o in p]) for p in parts]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return len(offsets) / (time.perf_counter() - start)


def _mount_secret(unlock: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """``bdekit mount`` arguments and environment for ``open_volume``-style unlock kwargs
    (passwords go through the environment, not the command line)."""
    args: list[str] = []
    env: dict[str, str] = {}
    if unlock.get("recovery_password"):
        env["BDEKIT_RECOVERY_PASSWORD"] = unlock["recovery_password"]
    if unlock.get("password"):
        env["BDEKIT_PASSWORD"] = unlock["password"]
    if unlock.get("fvek"):
        args += ["--fvek", unlock["fvek"]]
    return args, env


def fuse_vs_direct(image: Path, unlock: dict[str, str], count: int = 20000, threads: int = 1,
                   rounds: int = 5, seed: int = 7,
                   mount_args: list[str] | None = None) -> dict[str, Any]:
    """Random 4 KiB reads/s through a FUSE mount of ``image`` and through ``open_volume``.

    ``unlock``: ``open_volume`` keyword arguments (``recovery_password``, ``password`` or
    ``fvek``).  ``count`` reads per side and round.  ``mount_args`` are added to
    ``bdekit mount`` (``--partition N``...).  Returns the medians (``fuse``, ``direct``,
    ``ratio``) and the per-round ``ratios``.
    """
    from bdekit.volume.bde import open_volume

    stream = open_volume(image, **unlock)  # type: ignore[arg-type]
    volume = stream.volume
    span = min(volume.volume_size, volume.image_size) // 4096
    rng = random.Random(seed)
    total = min(count * rounds * 2, span)
    pool = [i * 4096 for i in rng.sample(range(span), total)]
    per = total // (2 * rounds)

    tls = threading.local()

    def direct(off: int) -> None:
        buf = getattr(tls, "buf", None)
        if buf is None:
            buf = tls.buf = bytearray(4096)
        volume.read_into(off, buf)

    direct(pool[0])  # warm up: cipher contexts, scratch buffers

    secret_args, env = _mount_secret(unlock)
    mnt = Path(tempfile.mkdtemp(prefix="bdekit-bench-mnt-"))
    cmd = [sys.executable, "-m", "bdekit.cli.main", "-q", "mount", "--foreground", str(image),
           str(mnt), *secret_args, *(mount_args or [])]
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    direct_rates: list[float] = []
    fuse_rates: list[float] = []
    try:
        target = mnt / "bde1"
        deadline = time.monotonic() + 60
        while not target.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                raise SystemExit(f"bdekit mount failed: {err.strip()}")
            time.sleep(0.05)
        fd = os.open(target, os.O_RDONLY)
        try:
            os.pread(fd, 4096, pool[0])  # warm up the daemon
            for r in range(rounds):
                mine = pool[2 * r * per:(2 * r + 1) * per]
                theirs = pool[(2 * r + 1) * per:(2 * r + 2) * per]
                direct_rates.append(_timed_reads(direct, mine, threads))
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                fuse_rates.append(_timed_reads(lambda off: os.pread(fd, 4096, off), theirs,
                                               threads))
        finally:
            os.close(fd)
    finally:
        proc.send_signal(signal.SIGTERM)  # libfuse unmounts cleanly on SIGTERM
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False,
                           capture_output=True)
        shutil.rmtree(mnt, ignore_errors=True)
        volume.source.close()
    ratios = [f / d for f, d in zip(fuse_rates, direct_rates, strict=True)]
    return {"fuse": statistics.median(fuse_rates), "direct": statistics.median(direct_rates),
            "ratio": statistics.median(ratios), "ratios": ratios, "reads": per,
            "rounds": rounds}


def default_image(work: Path, real: bool = False) -> tuple[Path, dict[str, str], str]:
    """(image, unlock kwargs, description) when no --image is given."""
    if real:
        return _real_image(work)
    cli = subprocess.run([sys.executable, "-m", "bdekit.cli.main", "synth", "--help"],
                         capture_output=True, check=False)
    if cli.returncode == 0:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import bench  # tools/bench.py

        image, manifest = bench.build_image(work, "aes-xts-128", 256 * MiB, seed=1)
        return image, {"fvek": manifest["fvek"]}, "synthetic 256 MiB aes-xts-128"
    try:
        from bdekit import synth
    except ImportError:
        synth = None  # type: ignore[assignment]
    if synth is not None:
        image = work / "bench-fuse-aes-xts-128-256M.img"
        manifest_path = work / "bench-fuse-aes-xts-128-256M.img.manifest.json"
        if not (image.exists() and manifest_path.exists()):
            synth.build(image, size=256 * MiB, method="aes-xts-128", seed=1, force=True,
                        manifest=manifest_path)
        fvek = json.loads(manifest_path.read_text())["fvek"]
        return image, {"fvek": fvek}, "synthetic 256 MiB aes-xts-128 (bdekit.synth)"
    return _real_image(work)


def _real_image(work: Path) -> tuple[Path, dict[str, str], str]:
    gz = REAL_DIR / "eow_partial.bin.gz"
    if not gz.is_file():
        raise SystemExit(f"no image: give --image, or install bdekit.synth, or provide {gz}")
    image = work / "eow_partial.bin"
    if not image.exists():
        with gzip.open(gz, "rb") as src, open(str(image) + ".tmp", "wb") as dst:
            shutil.copyfileobj(src, dst, 16 * MiB)
        os.replace(str(image) + ".tmp", image)
    return image, {"password": REAL_PASSWORD}, \
        "real eow_partial (361 MB of 1 GiB, aes-cbc-128, used space only)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=None)
    parser.add_argument("-rp", "--recovery-password", default=None)
    parser.add_argument("-pw", "--password", default=None)
    parser.add_argument("--fvek", default=None, help="unlock with this FVEK (hex)")
    parser.add_argument("--real", action="store_true",
                        help="use the real eow_partial image even when bdekit.synth exists")
    parser.add_argument("--count", type=int, default=10000, help="reads per side and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="reader threads per side")
    parser.add_argument("--work", type=Path, default=ROOT / "bench-work")
    args = parser.parse_args()

    from bdekit.fuse import fuse_problem

    problem = fuse_problem()
    if problem:
        raise SystemExit(f"FUSE is not usable here: {problem}")
    if args.image is not None:
        image, what = args.image, str(args.image)
        unlock = {k: v for k, v in (("recovery_password", args.recovery_password),
                                    ("password", args.password), ("fvek", args.fvek)) if v}
    else:
        args.work.mkdir(parents=True, exist_ok=True)
        image, unlock, what = default_image(args.work, real=args.real)
    size = image.stat().st_size
    print(f"image: {what}: {image} ({size / MiB:.0f} MiB)")
    print(f"{args.rounds} rounds x {args.count} distinct random 4 KiB reads per side, "
          f"{args.threads} reader thread(s)")
    r = fuse_vs_direct(image, unlock, args.count, args.threads, args.rounds)
    print(f"open_volume (read_into):  {r['direct']:9.0f} reads/s (median)")
    print(f"FUSE mount (pread):       {r['fuse']:9.0f} reads/s (median)")
    verdict = "meets" if r["ratio"] >= 0.5 else "MISSES"
    rounds = ", ".join(f"{x * 100:.0f}" for x in r["ratios"])
    print(f"ratio:                    {r['ratio'] * 100:8.0f} %  ({verdict} the 50 % target; "
          f"per round: {rounds})")


if __name__ == "__main__":
    main()
