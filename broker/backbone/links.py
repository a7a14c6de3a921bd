"""Connections to the backbones the registry pins orgs to: opened when an org is pinned,
bounded, shared by the orgs of one backbone, closed when no org is pinned there any more.

One :class:`BackboneLinks` per kind of connection (the fan-out backbone, the JetStream log)
on a node. :meth:`BackboneLinks.follow` takes the registry's pins (org -> backbone record);
an org that no record names, or whose record's endpoint is the node's own, stays on the
node's own backbone (:meth:`route` is None). Each other endpoint gets one link, opened in
the background by the ``opener`` (which bounds its connect, redacts credentials and keeps
reconnecting once connected, as the node's own connection does); an opening that fails is
retried with backoff while the endpoint is pinned. At most ``max_links`` links exist: the
orgs of a backbone beyond them fail closed (``Unavailable``), as do those of a backbone
that cannot be reached.

Example::

    links = BackboneLinks("nats://own:4222", open_log, close_log, what="log")
    links.follow_pins({"acme": BackboneRecord("eu-1", "nats://eu:4222", orgs=("acme",))})
    log = await links.ready("acme")          # the eu-1 link (None: the node's own)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from lockgate.broker.errors import Unavailable
from lockgate.broker.redaction import shown_url
from lockgate.broker.store import BackboneRecord
from lockgate.broker.v1.reasons import Reason

__all__ = ["MAX_LINKS", "BackboneLinks", "Route", "seq_offset"]

log = logging.getLogger("lockgate.backbone.links")

MAX_LINKS = 16
"""Backbones besides its own one node connects to at most."""
_RETRY_MIN_S = 0.5
_RETRY_MAX_S = 5.0
_SEQ_BITS = 40
"""Stream sequences of one backbone's log stay below 2**40; the backbone's slot sits above."""

T = TypeVar("T")


def seq_offset(endpoint: str) -> int:
    """What is added to the stream sequences of the log on ``endpoint`` (0: the node's own
    backbone): every node derives the same slot from the endpoint, so a durable's position
    names the log it lies in, and positions of two logs never compare equal by accident."""
    if not endpoint:
        return 0
    return (1 + zlib.crc32(endpoint.encode()) % 0xFFFF) << _SEQ_BITS


@dataclass(frozen=True, slots=True)
class Route:
    """Where an org's traffic goes: the record of its backbone and when this node learnt
    of the pin (Unix ms)."""

    record: BackboneRecord
    since_ms: int


@dataclass(eq=False)
class _Link(Generic[T]):
    endpoint: str
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    """Set after each opening attempt (successful or not)."""
    value: T | None = None
    error: str = ""
    task: asyncio.Task[None] | None = None


class BackboneLinks(Generic[T]):
    """The links of one kind to the pinned backbones (see the module docstring)."""

    def __init__(
        self,
        own: str,
        opener: Callable[[str], Awaitable[T]],
        closer: Callable[[T], Awaitable[None]],
        *,
        what: str,
        max_links: int = MAX_LINKS,
        on_link: Callable[[T, bool], None] | None = None,
    ) -> None:
        self._own = {u.strip() for u in own.split(",") if u.strip()}
        self._opener = opener
        self._closer = closer
        self._what = what
        self.max_links = max_links
        self.on_link = on_link
        """Told ``(link, True)`` when a link opens and ``(link, False)`` before it closes."""
        self._routes: dict[str, Route] = {}
        self._links: dict[str, _Link[T]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    # -- the registry's pins ----------------------------------------------------------------

    def follow_pins(self, pins: Mapping[str, BackboneRecord]) -> set[str]:
        """Routes each org as ``pins`` say; returns the orgs whose backbone changed. Links
        for newly pinned endpoints start opening; links no org uses any more close."""
        now = int(time.time() * 1000)
        routes: dict[str, Route] = {}
        for org, rec in pins.items():
            if rec.endpoint.strip() in self._own:
                continue  # pinned to the node's own backbone
            old = self._routes.get(org)
            same = old is not None and old.record.endpoint == rec.endpoint
            routes[org] = Route(rec, old.since_ms if same and old is not None else now)
        moved = {
            org
            for org in set(routes) | set(self._routes)
            if self.endpoint(org) != (routes[org].record.endpoint if org in routes else "")
        }
        self._routes = routes
        if self._closed:
            return moved
        wanted = {r.record.endpoint for r in routes.values()}
        for endpoint in [e for e in self._links if e not in wanted]:
            self._drop(endpoint)
        for endpoint in sorted(wanted):
            if endpoint not in self._links and len(self._links) < self.max_links:
                link: _Link[T] = _Link(endpoint)
                link.task = asyncio.create_task(
                    self._keep_opening(link), name=f"lockgate-link-{self._what}"
                )
                self._links[endpoint] = link
        return moved

    def route(self, org: str) -> Route | None:
        """The org's route (None: the node's own backbone)."""
        return self._routes.get(org)

    def endpoint(self, org: str) -> str:
        """The endpoint of the org's backbone ("": the node's own)."""
        r = self._routes.get(org)
        return r.record.endpoint if r is not None else ""

    def get(self, org: str) -> T | None:
        """The org's open link, None for the node's own backbone; raises ``Unavailable``
        when its backbone is not connected (yet, or at all)."""
        r = self._routes.get(org)
        if r is None:
            return None
        link = self._links.get(r.record.endpoint)
        if link is None or link.value is None:
            raise self._unavailable(org, r, link)
        return link.value

    async def ready(self, org: str) -> T | None:
        """As :meth:`get`, waiting for an opening in progress (bounded by the opener)."""
        r = self._routes.get(org)
        if r is None:
            return None
        link = self._links.get(r.record.endpoint)
        if link is not None and link.value is None and not link.error:
            await link.ready.wait()
        return self.get(org)

    @property
    def routed(self) -> bool:
        """Whether any org is pinned elsewhere than the node's own backbone."""
        return bool(self._routes)

    def opened(self, endpoint: str) -> T | None:
        """The open link to ``endpoint`` (None: none, or not open)."""
        link = self._links.get(endpoint)
        return link.value if link is not None else None

    def open_links(self) -> list[tuple[str, T]]:
        """``(endpoint, link)`` of every open link."""
        return [(e, k.value) for e, k in self._links.items() if k.value is not None]

    async def close(self) -> None:
        self._closed = True
        for endpoint in list(self._links):
            self._drop(endpoint)
        while self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    # -- opening and closing ----------------------------------------------------------------

    def _unavailable(self, org: str, r: Route, link: _Link[T] | None) -> Unavailable:
        shown = shown_url(r.record.endpoint)
        if link is None:
            why = f"this node connects to at most {self.max_links} other backbones"
        elif link.error:
            why = link.error
        else:
            why = "it is still connecting"
        return Unavailable(
            f"backbone {r.record.id!r} ({shown}) of org {org!r} is unavailable: {why}",
            reason=Reason.STORE_UNAVAILABLE,
            hint="retry; check that backbone (lockgate backbones list) or pin the org elsewhere",
            metadata={"org": org, "backbone": r.record.id},
        )

    async def _keep_opening(self, link: _Link[T]) -> None:
        wait = _RETRY_MIN_S
        while True:
            try:
                value = await self._opener(link.endpoint)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Unavailable, or a library's error: retried
                link.error = getattr(exc, "message", "") or str(exc) or type(exc).__name__
                log.warning("backbone.link.unreachable: %s: %s", self._what, link.error)
                link.ready.set()
                await asyncio.sleep(wait)
                wait = min(wait * 2, _RETRY_MAX_S)
                continue
            if self._links.get(link.endpoint) is not link:  # dropped while opening
                await self._closer(value)
                return
            link.value, link.error = value, ""
            link.ready.set()
            log.info(
                "backbone.link.open: %s on %s",
                self._what,
                shown_url(link.endpoint),
            )
            if self.on_link is not None:
                self.on_link(value, True)
            return

    def _drop(self, endpoint: str) -> None:
        link = self._links.pop(endpoint)
        if link.task is not None and not link.task.done():
            link.task.cancel()
        value, link.value = link.value, None
        if value is None:
            return
        if self.on_link is not None:
            self.on_link(value, False)
        task = asyncio.create_task(self._close_quietly(value), name="lockgate-link-close")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_quietly(self, value: T) -> None:
        with contextlib.suppress(Exception):
            await self._closer(value)
        log.info("backbone.link.closed: %s", self._what)
