"""A status we send stays small enough for the caller's gRPC to accept its trailers."""

from __future__ import annotations

from google.rpc import error_details_pb2, status_pb2

from lockgate.broker.errors import MAX_STATUS_MESSAGE, InvalidArgument, to_status


def test_a_huge_message_and_metadata_are_cut_and_say_so() -> None:
    err = InvalidArgument(
        "é" * 50_000, reason="POLICY_INVALID", hint="h" * 5000, metadata={"errors": "x" * 9000}
    )
    status = to_status(err)
    trailers = dict(status.trailing_metadata)
    details = trailers["grpc-status-details-bin"]
    assert isinstance(details, bytes) and len(details) < 4096
    assert len(status.details.encode()) <= MAX_STATUS_MESSAGE
    assert status.details.endswith("more bytes not shown)")
    parsed = status_pb2.Status.FromString(details)
    info = error_details_pb2.ErrorInfo()
    parsed.details[0].Unpack(info)
    assert info.reason == "POLICY_INVALID"
    assert all(len(v.encode()) <= 512 for v in info.metadata.values())


def test_a_short_message_is_untouched() -> None:
    status = to_status(InvalidArgument("subject 'a..b' has an empty token"))
    assert status.details == "subject 'a..b' has an empty token"
