"""The gateways' own errors, in the broker's tree, and the one table from errors to HTTP.

::

    BrokerError (broker.errors)
    └── InvalidArgument
        ├── BodyTooLarge             reason BODY_TOO_LARGE          HTTP 413
        ├── UnsupportedMediaType     reason UNSUPPORTED_MEDIA_TYPE  HTTP 415
        ├── MalformedJson            reason MALFORMED_JSON          HTTP 400
        ├── InvalidParameter         reason INVALID_PARAMETER       HTTP 400
        ├── MethodNotAllowed         reason METHOD_NOT_ALLOWED      HTTP 405
        ├── HttpRefusal              reason INVALID_ARGUMENT        its HTTP status (aiohttp's)
        ├── MalformedRequest         reason INVALID_ARGUMENT        its HTTP status (aiohttp's)
        └── InvalidEvent (broker.errors)
            └── UnencodableEvent     reason INVALID_EVENT           HTTP 422
    └── Unauthenticated (broker.errors)
        └── KeyRequired              reason UNAUTHENTICATED         HTTP 401
    └── DeadlineExceeded (broker.errors)
        └── BodyTimeout              reason REQUEST_TIMEOUT         HTTP 408
    └── ResourceExhausted (broker.errors)
        └── TooManyConnections       reason RESOURCE_EXHAUSTED      HTTP 503

Every other :class:`~broker.errors.BrokerError` maps by its reason (when the reason has an
entry in ``HTTP_BY_REASON``) or else by its gRPC code (``HTTP_BY_CODE``).
"""

from __future__ import annotations

from collections.abc import Collection

import grpc

from lockgate.broker.errors import (
    BrokerError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    InvalidEvent,
    Reason,
    ResourceExhausted,
    Unauthenticated,
)
from lockgate.broker.extras import missing_extra as broker_missing_extra

__all__ = [
    "HTTP_BY_CODE",
    "HTTP_BY_REASON",
    "BodyTimeout",
    "BodyTooLarge",
    "HttpRefusal",
    "InvalidParameter",
    "KeyRequired",
    "MalformedJson",
    "MalformedRequest",
    "MethodNotAllowed",
    "TooManyConnections",
    "UnencodableEvent",
    "UnsupportedMediaType",
    "http_status",
    "listen_failed",
    "missing_extra",
    "retry_after",
]


class BodyTooLarge(InvalidArgument):
    default_reason: str = Reason.BODY_TOO_LARGE

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the request body exceeds max_body_bytes of {limit} bytes",
            hint="send smaller batches, or raise [gateways.http] max_body_bytes",
            metadata={"limit": str(limit)},
        )


class BodyTimeout(DeadlineExceeded):
    """A request body that did not arrive within ``http_body_timeout`` (a slow or stalled
    sender holds a connection; the connection is closed after this answer)."""

    http_status = 408

    def __init__(self, seconds: float) -> None:
        super().__init__(
            f"the request body did not arrive within http_body_timeout of {seconds:g}s",
            hint="send the body at once, or raise http_body_timeout",
            metadata={"timeout": f"{seconds:g}s"},
        )


class TooManyConnections(ResourceExhausted):
    """A connection beyond ``http_max_connections`` (all listeners of the process) or
    ``http_max_connections_per_address``; it is answered and closed at once."""

    http_status = 503

    def __init__(self, setting: str, limit: int) -> None:
        super().__init__(
            f"the gateway holds {setting} = {limit} connections already",
            hint="reuse connections (keep-alive) and retry later",
            metadata={"limit": str(limit), "setting": setting, "retry_after": "1"},
        )


class KeyRequired(Unauthenticated):
    """A keyless call from another host to a gateway on a non-loopback address: the broker's
    open dev mode (no keys: every keyless caller is admin) is for loopback callers only, and a
    gateway cannot see whether the broker has keys, so it never forwards such a call."""

    def __init__(self) -> None:
        super().__init__(
            "a call from the network needs an API key",
            hint="send 'Authorization: Bearer <key>'; create one with `lockgate keys create`",
        )


class UnsupportedMediaType(InvalidArgument):
    default_reason: str = Reason.UNSUPPORTED_MEDIA_TYPE

    def __init__(self, content_type: str, accepted: str) -> None:
        super().__init__(
            f"content type {content_type or '(none)'!r} is not accepted here",
            hint=f"send {accepted}",
        )


