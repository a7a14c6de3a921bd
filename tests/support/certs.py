"""Certificates made by the tests themselves: a CA, server and client certificates, written as
PEM files (the ``cryptography`` package; never a checked-in key).

Example::

    ca = CertAuthority.create("test CA")
    server = ca.issue(dns=["localhost"], ips=["127.0.0.1"]).write(tmp_path, "server")
    client = ca.issue(uris=["lockgate://acme/bot"]).write(tmp_path, "client")
    ca.write(tmp_path / "ca.pem")
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertAuthority", "IssuedCert", "PemFiles", "replace_files", "served_certificate"]

_DAY = dt.timedelta(days=1)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class PemFiles:
    """Where an issued certificate and its key were written."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class IssuedCert:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return _key_pem(self.key)

    def write(self, directory: Path, name: str) -> PemFiles:
        files = PemFiles(directory / f"{name}.pem", directory / f"{name}.key")
        files.cert.write_bytes(self.cert_pem)
        files.key.write_bytes(self.key_pem)
        return files


@dataclass(frozen=True)
class CertAuthority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, name: str = "lockgate test CA") -> CertAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + 30 * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, path: Path) -> Path:
        path.write_bytes(self.pem)
        return path

    def issue(
        self,
        common_name: str = "lockgate test",
        *,
        dns: list[str] | None = None,
        ips: list[str] | None = None,
        uris: list[str] | None = None,
        expired: bool = False,
    ) -> IssuedCert:
        """A leaf certificate signed by this CA, for servers and clients alike; no SAN at all
        when ``dns``, ``ips`` and ``uris`` are all empty."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        start, end = (now - 10 * _DAY, now - _DAY) if expired else (now - _DAY, now + 10 * _DAY)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns or []]
        names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips or []]
        names += [x509.UniformResourceIdentifier(u) for u in uris or []]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return IssuedCert(builder.sign(self.key, hashes.SHA256()), key)

    def server(self) -> IssuedCert:
        """A server certificate for this machine's loopback (``localhost``, ``127.0.0.1``)."""
        return self.issue("localhost", dns=["localhost"], ips=["127.0.0.1"])


def served_certificate(host: str, port: int, ca_file: Path, alpn: str = "h2") -> bytes:
    """The DER certificate a TLS listener serves to a new connection (blocking)."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    ctx.set_alpn_protocols([alpn])
    with (
        socket.create_connection((host, port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname=host) as conn,
    ):
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    return der


def replace_files(issued: IssuedCert, files: PemFiles) -> bytes:
    """Rotates ``files`` to ``issued`` as an operator (or cert-manager) does: each new file
    written beside the old one, then moved into place. Returns the new DER certificate."""
    for content, dst in ((issued.cert_pem, files.cert), (issued.key_pem, files.key)):
        tmp = dst.with_suffix(".new")
        tmp.write_bytes(content)
        os.replace(tmp, dst)
    return issued.cert.public_bytes(serialization.Encoding.DER)
