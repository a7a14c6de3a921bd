# Generated from protos/ by scripts/gen_protos.sh; do not edit.
import datetime

from lockgate.broker.v1 import cloudevent_pb2 as _cloudevent_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    START_POLICY_UNSPECIFIED: _ClassVar[StartPolicy]
    START_POLICY_NEW: _ClassVar[StartPolicy]
    START_POLICY_ALL: _ClassVar[StartPolicy]
    START_POLICY_SINCE_TIME: _ClassVar[StartPolicy]
    START_POLICY_AFTER_ID: _ClassVar[StartPolicy]
START_POLICY_UNSPECIFIED: StartPolicy
START_POLICY_NEW: StartPolicy
START_POLICY_ALL: StartPolicy
START_POLICY_SINCE_TIME: StartPolicy
START_POLICY_AFTER_ID: StartPolicy

class PublishRequest(_message.Message):
    __slots__ = ("subject", "events", "batch_id", "fresh")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    FRESH_FIELD_NUMBER: _ClassVar[int]
    subject: str
    events: _containers.RepeatedCompositeFieldContainer[_cloudevent_pb2.CloudEvent]
    batch_id: int
    fresh: bool
    def __init__(self, subject: _Optional[str] = ..., events: _Optional[_Iterable[_Union[_cloudevent_pb2.CloudEvent, _Mapping]]] = ..., batch_id: _Optional[int] = ..., fresh: _Optional[bool] = ...) -> None: ...

class PublishResponse(_message.Message):
    __slots__ = ("batch_id", "ids", "duplicate_indexes", "errors")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_INDEXES_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    batch_id: int
    ids: _containers.RepeatedScalarFieldContainer[int]
    duplicate_indexes: _containers.RepeatedScalarFieldContainer[int]
    errors: _containers.RepeatedCompositeFieldContainer[PublishError]
    def __init__(self, batch_id: _Optional[int] = ..., ids: _Optional[_Iterable[int]] = ..., duplicate_indexes: _Optional[_Iterable[int]] = ..., errors: _Optional[_Iterable[_Union[PublishError, _Mapping]]] = ...) -> None: ...

