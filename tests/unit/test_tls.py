"""chatnet.tls: the self-signed certificate made once and kept, and contexts that really
handshake with it (an asyncio TLS server in this process, on a loopback port)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from chatnet.config import Settings
from chatnet.tls import client_context, ensure_certificate, server_context

HOST = "127.0.0.1"


def tls_settings(cert: Path | None, key: Path | None) -> Settings:
    return Settings(_env_file=None, tls_cert=cert, tls_key=key)


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    return ensure_certificate(tmp_path / "tls")


@pytest.fixture
async def tls_port(pair: tuple[Path, Path]) -> AsyncIterator[int]:
    """A loopback TLS server with the generated pair that greets and closes."""
    context = server_context(tls_settings(*pair))
    assert context is not None

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello over TLS\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, HOST, 0, ssl=context)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def handshake(port: int, context: ssl.SSLContext, server_hostname: str = HOST, host: str = HOST) -> str:
    """Connect, read the greeting; the TLS version negotiated and the line."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=context, server_hostname=server_hostname), 10)
    try:
        line = await asyncio.wait_for(reader.readline(), 10)
        version = writer.get_extra_info("ssl_object").version()
        return f"{version} {line.decode().strip()}"
    finally:
        writer.close()


def test_made_once_then_reused(tmp_path: Path) -> None:
    """The first call writes cert.pem and key.pem; later calls return the same files untouched."""
    cert, key = ensure_certificate(tmp_path / "tls")
    assert (cert, key) == (tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem")
    before = (cert.read_bytes(), key.read_bytes(), cert.stat().st_mtime_ns)
    assert ensure_certificate(tmp_path / "tls") == (cert, key)
    assert (cert.read_bytes(), key.read_bytes(), cert.stat().st_mtime_ns) == before


def test_names_localhost_and_both_loopback_addresses(pair: tuple[Path, Path]) -> None:
    """The certificate's subjectAltName lists localhost, 127.0.0.1 and ::1, and it is valid now."""
    cert = x509.load_pem_x509_certificate(pair[0].read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(names.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")}
    now = datetime.datetime.now(datetime.timezone.utc)
    assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc


def test_key_is_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    """key.pem is mode 600 even under a permissive umask; a key widened later is narrowed again on reuse."""
    old = os.umask(0)
    try:
        _, key = ensure_certificate(tmp_path / "tls")
    finally:
        os.umask(old)
    assert key.stat().st_mode & 0o777 == 0o600
    key.chmod(0o644)
    ensure_certificate(tmp_path / "tls")
    assert key.stat().st_mode & 0o777 == 0o600


def expired_certificate(key: ec.EllipticCurvePrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=30))
        .not_valid_after(now - datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize("spoil", ["garbage", "expired", "other key", "no key"])
def test_unusable_pair_is_made_anew(tmp_path: Path, spoil: str) -> None:
    """An unreadable, expired or mismatched pair is replaced by a fresh one that belongs together."""
    cert, key = ensure_certificate(tmp_path / "tls")
    old_cert = cert.read_bytes()
    if spoil == "garbage":
        cert.write_bytes(b"not a certificate\n")
    elif spoil == "expired":
        own = serialization.load_pem_private_key(key.read_bytes(), password=None)
        assert isinstance(own, ec.EllipticCurvePrivateKey)
        cert.write_bytes(expired_certificate(own))
    elif spoil == "other key":
        other = ec.generate_private_key(ec.SECP256R1())
        key.write_bytes(other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    else:
        key.unlink()
    assert ensure_certificate(tmp_path / "tls") == (cert, key)
    assert cert.read_bytes() != old_cert
    new_cert = x509.load_pem_x509_certificate(cert.read_bytes())
    new_key = serialization.load_pem_private_key(key.read_bytes(), password=None)
    assert new_cert.public_key() == new_key.public_key()
    assert new_cert.not_valid_after_utc > datetime.datetime.now(datetime.timezone.utc)


def test_contexts_load_the_pair(pair: tuple[Path, Path]) -> None:
    """server_context loads the pair (TLS 1.2 at least); client_context loads the certificate and checks hostnames."""
    server = server_context(tls_settings(*pair))
    assert server is not None and server.minimum_version == ssl.TLSVersion.TLSv1_2
    client = client_context(pair[0])
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname
    assert client.minimum_version == ssl.TLSVersion.TLSv1_2
    assert client.cert_store_stats()["x509"] == 1  # that certificate and nothing else


@pytest.mark.parametrize(("cert", "key"), [(None, None), (Path("cert.pem"), None), (None, Path("key.pem"))])
def test_no_server_context_without_both_files(cert: Path | None, key: Path | None) -> None:
    """Without both TLS_CERT and TLS_KEY there is no server context (no TLS listener)."""
    assert server_context(tls_settings(cert, key)) is None


def test_server_context_of_a_missing_file_fails(tmp_path: Path) -> None:
    """TLS_CERT naming no file is an error at start-up, not a listener that fails every handshake."""
    with pytest.raises(OSError):
        server_context(tls_settings(tmp_path / "nope.pem", tmp_path / "nope.key"))


async def test_client_context_verifies_a_handshake(pair: tuple[Path, Path], tls_port: int) -> None:
    """Trusting the generated certificate, a client completes the handshake as 127.0.0.1 and as localhost."""
    context = client_context(pair[0])
    assert await handshake(tls_port, context) in {"TLSv1.2 hello over TLS", "TLSv1.3 hello over TLS"}
    assert (await handshake(tls_port, context, server_hostname="localhost")).endswith("hello over TLS")


async def test_strict_verification_accepts_it(pair: tuple[Path, Path], tls_port: int) -> None:
    """The certificate passes VERIFY_X509_STRICT too (the default of newer Pythons)."""
    context = client_context(pair[0])
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    assert (await handshake(tls_port, context)).endswith("hello over TLS")


async def test_ipv6_loopback_is_named_too(pair: tuple[Path, Path]) -> None:
    """Over ::1 the handshake verifies as well (skipped where this host has no IPv6 loopback)."""
    context = server_context(tls_settings(*pair))
    assert context is not None
    try:
        server = await asyncio.start_server(lambda r, w: w.close(), "::1", 0, ssl=context, family=socket.AF_INET6)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.wait_for(asyncio.open_connection("::1", port, ssl=client_context(pair[0])), 10)
        assert writer.get_extra_info("peercert") is not None
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_other_trust_or_name_is_refused(pair: tuple[Path, Path], tls_port: int, tmp_path: Path) -> None:
    """The system store, another self-signed certificate, or a name the certificate lacks: the handshake fails verification."""
    other_cert, _ = ensure_certificate(tmp_path / "other")
    for context, name in [(client_context(None), HOST), (client_context(other_cert), HOST), (client_context(pair[0]), "chat.example.org")]:
        with pytest.raises(ssl.SSLCertVerificationError):
            await handshake(tls_port, context, server_hostname=name)
