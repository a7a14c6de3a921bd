"""Pieces the HTTP and WebSocket gateways share: keys from headers, problem+json answers,
JSON shapes of deliveries and stored events, and parameter parsing."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Middleware

from lockgate.broker import positions
from lockgate.broker.api import AuditRecord, Delivery, StoredEvent
from lockgate.broker.auth import Authenticator
from lockgate.broker.config import ConfigError, parse_duration
from lockgate.broker.errors import BrokerError, InvalidStart
from lockgate.broker.ids import MAX_ID, parse_decimal
from lockgate.broker.positions import FROM_NEW, StartSpec
from lockgate.broker.tls import CERTIFIED_CALLER, ClientIdentities, ServerTLS, peer_of_ssl
from lockgate.gateways._cejson import JsonValue, event_to_json
from lockgate.gateways._json import dumps
from lockgate.gateways.errors import (
    InvalidParameter,
    KeyRequired,
    http_status,
    listen_failed,
    retry_after,
)
from lockgate.policy import durations

if TYPE_CHECKING:
    from lockgate.gateways._guard import ConnectionGuard

__all__ = [
    "api_key",
    "audit_json",
    "delivery_json",
    "is_loopback_host",
    "json_response",
    "parse_duration_param",
    "parse_id",
    "parse_int",
    "parse_start",
    "parse_time_ms",
    "problem",
    "problem_json",
    "start_site",
    "stored_json",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
PROBLEM_TYPE = "https://lockgate.dev/problems/"


def api_key(headers: Mapping[str, str]) -> str | None:
    """The API key of ``Authorization: Bearer <key>`` or ``X-API-Key``; raises
    :class:`~broker.errors.Unauthenticated` for another authorization scheme."""
    wanted = ("authorization", "x-api-key")
    # An empty credential ("Bearer " from `-H "Authorization: Bearer $KEY"` with KEY unset)
    # counts as none: dev mode lets it in, and with keys it gets "no API key was sent".
    pairs = [
        (k.lower(), v)
        for k, v in headers.items()
        if k.lower() in wanted and v.strip().lower() not in ("", "bearer")
    ]
    return Authenticator.key_from_metadata(pairs)


def problem_json(err: BrokerError) -> dict[str, JsonValue]:
    status = http_status(err)
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    body: dict[str, JsonValue] = {
        "type": PROBLEM_TYPE + err.reason.lower().replace("_", "-"),
        "title": title,
        "status": status,
        "detail": err.message,
        "reason": err.reason,
        "hint": err.hint,
    }
    if err.metadata:
        body["metadata"] = dict(err.metadata)
    return body


def problem(err: BrokerError, extra: Mapping[str, JsonValue] | None = None) -> web.Response:
    """An ``application/problem+json`` answer for ``err`` (with ``Retry-After`` on 429/503)."""
    body = problem_json(err)
    if extra:
        body.update(extra)
    headers = {}
    after = retry_after(err)
    if after is not None:
        headers["Retry-After"] = str(after)
    if err.code.name == "UNAUTHENTICATED":
        headers["WWW-Authenticate"] = 'Bearer realm="lockgate"'
    return web.Response(
        status=int(body["status"]),  # type: ignore[arg-type]
        text=dumps(body),
        content_type="application/problem+json",
        headers=headers,
    )


def json_response(value: object, status: int = 200) -> web.Response:
    return web.Response(status=status, text=dumps(value), content_type="application/json")


def delivery_json(d: Delivery) -> dict[str, JsonValue]:
    """One delivery: assigned id (a string: 64-bit ids do not fit a JSON number), subject,
    attempt and the event in the CloudEvents JSON format."""
    out: dict[str, JsonValue] = {
        "id": str(d.id),
        "subject": d.subject,
        "attempt": d.attempt or 1,
        "event": event_to_json(d.event),
    }
    if d.reply_to:
        out["reply_to"] = d.reply_to
    return out


def audit_json(r: AuditRecord) -> dict[str, JsonValue]:
    """One audit record, as ``lockgate audit --json`` prints it too: the id a string (as
    every id), the time RFC 3339 in UTC with milliseconds."""
    when = dt.datetime.fromtimestamp(r.time_ms / 1000, dt.UTC)
    return {
        "id": str(r.id),
        "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "org": r.org,
        "agent": r.agent,
        "credential": r.credential,
        "action": r.action,
        "target": r.target,
        "outcome": r.outcome,
        "surface": r.surface,
        "peer": r.peer,
        "count": r.count,
        "detail": dict(r.detail),
    }


def stored_json(e: StoredEvent) -> dict[str, JsonValue]:
    return {
        "id": str(e.id),
        "subject": e.subject,
        "stored_time": str(e.stored_time.ToJsonString()),
        "policy_version": e.policy_version,
        "event": event_to_json(e.event),
    }


def parse_int(name: str, raw: str | None, default: int, lo: int, hi: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidParameter(name, raw, f"an integer from {lo} to {hi}") from None
    if not lo <= value <= hi:
        raise InvalidParameter(name, raw, f"an integer from {lo} to {hi}")
    return value


def parse_id(name: str, raw: object) -> int:
    """An assigned id, given as a JSON string or number."""
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise InvalidParameter(name, str(raw), "an event id (a string of digits)")
    text = str(raw)
    value = parse_decimal(text, MAX_ID)
    if not value:
        raise InvalidParameter(name, text[:100], "an event id (a string of digits)")
    return value


def parse_duration_param(name: str, raw: object, default: float, hi: float) -> float:
    if raw is None or raw == "":
        return default
    try:
        value = parse_duration(raw if isinstance(raw, int | float | str) else str(raw))
    except ConfigError:
        raise InvalidParameter(name, str(raw), "a duration like 500ms, 30s or 2m") from None
    if not 0 <= value <= hi:
        raise InvalidParameter(name, str(raw), f"a duration from 0 to {hi:g}s")
    return value


def parse_time_ms(name: str, raw: str | None) -> int:
    """Milliseconds since the epoch from a time in the one syntax (policy.durations: ``-1h``,
    RFC 3339, a date, or epoch milliseconds); 0 when absent."""
    if not raw:
        return 0
    try:
        ms = durations.parse_time_ms(raw)
    except durations.TimeError:
        ms = -1
    if not 0 <= ms <= _MAX_TIME_MS:
        raise InvalidParameter(name, raw[:100], "-1h, an RFC 3339 time or epoch milliseconds")
    return ms


def parse_start(raw: object) -> StartSpec:
    """A start in the one syntax (``broker.positions.parse_start``): ``"new"``, ``"all"``,
    ``"after:<id>"``, ``"since:<time>"`` or a time (events since then)."""
    if raw is None:
        return FROM_NEW
    if isinstance(raw, str):
        try:
            start = positions.parse_start(raw)
        except InvalidStart:
            raise InvalidParameter("start", raw, positions.START_SYNTAX) from None
        if start.since_ms > time.time() * 1000 + 60_000:
            raise InvalidParameter("start", raw, "a time in the past")
        return start
    raise InvalidParameter("start", str(raw), positions.START_SYNTAX)


def is_loopback_host(host: str | None) -> bool:
    """Whether ``host`` (a listener's host or a peer's address) is this machine only."""
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host or "")
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


@web.middleware
async def _network_needs_key(request: web.Request, handler: Handler) -> web.StreamResponse:
    """On a non-loopback listener, keyless calls from other hosts are refused: behind the
    gateway may be a broker in open dev mode, where a keyless caller is the admin. A caller
    that a client certificate names (mTLS) is not keyless."""
    try:
        certified = CERTIFIED_CALLER.get() is not None
        if network_call_without_key(
            request.remote, request.headers, request.query, certified=certified
        ):
            return problem(KeyRequired())
    except BrokerError as err:
        return problem(err)
    return await handler(request)


def network_call_without_key(
    remote: str | None,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    *,
    certified: bool = False,
) -> bool:
    """True for a call from another host that carries no API key and no client certificate
    (refused on a network listener); raises the key's error when the authorization header
    is malformed."""
    if is_loopback_host(remote) or certified:
        return False
    return not (api_key(headers) or query.get("api_key"))


def _certified_caller(identities: ClientIdentities) -> Middleware:
    """The middleware of an mTLS listener: the caller its verified certificate names is the
    request's :data:`~broker.tls.CERTIFIED_CALLER` (LocalAPI authenticates with it)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        try:
            caller = identities.of_peer(peer_of_ssl(ssl_object))
        except BrokerError as err:
            return problem(err)
        token = CERTIFIED_CALLER.set(caller)
        try:
            return await handler(request)
        finally:
            CERTIFIED_CALLER.reset(token)

    return middleware


