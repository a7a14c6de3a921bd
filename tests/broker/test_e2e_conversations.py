"""Conversations against a real ``lockgate serve`` with real keys: only participants read or
write a conversation's subjects, on every surface (Subscribe literal and wildcard, QueryEvents,
GetEvent, GetHistory, polling durables, WebSocket), a non-participant of the same org and one
of another org alike; each rejection with its reason; typing never stored; presence with a
grace period."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import pytest
import pytest_asyncio

from lockgate.broker.testing import RunningBroker, run_broker
from lockgate.broker.v1 import (
    broker_pb2,
    broker_pb2_grpc,
    conversation_pb2,
    conversation_pb2_grpc,
)
from tests.broker.e2e_kit import Metadata, auth, error_info, event, query_all, subscribe
from tests.broker.test_policy_in_broker import keys_create
from tests.gateways.test_serve import free_port
from tests.support.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]
pb = conversation_pb2
WHO = {"ann": "acme", "bob": "acme", "cy": "acme", "dee": "acme", "eve": "globex"}


@dataclass
class Env:
    broker: RunningBroker
    http: str
    md: dict[str, Metadata]
    keys: dict[str, str]
    stub: broker_pb2_grpc.BrokerServiceStub
    conv: conversation_pb2_grpc.ConversationServiceStub


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    tmp: Path = tmp_path_factory.mktemp("conv")
    data = tmp / "data"
    keys = {who: await keys_create(str(data), org, who) for who, org in WHO.items()}
    cfg = tmp / "lockgate.toml"
    cfg.write_text("[broker]\npresence_grace = 0.5\nmax_group_members = 4\ntyping_ttl = 0.5\n")
    port = free_port()
    args = ["--config", str(cfg), "--http", f"127.0.0.1:{port}"]
    async with (
        run_broker(data_dir=str(data), extra_args=args) as b,
        grpc.aio.insecure_channel(b.target) as ch,
    ):
        yield Env(
            b,
            f"http://127.0.0.1:{port}",
            {w: auth(k) for w, k in keys.items()},
            keys,
            broker_pb2_grpc.BrokerServiceStub(ch),
            conversation_pb2_grpc.ConversationServiceStub(ch),
        )


async def _group(env: Env, *others: str, **kw: object) -> pb.Conversation:
    resp = await env.conv.CreateConversation(
        pb.CreateConversationRequest(
            type=pb.CONVERSATION_TYPE_GROUP,
            participants=list(others),
            **kw,  # type: ignore[arg-type]
        ),
        metadata=env.md["ann"],
        timeout=10,
    )
    return resp.conversation


async def _send(env: Env, who: str, cid: str, data: bytes) -> int:
    resp = await env.conv.SendMessage(
        pb.SendMessageRequest(
            conversation_id=cid,
            data=data,
            encryption_metadata=pb.EncryptionMetadata(
                scheme="xchacha20-poly1305", key_type="group", epoch=1
            ),
        ),
        metadata=env.md[who],
        timeout=10,
    )
    return resp.id


async def _refused(call: object, code: grpc.StatusCode, reason: str) -> dict[str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call  # type: ignore[misc]
    got_code, got_reason, meta = error_info(err.value)
    assert (got_code, got_reason) == (code, reason), err.value.details()
    return meta


async def test_only_participants_read_and_write_on_every_grpc_surface(env: Env) -> None:
    c = await _group(env, "bob")
    cid = c.conversation_id
    assert [p.agent for p in c.participants] == ["ann", "bob"]
    # Live readers: bob literal and wildcard; cy (same org) and eve (other org) wildcard.
    bob_lit = await subscribe(env.stub, env.md["bob"], pattern=f"$conv.{cid}.msg")
    bob_all = await subscribe(env.stub, env.md["bob"], pattern="$conv.>")
    cy_all = await subscribe(env.stub, env.md["cy"], pattern="$conv.>")
    eve_all = await subscribe(env.stub, env.md["eve"], pattern="$conv.>")
    cy_star = await subscribe(env.stub, env.md["cy"], pattern="$conv.*.msg")
    # Polling durables on every conversation.
    for who in ("bob", "cy", "eve"):
        await env.stub.Fetch(
            broker_pb2.FetchRequest(durable=f"poll-{who}", pattern="$conv.>"),
            metadata=env.md[who],
            timeout=10,
        )
    first = await _send(env, "ann", cid, b"ciphertext-1")
    got = await bob_lit.collect(1)
    assert [d.id for d in got] == [first]
    attrs = got[0].event.attributes
    assert attrs["convsender"].ce_string == "ann"
    assert attrs["encscheme"].ce_string == "xchacha20-poly1305"
    assert attrs["encepoch"].ce_string == "1"
    assert first in [d.id for d in await bob_all.collect(1)]
    # cy and eve: nothing, proven by a marker in a conversation of their own.
    for who, sub in (("cy", cy_all), ("eve", eve_all)):
        own = await env.conv.CreateConversation(
            pb.CreateConversationRequest(type=pb.CONVERSATION_TYPE_GROUP),
            metadata=env.md[who],
            timeout=10,
        )
        mark = await _send(env, who, own.conversation.conversation_id, b"marker")
        seen = await sub.collect(2)  # its own created event, then its marker
        assert first not in [d.id for d in seen]
        assert mark in [d.id for d in seen]
    # Writing: only participants, only through SendMessage.
    for who in ("cy", "eve"):
        reason = "NOT_PARTICIPANT" if who == "cy" else "UNKNOWN_CONVERSATION"
        code = grpc.StatusCode.PERMISSION_DENIED if who == "cy" else grpc.StatusCode.NOT_FOUND
        await _refused(
            env.conv.SendMessage(
                pb.SendMessageRequest(conversation_id=cid, data=b"x"),
                metadata=env.md[who],
                timeout=10,
            ),
            code,
            reason,
        )
    for who in ("ann", "cy"):
        await _refused(
            env.stub.PublishOne(
                broker_pb2.PublishOneRequest(subject=f"$conv.{cid}.msg", event=event("x")),
                metadata=env.md[who],
                timeout=10,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_SUBJECT",
        )
    # A literal subscription by a non-participant is refused outright.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await subscribe(env.stub, env.md["cy"], pattern=f"$conv.{cid}.msg")
    assert error_info(err.value)[1] == "NOT_PARTICIPANT"
    # Stored history: QueryEvents, GetEvent, GetHistory.
    assert [e.id for e in await query_all(env.stub, "$conv.>", env.md["bob"])].count(first) == 1
    for who in ("cy", "eve"):
        assert first not in [e.id for e in await query_all(env.stub, "$conv.>", env.md[who])]
        await _refused(
            env.stub.GetEvent(
                broker_pb2.GetEventRequest(id=first), metadata=env.md[who], timeout=10
            ),
            grpc.StatusCode.NOT_FOUND,
            "NOT_FOUND",
        )
        await _refused(
            env.conv.GetHistory(
                pb.GetHistoryRequest(conversation_id=cid), metadata=env.md[who], timeout=10
            ),
            grpc.StatusCode.PERMISSION_DENIED if who == "cy" else grpc.StatusCode.NOT_FOUND,
            "NOT_PARTICIPANT" if who == "cy" else "UNKNOWN_CONVERSATION",
        )
    hist = await env.conv.GetHistory(
        pb.GetHistoryRequest(conversation_id=cid), metadata=env.md["bob"], timeout=10
    )
    assert [(m.id, m.sender, m.data) for m in hist.messages] == [(first, "ann", b"ciphertext-1")]
    assert hist.messages[0].encryption_metadata.key_type == "group"
    # Polling: bob's durable has the message, cy's and eve's do not.
    fetched = {}
    for who in ("bob", "cy", "eve"):
        resp = await env.stub.Fetch(
            broker_pb2.FetchRequest(durable=f"poll-{who}", max_events=100),
            metadata=env.md[who],
            timeout=10,
        )
        fetched[who] = [d.id for d in resp.deliveries]
    assert first in fetched["bob"]
    assert first not in fetched["cy"] + fetched["eve"]
    # Removed: bob's literal subscription stops receiving, his history stops at nothing new.
    await env.conv.RemoveMember(
        pb.RemoveMemberRequest(conversation_id=cid, agent="bob"), metadata=env.md["ann"], timeout=10
    )
    after = await _send(env, "ann", cid, b"ciphertext-2")
    lit = await bob_lit.collect(1, timeout=1.0)
    assert after not in [d.id for d in lit]
    assert after not in [e.id for e in await query_all(env.stub, "$conv.>", env.md["bob"])]
    for s in (bob_lit, bob_all, cy_all, eve_all, cy_star):
        await s.close()


async def test_websocket_reads_only_its_conversations(env: Env) -> None:
    c = await _group(env, "bob")
    cid = c.conversation_id
    url = env.http.replace("http://", "ws://") + "/v1/ws"
    async with aiohttp.ClientSession() as http:
        wss = {}
        for who in ("bob", "cy"):
            ws = await http.ws_connect(url, headers={"Authorization": "Bearer " + env.keys[who]})
            await ws.send_json({"op": "subscribe", "pattern": "$conv.>", "ref": 1})
            assert (await ws.receive_json(timeout=10))["op"] == "ok"
            wss[who] = ws
        ws = await http.ws_connect(url, headers={"Authorization": "Bearer " + env.keys["cy"]})
        await ws.send_json({"op": "subscribe", "pattern": f"$conv.{cid}.>", "ref": 2})
        refusal = await ws.receive_json(timeout=10)
        assert refusal.get("reason") == "NOT_PARTICIPANT", refusal
        await ws.close()
        await ws_publish_refused(wss["cy"], cid)
        sent = await _send(env, "ann", cid, b"hello")
        while True:
            msg = await wss["bob"].receive_json(timeout=10)
            if msg["op"] == "event" and msg.get("id") in (sent, str(sent)):
                break
        own = await env.conv.CreateConversation(
            pb.CreateConversationRequest(type=pb.CONVERSATION_TYPE_GROUP),
            metadata=env.md["cy"],
            timeout=10,
        )
        mark = await _send(env, "cy", own.conversation.conversation_id, b"marker")
        while True:  # everything queued for cy before its marker arrives first
            msg = await wss["cy"].receive_json(timeout=10)
            assert msg.get("id") not in (sent, str(sent)), msg
            if msg["op"] == "event" and msg.get("id") in (mark, str(mark)):
                break
        for w in wss.values():
            await w.close()


async def ws_publish_refused(ws: aiohttp.ClientWebSocketResponse, cid: str) -> None:
    await ws.send_json(
        {"op": "publish", "subject": f"$conv.{cid}.msg", "ref": 9, "event": {"type": "t"}}
    )
    while True:
        msg = await ws.receive_json(timeout=10)
        if msg.get("ref") == 9:
            assert msg["op"] == "error" and msg["reason"] in ("INVALID_SUBJECT", "INVALID_EVENT")
            return


async def test_rejections(env: Env) -> None:
    md = env.md
    create = env.conv.CreateConversation
    await _refused(
        create(
            pb.CreateConversationRequest(
                type=pb.CONVERSATION_TYPE_DIRECT, participants=["bob", "cy"]
            ),
            metadata=md["ann"],
            timeout=10,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    await _refused(
        create(pb.CreateConversationRequest(), metadata=md["ann"], timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    meta = await _refused(
        create(
            pb.CreateConversationRequest(
                type=pb.CONVERSATION_TYPE_GROUP, participants=["bob", "cy", "dee", "x1"]
            ),
            metadata=md["ann"],
            timeout=10,
        ),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "GROUP_FULL",
    )
    assert meta["limit"] == "4"
    direct = (
        await create(
            pb.CreateConversationRequest(type=pb.CONVERSATION_TYPE_DIRECT, participants=["bob"]),
            metadata=md["ann"],
            timeout=10,
        )
    ).conversation
    for call in (
        env.conv.InviteMembers(
            pb.InviteMembersRequest(conversation_id=direct.conversation_id, agents=["cy"]),
            metadata=md["ann"],
            timeout=10,
        ),
        env.conv.LeaveConversation(
            pb.LeaveConversationRequest(conversation_id=direct.conversation_id),
            metadata=md["bob"],
            timeout=10,
        ),
    ):
        await _refused(call, grpc.StatusCode.FAILED_PRECONDITION, "IMMUTABLE_CONVERSATION")
    g = await _group(env, "bob", "cy")
    cid = g.conversation_id
    meta = await _refused(
        env.conv.InviteMembers(
            pb.InviteMembersRequest(conversation_id=cid, agents=["dee", "x2"]),
            metadata=md["ann"],
            timeout=10,
        ),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "GROUP_FULL",
    )
    for call in (
        env.conv.InviteMembers(
            pb.InviteMembersRequest(conversation_id=cid, agents=["dee"]),
            metadata=md["bob"],
            timeout=10,
        ),
        env.conv.RemoveMember(
            pb.RemoveMemberRequest(conversation_id=cid, agent="cy"), metadata=md["bob"], timeout=10
        ),
        env.conv.CloseConversation(
            pb.CloseConversationRequest(conversation_id=cid), metadata=md["bob"], timeout=10
        ),
        env.conv.JoinConversation(
            pb.JoinConversationRequest(conversation_id=cid), metadata=md["dee"], timeout=10
        ),
        env.conv.GetConversation(
            pb.GetConversationRequest(conversation_id=cid), metadata=md["dee"], timeout=10
        ),
    ):
        await _refused(call, grpc.StatusCode.PERMISSION_DENIED, "NOT_PARTICIPANT")
    await _refused(
        env.conv.GetConversation(
            pb.GetConversationRequest(conversation_id=cid), metadata=md["eve"], timeout=10
        ),
        grpc.StatusCode.NOT_FOUND,
        "UNKNOWN_CONVERSATION",
    )
    await _refused(
        env.conv.LeaveConversation(
            pb.LeaveConversationRequest(conversation_id=cid), metadata=md["ann"], timeout=10
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "FAILED_PRECONDITION",
    )
    await _refused(
        env.conv.PutGroupKeys(
            pb.PutGroupKeysRequest(
                conversation_id=cid,
                epoch=5,
                envelopes=[pb.GroupKeyEnvelope(agent="bob", sealed_key=b"k")],
            ),
            metadata=md["ann"],
            timeout=10,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "STALE_EPOCH",
    )
    await _refused(
        env.conv.PublishKey(
            pb.PublishKeyRequest(public_key=b"short"), metadata=md["ann"], timeout=10
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    # Broadcast: only the owner writes.
    bc = (
        await create(
            pb.CreateConversationRequest(type=pb.CONVERSATION_TYPE_BROADCAST, participants=["bob"]),
            metadata=md["ann"],
            timeout=10,
        )
    ).conversation
    await _send(env, "ann", bc.conversation_id, b"news")
    await _refused(
        env.conv.SendMessage(
            pb.SendMessageRequest(conversation_id=bc.conversation_id, data=b"x"),
            metadata=md["bob"],
            timeout=10,
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "NOT_PARTICIPANT",
    )
    await env.conv.CloseConversation(
        pb.CloseConversationRequest(conversation_id=cid), metadata=md["ann"], timeout=10
    )
    await _refused(
        env.conv.SendMessage(
            pb.SendMessageRequest(conversation_id=cid, data=b"x"), metadata=md["bob"], timeout=10
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "CONVERSATION_CLOSED",
    )


async def test_keys_group_keys_receipts_and_lifecycle_events(env: Env) -> None:
    md = env.md
    await env.conv.PublishKey(
        pb.PublishKeyRequest(public_key=b"p" * 32, identity_key=b"i" * 32, signature=b"s" * 64),
        metadata=md["bob"],
        timeout=10,
    )
    keys = await env.conv.GetKeys(
        pb.GetKeysRequest(agents=["bob", "nobody"]), metadata=md["ann"], timeout=10
    )
    assert [(k.agent, k.public_key) for k in keys.keys] == [("bob", b"p" * 32)]
    other = await env.conv.GetKeys(
        pb.GetKeysRequest(agents=["bob"]), metadata=md["eve"], timeout=10
    )
    assert list(other.keys) == []  # another org's directory
    g = await _group(env, "bob")
    cid = g.conversation_id
    events = await subscribe(env.stub, md["bob"], pattern=f"$conv.{cid}.events")
    put = await env.conv.PutGroupKeys(
        pb.PutGroupKeysRequest(
            conversation_id=cid,
            epoch=1,
            envelopes=[
                pb.GroupKeyEnvelope(agent="ann", sealed_key=b"A1"),
                pb.GroupKeyEnvelope(agent="bob", sealed_key=b"B1"),
            ],
        ),
        metadata=md["ann"],
        timeout=10,
    )
    assert put.key_epoch == 1
    mine = await env.conv.GetGroupKeys(
        pb.GetGroupKeysRequest(conversation_id=cid), metadata=md["bob"], timeout=10
    )
    assert [(e.epoch, e.sealed_key, e.sealed_by) for e in mine.envelopes] == [(1, b"B1", "ann")]
    await env.conv.InviteMembers(
        pb.InviteMembersRequest(conversation_id=cid, agents=["cy"]), metadata=md["ann"], timeout=10
    )
    await env.conv.LeaveConversation(
        pb.LeaveConversationRequest(conversation_id=cid), metadata=md["cy"], timeout=10
    )
    got = await events.collect(3)
    assert [d.event.type for d in got] == [
        "conversation.key_rotated",
        "conversation.member_joined",
        "conversation.member_left",
    ]
    m1 = await _send(env, "ann", cid, b"one")
    m2 = await _send(env, "ann", cid, b"two")
    await env.conv.MarkReceipts(
        pb.MarkReceiptsRequest(conversation_id=cid, read_id=m1), metadata=md["bob"], timeout=10
    )
    await env.conv.MarkReceipts(
        pb.MarkReceiptsRequest(conversation_id=cid, delivered_id=m2), metadata=md["bob"], timeout=10
    )
    r = await env.conv.GetReceipts(
        pb.GetReceiptsRequest(conversation_id=cid), metadata=md["ann"], timeout=10
    )
    assert [(x.agent, x.delivered_id, x.read_id) for x in r.receipts] == [("bob", m2, m1)]
    last = await env.conv.GetHistory(
        pb.GetHistoryRequest(conversation_id=cid, last_n=1), metadata=md["bob"], timeout=10
    )
    assert [m.id for m in last.messages] == [m2]
    await events.close()


async def test_typing_is_never_stored_and_ends_by_itself(env: Env) -> None:
    md = env.md
    g = await _group(env, "bob")
    cid = g.conversation_id
    typing = await subscribe(env.stub, md["bob"], pattern=f"$conv.{cid}.typing")
    await env.conv.SetTyping(
        pb.SetTypingRequest(conversation_id=cid, typing=True), metadata=md["ann"], timeout=10
    )
    got = await typing.collect(2)  # on, then the broker's own off after typing_ttl
    assert [d.event.text_data.count('"typing": "true"') for d in got] == [1, 0]
    stored = await query_all(env.stub, f"$conv.{cid}.>", md["bob"])
    assert [e.event.type for e in stored] == ["conversation.created"]
    await typing.close()
    limited = None
    for _ in range(50):
        try:
            await env.conv.SetTyping(
                pb.SetTypingRequest(conversation_id=cid, typing=False),
                metadata=md["bob"],
                timeout=10,
            )
        except grpc.aio.AioRpcError as err:
            limited = error_info(err)
            break
    assert limited is not None and limited[1] == "RATE_LIMITED"
    assert float(limited[2]["retry_after"]) > 0


async def test_presence_with_a_grace_period(env: Env) -> None:
    md = env.md
    g = await _group(env, "dee")
    cid = g.conversation_id

    async def status(who: str) -> int:
        resp = await env.conv.GetPresence(
            pb.GetPresenceRequest(conversation_id=cid), metadata=md["ann"], timeout=10
        )
        return next(p.status for p in resp.presence if p.agent == who)

    watch = await subscribe(env.stub, md["ann"], pattern=f"$conv.{cid}.presence")
    dee = await subscribe(env.stub, md["dee"], pattern="dee.inbox")
    assert await status("dee") == pb.PRESENCE_STATUS_ONLINE
    # A reconnect inside the grace period: no offline, no second online.
    await dee.close()
    dee = await subscribe(env.stub, md["dee"], pattern="dee.inbox")
    await dee.close()
    await eventually(lambda: _is(status("dee"), pb.PRESENCE_STATUS_OFFLINE), timeout=10)
    seen: list[str] = []
    while "offline" not in seen:
        got = await watch.collect(1)
        assert got, f"no offline notice for dee, only {seen}"
        body = json.loads(got[0].event.text_data)
        if body["agent"] == "dee":
            seen.append(body["status"])
    assert seen == ["online", "offline"]  # the reconnect announced nothing
    await watch.close()


async def _is(value: object, want: int) -> bool:
    return await value == want  # type: ignore[misc]


async def _frame(
    ws: aiohttp.ClientWebSocketResponse, op: str, **match: object
) -> dict[str, object]:
    """The next frame of ``op`` whose fields include ``match`` (others are passed over)."""
    while True:
        msg: dict[str, object] = await ws.receive_json(timeout=10)
        if msg["op"] == op and all(msg.get(k) == v for k, v in match.items()):
            return msg
        assert msg["op"] != "error", msg


async def test_websocket_chat_frames(env: Env) -> None:
    md = env.md
    room = await _group(env, "bob", open=True)
    cid = room.conversation_id
    before = await _send(env, "ann", cid, b"before dee")
    url = env.http.replace("http://", "ws://") + "/v1/ws"
    async with aiohttp.ClientSession() as http:

        async def sock(who: str) -> aiohttp.ClientWebSocketResponse:
            return await http.ws_connect(url, headers={"Authorization": "Bearer " + env.keys[who]})

        ann, bob, dee, cy = [await sock(w) for w in ("ann", "bob", "dee", "cy")]
        await ann.send_json({"op": "join", "conversation": cid, "last_n": 5, "ref": 1})
        joined = await _frame(ann, "ok", ref=1)
        assert [m["id"] for m in joined["messages"]] == [str(before)]  # type: ignore[index]
        assert joined["conversation"]["type"] == "group"  # type: ignore[index]
        await bob.send_json({"op": "join", "conversation": cid, "ref": 1})
        await _frame(bob, "ok", ref=1)
        # dee joins the open room by itself: a member from now on, history from its join.
        await dee.send_json({"op": "join", "conversation": cid, "last_n": 5, "ref": 1})
        dee_join = await _frame(dee, "ok", ref=1)
        assert dee_join["messages"] == []
        assert (await _frame(ann, "user_joined"))["agent"] == "dee"
        await bob.send_json({"op": "send", "conversation": cid, "text": "hi all", "ref": 2})
        sent = await _frame(bob, "ok", ref=2)
        for ws in (ann, dee):
            msg = await _frame(ws, "message", id=sent["id"])
            assert (msg["sender"], msg["data"]) == ("bob", "aGkgYWxs")  # base64 of "hi all"
        await bob.send_json({"op": "typing", "conversation": cid, "typing": True})
        assert (await _frame(ann, "typing", agent="bob"))["typing"] is True
        assert (await _frame(ann, "typing", agent="bob"))["typing"] is False  # expired
        await dee.send_json({"op": "leave", "conversation": cid, "ref": 3})
        await _frame(dee, "ok", ref=3)
        assert (await _frame(ann, "user_left"))["agent"] == "dee"
        # cy is not in a closed group: join, send and typing are refused with the reason.
        closed = await _group(env, "bob")
        for op in ("join", "send", "typing"):
            frame = {"op": op, "conversation": closed.conversation_id, "text": "x", "ref": op}
            await cy.send_json(frame)
            err = await _frame(cy, "error", ref=op)
            assert err["reason"] == "NOT_PARTICIPANT", err
        await cy.send_json({"op": "send", "conversation": cid, "ref": "bad"})
        assert (await _frame(cy, "error", ref="bad"))["reason"] == "INVALID_PARAMETER"
        for ws in (ann, bob, dee, cy):
            await ws.close()
    hist = await env.conv.GetHistory(
        pb.GetHistoryRequest(conversation_id=cid), metadata=md["bob"], timeout=10
    )
    assert [m.data for m in hist.messages] == [b"before dee", b"hi all"]


async def test_history_for_new_members(env: Env) -> None:
    md = env.md
    for open_history in (False, True):
        g = await _group(env, "bob", history_for_new_members=open_history)
        cid = g.conversation_id
        old = await _send(env, "ann", cid, b"old")
        await env.conv.InviteMembers(
            pb.InviteMembersRequest(conversation_id=cid, agents=["cy"]),
            metadata=md["ann"],
            timeout=10,
        )
        new = await _send(env, "ann", cid, b"new")
        hist = await env.conv.GetHistory(
            pb.GetHistoryRequest(conversation_id=cid), metadata=md["cy"], timeout=10
        )
        assert [m.id for m in hist.messages] == ([old, new] if open_history else [new])
