"""Builds the rich gRPC statuses the broker sends, to unit-test the client's error translation."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status


def rich_status(code: grpc.StatusCode, reason: str, message: str, **meta: str) -> grpc.Status:
    """A status of ``code`` carrying an ``ErrorInfo`` detail (``reason``, ``meta``)."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain="lockgate.dev", metadata=meta)
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    return rpc_status.to_status(status)
