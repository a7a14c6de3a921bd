"""What a durable consumer needs from the node that hosts it, and nothing more.

A consumer keeps its state through the store's roles (consumer state, dead letters, reading
the log), publishes dead letters through the node, and counts into its telemetry. The
in-process broker is one host; a test can be another.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

from lockgate.broker.auth import Principal
from lockgate.broker.store import (
    ConsumerRecord,
    ConsumerStateStore,
    DeadLetterRecord,
    DeadLetterStore,
    EventLog,
)
from lockgate.broker.telemetry import Telemetry

__all__ = ["DurableHost", "DurableStore"]


class DurableStore(EventLog, ConsumerStateStore, DeadLetterStore, Protocol):
    """The store roles a durable consumer uses."""


class DurableHost(Protocol):
    @property
    def store(self) -> DurableStore: ...

    @property
    def telemetry(self) -> Telemetry: ...

    @property
    def log(self) -> logging.Logger: ...

    def may_read(self, principal: Principal, subject: str) -> bool:
        """Whether ``principal`` may receive events of the concrete ``subject``."""

    async def fetch_frame(self, org: str, event_id: int) -> bytes | None:
        """The stored delivery frame of ``event_id`` (None once retention removed it)."""

    async def publish_dead_letters(
        self, rec: ConsumerRecord, records: Sequence[DeadLetterRecord]
    ) -> None:
        """Publishes the dead-lettered events on ``$dlq.<durable>``."""
