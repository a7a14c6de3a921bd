"""What the ingest gateways (Redis, NATS) share: entries to events, and dead-letter records.

An entry is JSON: either a structured CloudEvent (it has ``specversion``) or
``{"data": <any JSON>, "id"?: str, "source"?: str, "type"?: str}``, from which the gateway
builds a CloudEvent (``datacontenttype: application/json``; defaults for id, source and type
come from where the entry was read, so a re-read entry keeps its id and is deduplicated).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from lockgate.broker.api import CloudEvent
from lockgate.broker.errors import BrokerError, InvalidEvent
from lockgate.gateways._cejson import event_from_json
from lockgate.gateways._json import dumps, loads

__all__ = ["dead_letter_record", "parse_entry", "shorthand_event"]

_SHORTHAND = {"data", "id", "source", "type"}


def parse_entry(raw: bytes | str, default_id: str, source: str, type_: str) -> CloudEvent:
    """The event of one entry; raises a :class:`BrokerError` (MALFORMED_JSON, INVALID_EVENT)."""
    doc = loads(raw)
    if not isinstance(doc, dict):
        raise InvalidEvent(
            f"the entry is a JSON {type(doc).__name__}, not an object",
            reason="INVALID_EVENT",
            hint='send a CloudEvent (structured JSON) or {"data": ...}',
        )
    if "specversion" in doc:
        return event_from_json(doc)
    if "data" not in doc or set(doc) - _SHORTHAND:
        extra = sorted(set(doc) - _SHORTHAND)
        raise InvalidEvent(
            'the entry is neither a CloudEvent (no specversion) nor {"data": ...}'
            + (f" (unexpected {', '.join(extra[:3])})" if extra else ""),
            reason="INVALID_EVENT",
            hint='send a CloudEvent (structured JSON) or {"data": ..., "type"?: ...}',
        )
    return shorthand_event(doc, default_id, source, type_)


def shorthand_event(
    doc: Mapping[str, object], default_id: str, source: str, type_: str
) -> CloudEvent:
    """The event of ``{"data": ..., "id"?, "source"?, "type"?}`` (JSON data; the defaults
    fill what is missing); raises :class:`InvalidEvent` for text with no UTF-8 form."""
    try:
        ev = CloudEvent(
            id=str(doc.get("id") or default_id),
            source=str(doc.get("source") or source),
            spec_version="1.0",
            type=str(doc.get("type") or type_),
        )
        ev.attributes["datacontenttype"].ce_string = "application/json"
        ev.text_data = dumps(doc["data"])
    except UnicodeEncodeError:  # a lone surrogate ("\\ud800") cannot be stored as UTF-8
        raise InvalidEvent(
            "the entry holds a lone UTF-16 surrogate (an invalid \\u escape)",
            reason="INVALID_EVENT",
            hint="send valid Unicode text",
        ) from None
    return ev


def dead_letter_record(origin: str, raw: bytes | str, err: BrokerError) -> str:
    """The JSON line a dead-letter list keeps for a refused entry."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return dumps(
        {
            "reason": err.reason,
            "message": err.message,
            "hint": err.hint,
            "origin": origin,
            "time_ms": int(time.time() * 1000),
            "entry": text,
        }
    )
