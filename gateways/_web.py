"""Pieces the HTTP and WebSocket gateways share: keys from headers, problem+json answers,
JSON shapes of deliveries and stored events, and parameter parsing."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING

from aiohttp import web

from lockgate.broker import positions
from lockgate.broker.api import AuditRecord, Delivery, StoredEvent
from lockgate.broker.auth import Authenticator
from lockgate.broker.config import ConfigError, parse_duration
from lockgate.broker.errors import BrokerError, InvalidStart
from lockgate.broker.ids import MAX_ID, parse_decimal
from lockgate.broker.positions import FROM_NEW, StartSpec
from lockgate.gateways._cejson import JsonValue, event_to_json
from lockgate.gateways._json import dumps
from lockgate.gateways.errors import (
    InvalidParameter,
    http_status,
    retry_after,
)
from lockgate.policy import durations

if TYPE_CHECKING:
    pass

__all__ = [
    "api_key",
    "audit_json",
    "delivery_json",
    "json_response",
    "parse_duration_param",
    "parse_id",
    "parse_int",
    "parse_start",
    "parse_time_ms",
    "problem",
    "problem_json",
    "stored_json",
    "time_json",
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


def time_json(ms: int) -> str:
    """A Unix-ms time as every JSON answer shows it: RFC 3339 in UTC with milliseconds.

    >>> time_json(1_700_000_000_123)
    '2023-11-14T22:13:20.123Z'
    """
    when = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def audit_json(r: AuditRecord) -> dict[str, JsonValue]:
    """One audit record, as ``lockgate audit --json`` prints it too: the id a string (as
    every id), the time as :func:`time_json`."""
    return {
        "id": str(r.id),
        "time": time_json(r.time_ms),
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
