"""Score bdekit and every installed peer on the damage fixtures with `bdekit synth check`.

    python tools/peer_scores.py [--json] [--keep DIR]

For each image in fixtures/damaged/ (its manifest lists the damage) every tool decrypts the
image with the manifest's secret: bdekit repair (with the fixture's ddrescue mapfile when
there is one) and bdekit decrypt, libbde (pybde), dissect.fve and dislocker-file, each skipped
when absent.  Each output is then scored by `bdekit synth check` (a subprocess, as anyone would
run it) and the results are printed as the README's Markdown table.  Tests
(tests/test_synth_check.py) run the same functions and check the scores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DAMAGED = ROOT / "fixtures" / "damaged"
CHUNK = 1 << 20


def fixtures() -> list[Path]:
    return sorted(DAMAGED.glob("*.img"))


def manifest_of(image: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(Path(f"{image}.manifest.json").read_text())


def secret(manifest: dict) -> tuple[str, str | None]:  # type: ignore[type-arg]
    prot = manifest["protectors"][0]
    kind = prot["type"]
    value = prot.get("recovery_password") or prot.get("password") or prot.get("bek_file")
    return kind, value


def bdekit_cmd() -> list[str]:
    return [sys.executable, "-m", "bdekit.cli.main"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("BDEKIT_AUDIT_LOG", os.devnull)
    return env


def _bdekit(command: str) -> Callable[[Path, dict, Path], tuple[str, Path | None]]:  # type: ignore[type-arg]
    def run(image: Path, manifest: dict, out: Path) -> tuple[str, Path | None]:  # type: ignore[type-arg]
        kind, value = secret(manifest)
        args = [*bdekit_cmd(), "-q", command, str(image), str(out), "--force"]
        if kind == "recovery-password":
            args += ["-rp", str(value)]
        elif kind == "password":
            args += ["-pw", str(value)]
        mapfile = Path(f"{image}.map")
        if command == "repair" and mapfile.exists():
            args += ["--mapfile", str(mapfile)]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=300, env=_env())
        if proc.returncode not in (0, 6):
            return f"fails (exit {proc.returncode}): {proc.stderr.strip()[-160:]}", None
        out_map = Path(f"{out}.map")
        return "ok", out_map if command == "repair" and out_map.exists() else None
    return run


def _copy_stream(read: Callable[[int, int], bytes], size: int, out: Path) -> str:
    """Copy ``size`` bytes through ``read``; a read error ends the output there."""
    with open(out, "wb") as fh:
        for pos in range(0, size, CHUNK):
            try:
                data = read(pos, min(CHUNK, size - pos))
            except Exception as exc:  # a peer's own error type
                return f"read error at offset {pos}: {type(exc).__name__}"
            fh.write(data)
            if len(data) < min(CHUNK, size - pos):
                return f"short read at offset {pos + len(data)}"
    return ""


def run_libbde(image: Path, manifest: dict, out: Path) -> tuple[str, Path | None]:  # type: ignore[type-arg]
    import pybde  # type: ignore[import-not-found]

    kind, value = secret(manifest)
    volume = pybde.volume()
    if kind == "recovery-password":
        volume.set_recovery_password(value)
    elif kind == "password":
        volume.set_password(value)
    try:
        volume.open(str(image))
    except Exception as exc:
        return f"fails to open: {str(exc).splitlines()[0][:120]}", None
    try:
        note = _copy_stream(lambda o, n: volume.read_buffer_at_offset(n, o), volume.get_size(),
                            out)
    finally:
        volume.close()
    return ("ok" + (f" ({note})" if note else "")), None


def run_dissect(image: Path, manifest: dict, out: Path) -> tuple[str, Path | None]:  # type: ignore[type-arg]
    from dissect.fve import bde as bde_mod

    kind, value = secret(manifest)
    with open(image, "rb") as fh:
        try:
            bde = bde_mod.BDE(fh)
            if kind == "recovery-password":
                bde.unlock_with_recovery_password(value)
            elif kind == "password":
                bde.unlock_with_passphrase(value)
            stream = bde.open()
        except Exception as exc:
            return f"fails to open: {type(exc).__name__}: {str(exc)[:100]}", None

        def read(pos: int, n: int) -> bytes:
            stream.seek(pos)
            return stream.read(n)

        size = int(manifest["volume_size"])
        note = _copy_stream(read, size, out)
    return ("ok" + (f" ({note})" if note else "")), None


def run_dislocker(image: Path, manifest: dict, out: Path) -> tuple[str, Path | None]:  # type: ignore[type-arg]
    kind, value = secret(manifest)
    args = [str(shutil.which("dislocker-file")), "-V", str(image)]
    if kind == "recovery-password":
        args.append(f"-p{value}")
    elif kind == "password":
        args.append(f"-u{value}")
    else:
        args.append("-c")
    try:
        proc = subprocess.run([*args, "--", str(out)], capture_output=True, text=True,
                              timeout=300)
    except subprocess.TimeoutExpired:
        return "fails: timeout", None
    if proc.returncode != 0 or not out.exists():
        last = (proc.stdout + proc.stderr).strip().splitlines()
        why = last[-1][-120:] if last else ""
        return f"fails (exit {proc.returncode}): {why}", None
    return "ok", None


def _have(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def tools() -> dict[str, Callable[[Path, dict, Path], tuple[str, Path | None]]]:  # type: ignore[type-arg]
    """The tools to score: bdekit always, each peer when installed."""
    out: dict[str, Callable[[Path, dict, Path], tuple[str, Path | None]]] = {  # type: ignore[type-arg]
        "bdekit repair": _bdekit("repair"), "bdekit decrypt": _bdekit("decrypt")}
    if _have("pybde"):
        out["libbde"] = run_libbde
    if _have("dissect.fve"):
        out["dissect.fve"] = run_dissect
    if shutil.which("dislocker-file"):
        out["dislocker"] = run_dislocker
    return out


def check(output: Path, image: Path, mapfile: Path | None,
          inprocess: bool = False) -> dict:  # type: ignore[type-arg]
    """`bdekit synth check --json` of one output: run as a command, or (``inprocess``) the
    function behind it."""
    if inprocess:
        from bdekit.synth.check import score

        result = score(str(output), f"{image}.manifest.json",
                       mapfile=str(mapfile) if mapfile else None).to_json()
        result["exit"] = 0 if result["ok"] else 6
        return result
    args = [*bdekit_cmd(), "synth", "check", str(output), "--manifest",
            f"{image}.manifest.json", "--json"]
    if mapfile is not None:
        args += ["--mapfile", str(mapfile)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, env=_env())
    if proc.returncode not in (0, 6):
        raise RuntimeError(f"synth check failed (exit {proc.returncode}): {proc.stderr}")
    result = json.loads(proc.stdout)
    result["exit"] = proc.returncode
    return result  # type: ignore[no-any-return]


def score_one(tool: str, image: Path, workdir: Path,
              inprocess: bool = False) -> dict:  # type: ignore[type-arg]
    out = workdir / f"{image.stem}.{tool.replace(' ', '-')}.out"
    status, mapfile = tools()[tool](image, manifest_of(image), out)
    row = {"tool": tool, "fixture": image.stem, "status": status}
    if out.exists() and status.startswith("ok"):
        row["score"] = check(out, image, mapfile, inprocess)
    return row


def cell(row: dict) -> str:  # type: ignore[type-arg]
    """``✓`` / ``✗ N wrong``, then how the damaged bytes came out; or why the tool failed."""
    score = row.get("score")
    if score is None:
        return row["status"].split(":")[0]
    bad = [f"{score[k]:,} {k}" for k in ("wrong", "missing", "unflagged") if score[k]]
    text = "✓" if score["ok"] else "✗ " + ", ".join(bad)
    d = score["damaged"]
    if any(d.values()):
        parts = [f"{d[k]:,} {k}" for k in ("exact", "zero", "other", "missing") if d[k]]
        text += " (damaged bytes: " + " / ".join(parts) + ")"
    if "(" in row["status"]:
        text += "; " + row["status"][row["status"].index("(") + 1:].rstrip(")")
    return text


def table(rows: list[dict]) -> str:  # type: ignore[type-arg]
    names = list(dict.fromkeys(r["tool"] for r in rows))
    images = list(dict.fromkeys(r["fixture"] for r in rows))
    damage = {i: ", ".join(sorted({d["kind"] for d in manifest_of(DAMAGED / f"{i}.img")
                                   ["damage"]})) for i in images}
    lines = ["| fixture (damage) | " + " | ".join(names) + " |",
             "| --- | " + " | ".join("---" for _ in names) + " |"]
    by = {(r["fixture"], r["tool"]): r for r in rows}
    for image in images:
        cells = [cell(by[(image, n)]) for n in names]
        lines.append(f"| {image} ({damage[image]}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print every score as JSON")
    parser.add_argument("--keep", type=Path, default=None, help="keep the outputs here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bdekit-peers-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        rows = [score_one(tool, image, workdir) for image in fixtures() for tool in tools()]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
