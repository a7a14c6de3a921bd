"""The event log and the broker's state, behind a small Protocol.

``SqliteStore`` (embedded default) and, later, ``PostgresStore`` implement :class:`Store`.
The log keeps events in *batches*: one row per published batch per subject whose ``body``
is the concatenation of the events' delivery frames (see ``broker.wire``), so a write is
one row however many events it holds and a replay is a bytes copy.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "ApiKeyRecord",
    "Batch",
    "ConsumerRecord",
    "DeadLetterRecord",
    "PolicyVersionRecord",
    "RetentionRule",
    "Store",
]


@dataclass(frozen=True, slots=True)
class Batch:
    """Consecutive stored events of one subject: ids ``first_id..last_id`` in ``body``."""

    first_id: int
    last_id: int
    org: str
    subject: str
    count: int
    policy_version: str
    body: bytes
    publisher: str = ""
    """The principal that published it (for ``policy replay``): see ``broker.publisher``."""


@dataclass(slots=True)
class ConsumerRecord:
    """A durable subscription's configuration and position."""

    org: str
    name: str
    pattern: str
    queue: str = ""
    ack_wait_ms: int = 30_000
    max_deliveries: int = 5
    max_in_flight: int = 1000
    cursor: int = 0
    """Every event with a larger id is yet to be delivered."""
    pending: dict[int, int] = field(default_factory=dict)
    """Delivered, unacknowledged ids -> delivery attempts so far (0: due for redelivery)."""
    endpoint_url: str = ""


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    org: str
    durable: str
    id: int
    attempts: int
    dead_ms: int


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    key_id: str
    secret_hash: str
    org: str
    agent: str
    roles: tuple[str, ...]
    created_ms: int
    revoked: bool = False


@dataclass(frozen=True, slots=True)
class PolicyVersionRecord:
    """One version of the policy set: its files (name -> source) and where it came from."""

    version: str
    created_ms: int
    origin: str
    files: dict[str, str]
    active: bool = False


@dataclass(frozen=True, slots=True)
class RetentionRule:
    """Keep at most ``max_events`` and nothing older than ``max_age_ms`` (0: no limit)."""

    pattern: str = ">"
    max_age_ms: int = 0
    max_events: int = 0


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def append(self, batches: Sequence[Batch]) -> Awaitable[None]:
        """Stores ``batches``: queued at call time (so calls commit in call order, many per
        group commit), durable once the returned awaitable completes."""

    async def last_id(self) -> int: ...

    async def read_batches(
        self, org: str, after_id: int, *, subject: str | None = None, limit: int = 256
    ) -> list[Batch]:
        """Batches of ``org`` holding ids above ``after_id``, oldest first."""

    async def batch_containing(self, org: str, event_id: int) -> Batch | None: ...

    async def recent_batches(self, after_id: int) -> list[Batch]:
        """All orgs' batches above ``after_id`` (to rebuild the dedup window at start)."""

    async def save_consumer(self, record: ConsumerRecord) -> None: ...

    async def load_consumers(self) -> list[ConsumerRecord]: ...

    async def delete_consumer(self, org: str, name: str) -> bool: ...

    async def add_dead_letters(self, records: Sequence[DeadLetterRecord]) -> None: ...

    async def list_dead_letters(
        self, org: str, durable: str, after: tuple[int, int], limit: int
    ) -> list[DeadLetterRecord]: ...

    async def remove_dead_letters(
        self, org: str, durable: str, ids: Sequence[int] | None
    ) -> list[int]: ...

    async def put_key(self, record: ApiKeyRecord) -> None: ...

    async def get_key(self, key_id: str) -> ApiKeyRecord | None: ...

    async def list_keys(self) -> list[ApiKeyRecord]: ...

    async def revoke_key(self, key_id: str) -> bool: ...

    async def save_policy_version(self, record: PolicyVersionRecord, *, activate: bool) -> None:
        """Keeps a version (once per content hash) and, with ``activate``, marks it running."""

    async def list_policy_versions(self) -> list[PolicyVersionRecord]:
        """Every version, newest first."""

    async def trim(self, rules: Sequence[RetentionRule], now_ms: int) -> int:
        """Applies retention; returns the number of events removed."""
