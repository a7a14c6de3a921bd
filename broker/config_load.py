"""Loading the settings: defaults, then ``LOCKGATE_*`` environment variables, then a TOML file,
then flags, each overriding the one before (flags win), every value converted by the one rule
(:func:`coerce`) and checked (``broker.bounds``, worker ids, backends, quotas).

Example::

    cfg = load_config({"listen": "127.0.0.1:50051"}, config_file="lockgate.toml")
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lockgate.broker.bounds import BOUNDS, shown
from lockgate.broker.config import Config, ConfigError, parse_duration
from lockgate.broker.ids import MAX_WORKER
from lockgate.broker.quotas import QUOTA_DEFAULTS

__all__ = ["BACKENDS", "coerce", "load_config", "read_toml"]


_FIELDS = {f.name: f for f in dataclasses.fields(Config)}
BACKENDS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "store": ("sqlite", ("postgresql://", "postgres://"), "sqlite, postgresql://USER@HOST/DB"),
    "backbone": ("local", ("nats://", "tls://"), "local, nats://HOST:4222"),
    "limiter": ("local", ("redis://", "rediss://", "unix://"), "local, redis://HOST:6379/0"),
}
"""The backend settings: the embedded value, the URL schemes of the cluster ones, and how
they look (``broker.factory`` builds them)."""
_DURATIONS = {
    "dedup_window",
    "ack_wait",
    "subscriber_write_deadline",
    "retention_max_age",
    "keepalive_time",
    "drain_timeout",
    "policy_reload_interval",
    "telemetry_interval",
    "spam_duplicate_window",
    "http_header_timeout",
    "http_body_timeout",
    "audit_retention",
    "audit_window",
    "heartbeat",
    "auth_clock_skew",
    "presence_grace",
    "typing_ttl",
    "http_send_timeout",
    "http_tls_handshake_timeout",
}
_TOML_ONLY = ("retention", "gateways", "auth_issuers")


def coerce(value: object, default: object, *, duration: bool = False) -> object:
    """``value`` (from TOML, a ``LOCKGATE_*`` variable or a flag) as the type of ``default``.

    The one conversion of settings, used by the broker's and the gateways' configuration.
    Strings are read as booleans (true/false, 1/0, yes/no), integers and numbers, because
    variables and flags are strings; a string setting takes only a string. Raises
    ``ValueError`` naming what was expected ("an integer"); the caller adds where.

    >>> coerce("30s", 0.0, duration=True), coerce("yes", False), coerce("7", 0)
    (30.0, True, 7)
    """
    if duration:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError("a duration like 500ms or 30s")
        try:
            return parse_duration(value)
        except ConfigError:
            raise ValueError("a duration like 500ms or 30s") from None
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower() if isinstance(value, str | int) else ""
        if text not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError("true or false")
        return text in ("true", "1", "yes")
    if isinstance(default, int | float):
        kind = type(default)
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError("an integer" if kind is int else "a number")
        try:
            return kind(value.strip() if isinstance(value, str) else value)
        except ValueError:
            raise ValueError("an integer" if kind is int else "a number") from None
    if isinstance(default, Mapping):
        if not isinstance(value, Mapping):
            raise ValueError("a table of strings")
        return {str(k): str(v) for k, v in value.items()}
    if isinstance(default, list | tuple):
        if not isinstance(value, list):
            raise ValueError("a list")
        return value
    if not isinstance(value, str):
        raise ValueError("a string")
    return value


_NAME_LISTS = {"tls_client_orgs", "tls_client_roles"}
"""Lists of names: a variable or flag gives them comma-separated."""


def _coerce(name: str, value: object, origin: str) -> object:
    if name in _NAME_LISTS and isinstance(value, str):
        value = [item.strip() for item in value.split(",") if item.strip()]
    if name in _NAME_LISTS and not (
        isinstance(value, list) and all(isinstance(v, str) for v in value)
    ):
        raise ConfigError(
            f"{origin}: {name} = {value!r} is not a list of names",
            hint='e.g. ["acme", "globex"] in TOML, or acme,globex in a variable or flag',
        )
    try:
        return coerce(value, getattr(Config(), name), duration=name in _DURATIONS)
    except ValueError as exc:
        raise ConfigError(
            f"{origin}: {name} = {value!r} is not {exc}",
            hint=f"see `lockgate config` for the type of {name}",
        ) from None


def read_toml(path: str) -> dict[str, Any]:
    """The TOML document at ``path`` (``--config``); a missing or broken file is a ConfigError."""
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def load_config(
    flags: Mapping[str, object] | None = None,
    *,
    config_file: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """The effective configuration from defaults, environment, TOML file and flags."""
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    for key, raw in env.items():
        if key.startswith("LOCKGATE_"):
            name = key[len("LOCKGATE_") :].lower()
            if name in _FIELDS and name not in _TOML_ONLY:
                values[name] = _coerce(name, raw, f"environment {key}")
    path = config_file or env.get("LOCKGATE_CONFIG")
    if path:
        doc = read_toml(path)
        section = doc.get("broker", doc)
        gateways = doc.get("gateways", {})
        if not isinstance(gateways, dict):
            raise ConfigError(f"config file {path}: [gateways] must be a table of tables")
        values["gateways"] = gateways
        auth = doc.get("auth", section.get("auth", {}))
        if not isinstance(auth, dict):
            raise ConfigError(f"config file {path}: [auth] must be a table")
        for name, raw in auth.items():
            if f"auth_{name}" not in _FIELDS:
                raise ConfigError(
                    f"config file {path}: unknown setting {name!r} in [auth]",
                    hint="[auth] takes clock_skew, local_issuer and [[auth.issuers]] tables",
                )
            values[f"auth_{name}"] = _coerce(f"auth_{name}", raw, f"config file {path} [auth]")
        for name, raw in section.items():
            if name in ("gateways", "auth"):
                continue
            if name not in _FIELDS:
                raise ConfigError(
                    f"config file {path}: unknown setting {name!r}",
                    hint="run `lockgate config` to list the settings",
                )
            values[name] = _coerce(name, raw, f"config file {path}")
    for name, flag in (flags or {}).items():
        if flag is not None and name in _FIELDS:
            values[name] = _coerce(name, flag, f"flag --{name.replace('_', '-')}")
    cfg = Config(**values)  # type: ignore[arg-type]
    for name, (embedded, schemes, shape) in BACKENDS.items():
        value = getattr(cfg, name)
        if value != embedded and not value.startswith(schemes):
            raise ConfigError(
                f"{name} = {value!r} is not one of {shape}",
                hint=f"{embedded} (the default) needs no server",
            )
    for name in ("ack_wait", "max_deliveries", "max_in_flight", "subscriber_write_deadline"):
        low, high = BOUNDS[name]
        if not low <= getattr(cfg, name) <= high:
            raise ConfigError(
                f"{name} = {getattr(cfg, name)!r} is out of range",
                hint=f"use {shown(name, low)} to {shown(name, high)} (see README, Configuration)",
            )
    if not -1 <= cfg.worker_id <= MAX_WORKER:
        raise ConfigError(
            f"worker_id = {cfg.worker_id!r} is out of range",
            hint=f"use 0 to {MAX_WORKER}, or leave it unset (one is leased in cluster mode)",
        )
    if cfg.dedup_max_bytes < 1 << 20:
        raise ConfigError(
            f"dedup_max_bytes = {cfg.dedup_max_bytes!r} is less than 1 MiB",
            hint="about 140 bytes per event in the window (see README, Security)",
        )
    for name in ("subscriber_max_bytes", "max_in_flight_bytes"):
        if getattr(cfg, name) < cfg.max_message_bytes:
            raise ConfigError(
                f"{name} = {getattr(cfg, name)!r} is less than max_message_bytes "
                f"({cfg.max_message_bytes})",
                hint="a budget must hold at least one message (see README, Security)",
            )
    for name in QUOTA_DEFAULTS:
        if getattr(cfg, name) < 0:
            raise ConfigError(
                f"{name} = {getattr(cfg, name)!r} is negative",
                hint="use a count, or 0 to turn the quota off (see README, Security)",
            )
    for name in (
        "http_header_timeout",
        "http_body_timeout",
        "http_send_timeout",
        "http_tls_handshake_timeout",
    ):
        if not 0 < getattr(cfg, name) <= 3600:
            raise ConfigError(
                f"{name} = {getattr(cfg, name)!r} is out of range",
                hint="use a duration from 1ms to 1h (the defaults are 15s, 30s, 30s and 10s)",
            )
    for name in ("http_max_connections", "http_max_connections_per_address"):
        if getattr(cfg, name) < (0 if name == "http_max_connections" else 1):
            raise ConfigError(
                f"{name} = {getattr(cfg, name)!r} is out of range",
                hint="use a positive number (http_max_connections = 0: from the open-file limit)",
            )
    if not 0.05 <= cfg.audit_window <= 3600 or cfg.audit_retention < 0:
        raise ConfigError(
            f"audit_window = {cfg.audit_window:g}s or audit_retention = "
            f"{cfg.audit_retention:g}s is out of range",
            hint="audit_window is 50ms to 1h; audit_retention is a duration (0: keep for ever)",
        )
    if not 0.1 <= cfg.heartbeat <= 300:
        raise ConfigError(
            f"heartbeat = {cfg.heartbeat:g}s is out of range",
            hint="use 100ms to 5m; 5s (the default) suits most clusters",
        )
    if not 0 <= cfg.auth_clock_skew <= 300:
        raise ConfigError(
            f"auth_clock_skew = {cfg.auth_clock_skew:g} s is out of range",
            hint="use 0s to 5m; a few seconds to a minute is usual",
        )
    if not 1 <= cfg.backbone_replicas <= 5:
        raise ConfigError(
            f"backbone_replicas = {cfg.backbone_replicas!r} is out of range",
            hint="JetStream keeps 1 to 5 replicas of a stream (3 in production)",
        )
    for name in ("backbone_stream", "backbone_prefix"):
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", getattr(cfg, name)):
            raise ConfigError(
                f"{name} = {getattr(cfg, name)!r} is not a NATS name",
                hint="use 1 to 32 letters, digits, '_' or '-'",
            )
    if cfg.fsync not in ("always", "os", "never"):
        raise ConfigError(
            f"fsync = {cfg.fsync!r} is not one of always, os, never",
            hint="os (the default) survives a broker crash; always also survives power loss",
        )
    return cfg
