"""What every servicer shares: authentication, error translation, request decoding."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from google.protobuf import timestamp_pb2

from broker.auth import Authenticator, Principal
from broker.errors import BrokerError, InvalidStart, PermissionDenied, to_status
from broker.node import Broker
from broker.positions import StartSpec
from broker.v1 import broker_pb2

__all__ = ["Servicer", "start_spec", "timestamp_ms"]

T = TypeVar("T")


def timestamp_ms(ts: timestamp_pb2.Timestamp, what: str) -> int:
    """Unix milliseconds of a valid ``Timestamp``; :class:`InvalidStart` otherwise."""
    if ts.nanos < 0 or ts.nanos >= 1_000_000_000 or not 0 <= ts.seconds <= 253402300799:
        raise InvalidStart(f"{what} is not a valid timestamp", hint="use RFC 3339 times")
    return int(ts.ToMilliseconds())


def start_spec(start: broker_pb2.StartPosition) -> StartSpec:
    since = timestamp_ms(start.since_time, "since_time") if start.HasField("since_time") else 0
    return StartSpec(start.policy, since, start.after_id)


class Servicer:
    """Base of the servicers: ``_unary`` authenticates, runs, and turns a
    :class:`BrokerError` into its rich status."""

    def __init__(self, broker: Broker, auth: Authenticator) -> None:
        self.broker = broker
        self.auth = auth

    async def _principal(self, context: grpc.aio.ServicerContext) -> Principal:
        key = self.auth.key_from_metadata(context.invocation_metadata())
        return await self.auth.authenticate(key)

    async def _unary(
        self,
        context: grpc.aio.ServicerContext,
        fn: Callable[[Principal], Awaitable[T]],
        *,
        admin: bool = False,
    ) -> T:
        try:
            principal = await self._principal(context)
            if admin and not principal.is_admin:
                raise PermissionDenied(
                    f"agent {principal.agent!r} lacks the admin role",
                    hint="use a key created with --role admin",
                )
            return await fn(principal)
        except BrokerError as err:
            await context.abort_with_status(to_status(err))
            raise AssertionError("unreachable") from err
