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
(``gateways.errors`` holds the table). Publishing is in ``_http_publish``, the problem+json
answers in ``_http_problems``, the application's keys and settings in ``_http_app``.

Example::

    app = build_app(LocalAPI(broker, auth), HttpSettings())
    await serve_app(app, "127.0.0.1:8080")
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import TypeVar, cast

from aiohttp import web

from lockgate.broker.api import BrokerAPI, Delivery, DurableOptions, LocalAPI, StoredEvent
from lockgate.broker.bounds import BOUNDS
from lockgate.broker.errors import BrokerError
from lockgate.gateways._cejson import JsonValue
from lockgate.gateways._cluster_http import add_cluster_routes
from lockgate.gateways._dashboard_http import add_dashboard_routes
from lockgate.gateways._http_app import API_KEY, SETTINGS, HttpSettings, json_body
from lockgate.gateways._http_problems import problems
from lockgate.gateways._http_publish import publish
from lockgate.gateways._report import UNENCODABLE, report_unencodable
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
    stored_json,
)
from lockgate.gateways.errors import InvalidParameter, UnencodableEvent

__all__ = ["API_KEY", "HttpSettings", "add_routes", "build_app"]

T = TypeVar("T")
_MIF = int(BOUNDS["max_in_flight"][1])
_ACK_WAIT = BOUNDS["ack_wait"][1]
_MD = int(BOUNDS["max_deliveries"][1])


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
    doc = await json_body(request)
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
    doc = await json_body(request)
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
    add_cluster_routes(app, lambda request: request.app[API_KEY], json_body)
    app.router.add_get("/metrics", metrics)


async def metrics(request: web.Request) -> web.Response:
    """The broker's Prometheus metrics (the admin role: the same credentials as the API)."""
    body, content_type = await request.app[API_KEY].metrics(api_key(request.headers))
    # aiohttp's content_type takes no parameters; the Prometheus type carries a version.
    return web.Response(body=body, headers={"Content-Type": content_type})


def build_app(api: BrokerAPI, settings: HttpSettings | None = None) -> web.Application:
    """The aiohttp application of the HTTP gateway."""
    app = web.Application(middlewares=[problems])
    app[API_KEY] = api
    app[SETTINGS] = settings or HttpSettings()
    add_routes(app)
    if isinstance(api, LocalAPI):  # the dashboard reads the broker in this process
        add_dashboard_routes(app, api, json_body)
    return app
