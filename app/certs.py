"""Certificates held in memory, loaded into an SSL context without the key touching a disk:
client certificates for the controller's clients of edge API servers and for the agent's of
its own; a private CA and server certificate for servers of our own reached by address."""

from __future__ import annotations

import ipaddress
import os
import shutil
import ssl
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec


def load_client_certificate(context: ssl.SSLContext, certificate: bytes, key: bytes) -> None:
    """Load a client certificate and key held in memory. `load_cert_chain` reads only from a
    path: it is given an anonymous in-memory file (memfd, by its /proc path), so the key never
    reaches a disk. Where there is none, a file in a private directory removed as soon as it
    is read. The key is never encrypted in a kubeconfig; the empty password keeps OpenSSL from
    prompting on a terminal if one is."""
    both = certificate + b"\n" + key
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        try:
            descriptor = os.memfd_create("kubeconfig-client-credentials", os.MFD_CLOEXEC)
        except OSError:  # refused by a sandbox: the fallback below
            pass
        else:
            try:
                with open(descriptor, "wb", closefd=False) as memory:
                    memory.write(both)
                context.load_cert_chain(f"/proc/self/fd/{descriptor}", password=b"")
            finally:
                os.close(descriptor)
            return
    directory = tempfile.mkdtemp(prefix="edge-tls-")  # mode 0700
    try:
        path = os.path.join(directory, "credentials.pem")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as file:
            file.write(both)
        context.load_cert_chain(path, password=b"")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@dataclass(frozen=True)
class ServerIdentity:
    """A private CA and a server certificate it signed, in PEM: for servers of our own that
    clients reach by address (the demo fleet, the benchmarks' fleet)."""

    ca: bytes
    certificate: bytes
    key: bytes

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        load_client_certificate(context, self.certificate, self.key)
        return context


def issue_server_identity(address: str = "127.0.0.1", days: int = 365) -> ServerIdentity:
    """A new CA (EC P-256) and a certificate for `address` (an IP address or a DNS name)."""
    # Imported here: the agent, which loads this module, never issues certificates.
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def builder(subject: str, public: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        )

    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge-platform private CA")])
    ca = (
        builder("edge-platform private CA", ca_key.public_key())
        .issuer_name(ca_name)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    try:
        name: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(address))
    except ValueError:
        name = x509.DNSName(address)
    certificate = (
        builder(address, key.public_key())
        .issuer_name(ca.subject)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .add_extension(x509.SubjectAlternativeName([name]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return ServerIdentity(
        ca=ca.public_bytes(pem),
        certificate=certificate.public_bytes(pem),
        key=key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
