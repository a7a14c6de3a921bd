"""How the gateways report what they skip or survive, under stable event names.

Log lines start with the event name, then ``key=value`` pairs, so they can be searched and
alerted on:

* ``gateway.egress.unencodable``: an egress (HTTP, WebSocket, NATS, webhook) met a stored
  event it cannot encode (e.g. a timestamp attribute without an RFC 3339 form, written before
  ingress validated attribute values). It skips the event and goes on with the next; a
  durable egress dead-letters it (``$dlq.<durable>``), so it is neither redelivered forever
  nor lost. Counted in the ``lockgate.gateway.events.unencodable`` metric.
* ``gateway.ingest.error``: an ingest loop (Redis, NATS) got an error from its client
  library or the broker; it logs it and resumes after a backoff (``clients.Backoff``, the
  one rule for retry loops). Counted in
  ``lockgate.gateway.ingest.errors``.

Example::

    try:
        text = encode(delivery)
    except UNENCODABLE as exc:
        report_unencodable("ws", delivery.id, delivery.subject, exc)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from functools import cache

from opentelemetry import metrics

from lockgate.clients._backoff import Backoff

__all__ = [
    "UNENCODABLE",
    "observe_connections",
    "report_ingest_error",
    "report_unencodable",
    "supervise",
]

log = logging.getLogger("lockgate.gateways")

UNENCODABLE = (ValueError, TypeError, UnicodeError, OverflowError)
"""What encoding a malformed stored event raises (protobuf's JSON and header encoders)."""


@cache
def _counters() -> tuple[metrics.Counter, metrics.Counter]:
    meter = metrics.get_meter("lockgate.gateways")
    return (
        meter.create_counter(
            "lockgate.gateway.events.unencodable",
            unit="{event}",
            description="stored events an egress skipped because it cannot encode them",
        ),
        meter.create_counter(
            "lockgate.gateway.ingest.errors",
            unit="{error}",
            description="errors an ingest loop survived",
        ),
    )


def observe_connections(
    open_now: Callable[[], int], refused: Callable[[], int], sockets: Callable[[], int]
) -> None:
    """Gauges of the HTTP/WebSocket listeners' open connections (``surface`` = ``http``,
    WebSocket ones included) and of the WebSocket sessions among them (``ws``), and a
    counter of those refused at their limits (read when the metrics are collected)."""
    meter = metrics.get_meter("lockgate.gateways")

    def opened(_: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        return [
            metrics.Observation(open_now(), {"surface": "http"}),
            metrics.Observation(sockets(), {"surface": "ws"}),
        ]

    def refusals(_: metrics.CallbackOptions) -> Iterable[metrics.Observation]:
        return [metrics.Observation(refused(), {"surface": "http"})]

    meter.create_observable_gauge(
        "lockgate.gateway.connections",
        callbacks=[opened],
        unit="{connection}",
        description="open connections of the HTTP and WebSocket listeners",
    )
    meter.create_observable_counter(
        "lockgate.gateway.connections.refused",
        callbacks=[refusals],
        unit="{connection}",
        description="connections refused at the listeners' limits",
    )


def report_unencodable(egress: str, event_id: int, subject: str, exc: BaseException) -> None:
    """Logs and counts one skipped event."""
    _counters()[0].add(1, {"egress": egress})
    log.warning(
        "gateway.egress.unencodable egress=%s id=%d subject=%s problem=%s",
        egress,
        event_id,
        subject,
        exc,
    )


def report_ingest_error(source: str, exc: BaseException, delay: float) -> None:
    """Logs and counts one error an ingest loop survived (it resumes after ``delay``)."""
    _counters()[1].add(1, {"source": source})
    log.warning(
        "gateway.ingest.error source=%s error=%s: %s retry_in=%.2fs",
        source,
        type(exc).__name__,
        exc,
        delay,
    )


async def supervise(
    source: str,
    run: Callable[[], Awaitable[None]],
    backoff: Backoff,
    stopping: asyncio.Event | None = None,
) -> None:
    """Runs ``run`` for ever: again after any error it raises (reported, then a backoff
    delay) and again, after a short pause, when it returns. Cancel the task to stop it, or
    set ``stopping`` and let ``run`` return (for loops whose library may not survive a
    cancel: redis-py with hiredis can swallow one in a blocking read and wait for ever)."""
    while True:
        try:
            await run()
            if stopping is not None and stopping.is_set():
                return
            backoff.reset()
            delay = backoff.next_delay()
        except Exception as exc:  # the loop must outlive whatever its libraries raise
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # A library turned our cancel into its own error (redis-py's reads can):
                # stopping must still stop, or the caller's stop() waits for ever.
                raise asyncio.CancelledError from exc
            delay = backoff.next_delay()
            report_ingest_error(source, exc, delay)
        await asyncio.sleep(delay)
