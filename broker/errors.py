"""The broker's errors, one tree, and their mapping to gRPC statuses.

::

    BrokerError                      (reason, message, hint)
    ├── InvalidArgument              INVALID_ARGUMENT
    │   ├── InvalidSubject           reason INVALID_SUBJECT
    │   ├── InvalidEvent             reasons MISSING_ATTRIBUTE, INVALID_EVENT, EMPTY_EVENT
    │   ├── EventTooLarge            reason EVENT_TOO_LARGE
    │   ├── InvalidStart             reason INVALID_START
    │   └── MalformedMessage         reason MALFORMED_MESSAGE
    ├── Unauthenticated              UNAUTHENTICATED, reason UNAUTHENTICATED
    ├── PermissionDenied             PERMISSION_DENIED, reasons PERMISSION_DENIED, POLICY_DENIED
    ├── AlreadyExists                ALREADY_EXISTS, reasons DUPLICATE_CONTENT, DUPLICATE_KEY
    ├── FailedPrecondition           FAILED_PRECONDITION, reasons NOT_PENDING, POLICY_REQUIREMENT,
    │                                DURABLE_MISMATCH, INSECURE_LISTEN, MISSING_EXTRA, ...
    ├── NotFound                     NOT_FOUND, reasons NOT_FOUND, UNKNOWN_DURABLE, NO_RESPONDERS
    ├── ResourceExhausted            RESOURCE_EXHAUSTED, reasons RATE_LIMITED, SLOW_CONSUMER
    │   └── QuotaExceeded            reason QUOTA_EXCEEDED (quota, limit)
    ├── DeadlineExceeded             DEADLINE_EXCEEDED, reason REQUEST_TIMEOUT
    └── Unavailable                  UNAVAILABLE, reasons STORE_UNAVAILABLE, SHUTTING_DOWN,
                                     LIMITER_UNAVAILABLE

Reasons come from the one registry, ``broker.v1.ErrorReason`` in protos/broker/v1/errors.proto
(as :class:`broker.v1.reasons.Reason`); a test fails on a reason outside it. Startup and
configuration failures are ``FailedPrecondition`` (INSECURE_LISTEN, MISSING_EXTRA, LISTEN_FAILED)
or ``InvalidArgument`` (INVALID_CONFIG), never ``Unavailable``, which means "retry later".

Every error builds one human sentence from its fields, and carries a ``hint`` that says
what to do. Backend exceptions (sqlite3, asyncpg, redis, nats) are translated into these at
the adapter's edge (``raise Unavailable(...) from exc``) and never leak upward.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from lockgate.broker.v1.reasons import Reason

__all__ = [
    "DOMAIN",
    "MAX_STATUS_MESSAGE",
    "AlreadyExists",
    "BrokerError",
    "DeadlineExceeded",
    "EventTooLarge",
    "FailedPrecondition",
    "InvalidArgument",
    "InvalidEvent",
    "InvalidPageToken",
    "InvalidStart",
    "InvalidSubject",
    "MalformedMessage",
    "NotFound",
    "PermissionDenied",
    "QuotaExceeded",
    "Reason",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "to_status",
]

DOMAIN = "lockgate.dev"


class BrokerError(Exception):
    """Base of every error the broker reports to a caller."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    default_reason: str = Reason.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        hint: str = "",
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = str(reason or self.default_reason)
        self.hint = hint
        self.metadata = dict(metadata or {})

    def __str__(self) -> str:
        return f"{self.message} (hint: {self.hint})" if self.hint else self.message


class InvalidArgument(BrokerError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason: str = Reason.INVALID_ARGUMENT


class InvalidSubject(InvalidArgument):
    default_reason: str = Reason.INVALID_SUBJECT

    def __init__(self, subject: str, problem: str, *, hint: str = "") -> None:
        shown = subject if len(subject) <= 80 else subject[:77] + "..."
        super().__init__(
            f"subject {shown!r} is invalid: {problem}",
            hint=hint or "use dot-separated tokens of letters, digits, '-' and '_'",
        )
        self.subject = subject
        self.problem = problem


class InvalidEvent(InvalidArgument):
    default_reason: str = Reason.INVALID_EVENT


class EventTooLarge(InvalidArgument):
    default_reason: str = Reason.EVENT_TOO_LARGE

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"event of {size} bytes exceeds max_event_bytes of {limit} bytes",
            hint="split the payload, or raise max_event_bytes in the broker configuration",
            metadata={"size": str(size), "limit": str(limit)},
        )
        self.size = size
        self.limit = limit


