"""Who may read a dead letter: the reader of its ``$dlq.<durable>`` subject who may also read
the subject the event was first published on.

A dead letter keeps its original subject in the ``lockgateoriginalsubject`` attribute
(``Durables.publish_dead_letters``); one ``$dlq`` batch holds events of many subjects, so the
check runs per event. Only ``$dlq.`` batches pay for it (they are rare and small), the
publish path none. A dead letter without the attribute is read by nobody (fail closed).

Example::

    body, count = readable_frames(batch.subject, batch.body, batch.count, readable)
"""

from __future__ import annotations

from collections.abc import Callable

from lockgate.broker import wire
from lockgate.broker.v1 import broker_pb2

__all__ = [
    "DLQ_PREFIX",
    "ORIGINAL_SUBJECT",
    "is_dead_letter",
    "may_read_dead_letter",
    "original_subject",
    "readable_frames",
]

DLQ_PREFIX = "$dlq."
ORIGINAL_SUBJECT = "lockgateoriginalsubject"


def is_dead_letter(subject: str) -> bool:
    return subject.startswith(DLQ_PREFIX)


def original_subject(frame: bytes) -> str:
    """The subject a dead-lettered delivery frame was first published on ("" if unknown)."""
    d = broker_pb2.Delivery.FromString(wire.frame_body(frame))
    attrs = d.event.attributes
    return attrs[ORIGINAL_SUBJECT].ce_string if ORIGINAL_SUBJECT in attrs else ""


def may_read_dead_letter(readable: Callable[[str], bool], frame: bytes) -> bool:
    """Whether the reader (``readable``: its per-subject decision) may read this dead
    letter's original subject."""
    orig = original_subject(frame)
    return bool(orig) and readable(orig)


def readable_frames(
    subject: str, body: bytes, count: int, readable: Callable[[str], bool] | None
) -> tuple[bytes, int]:
    """``body`` (``count`` frames of a batch on ``subject``, which the reader may read) less
    the dead letters whose original subject the reader may not read."""
    if readable is None or not is_dead_letter(subject):
        return body, count
    kept = [f for _, f in wire.split_frames(body) if may_read_dead_letter(readable, f)]
    if len(kept) == count:
        return body, count
    return b"".join(kept), len(kept)
