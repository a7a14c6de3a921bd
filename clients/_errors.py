"""The client's exceptions: one tree, one factory from gRPC errors.

::

    LockgateError(Exception)            reason, message, hint
    ├── InvalidArgument                 INVALID_ARGUMENT, INVALID_START, INVALID_DURABLE, ...
    │   ├── InvalidSubject              INVALID_SUBJECT
    │   └── InvalidEvent                INVALID_EVENT, MISSING_ATTRIBUTE, EVENT_TOO_LARGE,
    │                                   EMPTY_EVENT
    ├── PermissionDenied                PERMISSION_DENIED, POLICY_DENIED, NOT_PARTICIPANT
    ├── Unauthenticated                 UNAUTHENTICATED
    ├── AlreadyExists                   ALREADY_EXISTS, DUPLICATE_CONTENT, DUPLICATE_KEY
    ├── RateLimited                     RATE_LIMITED, RESOURCE_EXHAUSTED (retry_after seconds)
    ├── NotFound                        NOT_FOUND, UNKNOWN_DURABLE, UNKNOWN_VERSION,
    │   │                               UNKNOWN_CONVERSATION
    │   └── NoResponders                NO_RESPONDERS
    ├── RequestTimeout                  REQUEST_TIMEOUT, DEADLINE_EXCEEDED on a request
    ├── SlowConsumer                    SLOW_CONSUMER
    ├── QuotaExceeded                   QUOTA_EXCEEDED (quota, limit), GROUP_FULL
    ├── Unavailable                     UNAVAILABLE, STORE_UNAVAILABLE, SHUTTING_DOWN,
    │   │                               LIMITER_UNAVAILABLE
    │   └── TLSError                    TLS_HANDSHAKE_FAILED
    ├── FailedPrecondition              POLICY_REQUIREMENT, NOT_PENDING, DURABLE_MISMATCH, ...
    │                                   STALE_EPOCH, CONVERSATION_CLOSED, IMMUTABLE_CONVERSATION
    ├── DecryptionError                 DECRYPTION_FAILED (client side)
    ├── KeyMismatch                     KEY_MISMATCH (client side)
    └── UnsafeKeystore                  UNSAFE_KEYSTORE (client side)

Reasons are the names of ``broker.v1.ErrorReason`` (:class:`broker.v1.reasons.Reason`), the one
registry shared with the broker and the gateways. Errors from the broker carry a
``google.rpc.ErrorInfo`` whose ``reason`` picks the class; without one the gRPC status code does
(``code`` keeps the status either way). A reason this client does not know maps to
:class:`LockgateError` with the reason kept, so newer brokers never crash older clients.

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

from lockgate.broker.v1.reasons import Reason

__all__ = [
    "AlreadyExists",
    "DecryptionError",
    "FailedPrecondition",
    "InvalidArgument",
    "InvalidEvent",
    "InvalidSubject",
    "KeyMismatch",
    "LockgateError",
    "NoResponders",
    "NotFound",
    "PermissionDenied",
    "QuotaExceeded",
    "RateLimited",
    "RequestTimeout",
    "SlowConsumer",
    "TLSError",
    "Unauthenticated",
    "Unavailable",
    "UnsafeKeystore",
    "error_for_reason",
    "from_rpc_error",
]

WRITE_FAILURE_GRACE = 1.0
"""How long a stream whose write failed waits for its reader to report the status the call
ended with (the write's own error is grpc's, the reader's is the broker's reason)."""

ERROR_DOMAIN = "lockgate.dev"


class LockgateError(Exception):
    """Base of every error the client raises.

    ``reason`` is the machine-readable cause (as in ``ErrorInfo.reason``), ``message`` one human
    sentence, ``hint`` what to do about it (may be empty), ``metadata`` any further details the
    broker sent.
    """

    default_reason: str = Reason.UNKNOWN

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
        self.reason = str(reason or self.default_reason)
        self.hint = hint
        self.metadata: dict[str, str] = dict(metadata or {})
        # The gRPC status that carried the error, when one did (set by from_rpc_error).
        self.code: grpc.StatusCode | None = None

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} (hint: {self.hint})"
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, message={self.message!r})"


class InvalidArgument(LockgateError):
    """The request is malformed: a start position, a durable's settings, a page token, ..."""

    default_reason: str = Reason.INVALID_ARGUMENT


