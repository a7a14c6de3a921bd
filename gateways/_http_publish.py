"""``POST /v1/subjects/{subject}/events``: publish CloudEvents in binary, structured or
batched mode.

Answers 200 when every event was accepted (duplicates count as accepted), 207 (Multi-Status)
when some were rejected, and the rejection's own status as problem+json when all were; the
body always carries ``ids``, ``duplicates`` and ``errors``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from aiohttp import web

from lockgate.broker.api import CloudEvent
from lockgate.broker.errors import BrokerError
from lockgate.gateways._cebinary import from_binary, has_binary_headers, is_structured_type
from lockgate.gateways._cejson import JsonValue, event_from_json
from lockgate.gateways._guard import read_body
from lockgate.gateways._http_app import API_KEY, SETTINGS, base_type
from lockgate.gateways._json import loads
from lockgate.gateways._slices import by_count, publish_in_slices
from lockgate.gateways._web import api_key, json_response, problem
from lockgate.gateways.errors import MalformedJson, UnsupportedMediaType

__all__ = ["BATCH", "OFF_LOOP_BYTES", "STRUCTURED", "publish"]

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
OFF_LOOP_BYTES = 64 << 10
"""Publish bodies larger than this are decoded in a worker thread."""


async def publish(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    subject = request.match_info["subject"]
    base = base_type(request)
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
