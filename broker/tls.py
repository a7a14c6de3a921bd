"""Transport security of the broker's listeners: TLS from a certificate and key file, client
certificates (mTLS) checked against a CA file, and the caller a certificate names.

Every listener (gRPC and the HTTP/WebSocket gateways) reads the same three files through a
:class:`CertFiles`, which re-reads them when their modification time or size changes (looked at
no more than once a second, on a new connection), so a rotated certificate is served to new
connections without a restart; open connections keep theirs. A half-written pair (a key that
does not belong to the certificate, an unreadable PEM) is not taken: the previous pair stays
in use and the failure is logged, until the files are whole again.

With a client CA, every TLS connection must present a certificate signed by it. Its identity is
the first subject alternative name that matches ``tls_client_identity``, a template with
``{org}`` and ``{agent}``: a template with ``://`` matches URI SANs (the default,
``lockgate://{org}/{agent}``), any other matches DNS SANs (``{agent}.{org}.agents.example``).
Each placeholder matches 1-64 of ``A-Z a-z 0-9 _ -``. The principal is that org and agent with
the roles of ``tls_client_roles`` (none by default: a plain agent). A certificate with no
matching SAN, two matching SANs naming different callers, or an org outside
``tls_client_orgs`` (when that list is set) is refused. An API key sent on top of a certificate
wins (its agent and roles), but only when it belongs to the certificate's org.

Example::

    tls = ServerTLS.from_config(config)           # None when no tls_server_cert is set
    creds = tls.grpc_credentials()                # for grpc add_secure_port
    ctx = tls.ssl_context()                       # for aiohttp/asyncio listeners
"""

from __future__ import annotations

import contextvars
import logging
import os
import re
import ssl
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lockgate.broker.auth import Principal
from lockgate.broker.config import ConfigError
from lockgate.broker.errors import Unauthenticated

if TYPE_CHECKING:
    import grpc

    from lockgate.broker.config import Config

__all__ = [
    "CERTIFIED_CALLER",
    "DEFAULT_IDENTITY",
    "CertFiles",
    "ClientIdentities",
    "PeerCertificate",
    "ServerTLS",
    "peer_of_ssl",
    "refusal_of_plaintext",
]

log = logging.getLogger("lockgate.tls")
_CHECK_SECONDS = 1.0
_NAME = r"[A-Za-z0-9_-]{1,64}"
DEFAULT_IDENTITY = "lockgate://{org}/{agent}"


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """The subject alternative names of a verified client certificate, by kind."""

    uris: tuple[str, ...] = ()
    dns: tuple[str, ...] = ()


CERTIFIED_CALLER: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "lockgate_certified_caller", default=None
)
"""The caller a verified client certificate names, for the request an in-process gateway serves.

The HTTP/WebSocket listener sets it around each request (in the task of that connection, so
one caller's certificate never reaches another's request); ``LocalAPI`` reads it beside the
key. A context variable rather than a parameter: the gateways' API passes a key on every
method, while a certificate belongs to the connection."""


def peer_of_ssl(obj: ssl.SSLObject | ssl.SSLSocket | None) -> PeerCertificate | None:
    """The SANs of the verified certificate on an asyncio/aiohttp TLS connection (None without
    one: only a certificate that passed verification is returned by ``getpeercert``)."""
    if obj is None:
        return None
    cert = obj.getpeercert()
    if not cert:
        return None
    pairs = [p for p in cert.get("subjectAltName", ()) if isinstance(p, tuple) and len(p) == 2]
    uris = tuple(str(p[1]) for p in pairs if p[0] == "URI")
    dns = tuple(str(p[1]) for p in pairs if p[0] == "DNS")
    return PeerCertificate(uris, dns)


def _peer_of_pem(pem: bytes) -> PeerCertificate:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return PeerCertificate()
    return PeerCertificate(
        tuple(sans.get_values_for_type(x509.UniformResourceIdentifier)),
        tuple(sans.get_values_for_type(x509.DNSName)),
    )


