"""A self-signed certificate for 127.0.0.1, made at run time, and a CA bundle that trusts it.

The bundle is certifi's public roots plus this certificate, i.e. what a real deployment's trust
store looks like: a fresh connection then pays the real cost of loading the roots, as it would
against Azure, and the pooled app pays it once per connection.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import certifi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path
    ca_bundle: Path

    @classmethod
    def in_directory(cls, directory: Path) -> CertFiles:
        """Where `make_certificate` writes its files in `directory`."""
        return cls(directory / "fake-cert.pem", directory / "fake-key.pem", directory / "ca-bundle.pem")


def make_certificate(directory: Path) -> CertFiles:
    """RSA 2048 like Azure's own certificates, valid for 127.0.0.1 and localhost for one day."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake Direct Line (tests, benchmarks)")])
    now = datetime.datetime.now(datetime.UTC)
    public_key = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
    files = CertFiles.in_directory(directory)
    files.cert.write_bytes(cert_pem)
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    files.key.chmod(0o600)
    public_roots = Path(certifi.where()).read_bytes()
    files.ca_bundle.write_bytes(public_roots.rstrip(b"\n") + b"\n" + cert_pem)
    return files
