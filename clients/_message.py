"""What the client hands back: received events, deliveries, stored events and publish results."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

from lockgate.broker.v1 import broker_pb2, cloudevent_pb2
from lockgate.broker.v1.reasons import Reason
from lockgate.clients._codec import AttributeValue, decode_attributes, decode_data
from lockgate.clients._errors import LockgateError

__all__ = ["Event", "Message", "MessageBatch", "PublishResult", "StoredEvent"]

_UNSET: object = object()
T = TypeVar("T")


class _Acker(Protocol):
    """What a Message needs from its subscription."""

    def _ack(self, id: int) -> None: ...
    def _ack_many(self, ids: list[int]) -> None: ...
    def _nack(self, id: int, delay: float | dt.timedelta | None) -> None: ...
    def _nack_many(self, ids: list[int], delay: float | dt.timedelta | None) -> None: ...
    async def _respond(self, reply_to: str, data: object, request: Message) -> int: ...


class Event:
    """A CloudEvent with its payload decoded on first access.

    Example::

        reply = await client.request("math.add", [1, 2])
        print(reply.data, reply.type, reply.source)
    """

    __slots__ = ("_data", "_event", "_model")

    def __init__(self, event: cloudevent_pb2.CloudEvent, model: type[object] | None = None):
        self._event = event
        self._model = model
        self._data: object = _UNSET

    @property
    def event(self) -> cloudevent_pb2.CloudEvent:
        """The CloudEvent as received (a protobuf message)."""
        return self._event

    @property
    def data(self) -> object:
        """The payload: JSON as Python values, text as str, binary as bytes, or the model."""
        if self._data is _UNSET:
            self._data = decode_data(self.event, self._model)
        return self._data

    def data_as(self, model: type[T]) -> T:
        """The payload validated into ``model`` (a pydantic model or a dataclass), typed.

        >>> order = msg.data_as(Order)   # an Order, as far as mypy knows too
        """
        if self._model is model and self._data is not _UNSET:
            return cast(T, self._data)
        return decode_data(self.event, model)

    @property
    def type(self) -> str:
        """The CloudEvents ``type``."""
        return self.event.type

    @property
    def source(self) -> str:
        """The CloudEvents ``source``."""
        return self.event.source

    @property
    def event_id(self) -> str:
        """The CloudEvents ``id`` the producer chose (not the broker's assigned id)."""
        return self.event.id

    @property
    def attributes(self) -> dict[str, AttributeValue]:
        """Optional and extension attributes (``datacontenttype``, ``traceparent``, ...)."""
        return decode_attributes(self.event)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(type={self.type!r}, source={self.source!r})"


class Message(Event):
    """One delivery from a subscription.

    Cheap to make: it holds the received ``Delivery`` and reads its fields (and decodes the
    payload) only when asked, so a consumer pays for what it looks at.

    Example::

        async for msg in client.subscribe("orders.>", durable="billing"):
            handle(msg.data)
            await msg.ack()
    """

    __slots__ = ("_delivery", "_sub")

    def __init__(
        self, sub: _Acker, delivery: broker_pb2.Delivery, model: type[object] | None = None
    ):
        # Event.__init__ is skipped on purpose: this runs once per received event.
        self._sub = sub
        self._delivery = delivery
        self._model = model
        self._data = _UNSET

    @property
    def event(self) -> cloudevent_pb2.CloudEvent:
        """The CloudEvent as received (a protobuf message)."""
        return self._delivery.event

    @property
    def id(self) -> int:
        """The id the broker assigned when it stored the event."""
        return self._delivery.id

    @property
    def subject(self) -> str:
        """The subject it was published on."""
        return self._delivery.subject

    @property
    def attempt(self) -> int:
        """1 for a first delivery, more for redeliveries (durable subscriptions)."""
        return self._delivery.attempt

    @property
    def reply_to(self) -> str:
        """The subject a reply goes to, for a request; ``""`` otherwise."""
        return self._delivery.reply_to

    async def ack(self) -> None:
        """Acknowledge it (durable subscriptions; a no-op otherwise). Acks are sent in batches."""
        self._sub._ack(self._delivery.id)

    async def nack(self, delay: float | dt.timedelta | None = None) -> None:
        """Ask for redelivery, after ``delay`` (seconds or a timedelta) if given."""
        self._sub._nack(self._delivery.id, delay)

    async def respond(self, data: object) -> int:
        """Publish ``data`` as the reply to this request; returns the reply's assigned id."""
        if not self.reply_to:
            raise LockgateError(
                "this message is not a request: it has no reply_to subject",
                reason=Reason.NO_REPLY_TO,
            )
        return await self._sub._respond(self.reply_to, data, self)

    def __repr__(self) -> str:
        return f"Message(id={self.id}, subject={self.subject!r}, attempt={self.attempt})"


class MessageBatch(list[Message]):
    """The messages one read of a subscription found waiting, with acks for all of them.

    Example::

        async for batch in sub.batches():
            for msg in batch:
                handle(msg.data)
            await batch.ack()       # one ack frame for the whole batch
    """

    __slots__ = ("_sub",)

    def __init__(self, sub: _Acker, messages: Iterable[Message]) -> None:
        super().__init__(messages)
        self._sub = sub

    async def ack(self) -> None:
        """Acknowledge every message of the batch (durable subscriptions; a no-op otherwise)."""
        self._sub._ack_many([m._delivery.id for m in self])

    async def nack(self, delay: float | dt.timedelta | None = None) -> None:
        """Ask for redelivery of every message of the batch, after ``delay`` if given."""
        self._sub._nack_many([m._delivery.id for m in self], delay)


class StoredEvent(Event):
    """An event as the broker's log keeps it (from history queries)."""

    __slots__ = ("id", "policy_version", "stored_time", "subject")

    def __init__(self, stored: broker_pb2.StoredEvent, model: type[object] | None = None):
        super().__init__(stored.event, model)
        self.id: int = stored.id
        self.subject: str = stored.subject
        self.stored_time: dt.datetime = stored.stored_time.ToDatetime(tzinfo=dt.UTC)
        self.policy_version: str = stored.policy_version

    def __repr__(self) -> str:
        return f"StoredEvent(id={self.id}, subject={self.subject!r})"


@dataclass(frozen=True, slots=True, init=False)
class PublishResult:
    """The outcome of one event of an explicit batch: its id, or why it was rejected."""

    id: int
    duplicate: bool = False
    error: LockgateError | None = None

    def __init__(self, id: int, duplicate: bool = False, error: LockgateError | None = None):
        # A frozen dataclass's own __init__ sets each field through object.__setattr__, about
        # 1 µs an instance: a third of the publisher's CPU in a 500-event publish_batch. The
        # slots' descriptors set them directly; the instance stays frozen (no __setattr__).
        _set_id(self, id)
        _set_duplicate(self, duplicate)
        _set_error(self, error)

    @property
    def ok(self) -> bool:
        """True when the broker stored (or had already stored) the event."""
        return self.error is None


_set_id = cast(Any, PublishResult.__dict__["id"]).__set__
_set_duplicate = cast(Any, PublishResult.__dict__["duplicate"]).__set__
_set_error = cast(Any, PublishResult.__dict__["error"]).__set__