class ClientIdentities:
    """Maps a verified client certificate to a :class:`~broker.auth.Principal`."""

    def __init__(
        self,
        template: str = DEFAULT_IDENTITY,
        *,
        orgs: Sequence[str] = (),
        roles: Sequence[str] = (),
    ) -> None:
        if template.count("{org}") != 1 or template.count("{agent}") != 1:
            raise ConfigError(
                f"tls_client_identity = {template!r} must contain {{org}} and {{agent}} once",
                hint=f'e.g. "{DEFAULT_IDENTITY}" or "{{agent}}.{{org}}.agents.example.com"',
            )
        self.template = template
        self.uri = "://" in template
        pattern = re.escape(template)
        pattern = pattern.replace(re.escape("{org}"), f"(?P<org>{_NAME})")
        pattern = pattern.replace(re.escape("{agent}"), f"(?P<agent>{_NAME})")
        # DNS names compare without case (RFC 4343); URIs as written.
        self._re = re.compile(pattern, 0 if self.uri else re.IGNORECASE)
        self.orgs = frozenset(orgs)
        self.roles = frozenset(roles)
        self._by_pem: dict[bytes, Principal | Unauthenticated] = {}

    def principal(self, peer: PeerCertificate) -> Principal:
        """The caller ``peer`` names; raises :class:`Unauthenticated` when it names none, two,
        or one of an org that is not allowed."""
        names = peer.uris if self.uri else peer.dns
        found = {
            (m["org"], m["agent"]) for name in names if (m := self._re.fullmatch(name)) is not None
        }
        kind = "URI" if self.uri else "DNS"
        if not found:
            raise Unauthenticated(
                f"the client certificate has no {kind} SAN of the form {self.template}",
                hint="issue it with a subject alternative name like "
                + self.template.replace("{org}", "ORG").replace("{agent}", "AGENT"),
            )
        if len(found) > 1:
            raise Unauthenticated(
                f"the client certificate names {len(found)} different callers in its SANs",
                hint="issue one certificate per agent",
            )
        org, agent = found.pop()
        if not self.uri:
            org, agent = org.lower(), agent.lower()
        if self.orgs and org not in self.orgs:
            raise Unauthenticated(
                f"the client certificate is for org {org!r}, which tls_client_orgs does not allow",
                hint="add the org to tls_client_orgs, or issue the certificate for another org",
            )
        return Principal(org, agent, self.roles)

    def of_grpc(self, auth_context: Mapping[str, Sequence[bytes]]) -> Principal | None:
        """The principal of a gRPC call's verified certificate (None on a connection without
        one). Parsed once per certificate: the answer (or refusal) is cached by its PEM."""
        pems = auth_context.get("x509_pem_cert")
        if not pems:
            return None
        pem = pems[0]
        hit = self._by_pem.get(pem)
        if hit is None:
            try:
                hit = self.principal(_peer_of_pem(pem))
            except Unauthenticated as err:
                hit = err
            if len(self._by_pem) > 10_000:
                self._by_pem.clear()
            self._by_pem[pem] = hit
        if isinstance(hit, Unauthenticated):
            raise hit
        return hit

    def of_peer(self, peer: PeerCertificate | None) -> Principal | None:
        return None if peer is None else self.principal(peer)


@dataclass(frozen=True, slots=True)
class _Pair:
    cert: bytes
    key: bytes
    client_ca: bytes | None
    stamp: tuple[tuple[int, int], ...]


