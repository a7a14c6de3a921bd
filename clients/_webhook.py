"""Verify Lockgate webhook signatures on the receiving side (no server code imported).

The broker signs every webhook POST with HMAC-SHA256 over ``f"{timestamp}.{body}"`` and
sends ``X-Lockgate-Timestamp: <unix seconds>`` and ``X-Lockgate-Signature: v1=<hex>``
(several comma-separated ``v1=`` values while a secret rotates).

Example (aiohttp)::

    from lockgate.clients import WebhookSignatureError, verify_webhook

    async def receive(request):
        body = await request.read()
        try:
            verify_webhook(SECRET, request.headers, body)
        except WebhookSignatureError as exc:
            return web.Response(status=401, text=str(exc))
        ...
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

from lockgate.broker.v1.reasons import Reason
from lockgate.clients._errors import LockgateError

__all__ = ["WebhookSignatureError", "verify_webhook"]

SIGNATURE_HEADER = "x-lockgate-signature"
TIMESTAMP_HEADER = "x-lockgate-timestamp"


class WebhookSignatureError(LockgateError):
    """The webhook request is not signed by the broker: ``reason`` is MISSING_SIGNATURE,
    BAD_SIGNATURE or STALE_SIGNATURE."""

    default_reason: str = Reason.BAD_SIGNATURE


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
    does not match ``secret``, or its timestamp is more than ``tolerance`` seconds away."""
    sig = _header(headers, SIGNATURE_HEADER)
    ts_text = _header(headers, TIMESTAMP_HEADER)
    if not sig or not ts_text:
        raise WebhookSignatureError(
            "the request lacks X-Lockgate-Signature or X-Lockgate-Timestamp",
            reason=Reason.MISSING_SIGNATURE,
            hint="only accept webhook POSTs that carry both headers",
        )
    try:
        ts = int(ts_text.strip())
    except ValueError:
        raise WebhookSignatureError(
            f"X-Lockgate-Timestamp {ts_text[:20]!r} is not a number of seconds",
            reason=Reason.BAD_SIGNATURE,
            hint="the header holds unix seconds",
        ) from None
    key = secret.encode() if isinstance(secret, str) else secret
    expected = hmac.new(key, f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    offered = [p.strip()[3:] for p in sig.split(",") if p.strip().startswith("v1=")]
    if not any(hmac.compare_digest(expected, o) for o in offered):
        raise WebhookSignatureError(
            "the webhook signature does not match the body",
            reason=Reason.BAD_SIGNATURE,
            hint="check the secret; verify the raw body bytes, before any JSON parsing",
        )
    age = (time.time() if now is None else now) - ts
    if abs(age) > tolerance:
        raise WebhookSignatureError(
            f"the webhook was signed {age:.0f} s ago, more than the tolerance of {tolerance:g} s",
            reason=Reason.STALE_SIGNATURE,
            hint="reject replays; check that the receiver's clock is in sync",
        )
