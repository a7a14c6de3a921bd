"""The error tree and its translation from gRPC statuses; no server."""

from __future__ import annotations

import grpc
import pytest
from grpc_status import rpc_status

from lockgate import clients
from lockgate.broker.v1.reasons import Reason
from lockgate.clients._errors import error_for_reason, from_rpc_error
from tests.clients.status_kit import rich_status


def rpc_error(status: grpc.Status) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        status.code,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(*status.trailing_metadata),
        status.details,
        None,
    )


@pytest.mark.parametrize(
    ("reason", "cls"),
    [
        ("INVALID_SUBJECT", clients.InvalidSubject),
        ("EVENT_TOO_LARGE", clients.InvalidEvent),
        ("MISSING_ATTRIBUTE", clients.InvalidEvent),
        ("EMPTY_EVENT", clients.InvalidEvent),
        ("POLICY_DENIED", clients.PermissionDenied),
        ("DUPLICATE_KEY", clients.AlreadyExists),
        ("INVALID_START", clients.InvalidArgument),
        ("LISTEN_FAILED", clients.FailedPrecondition),
        ("UNAUTHENTICATED", clients.Unauthenticated),
        ("RATE_LIMITED", clients.RateLimited),
        ("UNKNOWN_DURABLE", clients.NotFound),
        ("NO_RESPONDERS", clients.NoResponders),
        ("SLOW_CONSUMER", clients.SlowConsumer),
        ("NOT_PENDING", clients.FailedPrecondition),
        ("POLICY_REQUIREMENT", clients.FailedPrecondition),
        ("SHUTTING_DOWN", clients.Unavailable),
    ],
)
def test_reason_picks_class(reason: str, cls: type[clients.LockgateError]) -> None:
    err = error_for_reason(reason, "it went wrong")
    assert type(err) is cls
    assert err.reason == reason and err.message == "it went wrong"


def test_no_responders_is_not_found() -> None:
    assert issubclass(clients.NoResponders, clients.NotFound)


def test_unknown_reason_keeps_it_on_base_class() -> None:
    err = error_for_reason("BRAND_NEW", "x")
    assert type(err) is clients.LockgateError and err.reason == "BRAND_NEW"


def test_from_rpc_error_reads_error_info() -> None:
    status = rich_status(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "RATE_LIMITED",
        "slow down",
        hint="wait",
        retry_after="2.5",
    )
    err = from_rpc_error(rpc_error(status))
    assert isinstance(err, clients.RateLimited)
    assert err.retry_after == 2.5 and err.hint == "wait"
    assert str(err) == "slow down (hint: wait)"
    assert err.metadata["retry_after"] == "2.5"


def test_from_rpc_error_falls_back_to_code() -> None:
    err = from_rpc_error(
        grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down", None
        )
    )
    assert isinstance(err, clients.Unavailable) and err.reason == "UNAVAILABLE"
    assert "lockgate serve" in err.hint
    weird = from_rpc_error(
        grpc.aio.AioRpcError(
            grpc.StatusCode.DATA_LOSS, grpc.aio.Metadata(), grpc.aio.Metadata(), "", None
        )
    )
    # A status outside the registry keeps its code, not a reason of its own.
    assert type(weird) is clients.LockgateError and weird.reason == "UNKNOWN"
    assert weird.code == grpc.StatusCode.DATA_LOSS and "DATA_LOSS" in weird.message


def test_grpcs_size_refusal_is_event_too_large_not_a_rate_limit() -> None:
    # grpc refuses a message over a size limit with RESOURCE_EXHAUSTED and its own text; a
    # rate limit would tell the caller to retry a request that can never pass.
    for text in (
        "CLIENT: Sent message larger than max (10485836 vs. 1114112)",
        "Received message larger than max (2000000 vs. 1048576)",
    ):
        err = from_rpc_error(
            grpc.aio.AioRpcError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                text,
                None,
            )
        )
        assert isinstance(err, clients.InvalidEvent) and err.reason == "EVENT_TOO_LARGE"
        assert not isinstance(err, clients.RateLimited)
        assert "larger than max" not in err.message and "smaller" in err.hint
    plain = from_rpc_error(
        grpc.aio.AioRpcError(
            grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.aio.Metadata(), grpc.aio.Metadata(), "", None
        )
    )
    assert isinstance(plain, clients.RateLimited)


def test_rpc_status_detail_helper_is_consistent() -> None:
    status = rich_status(grpc.StatusCode.NOT_FOUND, "NO_RESPONDERS", "nobody")
    assert rpc_status.to_status is not None and status.code == grpc.StatusCode.NOT_FOUND


# Reasons that never arrive from a broker: the client's own, and "no reason known".
CLIENT_SIDE = {
    "UNKNOWN",
    "INTERNAL",
    "NOT_CONNECTED",
    "CLOSED",
    "PROTOCOL_ERROR",
    "NO_REPLY_TO",
    "MISSING_SIGNATURE",
    "BAD_SIGNATURE",
    "STALE_SIGNATURE",
}


@pytest.mark.parametrize("reason", [r for r in Reason if r not in CLIENT_SIDE])
def test_every_registered_reason_has_its_class(reason: Reason) -> None:
    """A reason added to protos/broker/v1/errors.proto must be given a class here too."""
    err = error_for_reason(reason, "x")
    assert type(err) is not clients.LockgateError, reason
    assert err.reason == reason
