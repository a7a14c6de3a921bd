"""The key directory of ``client.conversations`` and the one way its parts call the broker.

- :class:`ConversationRpc`: a unary call to the ConversationService over the client's channel.
- :class:`KeyDirectory`: publishes this agent's X25519 public key, signed by its identity key;
  reads other agents' keys, checks each signature and pins each identity key on first use, so
  a key the directory swapped is :class:`KeyMismatch`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf.message import Message as _Message

from lockgate.broker.v1 import conversation_pb2
from lockgate.clients._conversation_models import AgentKey, time_of
from lockgate.clients._errors import FailedPrecondition

if TYPE_CHECKING:
    from lockgate.clients._client import Client
    from lockgate.clients._keystore import Keystore

__all__ = ["ConversationRpc", "KeyDirectory", "crypto"]

pb = conversation_pb2
SERVICE = "/broker.v1.ConversationService/"
_R = TypeVar("_R", bound=_Message)


def crypto() -> Any:
    """:mod:`clients._e2e`, imported on first use: pynacl is the optional ``crypto`` extra, and
    a client that never encrypts must not need it."""
    from lockgate.clients import _e2e

    return _e2e


class ConversationRpc:
    """Unary calls to the ConversationService through ``client``'s channel and retries."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def __call__(self, method: str, request: _Message, response_type: type[_R]) -> _R:
        unary: Callable[..., Awaitable[_R]] = self.client._unary
        return await unary(SERVICE + method, request, response_type)


class KeyDirectory:
    """This agent's keystore and the directory entries this client has verified."""

    def __init__(self, call: ConversationRpc, keystore: Keystore | None) -> None:
        self._call = call
        self.keystore = keystore
        self._keys: dict[str, AgentKey] = {}
        self._me = ""

    def ks(self) -> Keystore:
        """The keystore; :class:`FailedPrecondition` when the client was given none."""
        if self.keystore is None:
            raise FailedPrecondition(
                "end-to-end encryption needs a keystore",
                hint="pass keystore='path/to/agent.keys' to Client(...)",
            )
        return self.keystore

    async def ready(self) -> str:
        """Publish this agent's key (once per client) and learn the agent's name."""
        if not self._me:
            await self.publish()
        return self._me

    async def publish(self) -> AgentKey:
        """Put this agent's X25519 public key, signed by its identity key, in the directory."""
        ks = self.ks()
        e2e = crypto()
        resp = await self._call(
            "PublishKey",
            pb.PublishKeyRequest(
                public_key=ks.public_key,
                identity_key=ks.identity_key,
                signature=e2e.sign_directory_entry(ks.identity, ks.public_key),
            ),
            pb.PublishKeyResponse,
        )
        ks.bind(resp.key.agent)
        ks.pin(resp.key.agent, ks.identity_key)
        self._me = resp.key.agent
        key = AgentKey(
            resp.key.agent, ks.public_key, ks.identity_key, time_of(resp.key.published_time)
        )
        self._keys[self._me] = key
        return key

    async def keys(self, agents: Sequence[str], *, fresh: bool = True) -> dict[str, AgentKey]:
        """Verified entries of ``agents`` (those without one are left out); ``fresh=False``
        may answer from the entries this client already verified."""
        ks = self.ks()
        e2e = crypto()
        want = [a for a in dict.fromkeys(agents) if fresh or a not in self._keys]
        if want:
            resp = await self._call("GetKeys", pb.GetKeysRequest(agents=want), pb.GetKeysResponse)
            for k in resp.keys:
                e2e.verify_directory_entry(k.agent, k.public_key, k.identity_key, k.signature)
                ks.pin(k.agent, k.identity_key)
                self._keys[k.agent] = AgentKey(
                    k.agent, k.public_key, k.identity_key, time_of(k.published_time)
                )
        return {a: self._keys[a] for a in agents if a in self._keys}

    async def keys_of_all(
        self, agents: Sequence[str], *, fresh: bool = True
    ) -> dict[str, AgentKey]:
        """As :meth:`keys`, but :class:`FailedPrecondition` when one of ``agents`` has none."""
        got = await self.keys(agents, fresh=fresh)
        missing = [a for a in agents if a not in got]
        if missing:
            raise FailedPrecondition(
                f"{', '.join(missing)} published no key in the directory, so nothing can be "
                "sealed to them",
                hint="each agent's client publishes its key on first use "
                "(client.conversations.publish_key())",
            )
        return got

    def forget_pin(self, agent: str) -> None:
        """Forget ``agent``'s pinned identity key (after it really made new keys)."""
        self.ks().forget(agent)
        self._keys.pop(agent, None)
