#!/usr/bin/env python3
"""Throughput benchmark: bdekit against its peers, the I/O limit and the CPU limit.

Run from a checkout after ``pip install -e .[peers]``::

    python tools/bench.py                     # 1 GiB per method, work dir ./bench-work
    python tools/bench.py --size 2G --methods aes-xts-128 --keep --paths native

For each method it builds one synthetic image with ``bdekit synth create`` (fully written,
512-byte sectors, a recovery password protector), then times in the same run:

* ``bdekit decrypt`` image to image (page-cached input), on the native sector kernel and on the
  pure numpy path (``BDEKIT_PURE=1``): the streamed decrypt as its report times it (read,
  decrypt, write, fsync; ``--no-hash`` and with the SHA-256 of the output) for each thread count
  of ``--threads`` (the scaling curve), and the whole command (Python start-up and the
  1,048,576-round key stretch included) at the highest thread count;
* ``bdekit decrypt IMAGE -`` into a pipe (``| cat > /dev/null``) against the same decrypt
  into a file, each as its report times it, three times alternately (best of each): the
  stream output (writes in order, holes written as zeros) should reach at least 90 % of the
  file output;
* libbde (``pybde`` read loop over the whole volume, after opening; nothing written);
* ``dislocker-file`` (image to image, whole command; it supports every method here);
* dissect.fve (read loop; it is slow, so it reads only ``--dissect-mib`` MiB and the rate is
  extrapolated from that);
* ``cp`` of the image (the I/O limit), ``sha256sum`` of the image (the hash limit) and
  OpenSSL's raw AES speed on one core (the CPU limit);
* random 4 KiB reads per second (seek + read, the same offsets, page-cached) through
  ``open_volume`` on both paths and through libbde (pybde).

Outputs go to ``--out-dir`` (default ``/dev/shm``), the same place for every tool, so the
numbers measure the tools rather than the disk; ``bdekit decrypt`` still fsyncs its output.
With ``--big-rss``, the peak RSS of decrypting a 16 GiB used-space-only image to /dev/null;
with ``--fuse``, random reads through a FUSE mount. The load average is printed with the
results: other processes on the machine skew every number. Peers that are not installed are
reported as such. Nothing here is a unit test.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

MiB = 1 << 20
_T = TypeVar("_T")


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    text = text.strip().upper().rstrip("B").rstrip("I")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def drop_file(path: Path) -> None:
    if path.exists():
        path.unlink()


def timed(cmd: list[str], **kwargs: Any) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, **kwargs)
    return time.perf_counter() - start, proc


def warm(path: Path) -> None:
    """Read the image once so every tool sees it page-cached."""
    with open(path, "rb") as fh:
        while fh.read(16 * MiB):
            pass


def build_image(work: Path, method: str, size: int, seed: int) -> tuple[Path, dict[str, Any]]:
    image = work / f"bench-{method}-{size // MiB}M.img"
    manifest_path = work / f"bench-{method}-{size // MiB}M.manifest.json"
    if not image.exists() or not manifest_path.exists():
        drop_file(image)
        drop_file(manifest_path)  # synth create refuses to overwrite it
        cmd = [sys.executable, "-m", "bdekit", "synth", "create", str(image),
               "--size", str(size), "--method", method, "--seed", str(seed),
               "--recovery-password", "auto", "--manifest", str(manifest_path)]
        elapsed, proc = timed(cmd)
        if proc.returncode != 0:
            raise SystemExit(f"synth create failed: {proc.stderr.decode(errors='replace')}")
        print(f"  built {image.name} in {elapsed:.1f} s ({size / elapsed / 1e6:.0f} MB/s)")
    return image, json.loads(manifest_path.read_text())


def recovery_password(manifest: dict[str, Any]) -> str:
    for prot in manifest["protectors"]:
        if prot.get("type") in ("recovery-password", "recovery_password"):
            return str(prot.get("recovery_password") or prot.get("secret"))
    raise SystemExit("manifest has no recovery password protector")


def bench_bdekit(image: Path, out: Path, rp: str, threads: int | None, *,
                 no_hash: bool = False, pure: bool = False) -> tuple[float, float] | None:
    """(wall seconds of the whole command, seconds of the streamed decrypt from its report)."""
    drop_file(out)
    report = out.with_suffix(".report.json")
    cmd = [sys.executable, "-m", "bdekit", "-q", "decrypt", str(image), str(out),
           "-rp", rp, "--report", str(report), "--force"]
    if no_hash:
        cmd.append("--no-hash")
    if threads:
        cmd += ["--threads", str(threads)]
    elapsed, proc = timed(cmd, env={**os.environ, "BDEKIT_PURE": "1" if pure else "0"})
    drop_file(out)
    if proc.returncode not in (0, 6):
        print("  bdekit failed:", proc.stderr.decode(errors="replace").strip())
        return None
    streamed = float(json.loads(report.read_text())["seconds"])
    drop_file(report)
    return elapsed, streamed


def bench_stream(image: Path, out: Path, rp: str, threads: int | None) -> float | None:
    """Seconds of the streamed decrypt into a pipe (``decrypt IMAGE - | cat > /dev/null``),
    from its report."""
    report = out.with_suffix(".pipe-report.json")
    drop_file(report)
    cmd = [sys.executable, "-m", "bdekit", "-q", "decrypt", str(image), "-", "-rp", rp,
           "--report", str(report)]
    if threads:
        cmd += ["--threads", str(threads)]
    producer = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    consumer = subprocess.run(["cat"], stdin=producer.stdout, stdout=subprocess.DEVNULL,
                              check=False)
    assert producer.stdout is not None and producer.stderr is not None
    producer.stdout.close()
    err = producer.stderr.read()
    if producer.wait() not in (0, 6) or consumer.returncode != 0:
        print("  bdekit into a pipe failed:", err.decode(errors="replace").strip())
        return None
    seconds = float(json.loads(report.read_text())["seconds"])
    drop_file(report)
    return seconds


def pipe_vs_file(image: Path, out: Path, rp: str, threads: int | None,
                 rounds: int = 3) -> tuple[float | None, float | None]:
    """Best streamed seconds into a pipe and into a file, measured alternately (so that the
    machine's load weighs on both alike)."""
    pipes: list[float] = []
    files: list[float] = []
    for _ in range(rounds):
        t = bench_stream(image, out, rp, threads)
        if t:
            pipes.append(t)
        times = bench_bdekit(image, out, rp, threads)
        if times:
            files.append(times[1])
    return (min(pipes) if pipes else None), (min(files) if files else None)


def bench_pybde(image: Path, rp: str) -> float | None:
    code = (
        "import sys,pybde,time\n"
        "v=pybde.volume(); v.set_recovery_password(sys.argv[2]); v.open(sys.argv[1])\n"
        "n=v.get_size(); pos=0; t=time.perf_counter()\n"
        "while pos<n:\n"
        "    b=v.read_buffer_at_offset(min(4<<20,n-pos),pos); pos+=len(b)\n"
        "    if not b: break\n"
        "print(time.perf_counter()-t)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(image), rp], capture_output=True)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        print("  libbde unavailable:", err[-1] if err else "?")
        return None
    return float(proc.stdout.decode().strip())


def bench_dislocker(image: Path, out: Path, rp: str) -> float | None:
    tool = shutil.which("dislocker-file")
    if not tool:
        print("  dislocker-file not installed")
        return None
    drop_file(out)
    elapsed, proc = timed([tool, "-V", str(image), f"-p{rp}", "--", str(out)])
    drop_file(out)
    if proc.returncode != 0:
        print("  dislocker-file failed:", proc.stderr.decode(errors="replace").strip()[-200:])
        return None
    return elapsed


def bench_dissect(image: Path, rp: str, mib: int) -> float | None:
    code = (
        "import sys,time\n"
        "from dissect.fve.bde import BDE\n"
        "fh=open(sys.argv[1],'rb'); b=BDE(fh); b.unlock_with_recovery_password(sys.argv[2])\n"
        "s=b.open(); n=int(sys.argv[3])<<20; t=time.perf_counter(); got=0\n"
        "while got<n:\n"
        "    d=s.read(1<<20)\n"
        "    if not d: break\n"
        "    got+=len(d)\n"
        "print(time.perf_counter()-t, got)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(image), rp, str(mib)],
                          capture_output=True)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        print("  dissect.fve unavailable:", err[-1] if err else "?")
        return None
    seconds, got = proc.stdout.decode().split()
    return float(seconds) / int(got)  # seconds per byte


def best_of(count: int, run: Callable[[], _T]) -> _T:
    """The fastest of ``count`` runs (the smallest time, or the smallest first element of a
    tuple of times); a failed run (None) ends the series. On a shared machine the best run is
    the one least disturbed; every tool timed this way gets the same number of tries."""
    best = run()
    for _ in range(count - 1):
        if best is None:
            break
        again = run()
        if again is not None and _key(again) < _key(best):
            best = again
    return best


def _key(result: Any) -> float:
    return float(result[0] if isinstance(result, tuple) else result)


def bench_cp(image: Path, out: Path) -> float:
    drop_file(out)
    elapsed, _ = timed(["cp", "--sparse=never", str(image), str(out)])
    drop_file(out)
    return elapsed


def openssl_speed(method: str) -> float | None:
    """OpenSSL's raw single-core rate for the method's AES mode, in MB/s (cryptography).

    XTS runs one call per 1 MiB data unit (OpenSSL caps an XTS data unit at 16 MiB); CBC one
    call over 64 MiB."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    total = 64 * MiB
    unit = MiB if "xts" in method else total
    data = bytearray(unit)
    out = bytearray(unit + 16)
    xts = "xts" in method
    key = os.urandom((64 if "256" in method else 32) if xts else (32 if "256" in method else 16))
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        for i in range(total // unit):
            mode: Any = modes.XTS(i.to_bytes(16, "little")) if xts else modes.CBC(bytes(16))
            Cipher(algorithms.AES(key), mode).decryptor().update_into(data, out)
        best = max(best, total / (time.perf_counter() - start) / 1e6)
    return best


READS_CODE = """
import random, sys, time
image, secret, count, which = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
span = int(sys.argv[5]) // 4096
rng = random.Random(7)
offsets = [rng.randrange(span) * 4096 for _ in range(count)]
if which == "libbde":
    import pybde
    v = pybde.volume(); v.set_recovery_password(secret); v.open(image)
    def read(o):
        v.seek_offset(o, 0); v.read_buffer(4096)
else:
    from bdekit.volume.bde import open_volume
    s = open_volume(image, recovery_password=secret)
    assert s.volume.cipher.backend == which, s.volume.cipher.backend
    def read(o):
        s.seek(o); s.read(4096)
read(offsets[0])
best = 0.0
for _ in range(3):
    t = time.perf_counter()
    for o in offsets:
        read(o)
    best = max(best, count / (time.perf_counter() - t))
print(best)
"""


def random_reads(image: Path, rp: str, which: str, count: int) -> float | None:
    """Random 4 KiB reads/s (seek + read, best of 3 passes over the same ``count`` offsets)
    through ``open_volume`` (``which``: native, pure) or libbde, in a fresh process."""
    env = {**os.environ, "BDEKIT_PURE": "1" if which == "pure" else "0"}
    proc = subprocess.run([sys.executable, "-c", READS_CODE, str(image), rp, str(count), which,
                           str(image.stat().st_size)], capture_output=True, env=env)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        print(f"  random reads ({which}) unavailable:", err[-1] if err else "?")
        return None
    return float(proc.stdout.decode().strip())


def bench_sha256sum(image: Path) -> float | None:
    tool = shutil.which("sha256sum")
    if not tool:
        return None
    elapsed, _ = timed([tool, str(image)])
    return elapsed


def bench_method(args: argparse.Namespace, method: str, size: int, work: Path,
                 out: Path) -> dict[str, float | None]:
    """Every row of one method (MB/s, or reads/s for rows whose name ends so)."""
    image, manifest = build_image(work, method, size, args.seed)
    rp = recovery_password(manifest)
    warm(image)
    row: dict[str, float | None] = {}
    threads = [int(n) for n in args.threads.split(",")]
    for path in args.paths.split(","):
        pure = path == "pure"
        for n in threads:
            times = best_of(args.repeat if n == threads[-1] else 1,
                            functools.partial(bench_bdekit, image, out, rp, n, no_hash=True,
                                              pure=pure))
            row[f"bdekit {path} --no-hash, {n} thr"] = size / times[1] / 1e6 if times else None
        row[f"bdekit {path} whole, --no-hash"] = size / times[0] / 1e6 if times else None
        times = best_of(args.repeat, functools.partial(bench_bdekit, image, out, rp, threads[-1],
                                                       pure=pure))
        row[f"bdekit {path} sha256, {threads[-1]} thr"] = size / times[1] / 1e6 if times else None
        row[f"bdekit {path} whole, sha256"] = size / times[0] / 1e6 if times else None
    pipe, file = pipe_vs_file(image, out, rp, threads[-1])
    row["bdekit into a file (sha256)"] = size / file / 1e6 if file else None
    row["bdekit into a pipe (sha256)"] = size / pipe / 1e6 if pipe else None
    if pipe and file:
        print(f"  pipe / file output: {file / pipe * 100:.0f} % (target: at least 90 %)")
    if not args.no_peers:
        t = bench_pybde(image, rp)
        row["libbde"] = size / t / 1e6 if t else None
        t = best_of(args.repeat, lambda: bench_dislocker(image, out, rp))
        row["dislocker"] = size / t / 1e6 if t else None
        spb = bench_dissect(image, rp, args.dissect_mib)
        row["dissect.fve"] = 1 / spb / 1e6 if spb else None
    row["cp (I/O limit)"] = size / best_of(args.repeat, lambda: bench_cp(image, out)) / 1e6
    t = bench_sha256sum(image)
    row["sha256sum (hash limit)"] = size / t / 1e6 if t else None
    row["openssl 1 core (CPU limit)"] = openssl_speed(method)
    for path in args.paths.split(","):
        count = args.reads if path == "native" else max(200, args.reads // 10)
        row[f"open_volume {path} 4K reads/s"] = random_reads(image, rp, path, count)
    if not args.no_peers:
        row["libbde 4K reads/s"] = random_reads(image, rp, "libbde", args.reads)
    if args.fuse:
        row["bdekit mount 4K reads/s"] = mount_reads(image, rp, "bdekit")
        if not args.no_peers:
            row["bdemount 4K reads/s"] = mount_reads(image, rp, "bdemount")
    if not args.keep:
        drop_file(image)
    return row


def print_row(row: dict[str, float | None]) -> None:
    """Each row; a peer's row with bdekit's ratios to it (native path, highest thread count):
    the streamed decrypt without hash, the whole command without hash (like the peers, which
    hash nothing) and the whole command with SHA-256 (bdekit's default)."""
    stream = [v for k, v in row.items() if k.startswith("bdekit native --no-hash")]
    bases = {"stream": stream[-1] if stream else None,
             "whole": row.get("bdekit native whole, --no-hash"),
             "whole+sha256": row.get("bdekit native whole, sha256")}
    for name, value in row.items():
        if value is None:
            print(f"  {name:36s} n/a")
        elif name.endswith("reads/s"):
            print(f"  {name:36s} {value:10.0f}")
        else:
            ratio = ""
            if not name.startswith("bdekit") and value:
                ratio = "   bdekit: " + ", ".join(
                    f"{label} {base / value:.2f}x" for label, base in bases.items() if base)
            print(f"  {name:36s} {value:10.0f} MB/s{ratio}")


def compile_bytecode() -> None:
    """Byte-compile the bdekit package, as ``pip install`` does: an editable install under
    ``PYTHONDONTWRITEBYTECODE`` would otherwise compile every module on every start-up."""
    spec = importlib.util.find_spec("bdekit")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            subprocess.run([sys.executable, "-m", "compileall", "-q", location],
                           capture_output=True, check=False)


def mount_reads(image: Path, rp: str, tool: str, count: int = 10000) -> float | None:
    """Random 4 KiB preads/s on the file of a FUSE mount of ``image`` by ``tool`` ("bdekit":
    ``bdekit mount --foreground``, "bdemount": libbde's), distinct offsets, the mounted file's
    page cache dropped before each of 3 passes (best pass)."""
    exe = shutil.which("bdemount") if tool == "bdemount" else sys.executable
    if exe is None:
        print(f"  {tool} not installed")
        return None
    mnt = Path(tempfile.mkdtemp(prefix=f"bench-{tool}-"))
    if tool == "bdemount":
        cmd = [exe, "-r", rp, str(image), str(mnt)]
        env = dict(os.environ)
    else:
        cmd = [exe, "-m", "bdekit", "-q", "mount", "--foreground", str(image),
               str(mnt)]
        env = {**os.environ, "BDEKIT_RECOVERY_PASSWORD": rp}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    rng = random.Random(11)
    span = image.stat().st_size // 4096
    offsets = [i * 4096 for i in rng.sample(range(span), min(span, 3 * count))]
    best = 0.0
    try:
        target = mnt / "bde1"
        deadline = time.monotonic() + 60
        while not target.exists():
            if time.monotonic() > deadline or (tool != "bdemount" and proc.poll() is not None):
                print(f"  {tool} mount failed")
                return None
            time.sleep(0.05)
        fd = os.open(target, os.O_RDONLY)
        try:
            for k in range(3):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                part = offsets[k * count:(k + 1) * count]
                start = time.perf_counter()
                for off in part:
                    os.pread(fd, 4096, off)
                best = max(best, len(part) / (time.perf_counter() - start))
        finally:
            os.close(fd)
    finally:
        subprocess.run(["fusermount", "-u", str(mnt)], capture_output=True, check=False)
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(mnt, ignore_errors=True)
    return best


def big_rss(work: Path, seed: int) -> tuple[float, float] | None:
    image = work / "bench-rss-16G.img"
    manifest = work / "bench-rss-16G.manifest.json"
    if not image.exists():
        cmd = [sys.executable, "-m", "bdekit", "synth", "create", str(image),
               "--size", "16G", "--method", "aes-xts-128", "--used-only", "--seed", str(seed),
               "--recovery-password", "auto", "--manifest", str(manifest)]
        proc = subprocess.run(cmd, capture_output=True)
        if proc.returncode != 0:
            print("  16 GiB build failed:", proc.stderr.decode(errors="replace")[-300:])
            return None
    rp = recovery_password(json.loads(manifest.read_text()))
    cmd = [sys.executable, "-m", "bdekit", "-q", "decrypt", str(image), "/dev/null",
           "-rp", rp, "--no-hash", "--force"]
    errors = tempfile.TemporaryFile()
    start = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errors)
    # The decrypt's own high-water mark, sampled from /proc while it runs (a child's
    # ru_maxrss also counts this benchmark's memory, which the child had before its exec).
    peak_kib = 0
    while child.poll() is None:
        peak_kib = max(peak_kib, _vm_hwm_kib(child.pid))
        time.sleep(0.05)
    elapsed = time.perf_counter() - start
    errors.seek(0)
    err = errors.read()
    errors.close()
    if child.returncode not in (0, 6):
        print("  16 GiB decrypt failed:", err.decode(errors="replace")[-300:])
        return None
    return peak_kib / 1024, elapsed


def _vm_hwm_kib(pid: int) -> int:
    """VmHWM (peak resident set, KiB) of a running process; 0 once it has gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def bench_batch(work: Path, out_dir: str | None, jobs: int, size: int,
                seed: int) -> dict[str, float]:
    """Jobs per hour of ``bdekit batch`` on the local pool with 1, 2 and N (= CPUs) workers.

    ``jobs`` synthetic AES-XTS-128 volumes of ``size`` bytes (seeds ``seed``, ``seed + 1``...),
    each with a recovery password found through an escrow CSV, so every job pays what a real
    fleet job pays: key matching, one key stretch, the streamed decrypt and its SHA-256.
    The whole command is timed (Python and worker start-up included); outputs go to
    ``out_dir`` and are removed after each run."""
    evidence = work / f"batch-{jobs}x{size // MiB}M"
    evidence.mkdir(parents=True, exist_ok=True)
    rows = ["Device Name,Recovery Key ID,Recovery Key"]
    for n in range(jobs):
        image = evidence / f"vol{n:03d}.img"
        manifest_path = work / f"{evidence.name}-vol{n:03d}.manifest.json"
        if not image.exists() or not manifest_path.exists():
            proc = subprocess.run([sys.executable, "-m", "bdekit", "synth", "create",
                                   str(image), "--size", str(size), "--seed", str(seed + n),
                                   "--recovery-password", "auto", "--manifest",
                                   str(manifest_path), "--force"], capture_output=True)
            if proc.returncode != 0:
                raise SystemExit(f"synth create failed: {proc.stderr.decode(errors='replace')}")
        manifest = json.loads(manifest_path.read_text())
        rp = recovery_password(manifest)
        guid = next(p["guid"] for p in manifest["protectors"]
                    if p["type"] == "recovery-password")
        rows.append(f"pc{n},{guid},{rp}")
    escrow = work / f"batch-{jobs}x{size // MiB}M-escrow.csv"
    escrow.write_text("\n".join(rows) + "\n")
    for n in range(jobs):
        warm(evidence / f"vol{n:03d}.img")
    results: dict[str, float] = {}
    for workers in sorted({1, 2, os.cpu_count() or 1}):
        out = Path(tempfile.mkdtemp(prefix="bdekit-bench-batch-", dir=out_dir or work))
        cmd = [sys.executable, "-m", "bdekit", "-q", "batch", str(evidence), "-o",
               str(out / "o"), "--keyring", str(escrow), "--workers", str(workers)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        elapsed, proc = timed(cmd)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        shutil.rmtree(out, ignore_errors=True)
        if proc.returncode != 0:
            raise SystemExit(f"bdekit batch failed: {proc.stderr.decode(errors='replace')}")
        results[f"{workers} worker(s)"] = jobs / elapsed * 3600
        print(f"  {workers} worker(s): {jobs} jobs in {elapsed:.1f} s = "
              f"{jobs / elapsed * 3600:.0f} jobs/hour ({jobs * size / elapsed / 1e6:.0f} MB/s; "
              f"{cpu / jobs:.2f} CPU s per job)")
    return results


def _memory_pattern(size: int, seed: int) -> bytes:
    """Mixed pages as memory holds them: code and data of shared libraries, text, zeros,
    small integers, random bytes."""
    import glob

    import numpy as np

    rng = np.random.default_rng(seed)
    libs = b"".join(Path(p).read_bytes() for p in sorted(glob.glob(
        "/usr/lib/x86_64-linux-gnu/lib*.so*"))[:60] if os.path.isfile(p))[:size]
    text = (b"The quick brown fox jumps over the lazy dog; memory benchmark text. " * 4096)
    pages = []
    for page in range(size // 4096):
        kind = page % 6
        if kind in (0, 1) and libs:
            at = (page * 4096) % max(4096, len(libs) - 4096)
            pages.append(libs[at:at + 4096].ljust(4096, b"\0"))
        elif kind == 2:
            pages.append(text[page % 64:page % 64 + 4096])
        elif kind == 3:
            pages.append(bytes(4096))
        elif kind == 4:
            pages.append(np.arange(page, page + 1024, dtype="<u4").tobytes())
        else:
            pages.append(rng.bytes(4096))
    return b"".join(pages)


def _used_keys(fvek: bytes, method: int) -> tuple[bytes, ...]:
    if method in (0x8000, 0x8001):
        size = 16 if method == 0x8000 else 32
        return fvek[:size], fvek[32:32 + size]
    if method in (0x8004, 0x8005):
        return fvek[:len(fvek) // 2], fvek[len(fvek) // 2:]
    return (fvek[:16] if method == 0x8002 else fvek[:32],)


def bench_memory(work: Path, seed: int, memory_size: int) -> dict[str, Any]:
    """Keys from memory: the schedule search alone (one core), the whole search on a memory
    image with a volume's keys at its end, ``decrypt --memory`` on it, and ``hash`` on a 2 TB
    sparse image (metadata only)."""
    from bdekit.memory import aes
    from bdekit.memory.schedule import ScheduleSearch
    from bdekit.memory.structures import StructureSearch

    rows: dict[str, Any] = {}
    pattern = _memory_pattern(64 * MiB, seed)
    search = ScheduleSearch()
    started = time.perf_counter()
    for at in range(0, len(pattern), MiB):
        search.search(pattern[at:at + MiB + 4096], MiB)
    rows["memory: schedule search MB/s (1 core)"] = len(pattern) / (
        time.perf_counter() - started) / 1e6
    structures = StructureSearch()
    started = time.perf_counter()
    for at in range(0, len(pattern), MiB):
        structures.search(pattern[at:at + MiB + 4096], MiB)
    rows["memory: structure search MB/s (1 core)"] = len(pattern) / (
        time.perf_counter() - started) / 1e6
    methods = ["aes-xts-128", "aes-xts-256", "aes-cbc-128", "aes-cbc-256",
               "aes-cbc-128-diffuser", "aes-cbc-256-diffuser"]
    images = {m: build_image(work, m, 64 * MiB, seed) for m in methods}
    mem = work / "memory.raw"
    with open(mem, "wb") as fh:
        for _ in range(max(1, memory_size // len(pattern)) - 1):
            fh.write(pattern)
        tail = bytearray(pattern)
        at = len(tail) - 64 * 1024
        for _image, manifest in images.values():  # each volume's keys near the end
            for key in _used_keys(bytes.fromhex(manifest["fvek"]), manifest["method_id"]):
                sched = aes.expand_key(key)
                tail[at:at + len(sched)] = sched
                at += 0x200
            at += 0x1000
        fh.write(tail)
    size = mem.stat().st_size
    rows["memory: image MiB"] = size / MiB
    warm(mem)
    image = images["aes-xts-128"][0]
    t, done = timed([sys.executable, "-m", "bdekit", "-q", "keys", "from-memory",
                     str(image), str(mem), "--json"])
    rows["memory: keys from-memory MB/s (whole command)"] = size / t / 1e6 \
        if done.returncode == 0 else None
    out = work / "memory-out.img"
    for method, (path, _manifest) in images.items():
        drop_file(out)
        t, done = timed([sys.executable, "-m", "bdekit", "-q", "decrypt", str(path),
                         str(out), "--memory", str(mem), "--no-hash"])
        rows[f"memory: decrypt --memory s, {method}"] = t if done.returncode == 0 else None
    drop_file(out)
    sparse = work / "sparse-2t.img"
    shutil.copyfile(image, sparse)
    os.truncate(sparse, 2 << 40)
    t, done = timed([sys.executable, "-m", "bdekit", "hash", str(sparse)])
    rows["hash on a 2 TB sparse image, seconds"] = t if done.returncode == 0 else None
    for path in (sparse, mem, *(p for p, _m in images.values())):
        drop_file(path)
        drop_file(path.with_suffix(".manifest.json"))
    for name, value in rows.items():
        print(f"  {name:46s} {value if value is None else round(value, 2)}")
    return rows


def main() -> None:
    cpus = os.cpu_count() or 1
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1G")
    parser.add_argument("--methods", default="aes-xts-128,aes-cbc-128,aes-cbc-128-diffuser")
    parser.add_argument("--work", default="bench-work")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", default=",".join(str(n) for n in range(1, cpus + 1)),
                        help="thread counts of the scaling curve, comma-separated")
    parser.add_argument("--paths", default="native,pure",
                        help="cipher paths to time: native (the C kernel), pure (numpy)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each whole command (bdekit, dislocker, cp): the best counts")
    parser.add_argument("--reads", type=int, default=20000, help="random 4 KiB reads per pass")
    parser.add_argument("--dissect-mib", type=int, default=16)
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--big-rss", action="store_true", help="16 GiB peak-RSS run")
    parser.add_argument("--fuse", action="store_true",
                        help="random 4 KiB reads through a FUSE mount vs open_volume")
    parser.add_argument("--keep", action="store_true", help="keep the built images")
    parser.add_argument("--batch", type=int, default=0, metavar="JOBS",
                        help="only `bdekit batch`: jobs/hour of JOBS volumes (of --size) "
                             "with 1, 2 and N local workers")
    parser.add_argument("--memory", default=None, metavar="SIZE",
                        help="also bench keys from memory with a memory image of SIZE (e.g. 4G)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--out-dir", default="/dev/shm" if os.path.isdir("/dev/shm") else None,
                        help="where outputs go (default /dev/shm: measures the tools, not the "
                             "disk; every tool writes to the same place)")
    args = parser.parse_args()
    size = parse_size(args.size)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix="bdekit-bench-out-", dir=args.out_dir or work)) / "out.img"
    results: dict[str, Any] = {"size": size, "cpus": cpus, "methods": {}}
    compile_bytecode()
    print(f"bdekit benchmark: {size / MiB:.0f} MiB per image, {cpus} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    if args.batch:
        print(f"\n[bdekit batch, {args.batch} AES-XTS-128 volumes]")
        results["batch_jobs_per_hour"] = bench_batch(work, args.out_dir, args.batch, size,
                                                     args.seed)
        args.methods = ""
    for method in filter(None, args.methods.split(",")):
        print(f"\n[{method}]")
        row = bench_method(args, method, size, work, out)
        results["methods"][method] = row
        print_row(row)
    results["load_average"] = os.getloadavg()[0]
    print(f"\nload average at the end: {results['load_average']:.1f}")
    if args.big_rss:
        print("\n[16 GiB used-space-only image, decrypt to /dev/null]")
        rss = big_rss(work, args.seed)
        if rss:
            results["rss_16g_mb"], results["rss_16g_seconds"] = rss
            print(f"  peak RSS {rss[0]:.0f} MB, {rss[1]:.1f} s")
    if args.memory:
        print("\n[keys from memory, hash]")
        results["memory"] = bench_memory(work, args.seed, parse_size(args.memory))
    shutil.rmtree(out.parent, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
