"""The signed POST of a webhook delivery (Standard Webhooks, see :mod:`gateways.webhook`) and
which secrets sign it: no network, no broker state."""

from __future__ import annotations

import time
from collections.abc import Sequence

from lockgate.broker.api import Delivery
from lockgate.clients._webhook import sign_webhook
from lockgate.gateways._cejson import event_to_json
from lockgate.gateways._json import dumpb

__all__ = ["CONTENT_TYPE", "signed_request", "signing_secrets"]

CONTENT_TYPE = "application/cloudevents+json"


def signing_secrets(found: Sequence[str], legacy: str) -> list[str]:
    """What a delivery is signed with: the durable's own secrets; for a durable from before
    they were per durable, its org's configured ``legacy`` secret (never one shared by every
    org); none (the delivery waits) without either."""
    return list(found) if found else [legacy] if legacy else []


def signed_request(
    org: str, durable: str, d: Delivery, secrets: Sequence[str]
) -> tuple[dict[str, str], bytes]:
    """The signed POST of one delivery (one signature per secret in use); raises one of
    ``UNENCODABLE`` for an event that has no structured-mode form."""
    doc = event_to_json(d.event)
    doc["lockgatesubject"] = d.subject
    if org:
        doc["lockgateorg"] = org
    doc["lockgatedurable"] = durable
    doc["lockgatedeliveryid"] = str(d.id)
    doc["lockgateattempt"] = d.attempt or 1
    raw = dumpb(doc)
    msg_id, ts = str(d.id), int(time.time())
    headers = {
        "Content-Type": CONTENT_TYPE,
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": " ".join(sign_webhook(s, msg_id, ts, raw) for s in secrets),
    }
    # The W3C trace context of the publisher as HTTP headers too (the CloudEvents
    # distributed-tracing extension), so the endpoint's server span continues the trace.
    for name in ("traceparent", "tracestate"):
        if name in d.event.attributes:
            headers[name] = d.event.attributes[name].ce_string
    return headers, raw
