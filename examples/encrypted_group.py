"""An end-to-end encrypted group where a member leaves: the broker stores only ciphertext, and
the member that left cannot read what is sent after it left.

    lockgate serve &                       # the data dir ./lockgate-data
    LOCKGATE_SERVER=127.0.0.1:50051 python examples/encrypted_group.py

It makes three agents' keys with ``lockgate keys create`` beside the running broker
(LOCKGATE_DATA_DIR, default ./lockgate-data) and keeps their keystores in a temporary folder.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from lockgate.clients import Client, DecryptionError


def api_key(data_dir: str, agent: str) -> str:
    lockgate = str(Path(sys.executable).with_name("lockgate"))
    out = subprocess.run(
        [lockgate, "keys", "create", "--data-dir", data_dir, "--org", "acme", "--agent", agent],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.split()[0]


async def main() -> None:
    target = os.environ.get("LOCKGATE_SERVER", "127.0.0.1:50051")
    data_dir = os.environ.get("LOCKGATE_DATA_DIR", "./lockgate-data")
    keys = {a: api_key(data_dir, a) for a in ("ann", "bob", "cy")}
    with tempfile.TemporaryDirectory() as home:
        ann, bob, cy = (
            Client(target, api_key=keys[a], keystore=Path(home, f"{a}.keys"))
            for a in ("ann", "bob", "cy")
        )
        async with ann, bob, cy:
            for c in (bob, cy):  # each client publishes its signed public key
                await c.conversations.publish_key()
            group = await ann.conversations.create("group", ["bob", "cy"])
            await ann.conversations.send(group.id, {"text": "hello, both of you"})
            async for m in bob.conversations.history(group.id):
                print("bob reads:", m.data)

            await bob.conversations.leave(group.id)
            # The owner's client rotates the group key before its next send (epoch 2).
            sent = await ann.conversations.send(group.id, {"text": "bob has left"})
            async for m in cy.conversations.history(group.id):
                print(f"cy reads (epoch {m.epoch}):", m.data)

            # bob kept the key of epoch 1; given the new ciphertext, it still cannot read it.
            raw = [m async for m in cy.conversations.history(group.id, decrypt=False)]
            after = next(m for m in raw if m.id == sent.id)
            try:
                await bob.conversations.decrypt(after)
            except DecryptionError:
                print("bob cannot decrypt what was sent after it left")


if __name__ == "__main__":
    asyncio.run(main())
