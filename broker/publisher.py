"""The publisher recorded with each stored batch, so that ``policy replay`` decides its events
for the principal that published them: agent and roles as a JSON array, which any character
of a name survives (``["bot|1", ["a,b", "ops"]]``).

>>> decode_publisher(encode_publisher("bot|1", frozenset({"ops", "a,b"})))
('bot|1', frozenset({'a,b', 'ops'}))
"""

from __future__ import annotations

import json
from collections.abc import Iterable

__all__ = ["decode_publisher", "encode_publisher"]


def encode_publisher(agent: str, roles: Iterable[str]) -> str:
    """The text stored in ``Batch.publisher``."""
    return json.dumps([agent, sorted(roles)], ensure_ascii=False, separators=(",", ":"))


def decode_publisher(text: str) -> tuple[str, frozenset[str]]:
    """Agent and roles of a stored publisher; ``("", {})`` when none was recorded.

    Logs written before this format hold ``agent|role,role``, read as well as that unescaped
    text allows.
    """
    if text.startswith("["):
        try:
            agent, roles = json.loads(text)
            return str(agent), frozenset(str(r) for r in roles)
        except (ValueError, TypeError):
            pass
    agent, _, roles = text.partition("|")
    return agent, frozenset(r for r in roles.split(",") if r)
