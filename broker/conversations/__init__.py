"""Conversations between agents (issue 11): direct, group and broadcast, as subjects and a
rule (``service``), presence and typing (``presence``), naming (``subjects``)."""

from __future__ import annotations

from lockgate.broker.conversations.service import KINDS, Conversations, Host, Sent

__all__ = ["KINDS", "Conversations", "Host", "Sent"]
