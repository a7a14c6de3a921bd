"""The webhook sender: signs and POSTs one delivery and classifies the answer as an
:class:`Outcome` (ack, nack after a delay, or dead-letter; the table is in
:mod:`gateways.webhook`). No broker state here: the dispatchers act on the outcome."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp
from aiohttp.abc import AbstractResolver

from lockgate.broker.api import Delivery
from lockgate.gateways._report import UNENCODABLE, report_unencodable
from lockgate.gateways._webhook_guard import (
    GuardedResolver,
    PrivateAddress,
    failure_text,
    literal_refused,
)
from lockgate.gateways._webhook_signing import signed_request

__all__ = ["Outcome", "WebhookSender", "WebhookSettings"]


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """``[gateways.webhook]`` settings."""

    secret: str = ""
    org_secrets: Mapping[str, str] = field(default_factory=dict)
    timeout: float = 10.0
    backoff: tuple[float, ...] = (1.0, 2.0, 4.0)
    concurrency: int = 16
    max_retry_after: float = 3600.0
    allow_private: bool = False
    """Connect to private, loopback and other non-public addresses (the broker's
    ``webhook_allow_private``, which ``lockgate serve`` passes on)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to do with a delivery after its POST: ``ack``, ``nack`` (after ``delay``) or
    ``dead`` (dead-letter now); ``status`` is the HTTP status (0: no answer)."""

    action: str
    delay: float = 0.0
    status: int = 0
    detail: str = ""


def _retry_after(value: str | None, limit: float) -> float | None:
    if not value:
        return None
    try:
        return min(max(0.0, float(value)), limit)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(0.0, when.timestamp() - time.time()), limit)


class WebhookSender:
    """Signs and POSTs one delivery and classifies the answer (no broker state here)."""

    def __init__(self, settings: WebhookSettings, resolver: AbstractResolver | None = None) -> None:
        self.settings = settings
        self._http: aiohttp.ClientSession | None = None
        self.resolver = GuardedResolver(settings.allow_private, resolver)

    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(resolver=self.resolver, use_dns_cache=False),
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
                headers={"User-Agent": "lockgate-webhook/1"},
                trust_env=False,  # no proxy from the environment: the address checked is the peer
            )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def backoff(self, attempt: int) -> float:
        b = self.settings.backoff or (1.0,)
        return b[min(max(attempt, 1), len(b)) - 1]

    def request(
        self, org: str, durable: str, d: Delivery, secrets: Sequence[str]
    ) -> tuple[dict[str, str], bytes]:
        """The signed POST of one delivery (:func:`signed_request`)."""
        return signed_request(org, durable, d, secrets)

    async def deliver(
        self, url: str, org: str, durable: str, d: Delivery, secrets: Sequence[str]
    ) -> Outcome:
        retry = self.backoff(d.attempt or 1)
        if not secrets:
            return Outcome("nack", retry, 0, "no secret to sign with: rotate the durable's secret")
        try:
            headers, body = self.request(org, durable, d, secrets)
        except UNENCODABLE as exc:
            report_unencodable("webhook", d.id, d.subject, exc)
            return Outcome("dead", detail=f"the event cannot be encoded: {exc}")
        refused = literal_refused(url, self.settings.allow_private)
        if refused:
            return Outcome("nack", retry, 0, f"PrivateAddress: {refused}")
        try:
            async with self.http().post(
                url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                status = resp.status
                after = _retry_after(resp.headers.get("Retry-After"), self.settings.max_retry_after)
        except aiohttp.ClientConnectorError as exc:
            # aiohttp wraps what the resolver raised: name the refusal, not a DNS failure.
            cause = exc.os_error if isinstance(exc.os_error, PrivateAddress) else exc
            return Outcome("nack", retry, 0, failure_text(cause, url))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return Outcome("nack", retry, 0, failure_text(exc, url))
        if 300 <= status < 400:
            # Never followed: a redirect could lead anywhere, private addresses included.
            return Outcome(
                "nack", retry, status, f"the endpoint redirected ({status}); not followed"
            )
        if 200 <= status < 300:
            return Outcome("ack", status=status)
        if status == 410:
            return Outcome("dead", status=status, detail="the endpoint answered 410 Gone")
        if status == 429 and after is not None:
            return Outcome("nack", after, status)
        return Outcome("nack", retry, status, f"the endpoint answered {status}")
