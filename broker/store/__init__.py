"""The event log and the broker's state, behind role Protocols.

Each role is its own Protocol so that backends can be mixed (the log on NATS JetStream,
consumer state and metadata on PostgreSQL): :class:`EventLog`, :class:`ConsumerStateStore`,
:class:`DeadLetterStore`, :class:`KeyStore`, :class:`PolicyVersionStore`, :class:`AuditStore`,
:class:`ConversationStore`,
:class:`RegistryStore` (the backbone registry), :class:`ConfigStore` (the versioned live
settings).
:class:`Store` is
all of them with a life cycle; ``SqliteStore`` (the embedded default) implements it.
:class:`MetadataStore` is every role but the log, with a life cycle: what ``PgStore``
(``broker.store.postgres``, cluster mode) implements beside the JetStream log.

The log keeps events in *batches*: one row per published batch per subject whose ``body``
is the concatenation of the events' delivery frames (see ``broker.wire``), so a write is
one row however many events it holds and a replay is a bytes copy. Every batch gets a
*sequence* when it commits (``Batch.seq``): the log's own position, increasing in commit
order. Snowflake ids are the public event ids and order history queries; tailing the log
(replay, durable consumers) follows the sequence, because a batch with a smaller id may
commit after one with a larger id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol, runtime_checkable

OnStored = Callable[[list[int]], None]
"""What :meth:`EventLog.append` calls with a write's sequences once it is stored."""


def call_when_stored(
    stored: Awaitable[list[int]], on_stored: OnStored | None
) -> Awaitable[list[int]]:
    """``stored``, calling ``on_stored`` once it succeeds: the :meth:`EventLog.append`
    contract for logs that learn of a commit from a future (a loop turn after it)."""
    if on_stored is None:
        return stored
    fut = asyncio.ensure_future(stored)

    def done(f: asyncio.Future[list[int]]) -> None:
        if not f.cancelled() and f.exception() is None:
            on_stored(f.result())

    fut.add_done_callback(done)
    return fut


