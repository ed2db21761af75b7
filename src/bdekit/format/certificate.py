"""What a certificate protector's datums say about its certificate (public key info, type 14).

Reading only: which certificate a protector was made for. Unwrapping the VMK with the
certificate's private key is :mod:`bdekit.unlock.certificates`.
"""

from __future__ import annotations

import hashlib
import re

from cryptography import x509

from bdekit.format.metadata import Datum

THUMBPRINT_SIZE = 20
_HEX40 = re.compile(r"[0-9A-Fa-f]{40}")


def try_der_certificate(data: bytes) -> x509.Certificate | None:
    try:
        return x509.load_der_x509_certificate(data)
    except ValueError:
        return None


def datum_payload(datum: Datum) -> bytes:
    body = datum.body
    if body is not None and "data" in body:
        return bytes(body.data)
    return bytes(datum.raw[8:])


def _find_der_certificate(data: bytes) -> bytes | None:
    """The first DER X.509 certificate found anywhere in ``data``."""
    start = 0
    while True:
        i = data.find(b"\x30\x82", start)
        if i < 0 or i + 4 > len(data):
            return None
        length = int.from_bytes(data[i + 2:i + 4], "big") + 4
        if i + length <= len(data):
            der = data[i:i + length]
            if try_der_certificate(der) is not None:
                return der
        start = i + 1


def thumbprint_from_datum(datum: Datum) -> str | None:
    """The certificate thumbprint a public key info datum (type 14) names, if it can be read."""
    data = datum_payload(datum)
    der = _find_der_certificate(data)
    if der is not None:
        return hashlib.sha1(der).hexdigest().upper()
    if len(data) == THUMBPRINT_SIZE:
        return data.hex().upper()
    for text in (data.decode("utf-16-le", errors="ignore"), data.decode("latin-1")):
        m = _HEX40.search(text)
        if m:
            return m.group(0).upper()
    return None
