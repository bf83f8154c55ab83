"""HTTPS: the self-signed certificate (made, reused, renewed), user pairs, and the server over TLS."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import ssl
import stat

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from streamfx.pipeline.engines.overlay import OverlayEngine
from streamfx.server import ServerConfig, create_app
from streamfx.server import tls


def _cert(files: tls.TlsFiles) -> x509.Certificate:
    return x509.load_pem_x509_certificate(files.cert.read_bytes())


def _sans(files: tls.TlsFiles) -> tuple[set[str], set]:
    san = _cert(files).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName)), set(san.get_values_for_type(x509.IPAddress))


def test_self_signed_names_what_is_asked_and_keeps_the_key_private(tmp_path):
    files = tls.self_signed(["localhost", "studio.lan"], ["127.0.0.1", "::1", "192.0.2.7"], tmp_path)
    assert (files.cert, files.key) == (tmp_path / "cert.pem", tmp_path / "key.pem")
    names, addresses = _sans(files)
    assert names == {"localhost", "studio.lan"}
    assert addresses == {ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", "192.0.2.7")}
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600

    cert = _cert(files)
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey) and cert.public_key().curve.name == "secp256r1"
    days = (cert.not_valid_after_utc - cert.not_valid_before_utc).days
    assert 360 <= days <= 370
    assert files.fingerprint_sha256 == cert.fingerprint(hashes.SHA256()).hex(":").upper()
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert files.spki_sha256_b64 == base64.b64encode(hashlib.sha256(spki).digest()).decode()


def test_self_signed_is_reused_then_renewed_for_a_new_name(tmp_path):
    first = tls.self_signed(["localhost"], ["127.0.0.1", "192.0.2.7"], tmp_path)
    again = tls.self_signed(["LOCALHOST"], ["192.0.2.7"], tmp_path)  # a subset: the same certificate
    assert again.fingerprint_sha256 == first.fingerprint_sha256

    renewed = tls.self_signed(["localhost", "studio.lan"], ["127.0.0.1"], tmp_path)
    assert renewed.fingerprint_sha256 != first.fingerprint_sha256
    assert "studio.lan" in _sans(renewed)[0]
    assert renewed.spki_sha256_b64 == first.spki_sha256_b64, "the stored key is kept, so SPKI pins survive"
    assert stat.S_IMODE(renewed.key.stat().st_mode) == 0o600


def test_self_signed_renews_a_certificate_about_to_expire(tmp_path):
    files = tls.self_signed(["localhost"], [], tmp_path)
    key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    now = dt.datetime.now(dt.timezone.utc)
    old = _cert(files)
    short = (x509.CertificateBuilder().subject_name(old.subject).issuer_name(old.issuer)
             .public_key(old.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - dt.timedelta(days=300)).not_valid_after(now + dt.timedelta(days=3))
             .add_extension(old.extensions.get_extension_for_class(x509.SubjectAlternativeName).value, False)
             .sign(key, hashes.SHA256()))
    files.cert.write_bytes(short.public_bytes(serialization.Encoding.PEM))
    renewed = tls.self_signed(["localhost"], [], tmp_path)
    assert _cert(renewed).not_valid_after_utc - now > dt.timedelta(days=300)


def test_load_checks_the_pair(tmp_path):
    one = tls.self_signed(["localhost"], [], tmp_path / "one")
    two = tls.self_signed(["localhost"], [], tmp_path / "two")
    assert tls.load(one.cert, one.key).fingerprint_sha256 == one.fingerprint_sha256

    with pytest.raises(tls.TlsError) as err:
        tls.load(one.cert, two.key)
    assert "does not belong" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(tls.TlsError) as err:
        tls.load(tmp_path / "missing.pem", one.key)
    assert "not found" in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(tls.TlsError) as err:
        tls.load(tmp_path / "junk.pem", one.key)
    assert "\n" not in str(err.value)


def test_reachable_addresses_leave_out_loopback_and_link_local():
    found = tls.reachable_addresses()
    for item in found:
        try:
            address = ipaddress.ip_address(item)
        except ValueError:
            continue  # the host name
        assert not (address.is_loopback or address.is_link_local or address.is_unspecified), item


async def test_server_answers_over_https_with_only_its_certificate_trusted(tmp_path):
    files = tls.self_signed(["localhost"], ["127.0.0.1"], tmp_path)
    app = create_app(ServerConfig(tls=True, ice_loopback=True), engine=OverlayEngine())
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls.ssl_context(files))
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        client_ctx = ssl.create_default_context(cafile=str(files.cert))  # trusts this certificate and nothing else
        async with aiohttp.ClientSession() as session:
            async with session.get(f"https://127.0.0.1:{port}/api/info", ssl=client_ctx) as response:
                assert response.status == 200, await response.text()
                assert (await response.json())["state"] == "ready"
            # the same server is not trusted by a client that does not know the certificate
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with session.get(f"https://127.0.0.1:{port}/api/info", ssl=ssl.create_default_context()):
                    pass
    finally:
        await runner.cleanup()
