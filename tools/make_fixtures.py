#!/usr/bin/env python3
"""Write the small synthetic BitLocker images of ``fixtures/`` (deterministic: re-running it
reproduces the same bytes).

    python tools/make_fixtures.py [--out fixtures]

Every image is a 1 MiB volume with its ``IMAGE.manifest.json`` (keys, secrets, layout, per-MiB
plaintext digests, damage).  ``xts128-rp.img`` is fully written (its decrypted SHA-256 is the
manifest's ``volume_sha256``); the others are used-space-only style (mostly zero, compressible):

=====================================  ==========================================================
``xts128-rp.img``                      AES-XTS-128, recovery password (the README's quick start)
``xts256-pw.img``                      AES-XTS-256, password ``bdekit-fixture``
``cbc128-bek.img``                     AES-CBC-128, startup key ``keys/{GUID}.BEK``
``cbc256-clear.img``                   AES-CBC-256, clear key (protection suspended)
``diffuser128-rp.img``                 AES-CBC-128 + diffuser, recovery password
``diffuser256-pw.img``                 AES-CBC-256 + diffuser, password ``bdekit-fixture``
``xts128-4k.img``                      AES-XTS-128, 4096-byte sectors, recovery password
``xts128-partial.img``                 AES-XTS-128, conversion paused at 512 KiB, clear key
``vista-diffuser128.img``              Vista layout (metadata v1), AES-CBC-128 + diffuser,
                                       recovery password
``damaged/xts128-rp-copies12.img``     ``xts128-rp.img``'s keys and recovery password (same
``damaged/xts128-rp-garbled.img``      seed, used-space-only plaintext), with: metadata copies
``damaged/xts128-rp-badsectors.img``   1 and 2 zeroed / copy 1 garbled / bad sectors (with
                                       ``.map``) / truncated to 768 KiB / volume header zeroed
``damaged/xts128-rp-truncated.img``
``damaged/xts128-rp-noheader.img``
=====================================  ==========================================================
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from bdekit import synth
from bdekit.synth import damage

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "bdekit-fixture"
SIZE = 1 << 20

#: name -> build() keyword arguments (protectors given by kind).
FIXTURES: dict[str, dict[str, Any]] = {
    "xts128-rp": {"method": "aes-xts-128", "protect": "rp", "used_only": False},
    "xts256-pw": {"method": "aes-xts-256", "protect": "pw"},
    "cbc128-bek": {"method": "aes-cbc-128", "protect": "bek"},
    "cbc256-clear": {"method": "aes-cbc-256", "protect": "clear"},
    "diffuser128-rp": {"method": "aes-cbc-128-diffuser", "protect": "rp"},
    "diffuser256-pw": {"method": "aes-cbc-256-diffuser", "protect": "pw"},
    "xts128-4k": {"method": "aes-xts-128", "protect": "rp", "sector_size": 4096},
    "xts128-partial": {"method": "aes-xts-128", "protect": "clear", "state": "partial:512K"},
    "vista-diffuser128": {"method": "aes-cbc-128-diffuser", "protect": "rp", "vista": True},
}

#: damaged copies of xts128-rp: name -> damage.apply() keyword arguments.
DAMAGED: dict[str, dict[str, Any]] = {
    "xts128-rp-copies12": {"zero_copies": [1, 2]},
    "xts128-rp-garbled": {"garble_copies": [1], "seed": 1},
    "xts128-rp-badsectors": {"bad_sectors": damage.parse_ranges("64K+4K,256K-256K+512"),
                             "seed": 1},
    "xts128-rp-truncated": {"truncate": 768 << 10},
    "xts128-rp-noheader": {"zero_header": True},
}


def protectors(kind: str, out: Path) -> list[Any]:
    return {
        "rp": [synth.RecoveryPasswordSpec()],
        "pw": [synth.PasswordSpec(PASSWORD)],
        "bek": [synth.StartupKeySpec(out / "keys")],
        "clear": [synth.ClearKeySpec()],
    }[kind]


def build_all(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for seed, (name, spec) in enumerate(FIXTURES.items(), start=1):
        kwargs = dict(spec)
        kind = kwargs.pop("protect")
        kwargs.setdefault("used_only", True)
        image = out / f"{name}.img"
        synth.build(image, size=SIZE, seed=seed, protectors=protectors(kind, out), force=True,
                    threads=1, description=f"BDEKIT-FIXTURE {name}", **kwargs)
        written.append(image)
    # the damaged set: xts128-rp's keys and recovery password (same seed), used-space-only
    # plaintext so that the copies stay compressible
    damaged = out / "damaged"
    damaged.mkdir(exist_ok=True)
    base = damaged / "base.img"
    spec = FIXTURES["xts128-rp"]
    synth.build(base, size=SIZE, seed=1, method=spec["method"], used_only=True,
                protectors=protectors("rp", out), force=True, threads=1,
                description="BDEKIT-FIXTURE xts128-rp")
    try:
        for name, kwargs in DAMAGED.items():
            image = damaged / f"{name}.img"
            for stale in (image, damage.default_mapfile_path(image)):
                stale.unlink(missing_ok=True)
            shutil.copyfile(base, image)
            manifest = synth.Manifest.load(synth.default_manifest_path(base))
            manifest.image = image.name
            manifest.save(synth.default_manifest_path(image))
            damage.apply(image, **kwargs)
            written.append(image)
    finally:
        base.unlink()
        synth.default_manifest_path(base).unlink()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "fixtures",
                        help="output folder (default: fixtures/ of the repository)")
    args = parser.parse_args(argv)
    written = build_all(args.out)
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {len(written)} images to {args.out} ({total / 2**20:.1f} MiB in all)")
    manifest = synth.Manifest.load(synth.default_manifest_path(args.out / "xts128-rp.img"))
    rp = manifest.protector("recovery-password")["recovery_password"]
    try:
        shown = (args.out / "xts128-rp.img").relative_to(Path.cwd())
    except ValueError:
        shown = args.out / "xts128-rp.img"
    print("quick start:")
    print(f"  bdekit decrypt {shown} out.img --recovery-password {rp}")
    print(f"  (out.img's SHA-256 is {manifest.volume_sha256})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
