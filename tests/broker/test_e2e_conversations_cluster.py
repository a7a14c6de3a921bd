"""Conversations in cluster mode end to end: two ``lockgate serve`` processes on one NATS
JetStream, one PostgreSQL database and one Redis. A conversation made on one node is read on
the other by its participants only (live and history), a removal made on one node stops
reads on the other, and presence is the same on both."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from lockgate.broker.auth import create_key
from lockgate.broker.store.postgres import PgStore
from lockgate.broker.testing import RunningBroker, run_broker
from lockgate.broker.v1 import broker_pb2_grpc, conversation_pb2, conversation_pb2_grpc
from tests.broker.e2e_kit import auth, error_info, subscribe
from tests.support.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]
pb = conversation_pb2
WHO = {"ann": "acme", "bob": "acme", "cy": "acme", "eve": "globex"}


@contextlib.asynccontextmanager
async def _cluster(nats_url: str, dsn: str, redis_url: str) -> AsyncIterator[list[RunningBroker]]:
    tag = uuid.uuid4().hex[:10]
    stream = f"LGT_{tag}"
    args = [
        *("--backbone", nats_url, "--store", dsn, "--limiter", redis_url),
        *("--limiter-prefix", f"lgt:{tag}:", "--backbone-stream", stream),
        *("--backbone-prefix", f"t{tag}"),
    ]
    async with contextlib.AsyncExitStack() as stack:
        nodes = await asyncio.gather(
            *(stack.enter_async_context(run_broker(extra_args=args)) for _ in range(2))
        )
        try:
            yield list(nodes)
        finally:
            await asyncio.gather(*(n.terminate() for n in nodes), return_exceptions=True)
            with contextlib.suppress(Exception):
                import nats

                nc = await nats.connect(nats_url)
                await nc.request(f"$JS.API.STREAM.DELETE.{stream}", b"", timeout=5)
                await nc.close()


async def test_a_conversation_across_two_nodes(
    nats_url: str, pg_fresh_dsn: str, redis_url: str
) -> None:
    store = PgStore(pg_fresh_dsn, max_size=2)
    await store.open()
    try:
        md = {w: auth((await create_key(store, org, w, []))[0]) for w, org in WHO.items()}
    finally:
        await store.close()
    async with (
        _cluster(nats_url, pg_fresh_dsn, redis_url) as (n0, n1),
        grpc.aio.insecure_channel(n0.target) as ch0,
        grpc.aio.insecure_channel(n1.target) as ch1,
    ):
        c0 = conversation_pb2_grpc.ConversationServiceStub(ch0)
        c1 = conversation_pb2_grpc.ConversationServiceStub(ch1)
        b1 = broker_pb2_grpc.BrokerServiceStub(ch1)
        made = await c0.CreateConversation(
            pb.CreateConversationRequest(type=pb.CONVERSATION_TYPE_GROUP, participants=["bob"]),
            metadata=md["ann"],
            timeout=10,
        )
        cid = made.conversation.conversation_id

        async def known_on_n1() -> bool:
            try:
                await c1.GetConversation(
                    pb.GetConversationRequest(conversation_id=cid), metadata=md["bob"], timeout=5
                )
            except grpc.aio.AioRpcError:
                return False
            return True

        await eventually(known_on_n1, what="node 1 knows the conversation")
        bob = await subscribe(b1, md["bob"], pattern="$conv.>")
        cy = await subscribe(b1, md["cy"], pattern="$conv.>")
        eve = await subscribe(b1, md["eve"], pattern="$conv.>")
        sent: list[int] = []

        async def bob_got_one() -> bool:  # until node 1's interest reached NATS
            resp = await c0.SendMessage(
                pb.SendMessageRequest(conversation_id=cid, data=b"sealed"),
                metadata=md["ann"],
                timeout=10,
            )
            sent.append(resp.id)
            return bool(await bob.collect(1, timeout=0.3))

        await eventually(bob_got_one, what="a message from node 0 reaches bob on node 1")

        async def in_history() -> bool:
            h = await c1.GetHistory(
                pb.GetHistoryRequest(conversation_id=cid), metadata=md["bob"], timeout=10
            )
            return set(sent) <= {m.id for m in h.messages}

        await eventually(in_history, what="history on node 1 (the message logger's lag)")
        # cy and eve: a marker in a conversation of their own arrives, none of ann's did.
        for who, sub in (("cy", cy), ("eve", eve)):
            own = await c1.CreateConversation(
                pb.CreateConversationRequest(type=pb.CONVERSATION_TYPE_GROUP),
                metadata=md[who],
                timeout=10,
            )
            mark = await c1.SendMessage(
                pb.SendMessageRequest(conversation_id=own.conversation.conversation_id),
                metadata=md[who],
                timeout=10,
            )
            seen: list[int] = []
            while mark.id not in seen:
                got = await sub.collect(1, timeout=10)
                assert got, f"{who}'s marker did not arrive"
                seen += [d.id for d in got]
            assert not set(sent) & set(seen)

        # Presence: bob's stream on node 1 is seen from node 0.
        async def bob_online_on_n0() -> bool:
            p = await c0.GetPresence(
                pb.GetPresenceRequest(conversation_id=cid), metadata=md["ann"], timeout=10
            )
            return any(
                x.agent == "bob" and x.status == pb.PRESENCE_STATUS_ONLINE for x in p.presence
            )

        await eventually(bob_online_on_n0, what="node 0 sees bob online")
        # Removed on node 0: node 1 refuses bob's reads.
        await c0.RemoveMember(
            pb.RemoveMemberRequest(conversation_id=cid, agent="bob"), metadata=md["ann"], timeout=10
        )

        async def refused_on_n1() -> bool:
            try:
                await c1.GetHistory(
                    pb.GetHistoryRequest(conversation_id=cid), metadata=md["bob"], timeout=5
                )
            except grpc.aio.AioRpcError as err:
                return error_info(err)[1] == "NOT_PARTICIPANT"
            return False

        await eventually(refused_on_n1, what="node 1 refuses bob after his removal on node 0")
        for s in (bob, cy, eve):
            await s.close()