def _check_pair(cert: bytes, key: bytes, ca: bytes | None) -> None:
    """Raises ValueError unless ``key`` is the private key of ``cert`` (a torn rotation)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    public = x509.load_pem_x509_certificate(cert).public_key()
    private = serialization.load_pem_private_key(key, password=None)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    pem = serialization.Encoding.PEM
    if public.public_bytes(pem, spki) != private.public_key().public_bytes(pem, spki):
        raise ValueError("the key does not belong to the certificate")
    if ca is not None:
        x509.load_pem_x509_certificates(ca)


class CertFiles:
    """A certificate, its key and an optional client CA, re-read when the files change.

    :meth:`current` returns the pair in use; it looks at the files' modification times at
    most once a second, and a changed but broken set keeps the previous one. Safe to call from
    grpc's handshake threads.
    """

    def __init__(self, cert: str, key: str, client_ca: str = "") -> None:
        self.paths = tuple(p for p in (cert, key, client_ca) if p)
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self._lock = threading.Lock()
        self._checked = 0.0
        self._pair = self._read()  # the first read raises: a broken set fails the startup
        self.generation = 0

    def _stamp(self) -> tuple[tuple[int, int], ...]:
        out = []
        for path in self.paths:
            st = os.stat(path)
            out.append((st.st_mtime_ns, st.st_size))
        return tuple(out)

    def _read(self) -> _Pair:
        try:
            stamp = self._stamp()
            with open(self.cert, "rb") as f:
                cert = f.read()
            with open(self.key, "rb") as f:
                key = f.read()
            ca = None
            if self.client_ca:
                with open(self.client_ca, "rb") as f:
                    ca = f.read()
            _check_pair(cert, key, ca)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(
                f"cannot use the TLS files {', '.join(self.paths)}: {exc}",
                hint="tls_server_cert and tls_server_key are PEM files of one certificate and "
                "its unencrypted key; tls_client_ca a PEM file of CA certificates",
            ) from None
        return _Pair(cert, key, ca, stamp)

    def current(self) -> tuple[_Pair, bool]:
        """The files in use, and whether they changed since the last call that said so."""
        now = time.monotonic()
        with self._lock:
            if now - self._checked < _CHECK_SECONDS:
                return self._pair, False
            self._checked = now
            try:
                if self._stamp() == self._pair.stamp:
                    return self._pair, False
                pair = self._read()
            except Exception as exc:  # keep serving the previous pair; say so
                log.error("tls.reload.failed: %s; the previous certificate stays in use", exc)
                return self._pair, False
            self._pair = pair
            self.generation += 1
            log.info("tls.reloaded: %s", ", ".join(self.paths))
            return pair, True


@dataclass
class ServerTLS:
    """TLS for the listeners of one process, from the ``tls_*`` settings."""

    files: CertFiles
    identities: ClientIdentities | None = None

    @property
    def mutual(self) -> bool:
        return bool(self.files.client_ca)

    @classmethod
    def from_settings(
        cls,
        *,
        cert: str,
        key: str,
        client_ca: str = "",
        identity: str = DEFAULT_IDENTITY,
        orgs: Sequence[str] = (),
        roles: Sequence[str] = (),
    ) -> ServerTLS | None:
        """TLS from these files (None when neither certificate nor key is given)."""
        if not cert and not key:
            if client_ca:
                raise ConfigError(
                    "tls_client_ca is set but tls_server_cert and tls_server_key are not",
                    hint="client certificates need TLS: set both, or drop tls_client_ca",
                )
            return None
        if not cert or not key:
            raise ConfigError(
                "TLS needs both tls_server_cert and tls_server_key",
                hint="set both to PEM files (the certificate chain and its private key)",
            )
        files = CertFiles(cert, key, client_ca)
        identities = ClientIdentities(identity, orgs=orgs, roles=roles) if client_ca else None
        return cls(files, identities)

    @classmethod
    def from_config(cls, config: Config) -> ServerTLS | None:
        return cls.from_settings(
            cert=config.tls_server_cert,
            key=config.tls_server_key,
            client_ca=config.tls_client_ca,
            identity=config.tls_client_identity,
            orgs=config.tls_client_orgs,
            roles=config.tls_client_roles,
        )

    # -- gRPC ---------------------------------------------------------------------------------

    def grpc_credentials(self) -> grpc.ServerCredentials:
        """Server credentials whose certificate grpc asks for on every new connection."""
        import grpc

        def config(pair: _Pair) -> grpc.ServerCertificateConfiguration:
            pairs = [(pair.key, pair.cert)]
            return grpc.ssl_server_certificate_configuration(pairs, pair.client_ca)

        pair, _ = self.files.current()
        seen = [self.files.generation]

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            # Called by grpc before each handshake; None keeps the configuration it has.
            current, _ = self.files.current()
            if self.files.generation == seen[0]:
                return None
            seen[0] = self.files.generation
            return config(current)

        return grpc.dynamic_ssl_server_credentials(
            config(pair), fetch, require_client_authentication=self.mutual
        )

    # -- asyncio (aiohttp) ----------------------------------------------------------------------

    def _build(self, pair: _Pair) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        # From the files themselves (load_cert_chain reads paths only; no copy of the key
        # anywhere else). OpenSSL checks that the key fits the certificate, so a set that
        # changed again since it was read and checked fails here and the previous one stays.
        ctx.load_cert_chain(self.files.cert, self.files.key)
        if pair.client_ca is not None:
            ctx.load_verify_locations(cadata=pair.client_ca.decode())
            ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def ssl_context(self) -> ssl.SSLContext:
        """A server context for asyncio listeners: each new connection starts on it, and its
        ClientHello callback moves the connection to a context built from the current files
        (rebuilt when they changed), so rotation reaches new connections."""
        pair, _ = self.files.current()
        front = self._build(pair)
        generation, latest = self.files.generation, front

        def on_hello(sock: ssl.SSLObject, server_name: str | None, _ctx: ssl.SSLContext) -> None:
            # OpenSSL calls this for every ClientHello, with or without SNI.
            nonlocal generation, latest
            current, _ = self.files.current()
            if self.files.generation != generation:
                try:
                    latest = self._build(current)
                except (ssl.SSLError, OSError) as exc:
                    log.error("tls.reload.failed: %s; the previous certificate stays", exc)
                generation = self.files.generation
            if latest is not front:
                sock.context = latest

        front.sni_callback = on_hello
        return front


def refusal_of_plaintext(listens: Sequence[str]) -> str:
    """The one sentence of ``lockgate serve`` refusing plain text on the network."""
    return (
        f"refusing to listen on {listens[0]} without TLS: API keys and events would cross "
        "the network in clear text"
    )
