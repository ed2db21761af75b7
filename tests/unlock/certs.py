"""Self-signed RSA certificates for the certificate-protector tests (not a test module)."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

#: Extended key usage of a BitLocker Data Recovery Agent certificate
DRA_USAGE = "1.3.6.1.4.1.311.67.1.2"


def make_cert(cn: str, *, usage: str | None = None) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A 2048-bit key and a certificate for it named ``cn``, valid from yesterday for a year,
    with the extended key usage ``usage`` (an OID) when given."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=1))
               .not_valid_after(now + dt.timedelta(days=365)))
    if usage is not None:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([x509.ObjectIdentifier(usage)]), critical=False)
    return key, builder.sign(key, hashes.SHA256())
