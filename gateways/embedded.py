"""Runs the configured gateways inside ``lockgate serve`` (in-process, via ``LocalAPI``).

Example (the composition root, ``lockgate serve``)::

    stop_gateways = await start_gateways(LocalAPI(broker, authenticator), config.gateways)
    ...
    await stop_gateways()

A gateway runs when its table exists: ``[gateways.http]`` / ``[gateways.ws]`` with a
``listen`` (the WebSocket endpoint ``/v1/ws`` is mounted on the HTTP listener when there is
no ``[gateways.ws]``, or when it has no ``listen`` of its own or the same one),
``[gateways.webhook]``, ``[gateways.redis]``, ``[gateways.nats]``. See ``gateways.config``
for the keys.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from lockgate.broker.api import LocalAPI
from lockgate.broker.config import ConfigError, ListenerLimits
from lockgate.broker.tls import ServerTLS
from lockgate.gateways._report import observe_connections
from lockgate.gateways._site import start_site
from lockgate.gateways.config import KINDS, listen_of, settings_for, tls_of, ws_path
from lockgate.gateways.errors import missing_extra

__all__ = ["start_gateways"]

log = logging.getLogger("lockgate.gateways")
Stop = Callable[[], Awaitable[None]]


def _section(config: Mapping[str, object], kind: str) -> Mapping[str, object] | None:
    """The table of one gateway, or None when absent or ``enabled = false``."""
    value = config.get(kind)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"[gateways.{kind}] must be a table", hint=f"write [gateways.{kind}]")
    return None if value.get("enabled", True) is False else value


async def start_gateways(
    api: LocalAPI,
    config_section: Mapping[str, object],
    limits: ListenerLimits | None = None,
    *,
    tls: ServerTLS | None = None,
) -> Stop:
    """Starts every configured gateway on ``api`` (built by the composition root), the
    HTTP/WebSocket listeners within ``limits`` (all of them together) and with ``tls`` (the
    broker's) unless a table names its own; returns a function
    that stops them all."""
    unknown = sorted(set(config_section) - set(KINDS))
    if unknown:
        raise ConfigError(
            f"[gateways.{unknown[0]}] is not a gateway", hint="use " + ", ".join(KINDS)
        )
    stops: list[Stop] = []

    async def stop_all() -> None:
        for stop in reversed(stops):
            try:
                await stop()
            except Exception:  # stop the others whatever one of them does
                log.exception("gateway.stop_failed")

    try:
        await _start(api, config_section, stops, limits, tls)
    except ImportError as exc:  # a configured gateway's optional extra is not installed
        await stop_all()
        raise missing_extra(exc) from None
    except BaseException:
        await stop_all()
        raise
    return stop_all


async def _start(
    api: LocalAPI,
    config: Mapping[str, object],
    stops: list[Stop],
    limits: ListenerLimits | None,
    tls: ServerTLS | None = None,
) -> None:
    from lockgate.gateways._guard import ConnectionGuard
    from lockgate.gateways.http import build_app
    from lockgate.gateways.websocket import add_ws_route, open_sockets

    http, ws = _section(config, "http"), _section(config, "ws")
    apps: dict[str, web.Application] = {}
    tables: dict[str, Mapping[str, object]] = {}  # the table whose tls_* a listener uses
    if http is not None:
        listen = listen_of(http) or "127.0.0.1:8080"
        apps[listen] = build_app(api, settings_for("http", http))
        tables[listen] = http
    if http is not None and ws is None and "ws" not in config:
        # As the standalone HTTP gateway: /v1/ws on the HTTP listener unless [gateways.ws]
        # says otherwise (or disables it).
        add_ws_route(apps[listen_of(http) or "127.0.0.1:8080"], api, None, "/v1/ws")
    if ws is not None:
        default = (listen_of(http) or "127.0.0.1:8080") if http is not None else ""
        listen = listen_of(ws) or default
        if not listen:
            raise ConfigError("[gateways.ws] needs a listen", hint='listen = "127.0.0.1:8081"')
        app = apps.setdefault(listen, web.Application())
        tables.setdefault(listen, ws)
        add_ws_route(app, api, settings_for("ws", ws), ws_path(ws))
    guard = ConnectionGuard(limits)  # one count for all listeners: one descriptor budget
    observe_connections(lambda: guard.open, lambda: guard.refused, open_sockets)
    for listen, app in apps.items():
        runner, port = await start_site(app, listen, guard, tls=tls_of(tables[listen], tls))
        stops.append(runner.cleanup)
        log.info("gateway.listening: %s (port %d)", listen, port)
    hook = _section(config, "webhook")
    if hook is not None:
        from lockgate.gateways.webhook import WebhookDispatcher

        # Each webhook durable signs with its own secret; the broker's webhook_allow_private
        # decides the connect-time address check too.
        settings = dataclasses.replace(
            settings_for("webhook", hook),
            allow_private=api.broker.config.webhook_allow_private,
        )
        dispatcher = WebhookDispatcher(api, settings)
        await dispatcher.start()
        stops.append(dispatcher.stop)
    red = _section(config, "redis")
    if red is not None:
        from lockgate.gateways.redis import RedisIngest

        ingest = RedisIngest(api, settings_for("redis", red))
        await ingest.start()
        stops.append(ingest.stop)
    nat = _section(config, "nats")
    if nat is not None:
        from lockgate.gateways.nats import NatsGateway

        gw = NatsGateway(api, settings_for("nats", nat))
        await gw.start()
        stops.append(gw.stop)