class PublishError(_message.Message):
    __slots__ = ("index", "reason", "message")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    index: int
    reason: str
    message: str
    def __init__(self, index: _Optional[int] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class PublishOneRequest(_message.Message):
    __slots__ = ("subject", "event")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    subject: str
    event: _cloudevent_pb2.CloudEvent
    def __init__(self, subject: _Optional[str] = ..., event: _Optional[_Union[_cloudevent_pb2.CloudEvent, _Mapping]] = ...) -> None: ...

class PublishOneResponse(_message.Message):
    __slots__ = ("id", "duplicate")
    ID_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    id: int
    duplicate: bool
    def __init__(self, id: _Optional[int] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class StartPosition(_message.Message):
    __slots__ = ("policy", "since_time", "after_id")
    POLICY_FIELD_NUMBER: _ClassVar[int]
    SINCE_TIME_FIELD_NUMBER: _ClassVar[int]
    AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    policy: StartPolicy
    since_time: _timestamp_pb2.Timestamp
    after_id: int
    def __init__(self, policy: _Optional[_Union[StartPolicy, str]] = ..., since_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., after_id: _Optional[int] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("open", "ack", "nack")
    OPEN_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    NACK_FIELD_NUMBER: _ClassVar[int]
    open: SubscribeOpen
    ack: Ack
    nack: Nack
    def __init__(self, open: _Optional[_Union[SubscribeOpen, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., nack: _Optional[_Union[Nack, _Mapping]] = ...) -> None: ...

class SubscribeOpen(_message.Message):
    __slots__ = ("pattern", "queue_group", "durable", "start", "max_in_flight", "ack_wait", "max_deliveries")
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    QUEUE_GROUP_FIELD_NUMBER: _ClassVar[int]
    DURABLE_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    ACK_WAIT_FIELD_NUMBER: _ClassVar[int]
    MAX_DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    pattern: str
    queue_group: str
    durable: str
    start: StartPosition
    max_in_flight: int
    ack_wait: _duration_pb2.Duration
    max_deliveries: int
    def __init__(self, pattern: _Optional[str] = ..., queue_group: _Optional[str] = ..., durable: _Optional[str] = ..., start: _Optional[_Union[StartPosition, _Mapping]] = ..., max_in_flight: _Optional[int] = ..., ack_wait: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_deliveries: _Optional[int] = ...) -> None: ...

class FetchRequest(_message.Message):
    __slots__ = ("durable", "max_events", "wait", "pattern", "start")
    DURABLE_FIELD_NUMBER: _ClassVar[int]
    MAX_EVENTS_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    durable: str
    max_events: int
    wait: _duration_pb2.Duration
    pattern: str
    start: StartPosition
    def __init__(self, durable: _Optional[str] = ..., max_events: _Optional[int] = ..., wait: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., pattern: _Optional[str] = ..., start: _Optional[_Union[StartPosition, _Mapping]] = ...) -> None: ...

class FetchResponse(_message.Message):
    __slots__ = ("deliveries",)
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    deliveries: _containers.RepeatedCompositeFieldContainer[Delivery]
    def __init__(self, deliveries: _Optional[_Iterable[_Union[Delivery, _Mapping]]] = ...) -> None: ...

class AcknowledgeRequest(_message.Message):
    __slots__ = ("durable", "ack_ids", "nack_ids", "nack_delay", "term_ids")
    DURABLE_FIELD_NUMBER: _ClassVar[int]
    ACK_IDS_FIELD_NUMBER: _ClassVar[int]
    NACK_IDS_FIELD_NUMBER: _ClassVar[int]
    NACK_DELAY_FIELD_NUMBER: _ClassVar[int]
    TERM_IDS_FIELD_NUMBER: _ClassVar[int]
    durable: str
    ack_ids: _containers.RepeatedScalarFieldContainer[int]
    nack_ids: _containers.RepeatedScalarFieldContainer[int]
    nack_delay: _duration_pb2.Duration
    term_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, durable: _Optional[str] = ..., ack_ids: _Optional[_Iterable[int]] = ..., nack_ids: _Optional[_Iterable[int]] = ..., nack_delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., term_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class AcknowledgeResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Ack(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ids: _Optional[_Iterable[int]] = ...) -> None: ...

class Nack(_message.Message):
    __slots__ = ("ids", "delay")
    IDS_FIELD_NUMBER: _ClassVar[int]
    DELAY_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    delay: _duration_pb2.Duration
    def __init__(self, ids: _Optional[_Iterable[int]] = ..., delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class SubscribeResponse(_message.Message):
    __slots__ = ("subscribed", "deliveries")
    SUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    subscribed: Subscribed
    deliveries: _containers.RepeatedCompositeFieldContainer[Delivery]
    def __init__(self, subscribed: _Optional[_Union[Subscribed, _Mapping]] = ..., deliveries: _Optional[_Iterable[_Union[Delivery, _Mapping]]] = ...) -> None: ...

class Subscribed(_message.Message):
    __slots__ = ("name", "last_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LAST_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    last_id: int
    def __init__(self, name: _Optional[str] = ..., last_id: _Optional[int] = ...) -> None: ...

class Delivery(_message.Message):
    __slots__ = ("id", "subject", "event", "attempt", "reply_to")
    ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    id: int
    subject: str
    event: _cloudevent_pb2.CloudEvent
    attempt: int
    reply_to: str
    def __init__(self, id: _Optional[int] = ..., subject: _Optional[str] = ..., event: _Optional[_Union[_cloudevent_pb2.CloudEvent, _Mapping]] = ..., attempt: _Optional[int] = ..., reply_to: _Optional[str] = ...) -> None: ...

class RequestRequest(_message.Message):
    __slots__ = ("subject", "event", "timeout")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    subject: str
    event: _cloudevent_pb2.CloudEvent
    timeout: _duration_pb2.Duration
    def __init__(self, subject: _Optional[str] = ..., event: _Optional[_Union[_cloudevent_pb2.CloudEvent, _Mapping]] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class RequestResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: _cloudevent_pb2.CloudEvent
    def __init__(self, event: _Optional[_Union[_cloudevent_pb2.CloudEvent, _Mapping]] = ...) -> None: ...

class RequestStreamRequest(_message.Message):
    __slots__ = ("request_id", "request", "more")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    request: RequestRequest
    more: _containers.RepeatedCompositeFieldContainer[RequestStreamRequest]
    def __init__(self, request_id: _Optional[int] = ..., request: _Optional[_Union[RequestRequest, _Mapping]] = ..., more: _Optional[_Iterable[_Union[RequestStreamRequest, _Mapping]]] = ...) -> None: ...

class RequestStreamResponse(_message.Message):
    __slots__ = ("request_id", "event", "error", "more")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    event: _cloudevent_pb2.CloudEvent
    error: RequestError
    more: _containers.RepeatedCompositeFieldContainer[RequestStreamResponse]
    def __init__(self, request_id: _Optional[int] = ..., event: _Optional[_Union[_cloudevent_pb2.CloudEvent, _Mapping]] = ..., error: _Optional[_Union[RequestError, _Mapping]] = ..., more: _Optional[_Iterable[_Union[RequestStreamResponse, _Mapping]]] = ...) -> None: ...

class RequestError(_message.Message):
    __slots__ = ("reason", "message")
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    reason: str
    message: str
    def __init__(self, reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class StoredEvent(_message.Message):
    __slots__ = ("id", "subject", "event", "stored_time", "policy_version")
    ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    STORED_TIME_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    id: int
    subject: str
    event: _cloudevent_pb2.CloudEvent
    stored_time: _timestamp_pb2.Timestamp
    policy_version: str
    def __init__(self, id: _Optional[int] = ..., subject: _Optional[str] = ..., event: _Optional[_Union[_cloudevent_pb2.CloudEvent, _Mapping]] = ..., stored_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., policy_version: _Optional[str] = ...) -> None: ...

class GetEventRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class GetEventResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: StoredEvent
    def __init__(self, event: _Optional[_Union[StoredEvent, _Mapping]] = ...) -> None: ...

class QueryEventsRequest(_message.Message):
    __slots__ = ("pattern", "start_time", "end_time", "after_id", "page_size", "page_token", "cloudevent_id")
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CLOUDEVENT_ID_FIELD_NUMBER: _ClassVar[int]
    pattern: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    after_id: int
    page_size: int
    page_token: str
    cloudevent_id: str
    def __init__(self, pattern: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., after_id: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., cloudevent_id: _Optional[str] = ...) -> None: ...

class QueryEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[StoredEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[StoredEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
