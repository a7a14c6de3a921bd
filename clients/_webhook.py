"""Lockgate webhook signatures, on the Standard Webhooks scheme (no server code imported).

Every webhook POST carries the event as a CloudEvent in structured mode
(``Content-Type: application/cloudevents+json``): its attributes, its data, and the broker's
``lockgatesubject``, ``lockgateorg``, ``lockgatedurable`` and ``lockgateattempt``, all in the
body, so everything a receiver acts on is signed. The signature covers the message id, the
timestamp and the body::

    webhook-id: <event id>
    webhook-timestamp: <unix seconds>
    webhook-signature: v1,<base64 HMAC-SHA256(key, f"{id}.{timestamp}.{body}")>

Several space-separated ``v1,`` values are sent while a secret rotates. Each webhook durable
has its own secret (``whsec_`` and base64 of the key bytes, returned once when the durable
is created or its secret rotated); any other secret string is used as its UTF-8 bytes. Any
Standard Webhooks library verifies these too.

Example (aiohttp)::

    from lockgate.clients import WebhookSignatureError, verify_webhook

    async def receive(request):
        body = await request.read()
        try:
            verify_webhook(SECRET, request.headers, body)
        except WebhookSignatureError as exc:
            return web.Response(status=401, text=str(exc))
        event = json.loads(body)  # check event["lockgateorg"] is the org you expect
        ...
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping

from lockgate.broker.v1.reasons import Reason
from lockgate.clients._errors import LockgateError

__all__ = ["WebhookSignatureError", "sign_webhook", "verify_webhook", "webhook_key"]

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"


class WebhookSignatureError(LockgateError):
    """The webhook request is not signed by the broker: ``reason`` is MISSING_SIGNATURE,
    BAD_SIGNATURE or STALE_SIGNATURE."""

    default_reason: str = Reason.BAD_SIGNATURE


def webhook_key(secret: str | bytes) -> bytes:
    """The HMAC key of a secret: the bytes a ``whsec_`` secret encodes, else its UTF-8 bytes."""
    if isinstance(secret, bytes):
        return secret
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            pass
    return secret.encode()


def sign_webhook(secret: str | bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """One ``webhook-signature`` entry: ``v1,`` and the base64 HMAC-SHA256 of
    ``f"{msg_id}.{timestamp}.{body}"``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    mac = hmac.new(webhook_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    for k, v in headers.items():
        if k.lower() == name:
            return v
    return None


def verify_webhook(
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance: float = 300,
    now: float | None = None,
) -> None:
    """Checks a webhook's signature; raises :class:`WebhookSignatureError` when it is missing,
    does not match ``secret`` (the id, the timestamp or any byte of the body changed), or its
    timestamp is more than ``tolerance`` seconds away."""
    msg_id = _header(headers, ID_HEADER)
    sig = _header(headers, SIGNATURE_HEADER)
    ts_text = _header(headers, TIMESTAMP_HEADER)
    if not sig or not ts_text or not msg_id:
        raise WebhookSignatureError(
            "the request lacks webhook-id, webhook-timestamp or webhook-signature",
            reason=Reason.MISSING_SIGNATURE,
            hint="only accept webhook POSTs that carry all three headers",
        )
    try:
        ts = int(ts_text.strip())
    except ValueError:
        raise WebhookSignatureError(
            f"webhook-timestamp {ts_text[:20]!r} is not a number of seconds",
            reason=Reason.BAD_SIGNATURE,
            hint="the header holds unix seconds",
        ) from None
    expected = sign_webhook(secret, msg_id, ts, body)
    offered = [p for p in sig.split() if p.startswith("v1,")]
    if not any(hmac.compare_digest(expected, o) for o in offered):
        raise WebhookSignatureError(
            "the webhook signature does not match its id, timestamp and body",
            reason=Reason.BAD_SIGNATURE,
            hint="check the durable's secret; verify the raw body bytes, before any JSON parsing",
        )
    age = (time.time() if now is None else now) - ts
    if abs(age) > tolerance:
        raise WebhookSignatureError(
            f"the webhook was signed {age:.0f} s ago, more than the tolerance of {tolerance:g} s",
            reason=Reason.STALE_SIGNATURE,
            hint="reject replays; check that the receiver's clock is in sync",
        )
