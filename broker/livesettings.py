"""The config store's settings: which exist, how a value is checked, and what applies where.

A version of the config store (``broker.store.ConfigVersionRecord``) holds
``settings[pattern][name] = value`` as text, the global settings under pattern ``""``.
:func:`check_settings` checks a whole document before it is stored (the setting's name and
why in the refusal, reason ``INVALID_SETTING``); values are read with the one conversion of
settings (``broker.config_load.coerce``) and bounded by the one table (``broker.bounds``), as the
node's flags and TOML are. :class:`LiveSettings` is the running version on one node, asked
by the parts it changes (pure: no I/O; ``broker.configstore`` swaps versions in):

=================== ======================================================================
publish_rate         events per second (a token bucket per org and scope; burst
publish_burst        ``publish_burst``, default the rate rounded up): every rule whose
                     pattern matches a published subject applies, and a global rate applies
                     to every subject (the policy gate's limits step)
subscriber_max_bytes the byte budget and write deadline of a new ephemeral subscriber (it is
subscriber_write_   cut off, SLOW_CONSUMER, past either; the budget never below
deadline             max_message_bytes)
ack_wait             the defaults of a new durable (an existing one keeps its own)
max_deliveries
backoff              the longest ack wait of a redelivery, as a multiple of ack_wait (the wait
                     doubles per attempt up to it; 1: no backoff): every durable, live
retention_max_age    retention rules (a global one covers every subject and dead letters)
retention_max_events
max_group_members    the participants of one group or broadcast conversation (global, or
                     for ``$conv.>``), checked at create, invite and join
=================== ======================================================================

Per-pattern values of the scalar settings go to what the pattern covers: the most specific
rule whose pattern covers a subscription's or durable's pattern (the most literal tokens,
then one without a trailing ``>``), else the global value, else the node's own start-up
setting (flag, TOML, default).

Example::

    live = LiveSettings(config)
    live.swap(check_settings({"orders.>": {"publish_rate": "10"}}), version=1)
    live.buckets("acme", "orders.eu")   # [("config:orders.>|acme", 10.0, 10.0)]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from lockgate.broker.bounds import check_setting
from lockgate.broker.config import Config
from lockgate.broker.config_load import coerce
from lockgate.broker.errors import InvalidArgument, InvalidSubject
from lockgate.broker.store import RetentionRule
from lockgate.broker.subjects import compile_pattern, validate_pattern
from lockgate.policy.subjects import covers

__all__ = ["SETTINGS", "LiveSettings", "Setting", "check_settings", "invalid_setting"]


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting of the config store: its type (that of ``example``), whether it is a
    duration, and what it does (shown by ``lockgate config get --help`` and the README)."""

    name: str
    example: float | int
    what: str
    duration: bool = False


SETTINGS: Mapping[str, Setting] = {
    s.name: s
    for s in (
        Setting("publish_rate", 0.0, "events per second published per org in the scope"),
        Setting("publish_burst", 0, "events a burst may take at once (default: the rate)"),
        Setting("subscriber_max_bytes", 0, "bytes queued for a new ephemeral subscriber"),
        Setting(
            "subscriber_write_deadline",
            0.0,
            "how long a new ephemeral subscriber may take nothing",
            duration=True,
        ),
        Setting("ack_wait", 0.0, "a new durable's redelivery timeout", duration=True),
        Setting("max_deliveries", 0, "a new durable's deliveries before dead-lettering"),
        Setting("backoff", 0, "longest redelivery wait, as a multiple of ack_wait (1: none)"),
        Setting("retention_max_age", 0.0, "drop events older than this", duration=True),
        Setting("retention_max_events", 0, "keep at most this many events per subject"),
        Setting("max_group_members", 0, "participants of a group or broadcast conversation"),
    )
}
"""Every setting the config store takes."""

_MAX_PATTERNS = 1000
_MAX_VALUE = 200


def invalid_setting(name: str, message: str, hint: str) -> InvalidArgument:
    """The refusal of a setting: INVALID_SETTING naming it (metadata ``setting``)."""
    return InvalidArgument(message, reason="INVALID_SETTING", hint=hint, metadata={"setting": name})


def _value(pattern: str, name: str, raw: str) -> float:
    where = f"{name} for {pattern!r}" if pattern else name
    s = SETTINGS.get(name)
    if s is None:
        raise invalid_setting(
            name,
            f"{name!r} is not a setting of the config store",
            f"use one of {', '.join(SETTINGS)}",
        )
    if len(raw) > _MAX_VALUE:
        raise invalid_setting(name, f"the value of {where} is too long", "give a number")
    try:
        value = coerce(raw, s.example, duration=s.duration)
    except ValueError as exc:
        raise invalid_setting(
            name, f"{where} = {raw!r} is not {exc}", f"{name}: {s.what}"
        ) from None
    assert isinstance(value, int | float)
    if not math.isfinite(value):
        raise invalid_setting(name, f"{where} = {raw!r} is not a finite number", s.what)
    try:
        check_setting(name, value)
    except InvalidArgument as err:
        raise invalid_setting(name, f"{where}: {err.message}", err.hint) from None
    return float(value)