__all__ = [
    "SCAN_BUDGET",
    "AgentKeyRecord",
    "ApiKeyRecord",
    "AuditQuery",
    "AuditRecord",
    "AuditStore",
    "BackboneRecord",
    "Batch",
    "CommitFeed",
    "ConfigStore",
    "ConfigVersionRecord",
    "ConsumerRecord",
    "ConsumerStateStore",
    "ConversationRecord",
    "ConversationStore",
    "DeadLetterRecord",
    "DeadLetterStore",
    "EventLog",
    "GroupKeyRecord",
    "KeyStore",
    "LogPosition",
    "LogScan",
    "MemberRecord",
    "MetadataStore",
    "OnStored",
    "PolicyVersionRecord",
    "PolicyVersionStore",
    "ReceiptRecord",
    "RegistryConflict",
    "RegistryStore",
    "RetentionRule",
    "Store",
    "call_when_stored",
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
    seq: int = 0
    """Its position in commit order, assigned by the log when it commits (0 before)."""


class LogPosition(NamedTuple):
    """A point in the log: every batch with a smaller ``seq`` is behind it, and so are the
    events of the batch at ``seq`` whose id is at most ``id`` (0: none of them).

    ``LogPosition(0, 0)`` is the beginning; after reading batch ``b`` to its end a reader
    stands at ``LogPosition(b.seq + 1, 0)``.
    """

    seq: int
    id: int = 0

    def includes(self, batch_seq: int, event_id: int) -> bool:
        """Whether the event ``event_id`` of the batch at ``batch_seq`` is behind this."""
        return batch_seq < self.seq or (batch_seq == self.seq and event_id <= self.id)


class LogScan(NamedTuple):
    """One bounded step of a filtered read of the log (see :meth:`EventLog.scan_log`)."""

    batches: list[Batch]
    """The batches found whose subject matched, in the order read."""
    next: int
    """Where the next step starts: a sequence (``scan_log``) or an id (``scan_batches``)."""
    done: bool
    """The step reached the end of what is stored: nothing lies beyond ``next`` yet."""


SCAN_BUDGET = 4096
"""Batches a filtered read looks at in one step, matched or not: a pattern that matches
little of a large org costs a bounded step, and the reader serves other reads between
steps."""


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
    position: LogPosition = field(default_factory=lambda: LogPosition(0, 0))
    """Everything behind it was handed out (or did not match); the rest is yet to come."""
    pending: dict[int, int] = field(default_factory=dict)
    """Delivered, unacknowledged ids -> delivery attempts so far (0: due for redelivery)."""
    endpoint_url: str = ""
    delivered_id: int = 0
    """The id of the last event handed out for the first time (for display)."""
    owner: str = ""
    """Who created it (agent and roles, as ``broker.publisher`` encodes them): the durable
    reads with their permission. "" for durables created before it was recorded: they read
    as an agent without roles."""
    webhook_secrets: list[tuple[str, int]] = field(default_factory=list)
    """A webhook durable's signing secrets: the current one (until 0) first, then rotated-out
    ones with the time (ms) they stop being used. Deliveries are signed with each."""


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
    expires_ms: int = 0
    """When the key stops working (Unix ms; 0: never): ``--ttl``, or the end of the grace
    period after a rotation."""
    replaced_by: str = ""
    """The id of the key that replaced it (``lockgate keys rotate``)."""


@dataclass(frozen=True, slots=True)
class PolicyVersionRecord:
    """One version of the policy set: its files (name -> source) and where it came from."""

    version: str
    created_ms: int
    origin: str
    files: dict[str, str]
    active: bool = False


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One entry of the audit log: who (``org``, ``agent``, ``credential``: an API key id),
    what (``action``, ``target``), when (``time_ms``), from where (``surface``: grpc, http,
    ws, cli or broker; ``peer``: the caller's address) and the ``outcome`` (ok, denied,
    failed). ``count`` > 1: that many alike actions aggregated into one record (see
    ``broker.audit``); ``detail`` carries the rest (the denying rule, a policy version...)."""

    time_ms: int
    action: str
    outcome: str = "ok"
    org: str = ""
    agent: str = ""
    credential: str = ""
    target: str = ""
    surface: str = ""
    peer: str = ""
    count: int = 1
    detail: Mapping[str, str] = field(default_factory=dict)
    id: int = 0
    """Given by the store when it is written: increasing in write order, never reused."""


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Which audit records to read: those with an id above ``after_id`` (the paging cursor),
    a time in ``[start_ms, end_ms)`` (0: unbounded), of ``org`` (None: every org) and, when
    not empty, of ``agent``, ``outcome`` and ``action`` (the action itself or any below it:
    ``policy`` matches ``policy.put``); oldest first, or newest first with ``newest_first``
    (then ``after_id`` is an upper bound: ids below it)."""

    after_id: int = 0
    start_ms: int = 0
    end_ms: int = 0
    org: str | None = None
    agent: str = ""
    action: str = ""
    outcome: str = ""
    limit: int = 100
    newest_first: bool = False


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """One participant of a conversation: ``role`` is "owner", "admin" or "member"."""

    agent: str
    role: str
    joined_ms: int
    invited_by: str = ""


@dataclass(frozen=True, slots=True)
class ConversationRecord:
    """A conversation of ``org`` and its participants now (``kind``: "direct", "group" or
    "broadcast"; ``closed_ms`` 0 while open; ``key_epoch`` the group key's current epoch)."""

    org: str
    conversation_id: str
    kind: str
    owner: str
    created_ms: int
    members: tuple[MemberRecord, ...]
    metadata: Mapping[str, str] = field(default_factory=dict)
    closed_ms: int = 0
    key_epoch: int = 0
    history_for_new_members: bool = False
    open: bool = False


@dataclass(frozen=True, slots=True)
class ReceiptRecord:
    """Up to where ``agent`` got a conversation's messages (ids; 0: none yet)."""

    agent: str
    delivered_id: int
    read_id: int
    updated_ms: int


@dataclass(frozen=True, slots=True)
class AgentKeyRecord:
    """An agent's entry in the key directory, stored as given (the broker never checks
    the signature: clients do)."""

    org: str
    agent: str
    public_key: bytes
    identity_key: bytes
    signature: bytes
    published_ms: int


@dataclass(frozen=True, slots=True)
class GroupKeyRecord:
    """A conversation's group key of ``epoch`` sealed to ``agent`` by ``sealed_by``."""

    org: str
    conversation_id: str
    epoch: int
    agent: str
    sealed_key: bytes
    sealed_by: str
    signature: bytes
    created_ms: int


@dataclass(frozen=True, slots=True)
class RetentionRule:
    """Keep at most ``max_events`` and nothing older than ``max_age_ms`` (0: no limit)."""

    pattern: str = ">"
    max_age_ms: int = 0
    max_events: int = 0


@dataclass(frozen=True, slots=True)
class BackboneRecord:
    """One backbone of the registry: its unique ``id``, the orgs and clusters it serves, its
    public ``endpoint`` and metadata (``region``, ``version``, ``status``); times in Unix ms,
    set by the store (``created_ms`` kept on update)."""

    id: str
    endpoint: str
    orgs: tuple[str, ...] = ()
    clusters: tuple[str, ...] = ()
    region: str = ""
    version: str = ""
    status: str = "active"
    created_ms: int = 0
    updated_ms: int = 0


class RegistryConflict(NamedTuple):
    """Why a registry write was not made: ``exists`` (the id is taken), ``missing`` (no such
    id to update) or ``org`` (``org`` is pinned to ``backbone`` already)."""

    kind: Literal["exists", "missing", "org"]
    org: str = ""
    backbone: str = ""


@dataclass(frozen=True, slots=True)
class ConfigVersionRecord:
    """One version of the live settings: the whole document, ``settings[pattern][name] =
    value`` (pattern ``""``: the global settings; values as text, checked before they were
    stored), numbered from 1 in write order, with who wrote it (``author``), how
    (``origin``: set, rollback) and when."""

    version: int
    created_ms: int
    author: str
    origin: str
    settings: Mapping[str, Mapping[str, str]]
    detail: str = ""
    """What changed, one line (``rollback to 3``, ``set orders.>: publish_rate=10``)."""


class EventLog(Protocol):
    """The log of stored batches."""

    def append(
        self, batches: Sequence[Batch], on_stored: OnStored | None = None
    ) -> Awaitable[list[int]]:
        """Stores ``batches``: queued at call time (so calls commit in call order, many per
        group commit), durable once the returned awaitable completes, which gives each
        batch's sequence (increasing in commit order). ``on_stored`` is called with those
        sequences on the event loop once they are stored, in commit order, and never when
        the write fails; as soon after the commit as the store can (the embedded store: in
        the commit's own step, before the awaitable completes)."""

    def committed_seq(self, org: str = "") -> int:
        """The highest sequence known committed: a read issued now sees every batch up to
        it, and no batch at or below it can appear later. ``org``: in the log that org's
        events go to (a cluster routes orgs to the backbones the registry pins them to)."""

    def in_log(self, org: str, seq: int) -> bool:
        """Whether the position ``seq`` lies in the log ``org``'s events go to now (one log:
        always). False: the registry re-pinned the org to another backbone since the
        position was taken; :meth:`scan_log` from it goes on in the new log, from the
        batches stored there since the pin."""

    async def last_id(self) -> int: ...

    async def read_batches(
        self, org: str, after_id: int, *, subject: str | None = None, limit: int = 256
    ) -> list[Batch]:
        """Batches of ``org`` holding ids above ``after_id``, by id (history queries)."""

    async def read_log(self, org: str, start: LogPosition, *, limit: int = 256) -> list[Batch]:
        """Batches of ``org`` not wholly behind ``start``, in commit order (tailing). The
        first may hold events behind ``start``: the caller skips them."""

    async def scan_log(
        self,
        org: str,
        start: LogPosition,
        match: Callable[[str], bool],
        *,
        limit: int = 64,
        budget: int = SCAN_BUDGET,
        pattern: str | None = None,
    ) -> LogScan:
        """Like :meth:`read_log`, for the batches whose subject ``match`` accepts (a pure
        function: it may run on the store's thread), looking at no more than ``budget``
        batches; ``next`` is the sequence after the last one looked at. Index-driven:
        the cost of a step does not grow with the size of the org. ``pattern``: the
        subject pattern ``match`` was compiled from, when there is one, which a store may
        use to filter on its server (JetStream) before ``match`` decides."""

    async def scan_batches(
        self,
        org: str,
        after_id: int,
        match: Callable[[str], bool],
        *,
        before_id: int = 0,
        limit: int = 64,
        budget: int = SCAN_BUDGET,
    ) -> LogScan:
        """Like :meth:`read_batches` for the subjects ``match`` accepts, by id, below
        ``before_id`` (0: no bound), looking at no more than ``budget`` batches; ``next``
        is the last id of the last batch looked at (every id up to it was considered)."""

    async def position_after_id(self, event_id: int, org: str = "") -> LogPosition:
        """The position after which every event with a larger id lies (a start position
        given as an id or a time), in ``org``'s log (see :meth:`committed_seq`)."""

    async def batch_containing(self, org: str, event_id: int) -> Batch | None: ...

    async def recent_batches(self, after_id: int) -> list[Batch]:
        """All orgs' batches above ``after_id`` (to rebuild the dedup window at start)."""

    async def trim(self, rules: Sequence[RetentionRule], now_ms: int) -> int:
        """Applies retention; returns the number of events removed."""


@runtime_checkable
class CommitFeed(Protocol):
    """A log shared by several nodes that tells each node of every commit, its own and the
    other nodes', in commit order (the cluster's JetStream log). Without it a node hears
    only of its own commits (from the publish path) and reads the others' from the log."""

    def follow_commits(self, listener: Callable[[Batch, int], None]) -> None:
        """Hands ``listener`` each committed batch (with its body) and its sequence, in
        sequence order; a sequence it skips was missed (read it from the log). Called
        before the store opens."""

    def feeds(self, seq: int) -> bool:
        """Whether the commit at ``seq`` reaches the listeners (a cluster feeds the node's
        own backbone's log; an org pinned to another backbone is read from its log)."""


class ConsumerStateStore(Protocol):
    """Durable consumers: configuration, position (``ConsumerRecord.position``) and a sparse
    pending table (delivered, unacknowledged ids with their attempts)."""

    async def create_consumer(self, record: ConsumerRecord) -> None:
        """Writes ``record`` whole (configuration, position, pending), replacing any."""

    async def load_consumers(self) -> list[ConsumerRecord]: ...

    async def save_consumer_config(self, record: ConsumerRecord) -> None:
        """Writes the configuration of ``record`` (not its position nor pending table)."""

    async def delete_consumer(self, org: str, name: str) -> bool:
        """Removes the consumer, its pending rows and its dead letters."""

    def change_consumer(
        self,
        org: str,
        name: str,
        *,
        delivered: Collection[int] = (),
        put: Mapping[int, int] | None = None,
        drop: Collection[int] = (),
        position: LogPosition | None = None,
        delivered_id: int = 0,
    ) -> Awaitable[None]:
        """Records a change: ids ``delivered`` for the first time become pending (attempt
        1), ``put`` sets the attempts of pending ids (a redelivery, a redrive), ``drop``
        removes ids no longer pending (acked or dead-lettered), ``position`` moves.
        Queued at call time in call order; durable once the awaitable completes. A
        change is cheap: changes queued together are written in one transaction, and a
        delivery acked before it was written is never written at all."""


class DeadLetterStore(Protocol):
    async def add_dead_letters(self, records: Sequence[DeadLetterRecord]) -> None: ...

    async def list_dead_letters(
        self, org: str, durable: str, after: tuple[int, int], limit: int
    ) -> list[DeadLetterRecord]: ...

    async def remove_dead_letters(
        self, org: str, durable: str, ids: Sequence[int] | None
    ) -> list[int]: ...

    async def count_dead_letters(
        self, durables: Sequence[tuple[str, str]], cap: int
    ) -> dict[tuple[str, str], int]:
        """The dead letters of each ``(org, durable)``, each counted up to ``cap`` (so a
        count of ``cap`` means "at least"), in one query: a status asks every second."""
        ...


class KeyStore(Protocol):
    async def put_key(self, record: ApiKeyRecord) -> None: ...

    async def get_key(self, key_id: str) -> ApiKeyRecord | None: ...

    async def list_keys(self) -> list[ApiKeyRecord]: ...

    async def revoke_key(self, key_id: str) -> bool: ...

    async def rotate_key(self, key_id: str, new: ApiKeyRecord, old_expires_ms: int) -> bool:
        """Stores ``new`` and, in the same transaction, marks ``key_id`` replaced by it and
        expiring at ``old_expires_ms`` (or earlier, if it expired sooner already). False (and
        nothing stored) when ``key_id`` does not exist or is revoked."""


class PolicyVersionStore(Protocol):
    """The versions of the global policy set (``org`` empty) and of each org's own set."""

    async def save_policy_version(
        self, record: PolicyVersionRecord, *, activate: bool, org: str = ""
    ) -> None:
        """Keeps a version (once per content hash and org) and, with ``activate``, marks it
        the running one of its set."""

    async def list_policy_versions(self, org: str = "") -> list[PolicyVersionRecord]:
        """Every version of one set, newest first."""

    async def active_org_policies(self) -> dict[str, PolicyVersionRecord]:
        """The running version of each org that has a set of its own."""


class AuditStore(Protocol):
    """The audit log's records (written in batches by ``broker.audit.AuditLog``)."""

    async def append_audit(self, records: Sequence[AuditRecord]) -> None:
        """Stores ``records`` in order, each with a new id above every earlier one."""

    async def query_audit(self, query: AuditQuery) -> list[AuditRecord]:
        """At most ``query.limit`` records that ``query`` selects, by id."""

    async def trim_audit(self, before_ms: int) -> int:
        """Removes the records older than ``before_ms``; returns how many."""


class ConversationStore(Protocol):
    """Conversations' metadata: the conversations and their participants, receipts, the
    key directory and sealed group keys (messages are events in the log)."""

    async def save_conversation(self, record: ConversationRecord) -> None:
        """Stores ``record`` and makes its participants exactly ``record.members``."""

    async def load_conversations(self) -> list[ConversationRecord]:
        """Every conversation, with its participants."""

    async def get_conversation(self, org: str, conversation_id: str) -> ConversationRecord | None:
        """One conversation, or None."""

    async def mark_receipt(
        self,
        org: str,
        conversation_id: str,
        agent: str,
        delivered_id: int,
        read_id: int,
        now_ms: int,
    ) -> ReceiptRecord:
        """Moves ``agent``'s receipt forward (never back; a read implies delivered)."""

    async def list_receipts(self, org: str, conversation_id: str) -> list[ReceiptRecord]:
        """Every receipt of the conversation, by agent."""

    async def put_agent_key(self, record: AgentKeyRecord) -> None:
        """Stores (or replaces) an agent's key directory entry."""

    async def get_agent_keys(self, org: str, agents: Sequence[str]) -> list[AgentKeyRecord]:
        """The entries of those of ``agents`` that have one, by agent."""

    async def put_group_keys(self, records: Sequence[GroupKeyRecord]) -> None:
        """Stores sealed group keys (replacing one for the same epoch and agent)."""

    async def get_group_keys(
        self, org: str, conversation_id: str, agent: str, min_epoch: int
    ) -> list[GroupKeyRecord]:
        """``agent``'s sealed keys of the conversation from ``min_epoch`` on, by epoch."""


class RegistryStore(Protocol):
    """The backbone registry: one record per backbone; an org is pinned to one backbone at
    most (a write that would pin it twice is not made)."""

    async def put_backbone(
        self, record: BackboneRecord, *, create: bool
    ) -> RegistryConflict | None:
        """Creates (``create``) or replaces the record ``record.id``, in one transaction with
        the checks: None when written; else why not (nothing written). The store sets
        ``updated_ms`` to now and ``created_ms`` to now on create, keeps it on update."""

    async def get_backbone(self, backbone_id: str) -> BackboneRecord | None: ...

    async def list_backbones(self) -> list[BackboneRecord]:
        """Every record, by id."""

    async def delete_backbone(self, backbone_id: str) -> bool:
        """False when there was no such record."""


class ConfigStore(Protocol):
    """The versions of the live settings (the config store), newest last; never rewritten."""

    async def add_config_version(self, record: ConfigVersionRecord) -> bool:
        """Stores ``record`` unless its version number exists already (False: another writer
        took it; read the newest and try again). Numbers are written in order, so the newest
        version is the running one."""

    async def config_version(self, version: int = 0) -> ConfigVersionRecord | None:
        """The version ``version`` (0: the newest), None when there is none."""

    async def list_config_versions(self, limit: int = 100) -> list[ConfigVersionRecord]:
        """At most ``limit`` versions, newest first."""


class MetadataStore(
    ConsumerStateStore,
    DeadLetterStore,
    KeyStore,
    PolicyVersionStore,
    AuditStore,
    ConversationStore,
    RegistryStore,
    ConfigStore,
    Protocol,
):
    """Every role but the log, with a life cycle: the broker's state beside its events."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...


class Store(EventLog, MetadataStore, Protocol):
    """Every role, with a life cycle: what one backend (SQLite) provides alone."""
