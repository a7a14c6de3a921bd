"""``lockgate gateway http|ws|redis|nats|webhook --broker HOST:PORT``: standalone gateways.

A standalone gateway speaks to a running broker over gRPC (``RemoteAPI``). HTTP and
WebSocket callers' API keys are passed through; the ingest gateways (Redis, NATS) and the
webhook dispatcher use ``--api-key`` (or ``LOCKGATE_API_KEY``). Settings come from
``--config FILE`` (its ``[gateways.<kind>]`` table) and flags, flags winning. The process
prints ``lockgate gateway <kind> ready on HOST:PORT`` (or ``ready``) once it serves, and
stops cleanly on SIGTERM or SIGINT.

``broker/cli.py``, the composition root, registers it with ``add_commands(sub)`` and prints
every failure (one sentence and a hint, never a traceback; exit codes in broker/cli_errors.py).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from lockgate.broker.config import ConfigError, ListenerLimits
from lockgate.broker.config_load import load_config, read_toml
from lockgate.clients._tls import TLS, add_tls_arguments, tls_from_args

if TYPE_CHECKING:
    from lockgate.gateways._remote import RemoteAPI

__all__ = ["add_commands", "run_gateway"]

KINDS = ("http", "ws", "redis", "nats", "webhook")


def _pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} {item!r} is not KEY=VALUE", hint=f"e.g. {flag} in=orders.in")
        out[key] = value
    return out


def _section(args: argparse.Namespace) -> dict[str, Any]:
    section: dict[str, Any] = {}
    if args.config_file:
        doc = read_toml(args.config_file)
        section.update(doc.get("gateways", {}).get(args.kind, {}))
    flags = {
        "listen": getattr(args, "listen", None),
        "max_body_bytes": getattr(args, "max_body_bytes", None),
        "url": getattr(args, "url", None),
        "secret": getattr(args, "secret", None) or os.environ.get("LOCKGATE_WEBHOOK_SECRET"),
        "dead_letter": getattr(args, "dead_letter", None),
    }
    for key in ("tls_server_cert", "tls_server_key", "tls_client_ca"):
        flags[key] = getattr(args, key, None)
    if getattr(args, "insecure_plaintext", False):
        flags["insecure_plaintext"] = True
    section.update({k: v for k, v in flags.items() if v is not None})
    for flag, key in (
        ("list", "lists"),
        ("stream", "streams"),
        ("subject", "subjects"),
        ("egress", "egress"),
    ):
        pairs = _pairs(getattr(args, flag, None), "--" + flag)
        if pairs:
            section[key] = {**section.get(key, {}), **pairs}
    api_key = args.api_key or os.environ.get("LOCKGATE_API_KEY")
    if api_key and args.kind in ("redis", "nats"):
        section["api_key"] = api_key
    return section


async def run_gateway(
    kind: str,
    target: str,
    section: dict[str, Any],
    api_key: str | None = None,
    *,
    stop: asyncio.Event | None = None,
    limits: ListenerLimits | None = None,
    tls: TLS | None = None,
    broker_max_message_bytes: int = 1 << 20,
) -> None:
    """Runs one standalone gateway against the broker at ``target`` (``tls``: the client TLS
    to it) until ``stop`` is set (or SIGTERM/SIGINT), an HTTP/WebSocket listener within
    ``limits``, publishing in requests under the broker's ``max_message_bytes``. Raises
    :class:`~broker.errors.BrokerError` for what stops it from starting (a busy port:
    LISTEN_FAILED; a non-loopback listener without TLS: INSECURE_LISTEN; a missing extra:
    MISSING_EXTRA)."""
    from lockgate.gateways._remote import RemoteAPI
    from lockgate.gateways.errors import missing_extra

    api = RemoteAPI(target, tls=tls, broker_max_message_bytes=broker_max_message_bytes)
    stops: list[Callable[[], Awaitable[None]]] = [api.close]
    try:
        try:
            where = await _start(kind, api, section, api_key, stops, limits)
        except ImportError as exc:  # the gateway's optional extra is not installed
            raise missing_extra(exc) from None
        print(f"lockgate gateway {kind} ready{where}", flush=True)
        done = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        if stop is None:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, done.set)
        await done.wait()
    finally:
        for fn in reversed(stops):
            await fn()


async def _start(
    kind: str,
    api: RemoteAPI,
    section: dict[str, Any],
    api_key: str | None,
    stops: list[Callable[[], Awaitable[None]]],
    limits: ListenerLimits | None,
) -> str:
    """Starts the gateway (its stop functions go to ``stops``); returns where it listens."""
    from lockgate.gateways.config import listen_of, settings_for, tls_of, ws_path

    if kind in ("http", "ws"):
        from aiohttp import web

        from lockgate.broker.errors import FailedPrecondition
        from lockgate.broker.tls import refusal_of_plaintext
        from lockgate.gateways._guard import ConnectionGuard
        from lockgate.gateways._site import is_loopback_host, start_site
        from lockgate.gateways.http import build_app
        from lockgate.gateways.websocket import add_ws_route

        if kind == "http":
            app = build_app(api, settings_for("http", section))
            add_ws_route(app, api, None, "/v1/ws")  # the HTTP gateway serves /v1/ws too
        else:
            app = web.Application()
            add_ws_route(app, api, settings_for("ws", section), ws_path(section))
        listen = listen_of(section) or "127.0.0.1:8080"
        tls = tls_of(section)
        host = listen.rpartition(":")[0].strip("[]") or "127.0.0.1"
        if tls is None and not is_loopback_host(host) and not section.get("insecure_plaintext"):
            raise FailedPrecondition(
                refusal_of_plaintext([listen]),
                reason="INSECURE_LISTEN",
                hint="pass --tls-server-cert and --tls-server-key, or --insecure-plaintext if "
                "a trusted network or proxy protects this port",
            )
        # A standalone gateway checks client certificates but cannot vouch for them to the
        # broker: its callers still authenticate with API keys (README, Security).
        runner, port = await start_site(
            app, listen, ConnectionGuard(limits), tls=tls, certified_callers=False
        )
        stops.append(runner.cleanup)
        return f" on {listen.rpartition(':')[0]}:{port}"
    if kind == "redis":
        from lockgate.gateways.redis import RedisIngest

        ingest = RedisIngest(api, settings_for("redis", section))
        await ingest.start()
        stops.append(ingest.stop)
    elif kind == "nats":
        from lockgate.gateways.nats import NatsGateway

        gw = NatsGateway(api, settings_for("nats", section))
        await gw.start()
        stops.append(gw.stop)
    else:
        from lockgate.gateways.webhook import PollingWebhookDispatcher

        # Each durable's secrets and org come from the broker; ``secret`` only signs for a
        # durable from before secrets were per durable.
        settings = settings_for("webhook", section)
        dispatcher = PollingWebhookDispatcher(api, api_key, settings)
        await dispatcher.start()
        stops.append(dispatcher.stop)
    return ""


def _cmd(args: argparse.Namespace) -> int:
    # Failures raise; `lockgate` prints them (broker/cli_errors.py) with its exit codes.
    from lockgate.broker.fdbudget import raise_open_file_limit

    section = _section(args)
    api_key = args.api_key or os.environ.get("LOCKGATE_API_KEY")
    # The http_* limits and the broker's max_message_bytes: LOCKGATE_* variables and the
    # file's [broker] (or top-level) keys, as the broker reads them.
    config = load_config(config_file=args.config_file)
    raise_open_file_limit()  # the listener's share of descriptors is taken from the whole
    tls = tls_from_args(args)
    asyncio.run(
        run_gateway(
            args.kind,
            args.broker,
            section,
            api_key,
            limits=config.listener_limits(),
            tls=tls,
            broker_max_message_bytes=config.max_message_bytes,
        )
    )
    return 0


def add_commands(subparsers: Any) -> None:
    """Adds ``gateway`` (with http, ws, redis, nats, webhook) to ``lockgate``'s subcommands."""
    p = subparsers.add_parser("gateway", help="run a gateway against a running broker")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    helps = {
        "http": "HTTP publish/query/poll (and /v1/ws)",
        "ws": "WebSocket /v1/ws only",
        "redis": "ingest Redis lists and streams",
        "nats": "ingest from and egress to NATS",
        "webhook": "POST durables with an endpoint_url (polling the broker)",
    }
    for kind in KINDS:
        q = kinds.add_parser(kind, help=helps[kind])
        q.add_argument(
            "--broker",
            default="127.0.0.1:50051",
            help="broker HOST:PORT (grpcs:// for TLS), or several separated by commas to fail "
            "over between",
        )
        add_tls_arguments(q)
        q.add_argument("--config", dest="config_file", help="TOML file ([gateways.<kind>])")
        q.add_argument("--api-key", dest="api_key", help="key for ingest/webhook (or env)")
        if kind in ("http", "ws"):
            q.add_argument("--listen", help="HOST:PORT (default 127.0.0.1:8080)")
            q.add_argument(
                "--tls-server-cert", dest="tls_server_cert", help="PEM certificate: HTTPS/WSS"
            )
            q.add_argument("--tls-server-key", dest="tls_server_key", help="its PEM key")
            q.add_argument(
                "--tls-client-ca",
                dest="tls_client_ca",
                help="require client certificates signed by this CA",
            )
            q.add_argument(
                "--insecure-plaintext",
                dest="insecure_plaintext",
                action="store_true",
                help="allow a non-loopback --listen without TLS",
            )
        if kind == "http":
            q.add_argument("--max-body-bytes", dest="max_body_bytes", type=int)
        if kind in ("redis", "nats"):
            q.add_argument("--url", help="server URL")
            q.add_argument("--dead-letter", dest="dead_letter")
        if kind == "redis":
            q.add_argument("--list", action="append", help="KEY=SUBJECT (repeatable)")
            q.add_argument("--stream", action="append", help="KEY=SUBJECT (repeatable)")
        if kind == "nats":
            q.add_argument("--subject", action="append", help="NATS_SUBJECT=SUBJECT")
            q.add_argument("--egress", action="append", help="PATTERN=NATS_SUBJECT")
        if kind == "webhook":
            q.add_argument(
                "--secret",
                help="signs only durables from before per-durable secrets, which the broker "
                "gives (or LOCKGATE_WEBHOOK_SECRET)",
            )
        q.set_defaults(func=_cmd)
