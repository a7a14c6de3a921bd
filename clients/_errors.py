"""The client's exceptions: one tree, one factory from gRPC errors.

::

    LockgateError(Exception)            reason, message, hint
    ├── InvalidSubject                  INVALID_SUBJECT
    ├── InvalidEvent                    INVALID_EVENT, MISSING_ATTRIBUTE, EVENT_TOO_LARGE,
    │                                   EMPTY_EVENT
    ├── PermissionDenied                PERMISSION_DENIED, POLICY_DENIED, CROSS_ORG
    ├── Unauthenticated                 UNAUTHENTICATED
    ├── RateLimited                     RATE_LIMITED, RESOURCE_EXHAUSTED (retry_after seconds)
    ├── NotFound                        NOT_FOUND, UNKNOWN_DURABLE
    │   └── NoResponders                NO_RESPONDERS
    ├── RequestTimeout                  REQUEST_TIMEOUT, DEADLINE_EXCEEDED on a request
    ├── SlowConsumer                    SLOW_CONSUMER
    ├── Unavailable                     UNAVAILABLE, STORE_UNAVAILABLE, SHUTTING_DOWN
    └── FailedPrecondition              POLICY_REQUIREMENT, NOT_PENDING

Errors from the broker carry a ``google.rpc.ErrorInfo`` whose ``reason`` picks the class; without
one the gRPC status code does. A reason this client does not know maps to :class:`LockgateError`
with the reason kept, so newer brokers never crash older clients.

Example::

    try:
        await client.publish("billing.invoices", {"total": 10})
    except RateLimited as exc:
        await asyncio.sleep(exc.retry_after or 1.0)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import grpc

__all__ = [
    "FailedPrecondition",
    "InvalidEvent",
    "InvalidSubject",
    "LockgateError",
    "NoResponders",
    "NotFound",
    "PermissionDenied",
    "RateLimited",
    "RequestTimeout",
    "SlowConsumer",
    "Unauthenticated",
    "Unavailable",
    "error_for_reason",
    "from_rpc_error",
]

ERROR_DOMAIN = "lockgate.dev"


class LockgateError(Exception):
    """Base of every error the client raises.

    ``reason`` is the machine-readable cause (as in ``ErrorInfo.reason``), ``message`` one human
    sentence, ``hint`` what to do about it (may be empty), ``metadata`` any further details the
    broker sent.
    """

    default_reason = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        hint: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.hint = hint
        self.metadata: dict[str, str] = dict(metadata or {})

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} (hint: {self.hint})"
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, message={self.message!r})"


class InvalidSubject(LockgateError):
    """The subject or pattern is not valid syntax (``a.b.c``, wildcards ``*`` and ``>``)."""

    default_reason = "INVALID_SUBJECT"


class InvalidEvent(LockgateError):
    """The event is malformed, lacks an attribute, is empty or too large."""

    default_reason = "INVALID_EVENT"


class PermissionDenied(LockgateError):
    """The caller may not do this: a role, a policy rule, or another org's subject."""

    default_reason = "PERMISSION_DENIED"


class Unauthenticated(LockgateError):
    """The API key is missing, unknown or revoked."""

    default_reason = "UNAUTHENTICATED"


class RateLimited(LockgateError):
    """Too many events; ``retry_after`` says how many seconds to wait, when the broker knows."""

    default_reason = "RATE_LIMITED"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        hint: str = "",
        metadata: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, reason=reason, hint=hint, metadata=metadata)
        if retry_after is None and "retry_after" in self.metadata:
            try:
                retry_after = float(self.metadata["retry_after"].rstrip("s"))
            except ValueError:
                retry_after = None
        self.retry_after = retry_after


class NotFound(LockgateError):
    """The event, durable or other named thing does not exist."""

    default_reason = "NOT_FOUND"


class NoResponders(NotFound):
    """A request found nobody subscribed to its subject."""

    default_reason = "NO_RESPONDERS"


class RequestTimeout(LockgateError):
    """A request got no reply in time."""

    default_reason = "DEADLINE_EXCEEDED"


class SlowConsumer(LockgateError):
    """The subscriber fell too far behind and the broker closed its stream."""

    default_reason = "SLOW_CONSUMER"


