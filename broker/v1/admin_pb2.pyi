# Generated from protos/ by scripts/gen_protos.sh; do not edit.
import datetime

from lockgate.broker.v1 import broker_pb2 as _broker_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("node_id", "store", "history_lag_known", "history_lag", "events_published", "events_delivered", "events_rejected", "subscriptions", "durables", "time_ms", "nodes")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    HISTORY_LAG_KNOWN_FIELD_NUMBER: _ClassVar[int]
    HISTORY_LAG_FIELD_NUMBER: _ClassVar[int]
    EVENTS_PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_DELIVERED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_REJECTED_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    DURABLES_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    store: str
    history_lag_known: bool
    history_lag: int
    events_published: int
    events_delivered: int
    events_rejected: int
    subscriptions: int
    durables: _containers.RepeatedCompositeFieldContainer[DurableStatus]
    time_ms: int
    nodes: _containers.RepeatedCompositeFieldContainer[NodeStatus]
    def __init__(self, node_id: _Optional[str] = ..., store: _Optional[str] = ..., history_lag_known: _Optional[bool] = ..., history_lag: _Optional[int] = ..., events_published: _Optional[int] = ..., events_delivered: _Optional[int] = ..., events_rejected: _Optional[int] = ..., subscriptions: _Optional[int] = ..., durables: _Optional[_Iterable[_Union[DurableStatus, _Mapping]]] = ..., time_ms: _Optional[int] = ..., nodes: _Optional[_Iterable[_Union[NodeStatus, _Mapping]]] = ...) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("node_id", "worker_id", "version", "listen", "started_ms", "backbone", "events_per_second", "subscriptions", "durables", "last_heard_ms", "card_unknown")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LISTEN_FIELD_NUMBER: _ClassVar[int]
    STARTED_MS_FIELD_NUMBER: _ClassVar[int]
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    EVENTS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    DURABLES_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARD_MS_FIELD_NUMBER: _ClassVar[int]
    CARD_UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    worker_id: int
    version: str
    listen: str
    started_ms: int
    backbone: str
    events_per_second: float
    subscriptions: int
    durables: int
    last_heard_ms: int
    card_unknown: bool
    def __init__(self, node_id: _Optional[str] = ..., worker_id: _Optional[int] = ..., version: _Optional[str] = ..., listen: _Optional[str] = ..., started_ms: _Optional[int] = ..., backbone: _Optional[str] = ..., events_per_second: _Optional[float] = ..., subscriptions: _Optional[int] = ..., durables: _Optional[int] = ..., last_heard_ms: _Optional[int] = ..., card_unknown: _Optional[bool] = ...) -> None: ...

class DurableStatus(_message.Message):
    __slots__ = ("org", "name", "pending_count", "ready_count", "lag", "connected", "dead_letters", "dead_letters_capped")
    ORG_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PENDING_COUNT_FIELD_NUMBER: _ClassVar[int]
    READY_COUNT_FIELD_NUMBER: _ClassVar[int]
    LAG_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERS_FIELD_NUMBER: _ClassVar[int]
    DEAD_LETTERS_CAPPED_FIELD_NUMBER: _ClassVar[int]
    org: str
    name: str
    pending_count: int
    ready_count: int
    lag: int
    connected: int
    dead_letters: int
    dead_letters_capped: bool
    def __init__(self, org: _Optional[str] = ..., name: _Optional[str] = ..., pending_count: _Optional[int] = ..., ready_count: _Optional[int] = ..., lag: _Optional[int] = ..., connected: _Optional[int] = ..., dead_letters: _Optional[int] = ..., dead_letters_capped: _Optional[bool] = ...) -> None: ...

class DurableInfo(_message.Message):
    __slots__ = ("name", "pattern", "ack_floor", "pending_count", "connected", "ack_wait", "max_deliveries", "max_in_flight", "delivered_id", "endpoint_url")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    ACK_FLOOR_FIELD_NUMBER: _ClassVar[int]
    PENDING_COUNT_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_FIELD_NUMBER: _ClassVar[int]
    ACK_WAIT_FIELD_NUMBER: _ClassVar[int]
    MAX_DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    DELIVERED_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_URL_FIELD_NUMBER: _ClassVar[int]
    name: str
    pattern: str
    ack_floor: int
    pending_count: int
    connected: int
    ack_wait: _duration_pb2.Duration
    max_deliveries: int
    max_in_flight: int
    delivered_id: int
    endpoint_url: str
    def __init__(self, name: _Optional[str] = ..., pattern: _Optional[str] = ..., ack_floor: _Optional[int] = ..., pending_count: _Optional[int] = ..., connected: _Optional[int] = ..., ack_wait: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_deliveries: _Optional[int] = ..., max_in_flight: _Optional[int] = ..., delivered_id: _Optional[int] = ..., endpoint_url: _Optional[str] = ...) -> None: ...