def check_settings(doc: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, float]]:
    """The values of a whole document, once every pattern, name and value checks; raises
    ``INVALID_SETTING`` naming the first bad setting (``INVALID_SUBJECT`` for a pattern)."""
    if len(doc) > _MAX_PATTERNS:
        raise InvalidArgument(
            f"the config store holds at most {_MAX_PATTERNS} patterns",
            reason="INVALID_SETTING",
            hint="use broader patterns",
        )
    out: dict[str, dict[str, float]] = {}
    for pattern, settings in doc.items():
        if pattern:
            try:
                validate_pattern(pattern)
            except InvalidSubject as err:
                raise InvalidSubject(pattern, err.message, hint="e.g. orders.> or *.eu") from None
        out[pattern] = {name: _value(pattern, name, raw) for name, raw in settings.items()}
    return out


def _specificity(pattern: str) -> tuple[int, int, int]:
    """More literal tokens first, then no trailing ``>``, then more tokens."""
    tokens = pattern.split(".")
    return sum(t not in ("*", ">") for t in tokens), int(tokens[-1] != ">"), len(tokens)


class LiveSettings:
    """The running version of the config store on this node, over its start-up ``config``."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.version = 0
        self._values: dict[str, dict[str, float]] = {}
        self._rates: list[tuple[str, Callable[[str], bool], float, float]] = []
        self._buckets: dict[tuple[str, str], list[tuple[str, float, float]]] = {}
        self._memo: dict[tuple[str, str], float | None] = {}

    def swap(self, values: dict[str, dict[str, float]], version: int) -> None:
        """Makes ``values`` (checked by :func:`check_settings`) the running settings."""
        rates = []
        for pattern, s in sorted(values.items()):
            rate = s.get("publish_rate", 0.0)
            if rate > 0:
                burst = s.get("publish_burst") or max(1.0, math.ceil(rate))
                rates.append((pattern, compile_pattern(pattern or ">"), rate, burst))
        self._values = values
        self._rates = rates
        self._buckets = {}
        self._memo = {}
        self.version = version

    # -- what the node's parts ask ----------------------------------------------------------

    @property
    def has_limits(self) -> bool:
        return bool(self._rates)

    def buckets(self, org: str, subject: str) -> list[tuple[str, float, float]]:
        """The token buckets ``(key, rate, burst)`` a publish of ``org`` on ``subject``
        takes from: one per matching rule, each org its own."""
        key = (org, subject)
        hit = self._buckets.get(key)
        if hit is None:
            hit = [
                (f"config:{pattern or '*'}|{org}", rate, burst)
                for pattern, match, rate, burst in self._rates
                if match(subject)
            ]
            if len(self._buckets) >= 65_536:
                self._buckets = {}
            self._buckets[key] = hit
        return hit

    def value(self, name: str, pattern: str) -> float | None:
        """The value of ``name`` for what ``pattern`` names: the most specific rule covering
        it, else the global one; None when the store sets neither."""
        key = (name, pattern)
        if key in self._memo:
            return self._memo[key]
        if len(self._memo) >= 65_536:
            self._memo = {}
        found = self._memo[key] = self._lookup(name, pattern)
        return found

    def _lookup(self, name: str, pattern: str) -> float | None:
        best: tuple[tuple[int, int, int], str, float] | None = None
        for p, s in self._values.items():
            if p and name in s and covers(p, pattern):
                rank = _specificity(p)
                if best is None or rank > best[0] or (rank == best[0] and p < best[1]):
                    best = (rank, p, s[name])
        if best is not None:
            return best[2]
        return self._values.get("", {}).get(name)

    def subscriber_max_bytes(self, pattern: str) -> int:
        v = self.value("subscriber_max_bytes", pattern)
        if v is None:
            return self.config.subscriber_max_bytes
        return max(int(v), self.config.max_message_bytes)  # a budget holds one message

    def subscriber_write_deadline(self, pattern: str) -> float:
        v = self.value("subscriber_write_deadline", pattern)
        return v if v is not None else self.config.subscriber_write_deadline

    def ack_wait(self, pattern: str) -> float:
        v = self.value("ack_wait", pattern)
        return v if v is not None else self.config.ack_wait

    def max_deliveries(self, pattern: str) -> int:
        v = self.value("max_deliveries", pattern)
        return int(v) if v is not None else self.config.max_deliveries

    def backoff(self, pattern: str) -> int:
        v = self.value("backoff", pattern)
        return int(v) if v is not None else 32

    def max_group_members(self) -> int:
        v = self.value("max_group_members", "$conv.>")
        return int(v) if v is not None else self.config.max_group_members

    def retention_rules(self) -> list[RetentionRule]:
        """The store's retention rules (the node adds its own start-up ones)."""
        rules = []
        for pattern, s in sorted(self._values.items()):
            age, count = s.get("retention_max_age", 0.0), s.get("retention_max_events", 0.0)
            if not (age or count):
                continue
            for p in (pattern,) if pattern else (">", "$dlq.>"):
                rules.append(RetentionRule(p, int(age * 1000), int(count)))
        return rules
