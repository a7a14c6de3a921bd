"""The one gRPC channel setup: options, retries, reconnect backoff, and calls that raise the
client's errors. :class:`~clients.Client` and the gateways' remote API both use it.

Example::

    conn = Connection("127.0.0.1:50051")
    await conn.wait_ready(5.0)
    reply = await conn.unary(
        "/broker.v1.BrokerService/GetEvent",
        broker_pb2.GetEventRequest(id=7),
        broker_pb2.GetEventResponse,
        metadata=bearer("lg_..."),
    )
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import grpc
from google.protobuf.message import Message as _Message

from lockgate.clients._errors import Unavailable, from_rpc_error
from lockgate.clients._tls import TLS, diagnose, split_target

__all__ = ["ADMIN", "AUDIT", "BROKER", "POLICY", "Connection", "Metadata", "bearer"]

BROKER = "/broker.v1.BrokerService/"
ADMIN = "/broker.v1.AdminService/"
POLICY = "/broker.v1.PolicyService/"
AUDIT = "/broker.v1.AuditService/"

Metadata = tuple[tuple[str, str], ...]
_R = TypeVar("_R", bound=_Message)

# Reads and idempotent admin calls are retried by gRPC itself when the connection drops.
_IDEMPOTENT = {
    "BrokerService": ["GetEvent", "QueryEvents"],
    "AdminService": ["CreateDurable", "ListDurables", "GetDurable", "ListDeadLetters"],
    "PolicyService": ["GetPolicies", "ListPolicyVersions"],
}
_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [
                    {"service": f"broker.v1.{service}", "method": method}
                    for service, methods in _IDEMPOTENT.items()
                    for method in methods
                ],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


def bearer(api_key: str | None) -> Metadata:
    """The call metadata that carries ``api_key`` (none without one)."""
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


def _serialize(message: _Message) -> bytes:
    return message.SerializeToString()


def _identity(raw: bytes) -> bytes:
    return raw


class Connection:
    """One channel to a broker at ``target`` (HOST:PORT) and the calls made over it.

    The channel reconnects by itself, starting at 100 ms and backing off to 2 s (gRPC's default
    starts at 1 s and grows to 2 minutes: too slow after a broker restart).
    """

    def __init__(
        self,
        target: str,
        *,
        max_message_bytes: int = 1 << 20,
        credentials: grpc.ChannelCredentials | None = None,
        tls: TLS | None = None,
    ) -> None:
        """``target`` is ``HOST:PORT``, or ``grpcs://HOST:PORT`` for TLS with the system's
        CAs unless ``tls`` names others; ``credentials`` (any gRPC channel credentials)
        overrides both."""
        target, wants_tls = split_target(target)
        if wants_tls and tls is None:
            tls = TLS()
        self.target = target
        self.tls = tls
        options: list[tuple[str, Any]] = [
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.max_send_message_length", max_message_bytes + 64 * 1024),
            ("grpc.max_receive_message_length", max(64 << 20, 16 * max_message_bytes)),
            ("grpc.enable_retries", 1),
            ("grpc.service_config", _SERVICE_CONFIG),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2_000),
        ]
        if credentials is None and tls is not None:
            credentials = tls.credentials()
            options += tls.channel_options()
        self._secure = credentials is not None
        if credentials is not None:
            self.channel = grpc.aio.secure_channel(target, credentials, options)
        else:
            self.channel = grpc.aio.insecure_channel(target, options)
        self._unary: dict[str, Callable[..., Awaitable[_Message]]] = {}
        self._raw: dict[str, Callable[..., Awaitable[bytes]]] = {}

    async def wait_ready(self, timeout: float) -> None:
        """Wait until the broker answers; :class:`Unavailable` after ``timeout`` seconds, or
        :class:`TLSError` as soon as a failed connection shows a TLS cause (a plain-text client
        on a TLS port and the reverse, an untrusted certificate, a refused client one)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        probed = -1.0
        while True:
            state = self.channel.get_state(try_to_connect=True)
            if state == grpc.ChannelConnectivity.READY:
                return
            now = loop.time()
            remaining = deadline - now
            if remaining <= 0:
                raise Unavailable(
                    f"cannot reach the broker at {self.target}",
                    hint="start it with `lockgate serve`, or pass the right --server / target",
                )
            failed = state == grpc.ChannelConnectivity.TRANSIENT_FAILURE
            # Own credentials (not TLS files) cannot be replayed by the diagnosis.
            known = self.tls is not None or not self._secure
            if failed and known and now - probed >= 1.0:
                # gRPC says only "failed to connect"; ask the port whether TLS is the cause.
                probed = now
                problem = await diagnose(self.target, self.tls, min(remaining, 3.0))
                if problem is not None:
                    raise problem
                continue
            wait = min(deadline - loop.time(), 1.0)
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.channel.wait_for_state_change(state), wait)

    async def let_go(self, timeout: float) -> None:
        """Wait, for up to ``timeout`` seconds, until the channel has given up a connection a
        stream saw break. A stream's UNAVAILABLE can arrive while the channel still reports
        READY: a call started then goes onto the dead connection and fails at once, "Stream
        removed (sendmsg: Broken pipe)", without reaching the broker."""
        ready = grpc.ChannelConnectivity.READY
        if self.channel.get_state() == ready:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.channel.wait_for_state_change(ready), timeout)

    async def close(self) -> None:
        await self.channel.close(None)

    def unary_callable(self, method: str, response_type: type[_R]) -> Callable[..., Awaitable[_R]]:
        """The (cached) multi-callable of a unary ``method``."""
        call = self._unary.get(method)
        if call is None:
            call = self.channel.unary_unary(method, _serialize, response_type.FromString)
            self._unary[method] = call
        return cast("Callable[..., Awaitable[_R]]", call)

    async def unary(
        self,
        method: str,
        request: _Message,
        response_type: type[_R],
        *,
        metadata: Metadata = (),
        timeout: float | None = None,
    ) -> _R:
        """Call a unary ``method``; a failure raises the client's error for its status."""
        call = self.unary_callable(method, response_type)
        try:
            return await call(request, timeout=timeout, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from exc

    async def unary_raw(
        self,
        method: str,
        request: _Message,
        *,
        metadata: Metadata = (),
        timeout: float | None = None,
    ) -> bytes:
        """Like :meth:`unary`, but the response stays bytes (for pre-framed deliveries)."""
        call = self._raw.get(method)
        if call is None:
            call = self._raw[method] = self.channel.unary_unary(method, _serialize, _identity)
        try:
            response = await call(request, timeout=timeout, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from exc
        assert isinstance(response, bytes)
        return response

    def stream_stream(
        self,
        method: str,
        serializer: Callable[[Any], bytes],
        deserializer: Callable[[bytes], Any],
    ) -> Callable[..., Any]:
        """The multi-callable of a bidirectional streaming ``method``."""
        return cast(
            "Callable[..., Any]", self.channel.stream_stream(method, serializer, deserializer)
        )