class MalformedJson(InvalidArgument):
    default_reason: str = Reason.MALFORMED_JSON

    def __init__(self, problem: str) -> None:
        super().__init__(f"the body is not valid JSON: {problem}", hint="check the JSON syntax")


class InvalidParameter(InvalidArgument):
    default_reason: str = Reason.INVALID_PARAMETER

    def __init__(self, name: str, value: str, expected: str) -> None:
        shown = value if len(value) <= 60 else value[:57] + "..."
        super().__init__(f"parameter {name}={shown!r} is invalid", hint=f"give {expected}")


class MethodNotAllowed(InvalidArgument):
    default_reason: str = Reason.METHOD_NOT_ALLOWED
    http_status = 405

    def __init__(self, method: str, path: str, allowed: Collection[str]) -> None:
        shown = path if len(path) <= 80 else path[:77] + "..."
        super().__init__(
            f"{shown} does not take {method}",
            hint=f"use {', '.join(sorted(allowed))}",
            metadata={"allow": ",".join(sorted(allowed))},
        )


class HttpRefusal(InvalidArgument):
    """A request aiohttp itself refused (a 4xx of its own), with that status."""

    def __init__(self, status: int, phrase: str) -> None:
        super().__init__(
            f"the request was refused: {phrase}", hint="see the HTTP API in the README"
        )
        self.http_status = status


class MalformedRequest(InvalidArgument):
    """A request head aiohttp refused before any of our code ran (a request line or header
    over its 8,190-byte limit, a malformed header or request line), with that status."""

    def __init__(self, status: int, detail: str) -> None:
        # aiohttp's first line names the problem; the lines after it quote the request.
        line = (detail.splitlines() or [""])[0].rstrip(":. ")
        shown = line if len(line) <= 200 else line[:197] + "..."
        super().__init__(
            f"the request head is malformed: {shown}",
            hint="send HTTP/1.1 with the request line and each header under 8,190 bytes",
        )
        self.http_status = status


class UnencodableEvent(InvalidEvent):
    """A stored event that has no CloudEvents JSON form (stored before ingress validated
    attribute values); reads over gRPC return it as stored."""

    http_status = 422

    def __init__(self, event_id: int, problem: str) -> None:
        super().__init__(
            f"stored event {event_id} cannot be encoded as CloudEvents JSON: {problem}",
            hint="read it over gRPC (GetEvent), which returns it as stored",
            metadata={"id": str(event_id)},
        )


HTTP_BY_REASON: dict[str, int] = {
    Reason.BODY_TOO_LARGE: 413,
    Reason.EVENT_TOO_LARGE: 413,
    Reason.UNSUPPORTED_MEDIA_TYPE: 415,
    Reason.RATE_LIMITED: 429,
    Reason.SLOW_CONSUMER: 429,
}

HTTP_BY_CODE: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def http_status(err: BrokerError) -> int:
    """The HTTP status for ``err`` (500 for anything unmapped)."""
    if isinstance(
        err, UnencodableEvent | MethodNotAllowed | HttpRefusal | BodyTimeout | TooManyConnections
    ):
        return err.http_status
    return HTTP_BY_REASON.get(err.reason) or HTTP_BY_CODE.get(err.code, 500)


def retry_after(err: BrokerError) -> int | None:
    """Whole seconds for a ``Retry-After`` header, for rate limits and overload."""
    if http_status(err) not in (429, 503):
        return None
    try:
        return max(1, int(float(err.metadata.get("retry_after", "1").rstrip("s")) + 0.999))
    except ValueError:
        return 1


# The optional dependency each gateway needs, by the top-level module that is missing.
def missing_extra(exc: ImportError) -> FailedPrecondition:
    """The error for a gateway whose optional dependency is not installed; re-raises
    ``exc`` when the missing module is not an optional dependency (a real bug)."""
    return broker_missing_extra("this gateway", exc)


def listen_failed(listen: str, exc: OSError) -> FailedPrecondition:
    """The error for a gateway that cannot bind ``listen`` (busy port, bad address)."""
    return FailedPrecondition(
        f"the gateway cannot listen on {listen}: {exc.strerror or exc}",
        reason=Reason.LISTEN_FAILED,
        hint="is another process using that port? choose another listen = HOST:PORT",
    )
