"""Throwaway certificates for TLS upstreams in tests: a self-signed one for 127.0.0.1, and a
private CA with server and client certificates (mutual TLS)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """Write a one-hour self-signed certificate for 127.0.0.1; return (cert, key) paths.

    The certificate is its own trust anchor: point ``SSL_CERT_FILE`` at it and OpenSSL's
    default verification (what urllib3 uses) accepts 127.0.0.1.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return _write(directory, "cert", cert, key)


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


@dataclass(frozen=True)
class Pki:
    """A private CA and what it signed, as PEM files (each key next to its certificate)."""

    ca: Path
    server_ip: Path  # for 127.0.0.1 (IP SAN)
    server_ip_key: Path
    server_dns: Path  # for orders.internal only (DNS SAN)
    server_dns_key: Path
    client: Path  # a client certificate, subject CN=gw-client
    client_key: Path


def make_pki(directory: Path) -> Pki:
    """Write a one-hour private CA with server and client certificates signed by it."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw test CA")])
    ca = _sign(
        _builder(ca_name, ca_key, ca_name).add_extension(
            x509.BasicConstraints(ca=True, path_length=0), critical=True
        ),
        ca_key,
    )
    paths = [_write(directory, "ca", ca, ca_key)[0]]
    leaves: list[tuple[str, x509.GeneralName | None, x509.ObjectIdentifier]] = [
        (
            "server-ip",
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ExtendedKeyUsageOID.SERVER_AUTH,
        ),
        ("server-dns", x509.DNSName("orders.internal"), ExtendedKeyUsageOID.SERVER_AUTH),
        ("gw-client", None, ExtendedKeyUsageOID.CLIENT_AUTH),
    ]
    for name, san, usage in leaves:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = _builder(subject, key, ca_name).add_extension(
            x509.ExtendedKeyUsage([usage]), critical=False
        )
        if san is not None:
            builder = builder.add_extension(x509.SubjectAlternativeName([san]), critical=False)
        paths.extend(_write(directory, name, _sign(builder, ca_key), key))
    return Pki(*paths)


def mtls_server_context(cert: Path, key: Path, client_ca: Path) -> ssl.SSLContext:
    """A server context that REQUIRES a client certificate signed by ``client_ca``."""
    context = server_context(cert, key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=client_ca)
    return context


def _builder(
    subject: x509.Name, key: ec.EllipticCurvePrivateKey, issuer: x509.Name
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
    )


def _sign(builder: x509.CertificateBuilder, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    return builder.sign(key, hashes.SHA256())


def _write(
    directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path
