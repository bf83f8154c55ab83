"""HTTPS for ``streamfx serve``: the user's certificate, or a self-signed one kept between runs.

Browsers only open a camera in a secure context, so a page served to another machine must
come over HTTPS. :func:`self_signed` makes an ECDSA P-256 certificate for the names and
addresses the server is reached by, stores it under the user's config directory and reuses
it while it is valid and covers what is asked (so a browser told to trust it once keeps
trusting it). :func:`load` checks a certificate and key the user brings, and
:func:`ssl_context` turns either into the server's :class:`ssl.SSLContext`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
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

from ..user_dirs import config_dir

VALID_DAYS = 365
RENEW_BEFORE = dt.timedelta(days=7)     # a certificate closer than this to expiry is replaced
CERT_NAME, KEY_NAME = "cert.pem", "key.pem"

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TlsError(Exception):
    """A certificate or key that cannot be used; the message is one line for the user."""


@dataclass(frozen=True)
class TlsFiles:
    """A certificate and its key on disk, with the digests a user or a browser checks it by."""

    cert: Path
    key: Path
    fingerprint_sha256: str   # of the DER certificate, colon-separated upper-case hex (what browsers show)
    spki_sha256_b64: str      # base64 SHA-256 of the DER SubjectPublicKeyInfo (Chromium's SPKI pins)


def default_directory() -> Path:
    """``tls`` in the config folder (``~/.config/streamfx/tls``; :func:`~streamfx.user_dirs.config_dir`)."""
    return config_dir() / "tls"


# ---------------------------------------------------------------------------- digests
def _spki_der(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)


def _files(cert_path: Path, key_path: Path, cert: x509.Certificate) -> TlsFiles:
    fingerprint = cert.fingerprint(hashes.SHA256()).hex(":").upper()
    spki = base64.b64encode(hashlib.sha256(_spki_der(cert)).digest()).decode("ascii")
    return TlsFiles(cert=cert_path, key=key_path, fingerprint_sha256=fingerprint, spki_sha256_b64=spki)


# ---------------------------------------------------------------------------- reading
def _read_pair(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, object]:
    """The first certificate of ``cert_path`` and the private key of ``key_path``, checked to match."""
    for what, path in (("certificate", cert_path), ("key", key_path)):
        if not path.is_file():
            raise TlsError(f"TLS {what} file not found: {path}")
    try:
        certs = x509.load_pem_x509_certificates(cert_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise TlsError(f"cannot read the TLS certificate {cert_path}: {_first_line(exc)}") from None
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except TypeError:
        raise TlsError(f"the TLS key {key_path} is encrypted; give an unencrypted PEM key") from None
    except (OSError, ValueError) as exc:
        raise TlsError(f"cannot read the TLS key {key_path}: {_first_line(exc)}") from None
    cert = certs[0]
    ours = key.public_key().public_bytes(serialization.Encoding.DER,  # type: ignore[union-attr]
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    if ours != _spki_der(cert):
        raise TlsError(f"the TLS key {key_path} does not belong to the certificate {cert_path}")
    return cert, key


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load(cert: Path | str, key: Path | str) -> TlsFiles:
    """A certificate and key the user brings (PEM; the certificate file may hold a chain).

    Raises :class:`TlsError` (one line) when a file is missing, unreadable, or the key does
    not belong to the certificate.
    """
    cert_path, key_path = Path(cert).expanduser(), Path(key).expanduser()
    certificate, _ = _read_pair(cert_path, key_path)
    return _files(cert_path, key_path, certificate)


def ssl_context(files: TlsFiles) -> ssl.SSLContext:
    """A server-side context serving ``files``, TLS 1.2 or newer."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(files.cert), str(files.key))
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"cannot use {files.cert} with {files.key}: {_first_line(exc)}") from None
    return context


# ---------------------------------------------------------------------------- self-signed
def _parse_addresses(addresses: list[str]) -> list[IpAddress]:
    parsed: list[IpAddress] = []
    for text in addresses:
        try:
            address = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            raise TlsError(f"not an IP address: {text!r}") from None
        if address not in parsed:
            parsed.append(address)
    return parsed


def _dns_name(name: str) -> str | None:
    """``name`` as an ASCII DNS name (IDNA for others), or None when it cannot be one."""
    name = name.strip().rstrip(".")
    if not name:
        return None
    try:
        return name if name.isascii() else name.encode("idna").decode("ascii")
    except UnicodeError:
        return None