class CreateDurableRequest(_message.Message):
    __slots__ = ("name", "pattern", "start", "max_in_flight", "ack_wait", "max_deliveries", "endpoint_url")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    ACK_WAIT_FIELD_NUMBER: _ClassVar[int]
    MAX_DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_URL_FIELD_NUMBER: _ClassVar[int]
    name: str
    pattern: str
    start: _broker_pb2.StartPosition
    max_in_flight: int
    ack_wait: _duration_pb2.Duration
    max_deliveries: int
    endpoint_url: str
    def __init__(self, name: _Optional[str] = ..., pattern: _Optional[str] = ..., start: _Optional[_Union[_broker_pb2.StartPosition, _Mapping]] = ..., max_in_flight: _Optional[int] = ..., ack_wait: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_deliveries: _Optional[int] = ..., endpoint_url: _Optional[str] = ...) -> None: ...

class CreateDurableResponse(_message.Message):
    __slots__ = ("durable", "webhook_secret")
    DURABLE_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_SECRET_FIELD_NUMBER: _ClassVar[int]
    durable: DurableInfo
    webhook_secret: str
    def __init__(self, durable: _Optional[_Union[DurableInfo, _Mapping]] = ..., webhook_secret: _Optional[str] = ...) -> None: ...

class RotateWebhookSecretRequest(_message.Message):
    __slots__ = ("name", "grace")
    NAME_FIELD_NUMBER: _ClassVar[int]
    GRACE_FIELD_NUMBER: _ClassVar[int]
    name: str
    grace: _duration_pb2.Duration
    def __init__(self, name: _Optional[str] = ..., grace: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class RotateWebhookSecretResponse(_message.Message):
    __slots__ = ("webhook_secret",)
    WEBHOOK_SECRET_FIELD_NUMBER: _ClassVar[int]
    webhook_secret: str
    def __init__(self, webhook_secret: _Optional[str] = ...) -> None: ...

class GetWebhookSecretsRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetWebhookSecretsResponse(_message.Message):
    __slots__ = ("org", "webhook_secrets", "endpoint_url")
    ORG_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_SECRETS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_URL_FIELD_NUMBER: _ClassVar[int]
    org: str
    webhook_secrets: _containers.RepeatedScalarFieldContainer[str]
    endpoint_url: str
    def __init__(self, org: _Optional[str] = ..., webhook_secrets: _Optional[_Iterable[str]] = ..., endpoint_url: _Optional[str] = ...) -> None: ...

class PendingDelivery(_message.Message):
    __slots__ = ("id", "attempt", "deadline")
    ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    id: int
    attempt: int
    deadline: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[int] = ..., attempt: _Optional[int] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListDurablesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDurablesResponse(_message.Message):
    __slots__ = ("durables",)
    DURABLES_FIELD_NUMBER: _ClassVar[int]
    durables: _containers.RepeatedCompositeFieldContainer[DurableInfo]
    def __init__(self, durables: _Optional[_Iterable[_Union[DurableInfo, _Mapping]]] = ...) -> None: ...

class GetDurableRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetDurableResponse(_message.Message):
    __slots__ = ("durable", "pending")
    DURABLE_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    durable: DurableInfo
    pending: _containers.RepeatedCompositeFieldContainer[PendingDelivery]
    def __init__(self, durable: _Optional[_Union[DurableInfo, _Mapping]] = ..., pending: _Optional[_Iterable[_Union[PendingDelivery, _Mapping]]] = ...) -> None: ...

class DeleteDurableRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteDurableResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("id", "durable", "attempts", "dead_time", "event")
    ID_FIELD_NUMBER: _ClassVar[int]
    DURABLE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    DEAD_TIME_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    id: int
    durable: str
    attempts: int
    dead_time: _timestamp_pb2.Timestamp
    event: _broker_pb2.StoredEvent
    def __init__(self, id: _Optional[int] = ..., durable: _Optional[str] = ..., attempts: _Optional[int] = ..., dead_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event: _Optional[_Union[_broker_pb2.StoredEvent, _Mapping]] = ...) -> None: ...

class ListDeadLettersRequest(_message.Message):
    __slots__ = ("durable", "page_size", "page_token")
    DURABLE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    durable: str
    page_size: int
    page_token: str
    def __init__(self, durable: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDeadLettersResponse(_message.Message):
    __slots__ = ("dead_letters", "next_page_token")
    DEAD_LETTERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    dead_letters: _containers.RepeatedCompositeFieldContainer[DeadLetter]
    next_page_token: str
    def __init__(self, dead_letters: _Optional[_Iterable[_Union[DeadLetter, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RedriveDeadLettersRequest(_message.Message):
    __slots__ = ("durable", "ids")
    DURABLE_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    durable: str
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, durable: _Optional[str] = ..., ids: _Optional[_Iterable[int]] = ...) -> None: ...

class RedriveDeadLettersResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...
