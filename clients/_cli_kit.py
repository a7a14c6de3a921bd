"""What the client's ``lockgate`` commands share (the ``_cli*`` modules): the text syntax
``lockgate`` hands in (:class:`TextSyntax`), the connection arguments, the client they make,
the failure guard, and the JSON output (ids as strings: 64-bit ids lose precision as JSON
numbers in JavaScript)."""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime as dt
import functools
import json
import os
import re
from collections.abc import Callable, Coroutine
from typing import Any

import grpc

from lockgate.clients._client import Client
from lockgate.clients._codec import StartSpec
from lockgate.clients._errors import from_rpc_error
from lockgate.clients._message import Event, Message, StoredEvent
from lockgate.clients._tls import add_tls_arguments, tls_from_args

__all__ = [
    "Handler",
    "TextSyntax",
    "client_of",
    "common_arguments",
    "event_json",
    "guard",
    "jsonable",
    "print_json",
    "record_json",
]

Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]
# A value that starts with "-" and a digit ("-1h") is a value, as argparse already does for "-1".
_NEGATIVE_VALUE = re.compile(r"^-\d")


@dataclasses.dataclass(frozen=True, slots=True)
class TextSyntax:
    """How the commands read times (``--since -1h``) and start positions (``--start all``).

    The one syntax lives in the server's packages (``policy.durations``,
    ``broker.positions``), which this package may not import; ``lockgate``, the composition
    root, hands it in. Each function raises ``argparse.ArgumentTypeError`` on bad text.
    """

    time: Callable[[str], dt.datetime]
    start: Callable[[str], StartSpec]
    duration: Callable[[str], float] = float
    start_help: str = "where to start"


def common_arguments(p: argparse.ArgumentParser) -> None:
    # Let relative times like "-1h" be option values, as argparse already does for "-1".
    p._negative_number_matcher = _NEGATIVE_VALUE
    p.add_argument(
        "--server",
        default=os.environ.get("LOCKGATE_SERVER", "127.0.0.1:50051"),
        help="broker address HOST:PORT, grpcs://HOST:PORT for TLS, or several separated by "
        "commas to fail over between (env LOCKGATE_SERVER; default 127.0.0.1:50051)",
    )
    p.add_argument(
        "--api-key",
        dest="api_key",
        default=os.environ.get("LOCKGATE_API_KEY"),
        help="API key (env LOCKGATE_API_KEY)",
    )
    add_tls_arguments(p)


def guard(handler: Handler) -> Handler:
    """Translate the failures of the layers below into ``LockgateError`` (``lockgate`` prints)."""

    @functools.wraps(handler)
    async def run(args: argparse.Namespace) -> int:
        try:
            return await handler(args)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        except ValueError as err:  # bad input the parser could not see (e.g. the address)
            raise argparse.ArgumentTypeError(str(err)) from None

    return run


def client_of(args: argparse.Namespace) -> Client:
    return Client(
        args.server,
        args.api_key,
        connect_timeout=3.0,
        max_reconnect_attempts=None,
        tls=tls_from_args(args),
    )


def jsonable(value: object) -> Any:
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode("ascii")}
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    return value


def event_json(ev: Event) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(ev, Message | StoredEvent):
        out["id"] = str(ev.id)
        out["subject"] = ev.subject
    if isinstance(ev, Message):
        out["attempt"] = ev.attempt
        if ev.reply_to:
            out["reply_to"] = ev.reply_to
    if isinstance(ev, StoredEvent):
        out["stored_time"] = ev.stored_time.isoformat()
    out.update(type=ev.type, source=ev.source, event_id=ev.event_id, data=jsonable(ev.data))
    return out


def print_json(obj: object) -> None:
    print(json.dumps(obj, ensure_ascii=False, default=str), flush=True)


def record_json(record: object) -> Any:
    """An admin dataclass as JSON values: times in ISO 8601, events as ``history`` prints them."""
    if isinstance(record, StoredEvent):
        return event_json(record)
    if isinstance(record, dt.datetime):
        return record.isoformat()
    if isinstance(record, list):
        return [record_json(v) for v in record]
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        fields = ((f.name, getattr(record, f.name)) for f in dataclasses.fields(record))
        return {name: _id_json(v) if _is_id(name) else record_json(v) for name, v in fields}
    return record


def _is_id(field_name: str) -> bool:
    """Whether a field of an admin record holds an event id (``id``, ``delivered_id``...)."""
    return field_name in ("id", "ack_floor") or field_name.endswith("_id")


def _id_json(value: object) -> object:
    # Ids are JSON strings in every output: as JSON numbers, 64-bit ids lose precision in JS.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value