def _covers(cert: x509.Certificate, names: list[str], addresses: list[IpAddress]) -> bool:
    """Whether ``cert`` is valid for more than :data:`RENEW_BEFORE` and names every name and address."""
    if cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc) < RENEW_BEFORE:
        return False
    if cert.not_valid_before_utc > dt.datetime.now(dt.timezone.utc):
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have_names = {n.lower() for n in san.get_values_for_type(x509.DNSName)}
    have_addresses = set(san.get_values_for_type(x509.IPAddress))
    return all(n.lower() in have_names for n in names) and all(a in have_addresses for a in addresses)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` through a temporary file (created with ``mode``) and a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)  # the umask may have narrowed or os.open kept an older file's mode
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _existing_key(key_path: Path) -> ec.EllipticCurvePrivateKey | None:
    """The stored P-256 key, reused so that a browser's SPKI pin survives a new certificate."""
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key
    return None


def self_signed(names: list[str], addresses: list[str], directory: Path | None = None) -> TlsFiles:
    """A self-signed certificate for ``names`` (DNS) and ``addresses`` (IP), made or reused.

    The pair is kept as ``cert.pem`` and ``key.pem`` (mode 0600) in ``directory`` (default
    :func:`default_directory`). An existing pair is reused when it matches, is not within
    a week of expiry and already names everything asked for; otherwise a new certificate
    (about a year long) is issued for exactly what is asked, on the stored key when it is
    a P-256 key.
    """
    wanted_names = list(dict.fromkeys(filter(None, (_dns_name(n) for n in names))))
    wanted_addresses = _parse_addresses(addresses)
    if not wanted_names and not wanted_addresses:
        raise TlsError("a certificate needs at least one name or address")
    directory = Path(directory) if directory is not None else default_directory()
    cert_path, key_path = directory / CERT_NAME, directory / KEY_NAME

    if cert_path.is_file() and key_path.is_file():
        try:
            cert, _ = _read_pair(cert_path, key_path)
        except TlsError:
            pass  # unreadable or mismatched: issue a new pair below
        else:
            if _covers(cert, wanted_names, wanted_addresses):
                return _files(cert_path, key_path, cert)

    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = _existing_key(key_path) or ec.generate_private_key(ec.SECP256R1())
        cert = _issue(key, wanted_names, wanted_addresses)
        _write(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()), 0o600)
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    except OSError as exc:
        raise TlsError(f"cannot write the certificate to {directory}: {exc.strerror or exc}") from None
    return _files(cert_path, key_path, cert)


def _issue(key: ec.EllipticCurvePrivateKey, names: list[str], addresses: list[IpAddress]) -> x509.Certificate:
    """A one-year self-signed server certificate (not a CA) on ``key``."""
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "StreamFX"),
                         x509.NameAttribute(NameOID.COMMON_NAME, (names or [str(addresses[0])])[0][:64])])
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt_names += [x509.IPAddress(a) for a in addresses]
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(subject).issuer_name(subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))      # some slack for clock skew
               .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
               .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    return builder.sign(key, hashes.SHA256())


# ---------------------------------------------------------------------------- addresses
def _usable(address: IpAddress) -> bool:
    return not (address.is_loopback or address.is_link_local or address.is_unspecified or address.is_multicast)


def reachable_addresses() -> list[str]:
    """This machine's addresses another machine could use, then its host name (best effort).

    Reads the addresses the host name resolves to and the source address the kernel would
    pick for a private destination (a UDP socket is ``connect``-ed, which sends nothing).
    Loopback, link-local and unspecified addresses are left out. No packet leaves the machine.
    """
    found: list[str] = []

    def add(text: str) -> None:
        try:
            address = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            return
        if _usable(address) and str(address) not in found:
            found.append(str(address))

    hostname = socket.gethostname()
    try:
        for info in socket.getaddrinfo(hostname, None, proto=socket.IPPROTO_TCP):
            add(str(info[4][0]))
    except OSError:
        pass
    for family, probe in ((socket.AF_INET, "10.255.255.255"), (socket.AF_INET6, "fd00::1")):
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect((probe, 9))  # chooses a route and a source address; no packet is sent
                add(str(s.getsockname()[0]))
        except OSError:
            pass
    if hostname and hostname.lower() != "localhost" and hostname not in found:
        found.append(hostname)
    return found
