"""The client-side ``lockgate`` commands, by group: events (``_cli_events``: pub, sub,
request, history), operations (``_cli_ops``: status, top, dlq, durables), ``_cli_audit``
(audit) and ``_cli_policy`` (policy push, versions, rollback).

``broker/cli.py`` calls :func:`add_commands` with its subparsers; every handler is ``async`` and
returns an exit code. Failures raise ``LockgateError`` (gRPC errors are translated here), which
``lockgate`` prints as one sentence and a ``hint:`` line, never a traceback. Ids are JSON
strings in every output: 64-bit ids lose precision as JSON numbers in JavaScript.

Example::

    lockgate pub orders.created '{"order": 7}'
    lockgate sub 'orders.>' --durable billing --ack --count 10
    lockgate history 'orders.>' --since -1h --limit 20
    lockgate audit --since 1h --action policy --json
"""

from __future__ import annotations

import argparse

from lockgate.clients._cli_audit import add_audit_command
from lockgate.clients._cli_events import add_event_commands
from lockgate.clients._cli_kit import TextSyntax
from lockgate.clients._cli_ops import add_ops_commands
from lockgate.clients._cli_policy import POLICY_COMMANDS

__all__ = ["POLICY_COMMANDS", "TextSyntax", "add_commands"]


def add_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], syntax: TextSyntax
) -> None:
    """Register every client command but ``policy``'s on ``lockgate``'s subparsers."""
    add_event_commands(subparsers, syntax)
    add_ops_commands(subparsers)
    add_audit_command(subparsers, syntax)
