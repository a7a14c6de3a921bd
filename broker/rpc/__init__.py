"""The gRPC services, in one style.

Each service is a :class:`Servicer` whose methods carry the proto's own names; a unary
method is written as ``async def GetEvent(self, request, principal, context)`` under
:func:`unary`, which authenticates, authorizes by the one table (``broker.permissions``:
``RPC_ACTIONS`` names each method's action), and turns a :class:`BrokerError` into its rich
status; streaming methods call :meth:`Servicer.authorized` with their name themselves.
:func:`service_handler` registers a servicer from its service descriptor (the handler kind
per method comes from the proto), so a new RPC is one method, one line in ``RPC_ACTIONS``
(serving refuses a method without one), and no registration code. Modules:
``broker_service`` (BrokerService), ``admin_service`` (AdminService), ``policy_service``
(PolicyService); ``broker.server`` runs them with health and reflection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any, TypeAlias, TypeVar

import grpc
from google.protobuf import message, message_factory, timestamp_pb2

from lockgate.broker import actor
from lockgate.broker.auth import Authenticator, Principal
from lockgate.broker.errors import (
    BrokerError,
    InvalidPageToken,
    InvalidStart,
    MalformedMessage,
    PermissionDenied,
    Unauthenticated,
    to_status,
)
from lockgate.broker.ids import MAX_ID, parse_decimal
from lockgate.broker.node import Broker
from lockgate.broker.permissions import RPC_ACTIONS
from lockgate.broker.positions import StartSpec
from lockgate.broker.v1 import broker_pb2

__all__ = [
    "Servicer",
    "page_after",
    "page_size",
    "parse_request",
    "refuse_stream",
    "service_handler",
    "start_spec",
    "timestamp_ms",
    "unary",
]

T = TypeVar("T")
Req = TypeVar("Req")
S = TypeVar("S", bound="Servicer")
Context: TypeAlias = grpc.aio.ServicerContext


# How long a refused stream waits for its first message before ending (see refuse_stream).
_REFUSAL_READ = 1.0


async def refuse_stream(
    context: Context, unread: AsyncIterator[Any] | None, err: BrokerError
) -> None:
    """Ends a client stream refused at its start (a bad key, a quota) with ``err``.

    ``unread`` is the stream's request iterator when its first message has not been read:
    that message is awaited first, briefly. Clients write as soon as they open a stream,
    and a write that the refusal cuts short makes the client's grpc end the call with its
    own bare INTERNAL "Internal error from Core", which then hides ``err`` entirely (grpc.aio
    sets that status on the call when a send fails, before the server's status is read).
    """
    if unread is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(unread.__anext__(), _REFUSAL_READ)
    await context.abort_with_status(to_status(err))


def timestamp_ms(ts: timestamp_pb2.Timestamp, what: str) -> int:
    """Unix milliseconds of a valid ``Timestamp``; :class:`InvalidStart` otherwise."""
    if ts.nanos < 0 or ts.nanos >= 1_000_000_000 or not 0 <= ts.seconds <= 253402300799:
        raise InvalidStart(f"{what} is not a valid timestamp", hint="use RFC 3339 times")
    return int(ts.ToMilliseconds())


def page_after(token: str, hi: int = MAX_ID) -> int:
    """The id a page token stands for (the last of the previous page; 0 for no token), up to
    ``hi``; ``INVALID_PAGE_TOKEN`` for text this broker never issued as one."""
    if not token:
        return 0
    after = parse_decimal(token, hi)
    if after is None:
        raise InvalidPageToken(token)
    return after


def page_size(asked: int) -> int:
    """How many items a page holds when a request asks for ``asked``: 0 means 100, and no
    page holds more than 1000."""
    return min(asked or 100, 1000)


def start_spec(start: broker_pb2.StartPosition) -> StartSpec:
    since = timestamp_ms(start.since_time, "since_time") if start.HasField("since_time") else 0
    return StartSpec(start.policy, since, start.after_id)


def unary() -> Callable[
    [Callable[[S, Req, Principal, Context], Awaitable[T]]],
    Callable[[S, Req, Context], Awaitable[T]],
]:
    """A unary RPC: ``fn(self, request, principal, context)`` runs for an authenticated
    caller that may do the method's action (``RPC_ACTIONS``); a :class:`BrokerError`
    becomes the status."""

    def wrap(
        fn: Callable[[S, Req, Principal, Context], Awaitable[T]],
    ) -> Callable[[S, Req, Context], Awaitable[T]]:
        @functools.wraps(fn)
        async def method(self: S, request: Req, context: Context) -> T:
            try:
                principal = await self.principal(context, fn.__name__, request)
                return await fn(self, request, principal, context)
            except BrokerError as err:
                await context.abort_with_status(to_status(err))
                raise AssertionError("unreachable") from err

        return method

    return wrap


def service_handler(
    servicer: object,
    service: Any,
    *,
    raw: Collection[str] = (),
    raw_requests: Collection[str] = (),
) -> grpc.GenericRpcHandler:
    """The handler for ``service`` (a protobuf ``ServiceDescriptor``) served by the methods
    of ``servicer`` named as the RPCs. Methods in ``raw`` answer with pre-encoded bytes
    (see ``broker.wire``), so they are sent without serialising again; methods in
    ``raw_requests`` (streaming ones) read their requests' bytes and decode them
    themselves (:func:`parse_request` for what they do not read at the byte level)."""
    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    handlers = {}
    for m in service.methods:
        if f"/{service.full_name}/{m.name}" not in RPC_ACTIONS:
            raise LookupError(
                f"{service.full_name}/{m.name} has no entry in broker.permissions.RPC_ACTIONS"
            )
        make = kinds[(m.client_streaming, m.server_streaming)]
        request = message_class(m.input_type)
        response = bytes if m.name in raw else message_class(m.output_type).SerializeToString
        fn = getattr(servicer, m.name)
        if m.name not in raw_requests:
            fn = _decoding(fn, request, m.client_streaming, m.server_streaming)
        handlers[m.name] = make(
            fn,
            request_deserializer=None,
            response_serializer=response,
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def parse_request(cls: Any, raw: bytes) -> Any:
    """``raw`` decoded as a ``cls`` message; :class:`MalformedMessage` when it does not
    decode."""
    try:
        return cls.FromString(raw)
    except message.DecodeError as exc:
        raise MalformedMessage(cls.DESCRIPTOR.full_name) from exc


async def _parsed(cls: Any, raws: AsyncIterator[bytes]) -> AsyncIterator[Any]:
    async for raw in raws:
        yield parse_request(cls, raw)


def _decoding(fn: Any, cls: Any, client_streaming: bool, server_streaming: bool) -> Any:
    """``fn`` fed with requests decoded here rather than by grpc (whose deserializer
    failure answers UNKNOWN with the parser's text): a request that does not decode ends
    the call with INVALID_ARGUMENT / MALFORMED_MESSAGE; in a request stream the
    :class:`MalformedMessage` is raised by the iterator, where the servicer handles
    :class:`BrokerError`."""
    if server_streaming:

        async def stream(raw: Any, context: Context) -> AsyncIterator[Any]:
            if client_streaming:
                request = _parsed(cls, raw)
            else:
                try:
                    request = parse_request(cls, raw)
                except MalformedMessage as err:
                    await context.abort_with_status(to_status(err))
            # Closed explicitly, so the servicer's cleanup runs when the call ends.
            async with contextlib.aclosing(fn(request, context)) as items:
                async for item in items:
                    yield item

        return stream

    async def method(raw: Any, context: Context) -> Any:
        if client_streaming:
            return await fn(_parsed(cls, raw), context)
        try:
            request = parse_request(cls, raw)
        except MalformedMessage as err:
            await context.abort_with_status(to_status(err))
        return await fn(request, context)

    return method


def message_class(descriptor: Any) -> Any:
    """The generated class of a message descriptor."""
    return message_factory.GetMessageClass(descriptor)


class Servicer:
    """Base of the services: the broker, the authenticator, and :meth:`principal`;
    ``SERVICE`` is the proto's full service name."""

    SERVICE = ""
    BROKER_WIDE = False
    """True when the service's calls act on the whole broker unless the request names an
    org (``PolicyService``: the global set); else they act on the caller's org."""

    def __init__(self, broker: Broker, auth: Authenticator) -> None:
        self.broker = broker
        self.auth = auth

    def certificate(self, context: Context) -> Principal | None:
        """The caller a verified client certificate names (mTLS), or None without one."""
        identities = self.auth.identities
        return None if identities is None else identities.of_grpc(context.auth_context())

    async def principal(self, context: Context, method: str, request: object) -> Principal:
        """The authenticated caller of the unary ``method``, once :meth:`authorized`."""
        return self.authorized(await self.authenticated(context), method, request)

    async def authenticated(self, context: Context) -> Principal:
        """The caller; who it is and from where go to the audit log's context (so the
        call's records name them), a refusal to the audit log."""
        actor.enter("grpc", context.peer())
        key: str | None = None
        try:
            key = self.auth.key_from_metadata(context.invocation_metadata())
            principal = await self.auth.authenticate(key, certificate=self.certificate(context))
        except Unauthenticated as err:
            actor.authenticated(None, actor.credential_id(key))
            self.broker.audit.auth_failed(err)
            raise
        actor.authenticated(principal, actor.credential_id(key))
        return principal

    def authorized(self, principal: Principal, method: str, request: object = None) -> Principal:
        """``principal``, once it may do the action of ``method`` (``RPC_ACTIONS``): on the
        org its request names in an ``org`` field (empty: the whole broker), else on its own
        org (on the whole broker for a ``BROKER_WIDE`` service)."""
        action = RPC_ACTIONS[f"/{self.SERVICE}/{method}"]
        descriptor = getattr(request, "DESCRIPTOR", None)
        if descriptor is not None and "org" in descriptor.fields_by_name:
            org: str | None = getattr(request, "org", "") or None
        else:
            org = None if self.BROKER_WIDE else principal.org
        try:
            self.broker.permissions.authorize(principal, action, org)
        except PermissionDenied as err:
            self.broker.audit.denied("access", action, err)
            raise
        return principal
