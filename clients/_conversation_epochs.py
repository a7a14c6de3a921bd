"""Group key rotation in ``client.conversations``: the group key of each epoch, sealed to each
member and opened on first use, and when to make a new one (the rules are in the docstring of
:mod:`clients._conversations`).

:class:`ConversationState` is what this client knows of one conversation: the keys it opened,
the last lifecycle event it read and whether a departure made the current key stale.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lockgate.broker.v1 import conversation_pb2
from lockgate.clients._conversation_keys import ConversationRpc, KeyDirectory, crypto
from lockgate.clients._conversation_models import Conversation
from lockgate.clients._errors import (
    DecryptionError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)

if TYPE_CHECKING:
    from lockgate.clients._client import Client

__all__ = ["DEPARTURES", "ConversationState", "GroupKeys"]

pb = conversation_pb2
DEPARTURES = ("conversation.member_left", "conversation.member_removed")


@dataclass
class ConversationState:
    """What this client knows of one conversation."""

    conversation: Conversation
    events_after: int = 0
    stale: bool = False
    keys: dict[int, bytes] = field(default_factory=dict)
    running: asyncio.Future[None] | None = None
    pending: asyncio.Future[None] | None = None
    rotating: asyncio.Lock = field(default_factory=asyncio.Lock)


class GroupKeys:
    """Seals, opens and rotates the group keys of the conversations in ``refresh``'s care:
    ``refresh(id)`` reads a conversation again and updates its :class:`ConversationState`."""

    def __init__(
        self,
        client: Client,
        call: ConversationRpc,
        directory: KeyDirectory,
        refresh: Callable[[str], Awaitable[Conversation]],
    ) -> None:
        self._client = client
        self._call = call
        self._directory = directory
        self._refresh = refresh

    async def seal_new_epoch(self, st: ConversationState, *, only_if_stale: bool = False) -> None:
        """Make the key of the next epoch and seal it to every participant."""
        # One rotation at a time per conversation in this client: two concurrent ones would
        # both seal epoch N+1, the second overwriting the first's envelopes.
        async with st.rotating:
            if only_if_stale and not st.stale:
                return
            e2e = crypto()
            conv = st.conversation
            epoch = conv.key_epoch + 1
            key: bytes = e2e.new_group_key()
            await self.put_keys(st, epoch, key, conv.agents)
            st.keys[epoch] = key
            st.stale = False
            st.conversation = dataclasses.replace(st.conversation, key_epoch=epoch)

    async def put_keys(
        self, st: ConversationState, epoch: int, key: bytes, agents: Sequence[str]
    ) -> None:
        """Seal ``key`` of ``epoch`` to each of ``agents``, signed by this agent."""
        e2e = crypto()
        ks = self._directory.ks()
        await self._directory.ready()
        found = await self._directory.keys_of_all(agents)
        cid = st.conversation.id
        envelopes = []
        for agent in agents:
            sealed, signature = e2e.seal_group_key(
                ks.identity, cid, epoch, agent, found[agent].public_key, key
            )
            envelopes.append(
                pb.GroupKeyEnvelope(agent=agent, sealed_key=sealed, signature=signature)
            )
        await self._call(
            "PutGroupKeys",
            pb.PutGroupKeysRequest(conversation_id=cid, epoch=epoch, envelopes=envelopes),
            pb.PutGroupKeysResponse,
        )

    async def group_key(self, st: ConversationState, epoch: int) -> bytes:
        """The key of ``epoch``, opened from its envelope on first use."""
        key = st.keys.get(epoch)
        if key is not None:
            return key
        e2e = crypto()
        ks = self._directory.ks()
        cid = st.conversation.id
        try:
            resp = await self._call(
                "GetGroupKeys",
                pb.GetGroupKeysRequest(conversation_id=cid, min_epoch=epoch),
                pb.GetGroupKeysResponse,
            )
        except (PermissionDenied, NotFound) as exc:
            raise DecryptionError(
                f"no group key of epoch {epoch} of {cid}: you are not a participant now",
                hint=str(exc),
            ) from exc
        me = await self._directory.ready()
        for env in resp.envelopes:
            if env.epoch in st.keys:
                continue
            found = await self._directory.keys_of_all([env.sealed_by], fresh=False)
            st.keys[env.epoch] = e2e.open_group_key(
                ks.private,
                found[env.sealed_by].identity_key,
                cid,
                env.epoch,
                me,
                env.sealed_key,
                env.signature,
                env.sealed_by,
            )
        key = st.keys.get(epoch)
        if key is None:
            raise DecryptionError(
                f"you hold no group key of epoch {epoch} of {cid} (it was sealed before you "
                "joined or after you left)"
            )
        return key

    async def sync(self, st: ConversationState) -> None:
        """Read the conversation's lifecycle events since the last seen: a departure after
        the last key rotation makes the key stale.

        Concurrent sends share one read, but only one that starts after they were called
        (the next one, queued behind a read in flight), so none misses an event stored
        before it was called."""
        if st.pending is None:
            st.pending = asyncio.ensure_future(self._sync_next(st, st.running))
        await asyncio.shield(st.pending)

    async def _sync_next(self, st: ConversationState, before: asyncio.Future[None] | None) -> None:
        if before is not None:
            await asyncio.wait([before])
        st.running, st.pending = st.pending, None
        cid = st.conversation.id
        changed = False
        async for ev in self._client.query_events(
            f"$conv.{cid}.events", after_id=st.events_after, page_size=1000
        ):
            st.events_after = ev.id
            changed = True
            if ev.type in DEPARTURES:
                st.stale = True
            elif ev.type == "conversation.key_rotated":
                st.stale = False
        if changed:
            await self._refresh(cid)

    async def share_with_joiner(self, st: ConversationState, data: object) -> None:
        """Seal the current key to an agent that joined an open room by itself (``data`` is
        the ``conversation.member_joined`` event's)."""
        if not isinstance(data, dict):
            return
        who = data.get("agent")
        if not isinstance(who, str) or data.get("by") != who:
            return  # invited: invite() sealed the key already
        conv = await self._refresh(st.conversation.id)
        if conv.key_epoch == 0 or who not in conv.agents:
            return  # a plaintext room, or it left again
        try:
            async with st.rotating:
                epoch = st.conversation.key_epoch
                await self.put_keys(st, epoch, await self.group_key(st, epoch), [who])
        except (FailedPrecondition, InvalidArgument):
            # It left, or the key moved on meanwhile: the next rotation seals to whoever
            # is a member then.
            return