class InvalidSubject(InvalidArgument):
    """The subject or pattern is not valid syntax (``a.b.c``, wildcards ``*`` and ``>``)."""

    default_reason: str = Reason.INVALID_SUBJECT


class InvalidEvent(InvalidArgument):
    """The event is malformed, lacks an attribute, is empty or too large."""

    default_reason: str = Reason.INVALID_EVENT


class PermissionDenied(LockgateError):
    """The caller may not do this: a role, a policy rule, or another org's subject."""

    default_reason: str = Reason.PERMISSION_DENIED


class Unauthenticated(LockgateError):
    """The API key is missing, unknown or revoked."""

    default_reason: str = Reason.UNAUTHENTICATED


class AlreadyExists(LockgateError):
    """The thing exists already, or a policy's dedup window saw this event before."""

    default_reason: str = Reason.ALREADY_EXISTS


class RateLimited(LockgateError):
    """Too many events; ``retry_after`` says how many seconds to wait, when the broker knows."""

    default_reason: str = Reason.RATE_LIMITED

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

    default_reason: str = Reason.NOT_FOUND


class NoResponders(NotFound):
    """A request found nobody subscribed to its subject."""

    default_reason: str = Reason.NO_RESPONDERS


class RequestTimeout(LockgateError):
    """A request got no reply in time."""

    default_reason: str = Reason.DEADLINE_EXCEEDED


class SlowConsumer(LockgateError):
    """The subscriber fell too far behind and the broker closed its stream."""

    default_reason: str = Reason.SLOW_CONSUMER


class QuotaExceeded(LockgateError):
    """An org or a connection holds as many durables, subscriptions, connections or streams
    as the broker allows; ``quota`` names the setting and ``limit`` its value. Retrying does
    not help until something is released (a durable deleted, a stream closed)."""

    default_reason: str = Reason.QUOTA_EXCEEDED

    @property
    def quota(self) -> str:
        return self.metadata.get("quota", "")

    @property
    def limit(self) -> int:
        text = self.metadata.get("limit", "")
        return int(text) if text.isdigit() else 0


class Unavailable(LockgateError):
    """The broker cannot be reached, or a backend behind it failed closed."""

    default_reason: str = Reason.UNAVAILABLE


class TLSError(Unavailable):
    """The TLS handshake with the broker failed: a plain-text client on a TLS port or the
    reverse, an untrusted broker certificate, a refused client certificate."""

    default_reason: str = Reason.TLS_HANDSHAKE_FAILED


class FailedPrecondition(LockgateError):
    """The operation does not fit the current state (a policy requirement, an id not pending)."""

    default_reason: str = Reason.FAILED_PRECONDITION


class DecryptionError(LockgateError):
    """A conversation message or a sealed group key does not decrypt with the caller's keys:
    tampered bytes, a key the caller never held (an epoch after it left), or a copy sealed
    to someone else. Raised by the client, never by the broker."""

    default_reason: str = Reason.DECRYPTION_FAILED


class KeyMismatch(LockgateError):
    """A key directory entry is not what it should be: its signature does not verify, or its
    identity key differs from the one pinned on first use (the directory swapped a key)."""

    default_reason: str = Reason.KEY_MISMATCH


class UnsafeKeystore(LockgateError):
    """The local keystore file is readable by its group or by others."""

    default_reason: str = Reason.UNSAFE_KEYSTORE


