"""Configuration: the settings (:class:`Config`, with their defaults), the duration syntax of
settings, and the redaction of secrets for printing. Loading them from defaults, environment
variables, a TOML file and flags (flags win) is ``broker.config_load``."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from lockgate.broker.dedup import DEFAULT_MAX_BYTES as DEDUP_MAX_BYTES
from lockgate.broker.errors import InvalidArgument
from lockgate.broker.quotas import QUOTA_DEFAULTS
from lockgate.broker.redaction import REDACTED, redact_url
from lockgate.broker.store import RetentionRule
from lockgate.policy import durations

__all__ = [
    "REDACTED",
    "Config",
    "ConfigError",
    "ListenerLimits",
    "parse_duration",
    "redact_url",
    "redacted",
]


class ConfigError(InvalidArgument):
    default_reason = "INVALID_CONFIG"


def parse_duration(text: str | float | int) -> float:
    """Seconds in a duration as :func:`policy.durations.parse_duration` reads it (``"250ms"``,
    ``"30s"``, ``"10m"``, ``"2h"``, ``"7d"``, ``"1w"`` or a number); raises :class:`ConfigError`."""
    try:
        return durations.parse_duration(text)
    except durations.DurationError as exc:
        raise ConfigError(str(exc), hint=exc.hint) from None


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    """The bounds of every HTTP and WebSocket gateway listener of a process (``lockgate
    serve``'s ``[gateways.*]`` and ``lockgate gateway http|ws``): the ``http_*`` settings.

    A connection that is slow on purpose (slowloris) holds a file descriptor; these bound how
    long and how many, so that the gRPC port, the store and the backbone keep theirs.
    """

    header_timeout: float = 15.0
    """Seconds a connection has to send a complete request line and headers, from its
    opening or from the end of its previous response (so also the keep-alive idle time)."""
    body_timeout: float = 30.0
    """Seconds a request has to send its whole body, once its headers arrived."""
    send_timeout: float = 30.0
    """Seconds an answer may wait for a peer that reads none of it (slow read); then the
    connection is aborted."""
    max_connections: int = 0
    """Open connections of all the process's listeners together; 0 (the default) is half of
    the open-file limit (``broker.fdbudget``), the other half left to gRPC and the rest."""
    max_connections_per_address: int = 64
    """Open connections from one client IP address."""
    tls_handshake_timeout: float = 10.0
    """Seconds a connection to a TLS listener has to finish its handshake (it is counted
    against the connection limits from its TCP accept)."""


@dataclass
class Config:
    """The broker's settings; ``lockgate config`` prints the effective ones."""

    listen: str = "127.0.0.1:50051"
    store: str = "sqlite"
    """``sqlite`` (embedded, under ``data_dir``) or ``postgresql://…``."""
    backbone: str = "local"
    """``local`` (one process) or ``nats://…`` (many nodes)."""
    backbone_replicas: int = 1
    """Replicas of the JetStream log stream (cluster mode): 1 here, 3 in production."""
    backbone_stream: str = "LOCKGATE_LOG"
    """The JetStream stream holding the log (cluster mode)."""
    backbone_prefix: str = "lg"
    """The first letters of every NATS subject of the cluster: ``lglog.`` (the log),
    ``lgfan.``, ``lgreq.``, ``lgnotice.``; two clusters on one NATS need two prefixes."""
    data_dir: str = "./lockgate-data"
    fsync: str = "os"
    worker_id: int = -1
    """0-1023: the worker id in every id this node issues, unique per node; -1 (the default):
    0 for a node alone, a free one leased from Redis in cluster mode (``broker.workerid``)."""
    max_message_bytes: int = 1 << 20
    max_event_bytes: int = 1 << 20
    dedup_window: float = 120.0
    dedup_max_bytes: int = DEDUP_MAX_BYTES
    """Memory budget of the dedup index; when full, the window is shortened (with a warning)."""
    ack_wait: float = 30.0
    max_deliveries: int = 5
    max_in_flight: int = 1000
    subscriber_max_bytes: int = 64 << 20
    """Bytes queued for one ephemeral subscriber before it is cut off (SLOW_CONSUMER)."""
    subscriber_write_deadline: float = 10.0
    """Seconds an ephemeral subscriber may take nothing while events wait for it before it is
    cut off (SLOW_CONSUMER), as NATS's write_deadline."""
    max_in_flight_bytes: int = 64 << 20
    """Bytes of unacknowledged deliveries (and of events read ahead) one durable holds."""
    max_durables_per_org: int = QUOTA_DEFAULTS["max_durables_per_org"]
    max_subscriptions_per_org: int = QUOTA_DEFAULTS["max_subscriptions_per_org"]
    """Live subscriptions (ephemeral and durable streams, every surface) per org."""
    max_connections_per_org: int = QUOTA_DEFAULTS["max_connections_per_org"]
    """gRPC connections holding open streams, per org."""
    max_streams_per_connection: int = QUOTA_DEFAULTS["max_streams_per_connection"]
    max_group_members: int = 256
    """Participants of one group or broadcast conversation, the owner included (GROUP_FULL)."""
    presence_grace: float = 5.0
    """Seconds an agent stays online after its last live subscription ends, so that a
    reconnect does not flap."""
    typing_ttl: float = 5.0
    """Seconds a typing indicator lasts unless renewed; then a typing-off is sent."""
    typing_per_second: float = 2.0
    """Typing indicators per sender per second (bursts of 5); more are RATE_LIMITED."""
    retention_max_age: float = 0.0
    retention_max_events: int = 0
    retention: list[dict[str, object]] = field(default_factory=list)
    policy_dir: str = ""
    policy_reload_interval: float = 1.0
    policy_default_deny: str = ""
    """Orgs whose subjects no policy covers are denied rather than allowed: ``"*"`` for every
    org, or org names separated by commas; empty (the default): none."""
    admin_org: str = "default"
    """The org whose ``admin`` keys administer the whole broker (``broker.permissions``);
    ``admin`` in any other org administers that org only."""
    limiter: str = "local"
    limiter_prefix: str = "lockgate:"
    """The first letters of every Redis key (limits, the dedup window, leases): two
    clusters on one Redis need two prefixes."""
    spam_max_per_minute: int = 0
    spam_duplicate_window: float = 0.0
    webhook_allow_private: bool = False
    audit_retention: float = 90 * 86_400.0
    """Audit records older than this are removed (0: kept for ever)."""
    audit_window: float = 10.0
    """Alike denials and authentication failures within it share one audit record."""
    heartbeat: float = 5.0
    """Seconds between two heartbeats of this node to the others (``broker.roster``); a
    node not heard from for three of them drops out of the roster. Alike on every node."""
    gateways: dict[str, dict[str, object]] = field(default_factory=dict)
    """``[gateways.http]``, ``[gateways.redis]``...: gateways run inside ``lockgate serve``
    (TOML only; see gateways/README.md)."""
    http_header_timeout: float = 15.0
    """See :class:`ListenerLimits` (every HTTP/WebSocket gateway listener)."""
    http_body_timeout: float = 30.0
    http_send_timeout: float = 30.0
    http_max_connections: int = 0
    """0: half of the process's open-file limit (raised to its hard limit at start)."""
    http_max_connections_per_address: int = 64
    http_tls_handshake_timeout: float = 10.0
    """Seconds a TLS gateway connection has to finish its handshake (see ListenerLimits)."""
    tls_server_cert: str = ""
    """PEM certificate chain of every listener (gRPC and gateways); TLS when set."""
    tls_server_key: str = ""
    tls_client_ca: str = ""
    """PEM CA certificates: when set, every TLS caller must present a certificate they signed
    (mTLS), and its SAN names the caller (broker.tls)."""
    tls_client_identity: str = "lockgate://{org}/{agent}"
    tls_client_orgs: list[str] = field(default_factory=list)
    """The orgs a client certificate may name (empty: any)."""
    tls_client_roles: list[str] = field(default_factory=list)
    """The roles of a client certificate's principal (none: a plain agent)."""
    insecure_plaintext: bool = False
    """Allow a non-loopback listener without TLS (keys and events cross the network in clear)."""
    log_level: str = "info"
    log_format: str = "text"
    """text | json: one JSON object per line with a stable ``event`` name and the trace id."""
    telemetry: str = "off"
    telemetry_interval: float = 60.0
    metrics_listen: str = ""
    """Loopback HOST:PORT of a Prometheus ``/metrics`` listener (empty: none)."""
    otlp_endpoint: str = ""
    """OpenTelemetry collector that receives spans and metrics (empty: no OTLP export)."""
    otlp_protocol: str = "grpc"
    """grpc (collector port 4317) | http (http/protobuf, port 4318)."""
    trace_sample_ratio: float = 1.0
    """Share of new traces recorded (a publisher's sampled trace is always continued)."""
    keepalive_time: float = 30.0
    drain_timeout: float = 10.0
    auth_clock_skew: float = 30.0
    """``[auth] clock_skew``: how far a token's ``exp`` and ``nbf`` may be off (clocks drift)."""
    auth_local_issuer: bool = True
    """``[auth] local_issuer``: trust the tokens of ``lockgate tokens issue``."""
    auth_issuers: list[dict[str, object]] = field(default_factory=list)
    """``[[auth.issuers]]``: trusted JWT issuers (TOML only; see README, Security)."""

    def retention_rules(self) -> list[RetentionRule]:
        rules = []
        if self.retention_max_age or self.retention_max_events:
            # Every subject: ">" leaves out the broker's "$" subjects (policy.subjects), so
            # dead letters are named.
            for pattern in (">", "$dlq.>"):
                rules.append(
                    RetentionRule(
                        pattern, int(self.retention_max_age * 1000), self.retention_max_events
                    )
                )
        for item in self.retention:
            rules.append(
                RetentionRule(
                    str(item.get("pattern", ">")),
                    int(parse_duration(item.get("max_age", 0)) * 1000),  # type: ignore[arg-type]
                    int(item.get("max_events", 0)),  # type: ignore[call-overload]
                )
            )
        return rules

    def as_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    def listener_limits(self) -> ListenerLimits:
        return ListenerLimits(
            self.http_header_timeout,
            self.http_body_timeout,
            self.http_send_timeout,
            self.http_max_connections,
            self.http_max_connections_per_address,
            self.http_tls_handshake_timeout,
        )


_SECRET_KEY = re.compile(r"secret|password|token|api_key|apikey", re.IGNORECASE)


def redacted(value: object, key: str = "") -> object:
    """``value`` (settings as plain data) with every secret replaced, for printing.

    A value under a key that names a secret (``secret``, ``org_secrets``, ``api_key``...) is
    replaced whole; a password inside a URL (``redis://:pw@host``) is replaced in place.

    >>> redacted({"webhook": {"secret": "s3", "url": "redis://u:pw@h:6379"}})
    {'webhook': {'secret': '<redacted>', 'url': 'redis://u:<redacted>@h:6379'}}
    """
    secret = bool(_SECRET_KEY.search(key))
    if isinstance(value, dict):  # under a secret key (org_secrets), every value is one
        return {k: redacted(v, key if secret else str(k)) for k, v in value.items()}
    if secret:
        return REDACTED if value not in ("", None) else value
    if isinstance(value, list | tuple):
        return [redacted(v, key) for v in value]
    if isinstance(value, str):
        return redact_url(value)
    return value
