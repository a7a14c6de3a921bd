"""The results of ``client.admin``: small frozen dataclasses built from the wire messages
(``_of``), so callers never depend on the generated classes."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from google.protobuf import duration_pb2, timestamp_pb2

from lockgate.broker.v1 import admin_pb2, audit_pb2, policy_pb2
from lockgate.clients._message import StoredEvent

__all__ = [
    "AuditRecord",
    "ClusterNode",
    "DeadLetter",
    "DurableInfo",
    "DurableState",
    "DurableStatus",
    "NodeStatus",
    "PendingDelivery",
    "PolicyProblem",
    "PolicySet",
    "PolicyUpdate",
    "PolicyVersion",
    "WebhookSecrets",
    "time_of",
]


def _seconds(d: duration_pb2.Duration) -> float:
    return d.seconds + d.nanos / 1e9


def time_of(ts: timestamp_pb2.Timestamp) -> dt.datetime:
    """A wire timestamp as an aware UTC datetime."""
    return ts.ToDatetime(tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class DurableInfo:
    """A durable subscription: its settings and where it stands."""

    name: str
    pattern: str
    ack_floor: int
    """Every event with an id up to this one is acknowledged."""
    pending_count: int
    """Delivered and not yet acknowledged."""
    connected: int
    """Streams bound to it now."""
    ack_wait: float
    """Seconds before an unacknowledged delivery is redelivered."""
    max_deliveries: int
    max_in_flight: int
    delivered_id: int
    """The highest id handed to a subscriber."""
    endpoint_url: str
    """The webhook endpoint, when deliveries are POSTed there, with its query values (a token,
    say) ``<redacted>``; sent back as read, it names the stored one."""
    webhook_secret: str = ""
    """A webhook durable's signing secret: set only by the :meth:`create_durable` call that
    created it (it is not shown again; :meth:`rotate_webhook_secret` gives a new one)."""

    @classmethod
    def _of(cls, m: admin_pb2.DurableInfo) -> DurableInfo:
        return cls(
            m.name,
            m.pattern,
            m.ack_floor,
            m.pending_count,
            m.connected,
            _seconds(m.ack_wait),
            m.max_deliveries,
            m.max_in_flight,
            m.delivered_id,
            m.endpoint_url,
        )


@dataclass(frozen=True, slots=True)
class PendingDelivery:
    """One delivered, unacknowledged event."""

    id: int
    attempt: int
    deadline: dt.datetime | None
    """When it is redelivered unless acknowledged (None when the broker does not say)."""


@dataclass(frozen=True, slots=True)
class DurableState:
    """A durable and its pending deliveries, oldest first (at most 1000)."""

    durable: DurableInfo
    pending: list[PendingDelivery] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """The node a call reached: its id, its store (``sqlite`` or ``cluster``) and, in
    cluster mode, the log batches not yet in the PostgreSQL history (None: no history
    logger there, or not measured yet). The counts are the caller's org's (every org's for
    the broker's admin) on this node since it started, at ``time`` (Unix seconds): rates
    are differences between two statuses."""

    node_id: str
    store: str
    history_lag: int | None
    published: int = 0
    delivered: int = 0
    rejected: int = 0
    subscriptions: int = 0
    """Live ephemeral subscriptions."""
    durables: tuple[DurableStatus, ...] = ()
    """The durables active on the node."""
    time: float = 0.0
    nodes: tuple[ClusterNode, ...] = ()
    """The cluster's live nodes as the node hears them, itself included (the broker's
    admin only: empty for an org-admin)."""


@dataclass(frozen=True, slots=True)
class ClusterNode:
    """One live node of the cluster, as its last heartbeat says (``card_unknown``: it has
    sent only other notices yet, and only ``node_id`` and ``last_heard`` are known).
    ``started`` and ``last_heard`` are Unix seconds."""

    node_id: str
    last_heard: float
    worker_id: int = 0
    version: str = ""
    listen: str = ""
    started: float = 0.0
    backbone: str = ""
    events_per_second: float = 0.0
    subscriptions: int = 0
    durables: int = 0
    card_unknown: bool = False


@dataclass(frozen=True, slots=True)
class DurableStatus:
    """One active durable's figures in a :class:`NodeStatus`: delivered and unacknowledged
    (``pending``), read and waiting for room (``ready``), log batches behind the head
    (``lag``), bound streams, and dead letters (counted up to 1000: ``dead_letters_capped``
    says there are more)."""

    org: str
    name: str
    pending: int
    ready: int
    lag: int
    connected: int
    dead_letters: int
    dead_letters_capped: bool


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event that exhausted its deliveries."""

    id: int
    durable: str
    attempts: int
    dead_time: dt.datetime
    event: StoredEvent


@dataclass(frozen=True, slots=True)
class PolicyProblem:
    """One finding of the policy checker ("error" or "warning")."""

    file: str
    line: int
    column: int
    message: str
    hint: str
    severity: str


@dataclass(frozen=True, slots=True)
class PolicyVersion:
    """One version of the policy set."""

    version: str
    """The content hash of its files."""
    created_time: dt.datetime
    active: bool
    file_count: int
    origin: str
    """Where it came from: "dir", "rpc" or "rollback"."""

    @classmethod
    def _of(cls, m: policy_pb2.PolicyVersion) -> PolicyVersion:
        return cls(m.version, time_of(m.created_time), m.active, m.file_count, m.origin)


@dataclass(frozen=True, slots=True)
class WebhookSecrets:
    """What a webhook durable's deliveries are signed with, and the org they name."""

    org: str
    secrets: list[str]
    """Newest first; two during a rotation's grace; none for a durable from before secrets
    were per durable."""
    endpoint_url: str = ""
    """Where the deliveries go, credentials included (``DurableInfo`` shows them
    ``<redacted>``); "" from a broker older than this field."""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One entry of the broker's audit log (see the README's "Audit log")."""

    id: int
    time: dt.datetime
    """When it happened (for an aggregated record: the first of its ``count``)."""
    org: str
    agent: str
    credential: str
    """The credential presented: an API key's id, never its secret."""
    action: str
    target: str
    outcome: str
    """ok, denied or failed."""
    surface: str
    """grpc, http, ws, cli or broker."""
    peer: str
    count: int
    """How many alike actions it stands for."""
    detail: dict[str, str] = field(default_factory=dict)

    @classmethod
    def _of(cls, m: audit_pb2.AuditRecord) -> AuditRecord:
        return cls(
            m.id,
            time_of(m.time),
            m.org,
            m.agent,
            m.credential,
            m.action,
            m.target,
            m.outcome,
            m.surface,
            m.peer,
            m.count,
            dict(m.detail),
        )


@dataclass(frozen=True, slots=True)
class PolicyUpdate:
    """What :meth:`Admin.put_policies` did: the set's version, whether it now runs, warnings."""

    version: str
    applied: bool
    problems: list[PolicyProblem] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PolicySet:
    """A version of the policy set and its files (name -> source text)."""

    version: PolicyVersion
    files: dict[str, str] = field(default_factory=dict)
