"""TLS and mTLS for the client: the files, the channel credentials, and a diagnosis of a failed
handshake that names the cause (instead of waiting out the connect timeout).

Example::

    tls = TLS(ca_file="ca.pem", cert_file="me.pem", key_file="me.key")   # mTLS
    async with Client("broker.example:50051", api_key=key, tls=tls) as c: ...
    async with Client("grpcs://broker.example:50051") as c: ...           # system CAs
    async with Client("broker.example:50051", tls=TLS.from_env()) as c: ...

``TLS.from_env()`` reads ``LOCKGATE_TLS_CA``, ``LOCKGATE_TLS_CERT``, ``LOCKGATE_TLS_KEY``,
``LOCKGATE_TLS_SERVER_NAME`` and ``LOCKGATE_TLS`` (``1``: TLS with the system's CAs), as the
``lockgate`` commands do.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from lockgate.broker.v1.reasons import Reason
from lockgate.clients._errors import InvalidArgument, TLSError

__all__ = ["TLS", "add_tls_arguments", "diagnose", "split_target", "tls_from_args"]

_SCHEMES = {"grpcs://": True, "grpc://": False}
_TRUE = ("1", "true", "yes", "on")


def split_target(target: str) -> tuple[str, bool]:
    """``(HOST:PORT, tls)`` of a target: ``grpcs://HOST:PORT`` asks for TLS, ``grpc://`` or a
    bare ``HOST:PORT`` does not."""
    for scheme, tls in _SCHEMES.items():
        if target.startswith(scheme):
            return target[len(scheme) :].rstrip("/"), tls
    return target, False


def _read(path: str | None, what: str) -> bytes | None:
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise InvalidArgument(
            f"cannot read the TLS {what} {path}: {exc.strerror}",
            reason=Reason.INVALID_CONFIG,
            hint="check the path of --tls-ca / --tls-cert / --tls-key (LOCKGATE_TLS_*)",
        ) from None


@dataclass(frozen=True, slots=True)
class TLS:
    """How the client speaks TLS: the CA that signed the broker's certificate (None: the
    system's), and a client certificate and key for mTLS. ``server_name`` checks the broker's
    certificate against that name instead of the target's host."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TLS | None:
        """TLS from the ``LOCKGATE_TLS*`` variables; None when none is set."""
        env = os.environ if env is None else env
        ca, cert, key = (env.get(f"LOCKGATE_TLS_{n}") or None for n in ("CA", "CERT", "KEY"))
        name = env.get("LOCKGATE_TLS_SERVER_NAME") or None
        if not (ca or cert or key or name or env.get("LOCKGATE_TLS", "").lower() in _TRUE):
            return None
        return cls(ca, cert, key, name)

    def __post_init__(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise InvalidArgument(
                "a client certificate needs its key, and a key its certificate",
                reason=Reason.INVALID_CONFIG,
                hint="pass both --tls-cert and --tls-key (LOCKGATE_TLS_CERT, LOCKGATE_TLS_KEY)",
            )

    def credentials(self) -> grpc.ChannelCredentials:
        """The gRPC channel credentials (files read now; a missing one is InvalidArgument)."""
        return grpc.ssl_channel_credentials(
            _read(self.ca_file, "CA file"),
            _read(self.key_file, "key file"),
            _read(self.cert_file, "certificate file"),
        )

    def channel_options(self) -> list[tuple[str, Any]]:
        return [("grpc.ssl_target_name_override", self.server_name)] if self.server_name else []

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying client context with the same files (for HTTP clients, and the
        diagnosis of a failed gRPC handshake)."""
        ctx = ssl.create_default_context(cafile=self.ca_file or None)
        if self.cert_file and self.key_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


def add_tls_arguments(p: argparse.ArgumentParser) -> None:
    """The client TLS options of a ``lockgate`` command (each also read from its variable)."""
    p.add_argument(
        "--tls",
        action="store_true",
        default=None,
        help="TLS to the broker with the system's CAs (implied by grpcs:// and the others)",
    )
    p.add_argument(
        "--tls-ca", dest="tls_ca", help="CA file of the broker's certificate (env LOCKGATE_TLS_CA)"
    )
    p.add_argument(
        "--tls-cert", dest="tls_cert", help="client certificate for mTLS (env LOCKGATE_TLS_CERT)"
    )
    p.add_argument("--tls-key", dest="tls_key", help="its private key (env LOCKGATE_TLS_KEY)")
    p.add_argument(
        "--tls-server-name",
        dest="tls_server_name",
        help="name to check the broker's certificate against (env LOCKGATE_TLS_SERVER_NAME)",
    )


def tls_from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> TLS | None:
    """The client TLS of parsed :func:`add_tls_arguments` options over ``LOCKGATE_TLS*``."""
    base = TLS.from_env(env)
    names = ("tls_ca", "tls_cert", "tls_key", "tls_server_name")
    ca, cert, key, name = (getattr(args, n, None) for n in names)
    if base is None and not (ca or cert or key or name or getattr(args, "tls", None)):
        return None
    base = base or TLS()
    return TLS(
        ca or base.ca_file, cert or base.cert_file, key or base.key_file, name or base.server_name
    )


def _host_port(target: str) -> tuple[str, int] | None:
    host, _, port = target.rpartition(":")
    if not port.isdigit() or not host or "/" in host:
        return None  # a unix: or dns:/// target: nothing to diagnose here
    return host.strip("[]"), int(port)


async def _handshake(
    host: str, port: int, ctx: ssl.SSLContext, server_name: str | None, timeout: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=ctx, server_hostname=server_name or host),
        timeout,
    )


async def diagnose(target: str, tls: TLS | None, timeout: float = 3.0) -> TLSError | None:
    """Why a channel to ``target`` fails, when the cause is TLS: a plain-text client on a TLS
    port (or the reverse), an untrusted broker certificate, or a client certificate the broker
    refused. None when the cause is elsewhere (nothing listens, a firewall...)."""
    where = _host_port(target)
    if where is None:
        return None
    host, port = where
    if tls is None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # only asks "does this port speak TLS?"
        try:
            _, writer = await _handshake(host, port, ctx, None, timeout)
        except (OSError, TimeoutError, ssl.SSLError):
            return None
        writer.close()
        return TLSError(
            f"the broker at {target} speaks TLS and this client does not",
            hint="connect with grpcs://HOST:PORT (or --tls; LOCKGATE_TLS_CA=ca.pem for a "
            "private CA)",
        )
    try:
        ctx = tls.ssl_context()
    except (OSError, ssl.SSLError) as exc:
        return TLSError(
            f"cannot load the client's TLS files: {exc}",
            hint="check --tls-ca, --tls-cert and --tls-key (LOCKGATE_TLS_*)",
        )
    ctx.set_alpn_protocols(["h2"])
    try:
        reader, writer = await _handshake(host, port, ctx, tls.server_name, timeout)
    except ssl.SSLCertVerificationError as exc:
        return TLSError(
            f"the broker's certificate at {target} is not trusted: {exc.verify_message}",
            hint="pass the CA that signed it with --tls-ca (LOCKGATE_TLS_CA), or the name it "
            "was issued for with --tls-server-name",
        )
    except ssl.SSLError as exc:
        if "WRONG_VERSION_NUMBER" in str(exc) or "wrong version number" in str(exc):
            return TLSError(
                f"the broker at {target} does not speak TLS",
                hint="connect without --tls (a plain HOST:PORT), or give the broker "
                "tls_server_cert and tls_server_key",
            )
        return _refused(target, tls, exc)
    except (OSError, TimeoutError):
        return None
    try:
        # TLS 1.3: the broker judges the client certificate after the client's handshake is
        # done, so a refusal shows on the first read: an alert, or (gRPC sends none) the
        # connection closed at once. A broker that accepts answers our HTTP/2 preface.
        writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        first = await asyncio.wait_for(reader.read(1), min(timeout, 1.0))
    except ssl.SSLError as exc:
        return _refused(target, tls, exc)
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()
    return _refused(target, tls, None) if first == b"" else None


def _refused(target: str, tls: TLS, exc: ssl.SSLError | None) -> TLSError:
    hint = (
        "the broker wants a client certificate signed by its tls_client_ca: pass --tls-cert "
        "and --tls-key (LOCKGATE_TLS_CERT, LOCKGATE_TLS_KEY); check that it has not expired"
    )
    if exc is not None:
        alert = (exc.reason or str(exc)).lower().replace("_", " ")
        return TLSError(f"the broker at {target} refused the TLS handshake: {alert}", hint=hint)
    if not tls.cert_file:
        return TLSError(
            f"the broker at {target} requires a client certificate (mTLS) and this client "
            "sent none",
            hint=hint,
        )
    return TLSError(
        f"the broker at {target} refused this client's certificate {tls.cert_file} (expired, "
        "not yet valid, or not signed by the CA the broker trusts)",
        hint=hint,
    )