class _TLSSite(web.BaseSite):
    """A TLS listener whose connections the guard counts from their TCP accept, with a
    bounded handshake (aiohttp's TCPSite hands the context to asyncio, whose server counts
    nothing before a handshake ends and waits 60 s for one)."""

    def __init__(
        self,
        runner: web.AppRunner,
        bind: tuple[str, int],
        guard: ConnectionGuard,
        context: ssl.SSLContext,
    ) -> None:
        super().__init__(runner)
        self._bind, self._guard, self._context = bind, guard, context
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self.port = bind[1]

    @property
    def name(self) -> str:
        return f"https://{self._bind[0]}:{self.port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        host, port = self._bind
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        if host == "localhost":
            host = "127.0.0.1"
        listener = socket.create_server((host, port), family=family, backlog=128)
        listener.setblocking(False)
        self._listener, self.port = listener, int(listener.getsockname()[1])
        self._accepting = asyncio.get_running_loop().create_task(
            self._guard.serve_tls(listener, server, self._context), name="gateway-tls-accept"
        )

    async def stop(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        if self._listener is not None:
            self._listener.close()
        self._guard.cancel_handshakes()
        await super().stop()


SERVER_NAME = "lockgate"
"""The ``Server`` header of every answer: aiohttp's default names its version and Python's,
which tells a scanner which advisories to try."""


def _hide_server_version() -> None:
    # aiohttp fills ``Server`` from this module global when a response has none, for its own
    # answers too (a 400 for a bad request head comes from inside aiohttp, before any
    # handler, middleware or on_response_prepare signal): the one place that covers them all.
    # tests/gateways/test_server_header.py fails if an aiohttp upgrade moves it.
    import aiohttp.web_response

    aiohttp.web_response.SERVER_SOFTWARE = SERVER_NAME  # type: ignore[attr-defined]


async def start_site(
    app: web.Application,
    listen: str,
    guard: ConnectionGuard | None = None,
    *,
    tls: ServerTLS | None = None,
    certified_callers: bool = True,
) -> tuple[web.AppRunner, int]:
    """Serves ``app`` on ``listen`` (HOST:PORT, port 0 picks one) within ``guard``'s limits
    (one guard for all the listeners of a process; a new one with the default limits when
    None), over TLS with ``tls``; returns the runner (call ``cleanup()`` to stop) and the
    bound port. With client certificates (mTLS) and ``certified_callers``, the caller a
    certificate names is the request's (in-process gateways; a standalone one only checks
    them, see gateways/cli.py). Raises ``FailedPrecondition`` (LISTEN_FAILED) when the
    address cannot be bound."""
    from lockgate.gateways._guard import LIMITS, ConnectionGuard

    _hide_server_version()
    host, _, port = listen.rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise InvalidParameter("listen", listen, "HOST:PORT, e.g. 127.0.0.1:8080")
    if tls is not None and tls.identities is not None and certified_callers:
        # First, so that every later middleware and handler sees the caller.
        app.middlewares.insert(0, _certified_caller(tls.identities))
    if not is_loopback_host(host.strip("[]") or "127.0.0.1"):
        app.middlewares.append(_network_needs_key)
    guard = guard or ConnectionGuard()
    app[LIMITS] = guard.limits
    runner = web.AppRunner(app, access_log=None, handle_signals=False, **guard.runner_options())
    await runner.setup()
    assert runner.server is not None  # set by setup()
    guard.install(runner.server)
    bind = (host.strip("[]") or "127.0.0.1", int(port or 0))
    site: web.BaseSite
    if tls is not None:
        site = _TLSSite(runner, bind, guard, tls.ssl_context())
    else:
        site = web.TCPSite(runner, *bind)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise listen_failed(listen, exc) from None
    if isinstance(site, _TLSSite):
        return runner, site.port
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = int(sockets[0].getsockname()[1]) if sockets else int(port or 0)
    return runner, bound
