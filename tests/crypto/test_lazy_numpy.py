"""The native sector ciphers never import numpy; the pure path loads it when first used.

Each check runs in a fresh interpreter (``python -c``): this one has numpy loaded long ago. The
same script runs on the native kernel and with ``BDEKIT_PURE=1``, and both runs must give the
same bytes, so the native run cannot pass by doing nothing (or by quietly using the pure path).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bdekit.crypto import native

pytestmark = pytest.mark.skipif(not native.available(),
                                reason="the native sector kernel is not built")

#: Every method: a cipher from make_cipher, a decryption into a second buffer, one in place
#: through a memoryview (the small-read path), an encryption; digests, backends and whether
#: numpy got loaded go to stdout as JSON.
SCRIPT = """
import hashlib, json, random, sys
from bdekit.crypto.ciphers import make_cipher
from bdekit.format.constants import EncryptionMethod

rng = random.Random(7)
data = rng.randbytes(8 * 512)
offset = 512 * 123457
result = {}
for method in EncryptionMethod:
    cipher = make_cipher(method, rng.randbytes(method.fvek_size), 512)
    out = bytearray(len(data))
    cipher.decrypt(data, out, offset)
    view = memoryview(bytearray(data))
    cipher.decrypt(view, view, offset)
    back = bytearray(len(data))
    cipher.encrypt(out, back, offset)
    digest = hashlib.sha256(bytes(out) + bytes(view) + bytes(back)).hexdigest()
    result[method.label] = [cipher.backend, digest, bytes(back) == data]
print(json.dumps({"ciphers": result, "numpy": "numpy" in sys.modules}))
"""


def _run(pure: str | None) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "BDEKIT_PURE"}
    if pure is not None:
        env["BDEKIT_PURE"] = pure
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    parsed: dict[str, object] = json.loads(done.stdout)
    return parsed


def test_native_ciphers_do_not_import_numpy() -> None:
    fast = _run(None)
    assert fast["numpy"] is False
    assert _run("0") == fast
    slow = _run("1")
    assert slow["numpy"] is True
    fast_ciphers = fast["ciphers"]
    slow_ciphers = slow["ciphers"]
    assert isinstance(fast_ciphers, dict) and isinstance(slow_ciphers, dict)
    assert fast_ciphers.keys() == slow_ciphers.keys()
    assert len(fast_ciphers) == 7
    for label, (backend, digest, round_trip) in fast_ciphers.items():
        assert backend == ("pure" if label == "none" else "native"), label
        assert round_trip, label
        assert slow_ciphers[label] == ["pure", digest, True], label
