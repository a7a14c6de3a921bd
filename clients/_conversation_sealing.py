"""Sealing and opening the messages of ``client.conversations``: a direct message is a
SealedBox to the recipient plus a copy to the sender; a group or broadcast message is sealed
under the group key of the current epoch, after the rotation check (see the docstring of
:mod:`clients._conversations`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from lockgate.broker.v1 import conversation_pb2
from lockgate.broker.v1.reasons import Reason
from lockgate.clients._conversation_epochs import ConversationState, GroupKeys
from lockgate.clients._conversation_keys import KeyDirectory, crypto
from lockgate.clients._conversation_models import ConversationMessage
from lockgate.clients._errors import DecryptionError, FailedPrecondition

__all__ = ["Sealing"]

pb = conversation_pb2


class Sealing:
    """Encrypts what this agent sends and decrypts what it reads."""

    def __init__(self, directory: KeyDirectory, group_keys: GroupKeys) -> None:
        self._directory = directory
        self._group_keys = group_keys

    async def seal(self, st: ConversationState, plaintext: bytes) -> tuple[bytes, Any]:
        """The ciphertext of ``plaintext`` and its ``EncryptionMetadata``."""
        e2e = crypto()
        me = await self._directory.ready()
        conv = st.conversation
        if conv.type == "direct":
            other = next((a for a in conv.agents if a != me), me)
            keys = await self._directory.keys_of_all([other, me], fresh=False)
            body = e2e.seal_direct(keys[other].public_key, keys[me].public_key, plaintext)
            return body, pb.EncryptionMetadata(scheme=e2e.DIRECT_SCHEME, key_type="recipient")
        await self._group_keys.sync(st)
        if st.stale:
            if st.conversation.owner != me:
                raise FailedPrecondition(
                    f"a member left {conv.id} after its group key of epoch "
                    f"{st.conversation.key_epoch} was made, and the owner has not rotated it yet",
                    reason=Reason.STALE_EPOCH,
                    hint=f"wait for {st.conversation.owner}'s client to rotate the key",
                )
            await self._group_keys.seal_new_epoch(st, only_if_stale=True)
        if st.conversation.key_epoch == 0:
            raise FailedPrecondition(
                f"{conv.id} has no group key", hint="create it with encrypted=True"
            )
        epoch = st.conversation.key_epoch
        key = await self._group_keys.group_key(st, epoch)
        body = e2e.seal_group(key, conv.id, epoch, me, plaintext)
        return body, pb.EncryptionMetadata(scheme=e2e.GROUP_SCHEME, key_type="group", epoch=epoch)

    async def open(
        self, st: ConversationState, message: ConversationMessage
    ) -> ConversationMessage:
        """``message`` (of ``st``'s conversation) with its plaintext; :class:`DecryptionError`
        when it does not open."""
        e2e = crypto()
        what = f"message {message.id} of {message.conversation_id}"
        if message.scheme == e2e.DIRECT_SCHEME:
            plain = e2e.open_direct(self._directory.ks().private, message.ciphertext, what)
        elif message.scheme == e2e.GROUP_SCHEME and message.key_type == "group":
            key = await self._group_keys.group_key(st, message.epoch)
            plain = e2e.open_group(
                key,
                message.conversation_id,
                message.epoch,
                message.sender,
                message.ciphertext,
                what,
            )
        else:
            raise DecryptionError(f"{what} uses scheme {message.scheme!r}, unknown to this client")
        return dataclasses.replace(message, plaintext=plain, error=None)