class InvalidPageToken(InvalidArgument):
    """A ``page_token`` this broker never issued (every list call answers this one way)."""

    default_reason: str = Reason.INVALID_PAGE_TOKEN

    def __init__(self, token: str) -> None:
        super().__init__("page_token is not one this broker issued")
        self.token = token


class InvalidStart(InvalidArgument):
    default_reason: str = Reason.INVALID_START


class MalformedMessage(InvalidArgument):
    """A gRPC request that is not a valid protobuf encoding of its message type."""

    default_reason: str = Reason.MALFORMED_MESSAGE

    def __init__(self, type_name: str) -> None:
        super().__init__(
            f"the request is not a valid {type_name} message",
            hint="send the message encoded by a protobuf library from the published .proto",
        )


class Unauthenticated(BrokerError):
    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason: str = Reason.UNAUTHENTICATED


class PermissionDenied(BrokerError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason: str = Reason.PERMISSION_DENIED


class FailedPrecondition(BrokerError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason: str = Reason.FAILED_PRECONDITION


class AlreadyExists(BrokerError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason: str = Reason.ALREADY_EXISTS


class NotFound(BrokerError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason: str = Reason.NOT_FOUND


class ResourceExhausted(BrokerError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason: str = Reason.RESOURCE_EXHAUSTED


class QuotaExceeded(ResourceExhausted):
    """An org (or a connection) holds as many of something as a quota setting allows.

    >>> QuotaExceeded("max_durables_per_org", 2, "org 'acme'", "durable subscriptions").message
    "org 'acme' holds 2 durable subscriptions, the most max_durables_per_org allows"
    """

    default_reason: str = Reason.QUOTA_EXCEEDED

    def __init__(self, quota: str, limit: int, holder: str, what: str, *, hint: str = "") -> None:
        super().__init__(
            f"{holder} holds {limit} {what}, the most {quota} allows",
            hint=hint or f"release some, or ask the operator to raise {quota}",
            metadata={"quota": quota, "limit": str(limit)},
        )
        self.quota = quota
        self.limit = limit


class DeadlineExceeded(BrokerError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason: str = Reason.REQUEST_TIMEOUT


class Unavailable(BrokerError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason: str = Reason.UNAVAILABLE


MAX_STATUS_MESSAGE = 1500
"""UTF-8 bytes of a status message (and of each ErrorInfo value) we send: the message goes
twice into the trailers (``grpc-message``, percent-encoded, and ``grpc-status-details-bin``),
and a caller's gRPC refuses trailers over 8-16 KiB as RESOURCE_EXHAUSTED with neither our
code nor our reason (a policy error quoting a 40 KB source line did)."""
_MAX_META_VALUE = 512


def _bounded(text: str, limit: int) -> str:
    raw = text.encode()
    if len(raw) <= limit:
        return text
    cut = raw[: limit - 64].decode(errors="ignore")
    return f"{cut}… ({len(raw) - len(cut.encode())} more bytes not shown)"


def to_status(err: BrokerError) -> grpc.Status:
    """The rich gRPC status for ``err``: its code, its sentence and an ``ErrorInfo``
    (bounded, see :data:`MAX_STATUS_MESSAGE`)."""
    meta = {k: _bounded(v, _MAX_META_VALUE) for k, v in err.metadata.items()}
    if err.hint:
        meta["hint"] = _bounded(err.hint, _MAX_META_VALUE)
    info = error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN, metadata=meta)
    detail = any_pb2.Any()
    detail.Pack(info)
    message = _bounded(err.message, MAX_STATUS_MESSAGE)
    status = status_pb2.Status(code=err.code.value[0], message=message, details=[detail])
    return rpc_status.to_status(status)
