"""``RemoteAPI`` goes through the Python client's connection and ``client.admin``, and answers
with the broker's own error classes and reasons, as ``LocalAPI`` does (real broker)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from lockgate.broker import errors as be
from lockgate.broker.api import DurableOptions, StartSpec
from lockgate.broker.testing import RunningBroker, run_broker
from lockgate.broker.v1 import broker_pb2, cloudevent_pb2
from lockgate.clients._channel import Connection
from lockgate.gateways._remote import RemoteAPI
from tests.gateways.gw_kit import event, unique

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def broker() -> AsyncIterator[RunningBroker]:
    async with run_broker() as b:
        yield b


@pytest_asyncio.fixture(loop_scope="module")
async def api(broker: RunningBroker) -> AsyncIterator[RemoteAPI]:
    remote = RemoteAPI(broker.target)
    yield remote
    await remote.close()


async def test_it_uses_the_clients_connection(api: RemoteAPI) -> None:
    assert isinstance(api._conn, Connection)


async def test_publish_query_and_per_event_rejections(api: RemoteAPI) -> None:
    subject = unique("rm.")
    bad = cloudevent_pb2.CloudEvent(id="x", spec_version="1.0", type="t")  # no source
    result = await api.publish(None, subject, [event(1), bad])
    assert result.ids[0] > 0 and result.ids[1] == 0
    [(index, err)] = result.errors
    assert index == 1 and isinstance(err, be.InvalidArgument)
    assert err.reason == "MISSING_ATTRIBUTE"
    events, _ = await api.query(None, subject)
    assert [e.id for e in events] == [result.ids[0]]
    assert (await api.get_event(None, result.ids[0])).subject == subject


async def test_encoded_events_are_published_in_slices_under_the_brokers_limit(
    broker: RunningBroker,
) -> None:
    """``publish_encoded`` (the ingest gateways' wire bytes) cuts requests under the broker's
    ``max_message_bytes`` as ``publish`` does, refuses an event no request can carry, and
    keeps every outcome at its event's position."""
    api = RemoteAPI(broker.target, broker_max_message_bytes=2048)
    try:
        subject = unique("rm.enc.")
        no_source = cloudevent_pb2.CloudEvent(id="x", spec_version="1.0", type="t")
        events = [event(i, data=f'"{"a" * 300}"') for i in range(10)]
        giant = event(99, data=f'"{"a" * 4096}"')
        raws = [e.SerializeToString() for e in [*events[:5], giant, no_source, *events[5:]]]
        result = await api.publish_encoded(None, subject, raws)
        assert [(i, err.reason) for i, err in result.errors] == [
            (5, "EVENT_TOO_LARGE"),
            (6, "MISSING_ATTRIBUTE"),
        ]
        stored, _ = await api.query(None, subject, limit=100)
        assert [s.event for s in stored] == events
        assert [s.id for s in stored] == [i for i in result.ids if i]
    finally:
        await api.close()


async def test_closing_ends_the_publish_streams(broker: RunningBroker) -> None:
    """The streams of ``publish_encoded`` stay open between publishes; ``close`` ends them
    with their tasks (none is left pending for the loop to destroy)."""
    api = RemoteAPI(broker.target)
    assert (await api.publish_encoded(None, unique("rm.c."), [event(1).SerializeToString()])).ids
    before = {t for t in asyncio.all_tasks() if "Publisher" in repr(t)}
    assert before
    await api.close()
    assert not [t for t in before if not t.done()]


async def test_whole_call_errors_keep_class_and_reason(api: RemoteAPI) -> None:
    with pytest.raises(be.NotFound) as missing:
        await api.get_event(None, 12345)
    assert missing.value.reason == "NOT_FOUND"
    rejected = await api.publish(None, "bad..subject", [event(2)])
    [(_, err)] = rejected.errors
    assert isinstance(err, be.InvalidArgument) and err.reason == "INVALID_SUBJECT"
    with pytest.raises(be.InvalidArgument) as pattern:
        await api.subscribe(None, "bad..pattern")
    assert pattern.value.reason == "INVALID_SUBJECT" and pattern.value.hint
    with pytest.raises(be.NotFound) as durable:
        await api.acknowledge(None, unique("nope-"), [1], [])
    assert durable.value.reason == "UNKNOWN_DURABLE"


@pytest.mark.parametrize("policy", ["all", "since", "after"])
async def test_create_durable_start_positions_through_client_admin(
    api: RemoteAPI, policy: str
) -> None:
    subject, name = unique("rs."), unique("rd-")
    before = await api.publish(None, subject, [event(3)])
    start = {
        "all": StartSpec(broker_pb2.START_POLICY_ALL),
        "since": StartSpec(
            broker_pb2.START_POLICY_SINCE_TIME,
            since_ms=int(dt.datetime.now(dt.UTC).timestamp() * 1000) - 60_000,
        ),
        "after": StartSpec(broker_pb2.START_POLICY_AFTER_ID, after_id=before.ids[0] - 1),
    }[policy]
    view = await api.create_durable(None, name, subject, DurableOptions(start=start, ack_wait=2.5))
    assert (view.name, view.pattern, view.ack_wait) == (name, subject, 2.5)
    got = await api.fetch(None, name, 10, 2.0)
    assert [d.id for d in got] == before.ids
    await api.acknowledge(None, name, before.ids, [])
    [info] = [d for d in await api.list_durables(None) if d.name == name]
    assert info.pending_count == 0


async def test_an_unreachable_broker_is_unavailable() -> None:
    remote = RemoteAPI("127.0.0.1:9")
    try:
        with pytest.raises(be.Unavailable):
            await remote.get_event(None, 1)
    finally:
        await remote.close()


async def test_the_audit_log_through_the_client(api: RemoteAPI) -> None:
    """A standalone gateway's GET /v1/audit reads through ``AuditService`` (dev mode: the
    anonymous caller is the broker's admin)."""
    records, cursor = await api.audit(None, action="config", limit=1)
    [rec] = records
    assert (rec.action, rec.outcome, rec.surface, rec.count) == ("config.load", "ok", "broker", 1)
    assert rec.id > 0 and rec.time_ms > 0 and "settings" in rec.detail
    assert cursor == rec.id  # a full page: the cursor of the next
    rest, last = await api.audit(None, action="config", after_id=cursor, limit=1)
    assert (rest, last) == ([], 0)
    # The broker's admin reads any org: a filter that selects nothing is an empty page.
    assert await api.audit(None, org="globex", agent="x", start_ms=1, end_ms=2) == ([], 0)
    with pytest.raises(be.InvalidArgument) as bad:
        await api.audit(None, after_id=2**63)
    assert bad.value.reason == "INVALID_PAGE_TOKEN"


async def test_credentials_are_checked_and_watched_through_the_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a standalone WebSocket gateway asks at an upgrade and while a socket is open: the
    broker's own verdict on the key (its reason kept), and the end of a revoked key."""
    from lockgate.broker.auth import create_key
    from lockgate.broker.store.sqlite import SqliteStore
    from lockgate.gateways import _remote

    monkeypatch.setattr(_remote, "CREDENTIAL_POLL_SECONDS", 0.2)
    store = SqliteStore(str(tmp_path), fsync="always")
    await store.open()
    try:
        key, record = await create_key(store, "acme", "gw", [])
        expired, _ = await create_key(store, "acme", "old", [], expires_ms=1)
    finally:
        await store.close()
    async with run_broker(data_dir=str(tmp_path)) as b:
        remote = RemoteAPI(b.target)
        try:
            await remote.check_credential(key)
            for bad, reason in [
                (None, "UNAUTHENTICATED"),
                (expired, "CREDENTIAL_EXPIRED"),
                ("a.b.c", "TOKEN_INVALID"),
            ]:
                with pytest.raises(be.Unauthenticated) as exc:
                    await remote.check_credential(bad)
                assert exc.value.reason == reason
            watch = asyncio.ensure_future(remote.until_revoked(key))
            await asyncio.sleep(0.5)
            assert not watch.done()
            store = SqliteStore(str(tmp_path), fsync="always")
            await store.open()
            try:
                assert await store.revoke_key(record.key_id)
            finally:
                await store.close()
            err = await asyncio.wait_for(watch, 15)
            assert err.reason == "CREDENTIAL_REVOKED"
        finally:
            await remote.close()


async def test_registry_and_config_store_through_the_client(api: RemoteAPI) -> None:
    """A standalone gateway's /v1/backbones and /v1/config go through client.admin: records
    come back as the broker's types, refusals as the broker's classes with their reasons."""
    from lockgate.broker.api import BackboneRecord, ConfigChange

    bid = unique("bb-").replace(".", "")
    rec = BackboneRecord(bid, "nats://127.0.0.1:4222", (bid,), ("k",), "eu", "2.10")
    made = await api.put_backbone(None, rec, create=True)
    assert (made.id, made.orgs, made.clusters, made.status) == (bid, (bid,), ("k",), "active")
    assert made.created_ms > 0 and made.updated_ms >= made.created_ms
    assert bid in [b.id for b in await api.list_backbones(None)]
    with pytest.raises(be.AlreadyExists):
        await api.put_backbone(None, rec, create=True)
    await api.delete_backbone(None, bid)
    with pytest.raises(be.NotFound) as gone:
        await api.get_backbone(None, bid)
    assert gone.value.reason == "NOT_FOUND"
    pattern = unique("rmcfg.") + ".>"
    v = await api.set_config(None, [ConfigChange(pattern, "max_deliveries", "4")])
    got = await api.get_config(None)
    assert got is not None and got.version == v.version
    assert got.settings[pattern] == {"max_deliveries": "4"}
    with pytest.raises(be.InvalidArgument) as bad:
        await api.set_config(None, [ConfigChange(pattern, "max_deliveries", "x")])
    assert (
        bad.value.reason == "INVALID_SETTING" and bad.value.metadata["setting"] == "max_deliveries"
    )
    back = await api.rollback_config(None)
    assert [x.version for x in await api.config_versions(None, 2)] == [back.version, v.version]


async def test_conversation_calls_reach_the_conversation_service(api: RemoteAPI) -> None:
    """The chat frames' calls: one method by name, its answer or its reason (dev mode)."""
    from lockgate.broker.v1 import conversation_pb2 as pb

    created = await api.conversation(
        None,
        "CreateConversation",
        pb.CreateConversationRequest(type=pb.CONVERSATION_TYPE_GROUP, open=True),
    )
    assert isinstance(created, pb.CreateConversationResponse)
    cid = created.conversation.conversation_id
    sent = await api.conversation(
        None, "SendMessage", pb.SendMessageRequest(conversation_id=cid, data=b"x")
    )
    assert isinstance(sent, pb.SendMessageResponse) and sent.id
    with pytest.raises(be.NotFound) as unknown:
        await api.conversation(None, "GetConversation", pb.GetConversationRequest())
    assert unknown.value.reason == "UNKNOWN_CONVERSATION"
    with pytest.raises(be.InvalidArgument):
        await api.conversation(None, "NoSuchMethod", pb.GetConversationRequest())


async def test_the_broker_metrics_are_not_served_by_a_remote_gateway(api: RemoteAPI) -> None:
    with pytest.raises(be.NotFound, match="does not serve the broker's metrics"):
        await api.metrics(None)