_BY_CLASS: dict[type[LockgateError], tuple[Reason, ...]] = {
    InvalidArgument: (
        Reason.INVALID_ARGUMENT,
        Reason.INVALID_START,
        Reason.INVALID_DURABLE,
        Reason.INVALID_SETTING,
        Reason.INVALID_ACK,
        Reason.INVALID_PAGE_TOKEN,
        Reason.NOT_OPEN,
        Reason.ALREADY_OPEN,
        Reason.POLICY_INVALID,
        Reason.INVALID_ENDPOINT,
        Reason.PRIVATE_ENDPOINT,
        Reason.INVALID_CONFIG,
        Reason.MALFORMED_MESSAGE,
        Reason.BODY_TOO_LARGE,
        Reason.UNSUPPORTED_MEDIA_TYPE,
        Reason.MALFORMED_JSON,
        Reason.INVALID_PARAMETER,
        Reason.METHOD_NOT_ALLOWED,
        Reason.TOO_MANY_SUBSCRIPTIONS,
    ),
    InvalidSubject: (Reason.INVALID_SUBJECT,),
    InvalidEvent: (
        Reason.INVALID_EVENT,
        Reason.MISSING_ATTRIBUTE,
        Reason.EVENT_TOO_LARGE,
        Reason.EMPTY_EVENT,
    ),
    PermissionDenied: (Reason.PERMISSION_DENIED, Reason.POLICY_DENIED, Reason.NOT_PARTICIPANT),
    Unauthenticated: (
        Reason.UNAUTHENTICATED,
        Reason.CREDENTIAL_EXPIRED,
        Reason.CREDENTIAL_REVOKED,
        Reason.TOKEN_INVALID,
    ),
    AlreadyExists: (Reason.ALREADY_EXISTS, Reason.DUPLICATE_CONTENT, Reason.DUPLICATE_KEY),
    RateLimited: (Reason.RATE_LIMITED, Reason.RESOURCE_EXHAUSTED),
    NotFound: (
        Reason.NOT_FOUND,
        Reason.UNKNOWN_DURABLE,
        Reason.UNKNOWN_VERSION,
        Reason.UNKNOWN_CONVERSATION,
    ),
    NoResponders: (Reason.NO_RESPONDERS,),
    RequestTimeout: (Reason.DEADLINE_EXCEEDED, Reason.REQUEST_TIMEOUT),
    SlowConsumer: (Reason.SLOW_CONSUMER,),
    QuotaExceeded: (Reason.QUOTA_EXCEEDED, Reason.GROUP_FULL),
    TLSError: (Reason.TLS_HANDSHAKE_FAILED,),
    Unavailable: (
        Reason.UNAVAILABLE,
        Reason.STORE_UNAVAILABLE,
        Reason.SHUTTING_DOWN,
        Reason.LIMITER_UNAVAILABLE,
    ),
    FailedPrecondition: (
        Reason.FAILED_PRECONDITION,
        Reason.POLICY_REQUIREMENT,
        Reason.NOT_PENDING,
        Reason.DURABLE_MISMATCH,
        Reason.ALREADY_SUBSCRIBED,
        Reason.INSECURE_LISTEN,
        Reason.MISSING_EXTRA,
        Reason.LISTEN_FAILED,
        Reason.DATA_DIR_IN_USE,
        Reason.DATA_DIR_UNUSABLE,
        Reason.NO_POLICIES,
        Reason.CONVERSATION_CLOSED,
        Reason.IMMUTABLE_CONVERSATION,
        Reason.STALE_EPOCH,
    ),
    DecryptionError: (Reason.DECRYPTION_FAILED,),
    KeyMismatch: (Reason.KEY_MISMATCH,),
    UnsafeKeystore: (Reason.UNSAFE_KEYSTORE,),
}
_BY_REASON: dict[str, type[LockgateError]] = {
    reason: cls for cls, reasons in _BY_CLASS.items() for reason in reasons
}

_BY_CODE: dict[grpc.StatusCode, type[LockgateError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimited,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.DEADLINE_EXCEEDED: RequestTimeout,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
}

_HINTS: dict[type[LockgateError], str] = {
    Unauthenticated: "pass api_key= (or --api-key / LOCKGATE_API_KEY) with a valid key or token",
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
        err = error_for_reason(reason, details, metadata=metadata)
    elif code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
        # grpc's own refusal of a message over a size limit (the client's or the broker's
        # max_message_bytes) carries no reason of ours and the code of a rate limit; no
        # retry cures it, so it is an invalid request, EVENT_TOO_LARGE, as the broker's own.
        err = InvalidEvent(
            "the request is larger than the broker's max_message_bytes allows",
            reason=Reason.EVENT_TOO_LARGE,
            hint="send less in one call: smaller events or batches, a smaller policy set (a "
            "standalone gateway learns the broker's limit from LOCKGATE_MAX_MESSAGE_BYTES)",
        )
        code = grpc.StatusCode.INVALID_ARGUMENT
    else:
        cls = _BY_CODE.get(code, LockgateError) if code is not None else LockgateError
        name = code.name if code is not None else Reason.UNKNOWN
        known = Reason(name) if name in Reason.__members__ else Reason.UNKNOWN
        message = details or f"the broker answered {name}"
        err = cls(message, reason=known, hint=_HINTS.get(cls, ""))
    err.code = code
    return err


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