class Unavailable(LockgateError):
    """The broker cannot be reached, or a backend behind it failed closed."""

    default_reason = "UNAVAILABLE"


class FailedPrecondition(LockgateError):
    """The operation does not fit the current state (a policy requirement, an id not pending)."""

    default_reason = "FAILED_PRECONDITION"


_BY_REASON: dict[str, type[LockgateError]] = {
    "INVALID_SUBJECT": InvalidSubject,
    "INVALID_PATTERN": InvalidSubject,
    "INVALID_EVENT": InvalidEvent,
    "MISSING_ATTRIBUTE": InvalidEvent,
    "EVENT_TOO_LARGE": InvalidEvent,
    "EMPTY_EVENT": InvalidEvent,
    "PERMISSION_DENIED": PermissionDenied,
    "POLICY_DENIED": PermissionDenied,
    "CROSS_ORG": PermissionDenied,
    "UNAUTHENTICATED": Unauthenticated,
    "RATE_LIMITED": RateLimited,
    "NOT_FOUND": NotFound,
    "UNKNOWN_DURABLE": NotFound,
    "NO_RESPONDERS": NoResponders,
    "DEADLINE_EXCEEDED": RequestTimeout,
    "REQUEST_TIMEOUT": RequestTimeout,
    "RESOURCE_EXHAUSTED": RateLimited,
    "STORE_UNAVAILABLE": Unavailable,
    "SHUTTING_DOWN": Unavailable,
    "SLOW_CONSUMER": SlowConsumer,
    "UNAVAILABLE": Unavailable,
    "POLICY_REQUIREMENT": FailedPrecondition,
    "NOT_PENDING": FailedPrecondition,
    "FAILED_PRECONDITION": FailedPrecondition,
}

_BY_CODE: dict[grpc.StatusCode, type[LockgateError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidEvent,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimited,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.DEADLINE_EXCEEDED: RequestTimeout,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
}

_HINTS: dict[type[LockgateError], str] = {
    Unauthenticated: "pass api_key= (or --api-key / LOCKGATE_API_KEY) with a valid key",
    Unavailable: "check that the broker runs (start it with `lockgate serve`)",
}


def error_for_reason(
    reason: str, message: str, *, hint: str = "", metadata: Mapping[str, str] | None = None
) -> LockgateError:
    """Build the exception for a machine-readable ``reason`` (e.g. from a ``PublishError``).

    >>> type(error_for_reason("NO_RESPONDERS", "nobody listens")).__name__
    'NoResponders'
    """
    cls = _BY_REASON.get(reason, LockgateError)
    meta = dict(metadata or {})
    hint = hint or meta.get("hint", "") or _HINTS.get(cls, "")
    return cls(message or reason.lower().replace("_", " "), reason=reason, hint=hint, metadata=meta)


def from_rpc_error(err: grpc.aio.AioRpcError | grpc.RpcError) -> LockgateError:
    """Translate a gRPC error into the client's tree, reading its ``ErrorInfo`` when present.

    Example::

        try:
            await call
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from exc
    """
    code = _code(err)
    details = _details(err)
    info = _error_info(err)
    if info is not None:
        reason, metadata = info
        return error_for_reason(reason, details, metadata=metadata)
    cls = _BY_CODE.get(code, LockgateError) if code is not None else LockgateError
    reason = code.name if code is not None else "UNKNOWN"
    message = details or f"the broker answered {reason}"
    return cls(message, reason=reason, hint=_HINTS.get(cls, ""))


def _code(err: grpc.RpcError) -> grpc.StatusCode | None:
    code = getattr(err, "code", None)
    if code is None:
        return None
    value = code()
    return value if isinstance(value, grpc.StatusCode) else None


def _details(err: grpc.RpcError) -> str:
    details = getattr(err, "details", None)
    if details is None:
        return ""
    value = details()
    return value if isinstance(value, str) else ""


def _error_info(err: grpc.RpcError) -> tuple[str, dict[str, str]] | None:
    """The (reason, metadata) of the first ``ErrorInfo`` detail, if the status carries one."""
    try:
        from google.rpc import error_details_pb2
        from grpc_status import rpc_status

        status = rpc_status.from_call(cast(grpc.Call, err))
    except Exception:  # malformed or absent status details: fall back to the code
        return None
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason, dict(info.metadata)
    return None
