"""End-to-end encrypted conversations: the real client against a real ``lockgate serve``.

The broker never sees plaintext: the bytes of the data dir hold none (while a plaintext control
message is found there, so the scan reads what the store wrote); a member that left, holding
every key it ever had, cannot decrypt what is sent after; a new member reads from its join (or
earlier when the group allows it); a tampered ciphertext is a DecryptionError, never a crash;
a key swapped in the directory is a KeyMismatch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio

from lockgate.broker.testing import RunningBroker, run_broker
from lockgate.broker.v1 import conversation_pb2, conversation_pb2_grpc
from lockgate.clients import (
    Client,
    ConversationMessage,
    DecryptionError,
    FailedPrecondition,
    KeyMismatch,
    PermissionDenied,
)
from lockgate.clients import _e2e as e2e
from tests.broker.e2e_kit import auth
from tests.broker.test_policy_in_broker import keys_create
from tests.support import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]
AGENTS = ("ann", "bob", "cy", "dee")


@dataclasses.dataclass
class Env:
    broker: RunningBroker
    data: Path
    tmp: Path
    keys: dict[str, str]
    clients: dict[str, Client]

    def client(self, agent: str, keystore: Path | None = None) -> Client:
        return Client(
            self.broker.target,
            api_key=self.keys[agent],
            keystore=keystore or self.tmp / f"{agent}.keys",
        )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    tmp = tmp_path_factory.mktemp("e2econv")
    data = tmp / "data"
    keys = {a: await keys_create(str(data), "acme", a) for a in AGENTS}
    async with run_broker(data_dir=str(data)) as b:
        e = Env(b, data, tmp, keys, {})
        for a in AGENTS:
            e.clients[a] = await e.client(a).connect()
            await e.clients[a].conversations.publish_key()
        try:
            yield e
        finally:
            for c in e.clients.values():
                await c.close()


def _marker(what: str) -> str:
    return f"{what}-{uuid.uuid4().hex}"


async def _history(c: Client, cid: str, **kw: object) -> list[ConversationMessage]:
    return [m async for m in c.conversations.history(cid, **kw)]  # type: ignore[arg-type]


def _texts(msgs: list[ConversationMessage]) -> list[object]:
    return [m.data for m in msgs]


def _store_bytes(data: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(data.rglob("*")) if p.is_file())


async def test_group_message_is_ciphertext_in_the_store(env: Env) -> None:
    ann, bob, cy = (env.clients[a] for a in ("ann", "bob", "cy"))
    conv = await ann.conversations.create("group", ["bob", "cy"])
    assert conv.key_epoch == 1
    secret, control = _marker("secret"), _marker("control")
    await ann.conversations.send(conv.id, secret)
    await ann.conversations.send(conv.id, control, encrypt=False)
    for reader in (ann, bob, cy):
        assert _texts(await _history(reader, conv.id)) == [secret, control]
    raw = await _history(bob, conv.id, decrypt=False)
    assert (raw[0].scheme, raw[0].key_type, raw[0].epoch) == ("xchacha20-poly1305", "group", 1)
    assert raw[0].plaintext is None and secret.encode() not in raw[0].ciphertext
    # The control proves the scan sees what the store wrote; the secret is not there.
    await eventually(lambda: control.encode() in _store_bytes(env.data))
    assert secret.encode() not in _store_bytes(env.data)


async def test_direct_message_is_sealed_to_both_ends(env: Env) -> None:
    ann, bob, cy = (env.clients[a] for a in ("ann", "bob", "cy"))
    conv = await ann.conversations.create("direct", ["bob"])
    secret = _marker("direct")
    await ann.conversations.send(conv.id, {"text": secret})
    await bob.conversations.send(conv.id, {"text": "ack"})
    for reader in (ann, bob):  # the sender reads its own copy too
        assert _texts(await _history(reader, conv.id)) == [{"text": secret}, {"text": "ack"}]
    raw = await _history(ann, conv.id, decrypt=False)
    assert raw[0].scheme == "x25519-sealedbox" and secret.encode() not in raw[0].ciphertext
    # cy holds no copy: even given the ciphertext, it does not open with cy's key.
    with pytest.raises(DecryptionError, match="does not decrypt with your key"):
        await cy.conversations.decrypt(raw[0])
    assert secret.encode() not in _store_bytes(env.data)


async def test_departed_member_cannot_read_after_it_left(env: Env) -> None:
    ann, bob, cy = (env.clients[a] for a in ("ann", "bob", "cy"))
    conv = await ann.conversations.create("group", ["bob", "cy"])
    await ann.conversations.send(conv.id, "before")
    assert _texts(await _history(bob, conv.id)) == ["before"]  # bob now holds epoch 1
    await bob.conversations.leave(conv.id)
    # A member other than the owner refuses to send under the key bob still holds.
    with pytest.raises(FailedPrecondition, match="owner has not rotated") as err:
        await cy.conversations.send(conv.id, "too early")
    assert err.value.reason == "STALE_EPOCH"
    # The owner's next send rotates first (epoch 2, sealed to ann and cy only).
    after = _marker("after")
    await ann.conversations.send(conv.id, after)
    assert (await ann.conversations.get(conv.id)).key_epoch == 2
    await cy.conversations.send(conv.id, "cy too")
    got = await _history(cy, conv.id)
    assert _texts(got) == ["before", after, "cy too"] and got[1].epoch == 2
    raw_after = (await _history(cy, conv.id, decrypt=False))[1]
    # bob kept every key it had, and still cannot read what came after it left.
    with pytest.raises(PermissionDenied):
        await _history(bob, conv.id)
    with pytest.raises(DecryptionError, match="epoch 2"):
        await bob.conversations.decrypt(raw_after)
    bob_state = bob.conversations._states[conv.id]
    assert set(bob_state.keys) == {1}
    with pytest.raises(DecryptionError):
        e2e.open_group(bob_state.keys[1], conv.id, 2, "ann", raw_after.ciphertext, "it")
    with pytest.raises(DecryptionError):
        e2e.open_group(bob_state.keys[1], conv.id, 1, "ann", raw_after.ciphertext, "it")


async def test_removed_member_is_rotated_out_at_once(env: Env) -> None:
    ann, bob, cy = (env.clients[a] for a in ("ann", "bob", "cy"))
    conv = await ann.conversations.create("group", ["bob", "cy"])
    await cy.conversations.send(conv.id, "hello")
    assert _texts(await _history(bob, conv.id)) == ["hello"]
    after = await ann.conversations.remove(conv.id, "bob")
    assert after.key_epoch == 2 and after.agents == ["ann", "cy"]
    await cy.conversations.send(conv.id, "bob is gone")  # no STALE_EPOCH: ann rotated
    raw = (await _history(ann, conv.id, decrypt=False))[-1]
    assert raw.epoch == 2
    with pytest.raises(DecryptionError):
        await bob.conversations.decrypt(raw)


async def test_new_member_reads_from_its_join(env: Env) -> None:
    ann, dee = env.clients["ann"], env.clients["dee"]
    closed = await ann.conversations.create("group", ["bob"])
    opened = await ann.conversations.create("group", ["bob"], history_for_new_members=True)
    for conv in (closed, opened):
        await ann.conversations.send(conv.id, "earlier")
        await ann.conversations.invite(conv.id, ["dee"])
        await ann.conversations.send(conv.id, "later")
    assert _texts(await _history(dee, closed.id)) == ["later"]
    assert _texts(await _history(dee, opened.id)) == ["earlier", "later"]


async def test_tampered_ciphertext_is_a_decryption_error(env: Env) -> None:
    ann, bob = env.clients["ann"], env.clients["bob"]
    conv = await ann.conversations.create("group", ["bob"])
    await ann.conversations.send(conv.id, "intact")
    good = (await _history(bob, conv.id, decrypt=False))[0]
    flipped = bytearray(good.ciphertext)
    flipped[-1] ^= 1
    bad = dataclasses.replace(good, ciphertext=bytes(flipped))
    with pytest.raises(DecryptionError, match="does not decrypt"):
        await bob.conversations.decrypt(bad)
    # Moved to another sender, the intact bytes do not open either (the sender is bound).
    with pytest.raises(DecryptionError):
        await bob.conversations.decrypt(dataclasses.replace(good, sender="bob"))
    # A member sends tampered bytes through the broker: readers get the message with its
    # error set, the others still decrypt, nothing crashes.
    async with grpc.aio.insecure_channel(env.broker.target) as ch:
        stub = conversation_pb2_grpc.ConversationServiceStub(ch)
        await stub.SendMessage(
            conversation_pb2.SendMessageRequest(
                conversation_id=conv.id,
                data=bytes(flipped),
                encryption_metadata=conversation_pb2.EncryptionMetadata(
                    scheme="xchacha20-poly1305", key_type="group", epoch=1
                ),
            ),
            metadata=auth(env.keys["ann"]),
            timeout=10,
        )
    await ann.conversations.send(conv.id, "after")
    got = await _history(bob, conv.id)
    assert [type(m.error) for m in got] == [type(None), DecryptionError, type(None)]
    assert got[0].data == "intact" and got[2].data == "after"
    with pytest.raises(DecryptionError):
        _ = got[1].data


async def test_swapped_directory_key_is_detected(env: Env) -> None:
    ann = env.clients["ann"]
    (await ann.conversations.keys(["cy"]))["cy"]  # pinned on first use
    # The directory now answers with a key whose signature does not match it.
    row = await _swap_public_key(env.data, "cy")
    with pytest.raises(KeyMismatch, match="not signed by its identity key"):
        await ann.conversations.keys(["cy"])
    with pytest.raises(KeyMismatch):
        await ann.conversations.create("group", ["cy"])
    # A whole new, validly signed entry under another identity: the pin catches it.
    async with env.client("cy", env.tmp / "mallory.keys") as mallory:
        await mallory.conversations.publish_key()
    with pytest.raises(KeyMismatch, match="pinned on first use"):
        await ann.conversations.keys(["cy"])
    await _restore(env.data, row)
    assert (await ann.conversations.keys(["cy"]))["cy"].agent == "cy"


def _db(data: Path) -> sqlite3.Connection:
    candidates = [p for p in data.rglob("*.db") if p.is_file()] + [
        p for p in data.rglob("*.sqlite*") if p.is_file() and p.suffix in ("", ".sqlite")
    ]
    for p in candidates:
        c = sqlite3.connect(p, timeout=10)
        if c.execute("SELECT 1 FROM sqlite_master WHERE name = 'agent_keys'").fetchone():
            return c
        c.close()
    raise AssertionError(f"no store with agent_keys under {data}")


async def _swap_public_key(data: Path, agent: str) -> tuple[object, ...]:
    with _db(data) as c:
        row = c.execute("SELECT * FROM agent_keys WHERE agent = ?", (agent,)).fetchone()
        c.execute(
            "UPDATE agent_keys SET public_key = ? WHERE agent = ?",
            (bytes(32 * [7]), agent),
        )
    return tuple(row)


async def _restore(data: Path, row: tuple[object, ...]) -> None:
    with _db(data) as c:
        c.execute("INSERT OR REPLACE INTO agent_keys VALUES (?,?,?,?,?,?)", row)


async def test_receipts_and_presence(env: Env) -> None:
    ann, bob = env.clients["ann"], env.clients["bob"]
    conv = await ann.conversations.create("group", ["bob"])
    sent = await ann.conversations.send(conv.id, "read me")
    await bob.conversations.mark(conv.id, read_id=sent.id)
    receipts = {r.agent: r for r in await ann.conversations.receipts(conv.id)}
    assert receipts["bob"].read_id == sent.id and receipts["bob"].delivered_id == sent.id
    await bob.conversations.typing(conv.id)
    assert {p.agent for p in await ann.conversations.presence(conv.id)} == {"ann", "bob"}


async def test_owner_iterating_messages_rotates_when_a_member_leaves(env: Env) -> None:
    ann, bob, cy = (env.clients[a] for a in ("ann", "bob", "cy"))
    conv = await ann.conversations.create("group", ["bob", "cy"])
    await ann.conversations.send(conv.id, "first")
    seen: list[ConversationMessage] = []

    async def follow() -> None:
        async for m in ann.conversations.messages(conv.id, start="all"):
            seen.append(m)

    task = asyncio.create_task(follow())
    try:
        await eventually(lambda: len(seen) == 1)
        await bob.conversations.leave(conv.id)

        async def rotated() -> bool:
            return (await cy.conversations.get(conv.id)).key_epoch == 2

        await eventually(rotated)
        await cy.conversations.send(conv.id, "no longer stale")  # cy need not wait for a send
        await eventually(lambda: [m.data for m in seen] == ["first", "no longer stale"])
    finally:
        task.cancel()


async def test_encryption_without_a_keystore_is_one_sentence(env: Env) -> None:
    async with Client(env.broker.target, api_key=env.keys["dee"]) as plain:
        with pytest.raises(FailedPrecondition, match="needs a keystore") as err:
            await plain.conversations.create("group", ["ann"])
        assert "keystore=" in err.value.hint
        conv = await plain.conversations.create("group", ["ann"], encrypted=False)
        await plain.conversations.send(conv.id, "in the clear", encrypt=False)
        assert _texts(await _history(plain, conv.id)) == ["in the clear"]


async def test_concurrent_sends_after_a_leave_rotate_once(env: Env) -> None:
    ann, bob, cy = (env.clients[a] for a in ("ann", "bob", "cy"))
    conv = await ann.conversations.create("group", ["bob", "cy"])
    await ann.conversations.send(conv.id, "warm")  # ann has read the events once
    await bob.conversations.leave(conv.id)
    texts = [f"m{i}" for i in range(10)]
    await asyncio.gather(*(ann.conversations.send(conv.id, t) for t in texts))
    assert (await cy.conversations.get(conv.id)).key_epoch == 2
    got = await _history(cy, conv.id)
    assert sorted(_texts(got)[1:]) == texts and {m.epoch for m in got[1:]} == {2}


async def test_owner_seals_the_key_to_an_agent_that_joins_an_open_room(env: Env) -> None:
    ann, dee = env.clients["ann"], env.clients["dee"]
    room = await ann.conversations.create("group", ["bob"], open=True)
    seen: list[ConversationMessage] = []

    async def follow() -> None:
        async for m in ann.conversations.messages(room.id, start="all"):
            seen.append(m)

    task = asyncio.create_task(follow())
    try:
        await ann.conversations.send(room.id, "welcome")
        await eventually(lambda: len(seen) == 1)
        await dee.conversations.join(room.id)

        async def dee_sends() -> bool:
            try:
                await dee.conversations.send(room.id, "hi from dee")
            except DecryptionError:
                return False  # no key sealed to dee yet
            return True

        await eventually(dee_sends)
        await eventually(lambda: [m.data for m in seen] == ["welcome", "hi from dee"])
    finally:
        task.cancel()
