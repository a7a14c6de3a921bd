"""The ``[gateways.*]`` configuration: TOML tables to the gateways' settings objects.

::

    [gateways.http]
    listen = "127.0.0.1:8080"
    max_body_bytes = 1048576
    max_wait = "60s"

    [gateways.ws]              # no listen (or the http one): served by the HTTP listener
    path = "/v1/ws"
    heartbeat = "20s"

    [gateways.webhook]
    secret = "..."             # standalone: durables from before per-durable secrets
    org_secrets = { acme = "..." }
    backoff = ["1s", "2s", "4s"]

    [gateways.redis]
    url = "redis://127.0.0.1:6379/0"
    lists = { "jobs:in" = "jobs.created" }
    streams = { "orders" = "orders.created" }

    [gateways.nats]
    url = "nats://127.0.0.1:4222"
    subjects = { "sensors.>" = "sensors.in" }
    jetstream = [{ stream = "ORDERS", subject = "orders.>", to = "orders.in" }]
    egress = { "alerts.>" = "ext.alerts" }

Every key of every settings class may be set (see ``gateways/README.md``); an unknown key
is an error with a hint, as in the broker's own configuration.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from typing import Any, TypeVar

from lockgate.broker.config import ConfigError
from lockgate.broker.config_load import coerce
from lockgate.broker.tls import DEFAULT_IDENTITY, ServerTLS

__all__ = ["KINDS", "TLS_KEYS", "listen_of", "settings_for", "tls_of", "ws_path"]

S = TypeVar("S")

# Each gateway's settings class, imported only when that gateway is configured: a gateway's
# module needs its optional extra (aiohttp, redis, nats-py), the others' do not.
KINDS: dict[str, tuple[str, str]] = {
    "http": ("lockgate.gateways.http", "HttpSettings"),
    "ws": ("lockgate.gateways.websocket", "WsSettings"),
    "webhook": ("lockgate.gateways.webhook", "WebhookSettings"),
    "redis": ("lockgate.gateways.redis", "RedisSettings"),
    "nats": ("lockgate.gateways.nats", "NatsSettings"),
}


def settings_class(kind: str) -> type[Any]:
    """The settings class of ``kind``; raises ``ImportError`` when its extra is missing."""
    module, name = KINDS[kind]
    cls: type[Any] = getattr(importlib.import_module(module), name)
    return cls


# Keys that belong to the runner, not to a settings class.
TLS_KEYS = (
    "tls_server_cert",
    "tls_server_key",
    "tls_client_ca",
    "tls_client_identity",
    "tls_client_orgs",
    "tls_client_roles",
)
_RUNNER_KEYS = {"listen", "path", "api_key", "enabled", "insecure_plaintext", *TLS_KEYS}
_DURATIONS = {
    "max_wait",
    "heartbeat",
    "send_timeout",
    "timeout",
    "max_retry_after",
    "block",
    "retry",
}


def _fail(kind: str, key: str, value: object, expected: str) -> ConfigError:
    return ConfigError(
        f"[gateways.{kind}] {key} = {value!r} is not {expected}",
        hint=f"see gateways/README.md for [gateways.{kind}]",
    )


def _coerce(kind: str, key: str, value: object, default: object) -> object:
    if key == "backoff":
        if not isinstance(value, list) or not value:
            raise _fail(kind, key, value, "a list of durations")
        return tuple(_coerce(kind, key + "[]", v, 0.0) for v in value)
    if key == "jetstream":
        if not isinstance(value, list):
            raise _fail(kind, key, value, "a list of tables")
        from lockgate.gateways.nats import JetStreamSource

        try:
            return tuple(JetStreamSource(**v) for v in value)
        except TypeError:
            raise _fail(kind, key, value, "tables of stream, subject, durable, to") from None
    try:  # the broker's one conversion of settings
        return coerce(value, default, duration=key in _DURATIONS or key == "backoff[]")
    except ValueError as exc:
        raise _fail(kind, key.removesuffix("[]"), value, str(exc)) from None


def settings_for(kind: str, section: Mapping[str, object]) -> Any:
    """The settings object of ``[gateways.<kind>]`` (runner keys such as listen ignored)."""
    cls = settings_class(kind)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, object] = {}
    for key, value in section.items():
        if key in _RUNNER_KEYS and key not in fields:
            continue
        if key not in fields:
            raise ConfigError(
                f"[gateways.{kind}] has no setting {key!r}",
                hint="known: " + ", ".join(sorted({*fields, *_RUNNER_KEYS})),
            )
        f = fields[key]
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else f.default_factory()
            if f.default_factory is not dataclasses.MISSING
            else None
        )
        values[key] = _coerce(kind, key, value, default)
    return cls(**values)


def listen_of(section: Mapping[str, object]) -> str:
    value = section.get("listen", "")
    if not isinstance(value, str):
        raise ConfigError(f"listen = {value!r} is not HOST:PORT", hint='e.g. "127.0.0.1:8080"')
    return value


def ws_path(section: Mapping[str, object]) -> str:
    return str(section.get("path") or "/v1/ws")


def tls_of(section: Mapping[str, object], default: ServerTLS | None = None) -> ServerTLS | None:
    """The TLS of a listener: its table's own ``tls_*`` keys when it sets a certificate, key
    or client CA, else ``default`` (in ``lockgate serve``, the broker's)."""
    if not any(section.get(k) for k in ("tls_server_cert", "tls_server_key", "tls_client_ca")):
        return default

    def text(key: str, fallback: str = "") -> str:
        value = section.get(key, fallback)
        if not isinstance(value, str):
            raise ConfigError(f"{key} = {value!r} is not a string", hint="a path to a PEM file")
        return value

    def names(key: str) -> list[str]:
        value = section.get(key, [])
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key} = {value!r} is not a list of names", hint='["acme"]')
        return value

    return ServerTLS.from_settings(
        cert=text("tls_server_cert"),
        key=text("tls_server_key"),
        client_ca=text("tls_client_ca"),
        identity=text("tls_client_identity", DEFAULT_IDENTITY),
        orgs=names("tls_client_orgs"),
        roles=names("tls_client_roles"),
    )
