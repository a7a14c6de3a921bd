"""The subjects of a conversation: ``$conv.<id>.<kind>`` (the one naming rule).

``msg`` holds its messages and ``events`` its lifecycle events (both stored in the log);
``typing``, ``presence`` and ``receipts`` carry notices to live subscribers only.

>>> subject_of("c0123", "msg"), conversation_of("$conv.c0123.msg"), conversation_of("a.b")
('$conv.c0123.msg', 'c0123', None)
"""

from __future__ import annotations

import re
import secrets

__all__ = [
    "EVENTS",
    "MSG",
    "PREFIX",
    "PRESENCE",
    "RECEIPTS",
    "TYPING",
    "conversation_of",
    "new_id",
    "prefix_of",
    "subject_of",
    "valid_id",
]

PREFIX = "$conv."
MSG = "msg"
EVENTS = "events"
TYPING = "typing"
PRESENCE = "presence"
RECEIPTS = "receipts"
_ID = re.compile(r"c[0-9a-f]{20}")


def new_id() -> str:
    """A new conversation id: "c" and 20 hex digits (80 random bits)."""
    return "c" + secrets.token_hex(10)


def valid_id(conversation_id: str) -> bool:
    return _ID.fullmatch(conversation_id) is not None


def prefix_of(conversation_id: str) -> str:
    return PREFIX + conversation_id


def subject_of(conversation_id: str, kind: str) -> str:
    return f"{PREFIX}{conversation_id}.{kind}"


def conversation_of(subject: str) -> str | None:
    """The conversation id of a ``$conv.`` subject or pattern (None for any other, and for
    a pattern whose second token is a wildcard)."""
    if not subject.startswith(PREFIX):
        return None
    token = subject[len(PREFIX) :].split(".", 1)[0]
    return None if token in ("*", ">", "") else token
