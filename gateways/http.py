"""The HTTP gateway (aiohttp): publish CloudEvents, read the log, poll durables.

Routes (all under ``/v1``; the API key as ``Authorization: Bearer <key>``)::

    POST /v1/subjects/{subject}/events          publish: binary, structured or batched mode
    GET  /v1/events/{id}                        one stored event
    GET  /v1/events?subject=&since=&until=&after=&limit=&cloudevent_id=   a page; "next": cursor
    PUT  /v1/subscriptions/{durable}            create a durable (admin)
    GET  /v1/subscriptions/{durable}/events?wait=30s&max=100    long poll
    POST /v1/subscriptions/{durable}/acks       {"ack": [...], "nack": [...], "nack_delay": "5s"}
    GET  /v1/audit?since=&until=&org=&agent=&action=&outcome=&after=&limit=    (admin)
    GET  /metrics                               the broker's Prometheus metrics (admin)
    /v1/backbones[/{id}], /v1/config[/versions|/rollback]   the registry and the config
                                                store (admin; see gateways._cluster_http)
    /dashboard/, /v1/activity/*, /v1/deadletters[/redrive], /v1/policies/{versions,diff}
                                                the dashboard and its reads, inside
                                                ``lockgate serve`` only (gateways._dashboard_http)

Publish answers 200 when every event was accepted (duplicates count as accepted), 207
(Multi-Status) when some were rejected, and the rejection's own status (400, 403, 413, 429,
...) as ``application/problem+json`` when all were; the body always carries ``ids``,
``duplicates`` and ``errors``. Errors are problem+json with ``reason`` and ``hint``
(``gateways.errors`` holds the table).

Example::

    app = build_app(LocalAPI(broker, auth), HttpSettings())
    await serve_app(app, "127.0.0.1:8080")
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar, cast

from aiohttp import web

from lockgate.broker.api import (
    BrokerAPI,
    CloudEvent,
    Delivery,
    DurableOptions,
    LocalAPI,
    StoredEvent,
)
from lockgate.broker.audit import enter
from lockgate.broker.bounds import BOUNDS
from lockgate.broker.errors import BrokerError, NotFound
from lockgate.gateways._cebinary import from_binary, has_binary_headers, is_structured_type
from lockgate.gateways._cejson import JsonValue, event_from_json
from lockgate.gateways._cluster_http import add_cluster_routes
from lockgate.gateways._dashboard_http import add_dashboard_routes
from lockgate.gateways._guard import read_body
from lockgate.gateways._json import loads
from lockgate.gateways._report import UNENCODABLE, report_unencodable
from lockgate.gateways._slices import by_count, publish_in_slices
from lockgate.gateways._web import (
    api_key,
    audit_json,
    delivery_json,
    json_response,
    parse_duration_param,
    parse_id,
    parse_int,
    parse_start,
    parse_time_ms,
    problem,
    stored_json,
)
from lockgate.gateways.errors import (
    BodyTimeout,
    BodyTooLarge,
    HttpRefusal,
    InvalidParameter,
    MalformedJson,
    MethodNotAllowed,
    UnencodableEvent,
    UnsupportedMediaType,
)

__all__ = ["API_KEY", "HttpSettings", "add_routes", "build_app"]

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
API_KEY = web.AppKey("lockgate_api", BrokerAPI)
T = TypeVar("T")
OFF_LOOP_BYTES = 64 << 10
"""Publish bodies larger than this are decoded in a worker thread."""
log = logging.getLogger("lockgate.gateways.http")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """``[gateways.http]`` settings."""

    max_body_bytes: int = 1 << 20
    max_wait: float = 60.0
    """Longest long poll (``wait=``) a client may ask for, in seconds."""


SETTINGS = web.AppKey("lockgate_http_settings", HttpSettings)
_MIF = int(BOUNDS["max_in_flight"][1])
_ACK_WAIT = BOUNDS["ack_wait"][1]
_MD = int(BOUNDS["max_deliveries"][1])


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error answer is problem+json with a reason: the broker's errors, aiohttp's own
    (no route, wrong method, ...) and, as INTERNAL, anything unforeseen."""
    enter("http", request.remote or "")  # where this request's audit records come from
    try:
        return await handler(request)
    except (BodyTimeout, BodyTooLarge) as err:
        resp = problem(err)
        resp.force_close()  # the rest of the body is not worth waiting for
        return resp
    except BrokerError as err:
        return problem(err)
    except web.HTTPMethodNotAllowed as exc:
        resp = problem(MethodNotAllowed(request.method, request.path, exc.allowed_methods))
        resp.headers["Allow"] = ",".join(sorted(exc.allowed_methods))
        return resp
    except web.HTTPNotFound:
        where = f"{request.method} {request.path}"[:100]
        return problem(NotFound(f"no route for {where}", hint="see the HTTP API in the README"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return problem(HttpRefusal(exc.status, exc.reason))
    except Exception:
        log.exception("gateway.http.failed: %s %s", request.method, request.path[:100])
        return problem(BrokerError("the gateway failed unexpectedly", hint="report this bug"))


def _base_type(request: web.Request) -> str:
    return request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()


async def _json_body(request: web.Request) -> dict[str, object]:
    base = _base_type(request)
    if base not in ("application/json", ""):
        raise UnsupportedMediaType(base, "application/json")
    doc = loads(await read_body(request, request.app[SETTINGS].max_body_bytes) or b"{}")
    if not isinstance(doc, dict):
        raise MalformedJson("expected a JSON object")
    return doc


async def publish(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    subject = request.match_info["subject"]
    base = _base_type(request)
    # The media type decides: application/cloudevents* is structured (or batched) mode even
    # when ce-* headers come along; otherwise ce-specversion means binary mode.
    structured = is_structured_type(base)
    if structured and base not in (STRUCTURED, BATCH):
        raise UnsupportedMediaType(base, f"{STRUCTURED} or {BATCH}")
    if not structured and not has_binary_headers(request.headers.items()):
        raise UnsupportedMediaType(base, f"ce-* headers (binary mode), {STRUCTURED} or {BATCH}")
    key = api_key(request.headers)
    raw = await read_body(request, settings.max_body_bytes)
    headers = list(request.headers.items())
    if len(raw) > OFF_LOOP_BYTES:  # a 100,000-event batch held the loop 1.2 s
        parsed = await asyncio.to_thread(_parse, headers, base, structured, raw)
    else:
        parsed = _parse(headers, base, structured, raw)
    valid = [i for i, p in enumerate(parsed) if not isinstance(p, BrokerError)]
    events = [p for p in parsed if not isinstance(p, BrokerError)]
    ids = ["0"] * len(parsed)
    duplicates: list[int] = []
    errors: list[tuple[int, BrokerError]] = [
        (i, p) for i, p in enumerate(parsed) if isinstance(p, BrokerError)
    ]
    if events and "traceparent" in request.headers:
        _continue_trace(events, request.headers)
    if events:
        api = request.app[API_KEY]
        # In slices, so that a huge batch is many short turns of the broker's loop.
        result = await publish_in_slices(
            lambda part: api.publish(key, subject, part), events, by_count(len(events))
        )
        for pos, event_id in enumerate(result.ids):
            ids[valid[pos]] = str(event_id)
        duplicates = [valid[pos] for pos in result.duplicates]
        errors.extend((valid[pos], err) for pos, err in result.errors)
    errors.sort(key=lambda e: e[0])
    body: dict[str, JsonValue] = {
        "ids": list(ids),
        "duplicates": list(duplicates),
        "errors": [
            {"index": i, "reason": e.reason, "message": e.message, "hint": e.hint}
            for i, e in errors
        ],
    }
    if not errors:
        return json_response(body)
    if len(errors) < len(parsed):
        return json_response(body, 207)
    return problem(errors[0][1], body)


def _continue_trace(events: list[CloudEvent], headers: Mapping[str, str]) -> None:
    """The request's W3C ``traceparent``/``tracestate`` headers become the attributes of the
    events that carry none (the CloudEvents distributed-tracing extension), so the broker's
    publish span continues the HTTP caller's trace."""
    for ev in events:
        if "traceparent" not in ev.attributes:
            ev.attributes["traceparent"].ce_string = headers["traceparent"]
            if "tracestate" in headers and "tracestate" not in ev.attributes:
                ev.attributes["tracestate"].ce_string = headers["tracestate"]


def _parse(
    headers: list[tuple[str, str]], base: str, structured: bool, raw: bytes
) -> list[CloudEvent | BrokerError]:
    """The events of a publish body, each parsed or the error that refuses it; raises
    MalformedJson when the body as a whole is not what its media type says (pure: it runs in
    a worker thread for large bodies)."""
    if not structured:
        return [_attempt(lambda: from_binary(headers, raw))]
    if base == STRUCTURED:
        doc = loads(raw)
        return [_attempt(lambda: event_from_json(doc))]
    docs = loads(raw)
    if not isinstance(docs, list):
        raise MalformedJson(f"a {BATCH} body must be a JSON array")
    return [_attempt(lambda d=d: event_from_json(d)) for d in docs]  # type: ignore[misc]


def _attempt(fn: Callable[[], CloudEvent]) -> CloudEvent | BrokerError:
    try:
        return fn()
    except BrokerError as err:
        return err


async def get_event(request: web.Request) -> web.Response:
    event_id = parse_id("id", request.match_info["id"])
    stored = await request.app[API_KEY].get_event(api_key(request.headers), event_id)
    try:
        return json_response(stored_json(stored))
    except UNENCODABLE as exc:
        report_unencodable("http", stored.id, stored.subject, exc)
        raise UnencodableEvent(stored.id, str(exc)) from None


def _encoded(
    items: Sequence[T], encode: Callable[[T], dict[str, JsonValue]]
) -> tuple[list[JsonValue], list[int]]:
    """The JSON of each item, and the positions of those that cannot be encoded (skipped
    and reported, so one malformed stored event does not fail the whole page)."""
    out: list[JsonValue] = []
    skipped: list[int] = []
    for pos, item in enumerate(items):
        try:
            out.append(encode(item))
        except UNENCODABLE as exc:
            d = cast("StoredEvent | Delivery", item)
            report_unencodable("http", d.id, d.subject, exc)
            skipped.append(pos)
    return out, skipped


async def query_events(request: web.Request) -> web.Response:
    q = request.query
    after_raw = q.get("after", "")
    after = parse_id("after", after_raw) if after_raw else 0
    events, last = await request.app[API_KEY].query(
        api_key(request.headers),
        q.get("subject", ">"),
        after_id=after,
        start_ms=parse_time_ms("since", q.get("since")),
        end_ms=parse_time_ms("until", q.get("until")),
        limit=parse_int("limit", q.get("limit"), 100, 1, 1000),
        cloudevent_id=q.get("cloudevent_id", ""),
    )
    encoded, skipped = _encoded(events, stored_json)
    body: dict[str, JsonValue] = {"events": encoded, "next": str(last) if last else None}
    if skipped:
        body["skipped"] = [str(events[i].id) for i in skipped]
    return json_response(body)


_DURABLE_FIELDS = {
    "pattern",
    "endpoint_url",
    "ack_wait",
    "max_deliveries",
    "max_in_flight",
    "start",
}


async def put_subscription(request: web.Request) -> web.Response:
    doc = await _json_body(request)
    unknown = sorted(set(doc) - _DURABLE_FIELDS)
    if unknown:
        raise InvalidParameter(unknown[0], "...", "one of " + ", ".join(sorted(_DURABLE_FIELDS)))
    pattern = doc.get("pattern")
    if not isinstance(pattern, str) or not pattern:
        raise InvalidParameter("pattern", str(pattern), "a subject pattern such as orders.>")
    endpoint = doc.get("endpoint_url") or ""
    if not isinstance(endpoint, str):
        raise InvalidParameter("endpoint_url", str(endpoint), "an https:// URL")
    options = DurableOptions(
        start=parse_start(doc.get("start")),
        # 0 leaves a setting to the broker's default; the broker refuses the rest out of BOUNDS.
        max_in_flight=parse_int("max_in_flight", _str(doc.get("max_in_flight")), 0, 0, _MIF),
        ack_wait=parse_duration_param("ack_wait", doc.get("ack_wait"), 0.0, _ACK_WAIT),
        max_deliveries=parse_int("max_deliveries", _str(doc.get("max_deliveries")), 0, 0, _MD),
        endpoint_url=endpoint,
    )
    view = await request.app[API_KEY].create_durable(
        api_key(request.headers), request.match_info["durable"], pattern, options
    )
    return json_response(
        {
            "name": view.name,
            "pattern": view.pattern,
            "endpoint_url": view.endpoint_url,
            "ack_wait": view.ack_wait,
            "max_deliveries": view.max_deliveries,
            "max_in_flight": view.max_in_flight,
            # Set only by the call that created a webhook durable: shown once.
            **({"webhook_secret": view.webhook_secret} if view.webhook_secret else {}),
        }
    )


def _str(value: object) -> str | None:
    return None if value is None else str(value)


async def poll(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    q = request.query
    wait = parse_duration_param("wait", q.get("wait"), 0.0, settings.max_wait)
    api, key, durable = (
        request.app[API_KEY],
        api_key(request.headers),
        request.match_info["durable"],
    )
    deliveries = await api.fetch(key, durable, parse_int("max", q.get("max"), 100, 1, 10_000), wait)
    encoded, skipped = _encoded(deliveries, delivery_json)
    body: dict[str, JsonValue] = {"events": encoded}
    if skipped:
        # Dead-lettered, so they are neither redelivered forever nor silently lost.
        ids = [deliveries[i].id for i in skipped]
        with contextlib.suppress(BrokerError):  # e.g. no longer pending: nothing to do
            await api.acknowledge(key, durable, [], [], term_ids=ids)
        body["skipped"] = [str(i) for i in ids]
    return json_response(body)


async def acks(request: web.Request) -> web.Response:
    doc = await _json_body(request)
    ack_raw, nack_raw = doc.get("ack") or [], doc.get("nack") or []
    if not isinstance(ack_raw, list) or not isinstance(nack_raw, list):
        raise InvalidParameter("ack", str(ack_raw)[:40], "lists of event ids")
    ack = [parse_id("ack", i) for i in ack_raw]
    nack = [parse_id("nack", i) for i in nack_raw]
    delay = parse_duration_param("nack_delay", doc.get("nack_delay"), 0.0, 86400.0)
    await request.app[API_KEY].acknowledge(
        api_key(request.headers), request.match_info["durable"], ack, nack, delay
    )
    return json_response({"acked": len(ack), "nacked": len(nack)})


async def audit_records(request: web.Request) -> web.Response:
    """A page of the audit log (the admin role), oldest first; ``next`` is the cursor."""
    q = request.query
    after_raw = q.get("after", "")
    records, last = await request.app[API_KEY].audit(
        api_key(request.headers),
        after_id=parse_id("after", after_raw) if after_raw else 0,
        start_ms=parse_time_ms("since", q.get("since")),
        end_ms=parse_time_ms("until", q.get("until")),
        org=q.get("org", ""),
        agent=q.get("agent", ""),
        action=q.get("action", ""),
        outcome=q.get("outcome", ""),
        limit=parse_int("limit", q.get("limit"), 100, 1, 1000),
    )
    return json_response(
        {"records": [audit_json(r) for r in records], "next": str(last) if last else None}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/subjects/{subject}/events", publish)
    app.router.add_get("/v1/events/{id}", get_event)
    app.router.add_get("/v1/events", query_events)
    app.router.add_put("/v1/subscriptions/{durable}", put_subscription)
    app.router.add_get("/v1/subscriptions/{durable}/events", poll)
    app.router.add_post("/v1/subscriptions/{durable}/acks", acks)
    app.router.add_get("/v1/audit", audit_records)
    add_cluster_routes(app, lambda request: request.app[API_KEY], _json_body)
    app.router.add_get("/metrics", metrics)


async def metrics(request: web.Request) -> web.Response:
    """The broker's Prometheus metrics (the admin role: the same credentials as the API)."""
    body, content_type = await request.app[API_KEY].metrics(api_key(request.headers))
    # aiohttp's content_type takes no parameters; the Prometheus type carries a version.
    return web.Response(body=body, headers={"Content-Type": content_type})


def build_app(api: BrokerAPI, settings: HttpSettings | None = None) -> web.Application:
    """The aiohttp application of the HTTP gateway."""
    app = web.Application(middlewares=[_errors])
    app[API_KEY] = api
    app[SETTINGS] = settings or HttpSettings()
    add_routes(app)
    if isinstance(api, LocalAPI):  # the dashboard reads the broker in this process
        add_dashboard_routes(app, api, _json_body)
    return app
