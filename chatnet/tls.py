"""TLS: the chat server's context, a client's verifying context, and a self-signed
certificate for a network that runs on one machine.

`server_context(settings)` is None unless both TLS_CERT and TLS_KEY are set, so a
server without them simply has no TLS listener. `ensure_certificate(directory)` is what
the launcher calls when they are unset: it makes `cert.pem` and `key.pem` once (for
`localhost`, `127.0.0.1` and `::1`) and reuses them while they are valid, so a client
that trusts the file once keeps trusting it across restarts.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Final

from chatnet.config import Settings

# `cryptography` is imported where a certificate is made or checked, not here: the chat
# server and the adapter only load PEM files through `ssl`, and the library costs each
# of them 8 MB of memory it would never use (the launcher makes the certificate).
if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

CERT_FILE: Final = "cert.pem"
KEY_FILE: Final = "key.pem"
HOSTNAMES: Final = ("localhost",)
ADDRESSES: Final = ("127.0.0.1", "::1")
# Long enough never to bother anyone on a development machine; well under the
# 825 days some clients accept for a server certificate.
VALID_DAYS: Final = 365
# Made again this long before it expires, so a server started today doesn't carry a
# certificate that lapses while it runs.
RENEW_BEFORE: Final = datetime.timedelta(days=7)
MINIMUM_VERSION: Final = ssl.TLSVersion.TLSv1_2


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """The context to listen with, from TLS_CERT/TLS_KEY; None when either is unset.
    A missing or mismatched file raises (OSError, ssl.SSLError): a start-up error."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


def client_context(cafile: Path | None = None) -> ssl.SSLContext:
    """A verifying client context (hostname checked): trusting only `cafile` when given,
    else the system's certificate store."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cafile) if cafile is not None else None)
    context.minimum_version = MINIMUM_VERSION
    return context


def ensure_certificate(directory: Path) -> tuple[Path, Path]:
    """(cert.pem, key.pem) under `directory`: the ones there while they are valid and
    belong together, else a new self-signed pair (the key readable by its owner only)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
    if not _usable(cert_path, key_path):
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        # The key first: a cert.pem next to an old key would be a pair that doesn't match.
        write_file(key_path, key_pem, 0o600)
        write_file(cert_path, _self_signed(key).public_bytes(serialization.Encoding.PEM), 0o644)
    elif key_path.stat().st_mode & 0o077:
        key_path.chmod(0o600)  # widened by someone since: the key is its owner's alone
    return cert_path, key_path


def _usable(cert_path: Path, key_path: Path) -> bool:
    """Both files readable, the certificate valid for a while yet, the key its own."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return False
    now = datetime.datetime.now(datetime.timezone.utc)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc - RENEW_BEFORE:
        return False
    return bool(cert.public_key() == key.public_key())


def _self_signed(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """A certificate for this machine's loopback names, signed by its own key, with the
    extensions strict verifiers (Python 3.13's VERIFY_X509_STRICT) ask for."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "chatnet (self-signed)")])
    now = datetime.datetime.now(datetime.timezone.utc)
    alt_names: list[x509.GeneralName] = [x509.DNSName(host) for host in HOSTNAMES]
    alt_names += [x509.IPAddress(ipaddress.ip_address(address)) for address in ADDRESSES]
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # a little clock skew
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Write through a temporary file created with `mode` (never briefly wider) and
    renamed into place, so nobody reads half a file. (The launcher's API token file
    is written so too.)"""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.chmod(partial, mode)  # exactly `mode`, whatever the umask made of it
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
