"""Who is calling and from where, for the audit log: a context variable that follows the call.

The surface that takes a call (gRPC servicer, HTTP and WebSocket gateways, the CLI) names
itself and its peer with :func:`enter`, and authentication adds the principal and the
credential (:func:`authenticated`); :class:`~broker.audit.AuditLog` reads
:func:`current_actor` for every record.

>>> credential_id("lg_k123_secretpart")
'k123'
"""

from __future__ import annotations

import contextvars
import getpass
import hashlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

from lockgate.broker.auth import Principal
from lockgate.broker.store import AuditRecord

__all__ = ["Actor", "authenticated", "cli_record", "credential_id", "current_actor", "enter"]


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is calling and from where, as far as the call has got (see :func:`enter`)."""

    surface: str = "broker"
    """grpc, http, ws, cli; ``broker`` for the broker's own work (file reloads, start)."""
    peer: str = ""
    org: str = ""
    agent: str = ""
    credential: str = ""


_BROKER = Actor()  # frozen: a safe shared default
_ACTOR: contextvars.ContextVar[Actor] = contextvars.ContextVar("lockgate_actor", default=_BROKER)


def enter(surface: str, peer: str) -> None:
    """Marks the current call (its task and the tasks it starts) as taken by ``surface``
    from ``peer``; a surface calls it once per call or connection."""
    _ACTOR.set(Actor(surface, peer))


def authenticated(principal: Principal | None, credential: str) -> None:
    """Adds who the current call is (``None``: authentication failed, only the credential
    presented is known)."""
    a = _ACTOR.get()
    org, agent = (principal.org, principal.agent) if principal is not None else ("", "")
    # The surface stays: an in-process gateway entered first, the broker API authenticates.
    _ACTOR.set(Actor(a.surface, a.peer, org, agent, credential))


def current_actor() -> Actor:
    return _ACTOR.get()


def credential_id(key: str | None) -> str:
    """What the audit log names a presented credential by: an API key's id (the part before
    its secret), or a short hash of any other token; never the secret itself."""
    if not key:
        return ""
    parts = key.strip().split("_")
    if len(parts) == 3 and parts[0] == "lg" and parts[1]:
        return parts[1][:64]
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()[:16]


def cli_record(
    action: str,
    outcome: str = "ok",
    *,
    target: str = "",
    org: str = "",
    detail: Mapping[str, str] | None = None,
) -> AuditRecord:
    """A record of a ``lockgate`` command that writes the store itself (``keys``): its peer
    is the operating-system user who ran it, its org the one the action concerns (so that
    org's administrator reads it too)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a bare container)
        user = str(os.getuid()) if hasattr(os, "getuid") else "?"
    return AuditRecord(
        int(time.time() * 1000),
        action,
        outcome,
        org=org,
        target=target,
        surface="cli",
        peer=f"local:{user}",
        detail=dict(detail or {}),
    )
