"""Steps 3 and 4 of the publish path: the broker's side of the policy engine.

``PolicyGate`` holds the running :class:`PolicySet` (swapped atomically between two
batches by rebinding one attribute), turns CloudEvents into the engine's ``Request``, turns
``Decision`` s into broker errors, and applies the effects that need state: limits (token
buckets, local or Redis), duplicate rules, tags, routes, and the spam controls (a per-minute
allowance per sender and duplicate-content detection per sender and content hash).

With no policy set and no spam control ``active`` is False and the publish path skips it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from broker.auth import Principal
from broker.errors import (
    AlreadyExists,
    BrokerError,
    FailedPrecondition,
    PermissionDenied,
    ResourceExhausted,
)
from broker.limits import BucketRequest, Limiter, LocalLimiter
from broker.v1 import cloudevent_pb2
from policy import Decision, PolicySet, Request
from policy import Principal as PolicyPrincipal

__all__ = ["PolicyGate", "SpamControls", "event_attributes", "json_payload"]

log = logging.getLogger("lockgate.policy")
CloudEvent = cloudevent_pb2.CloudEvent
_JSON_TYPES = ("application/json", "text/json")


@dataclass(frozen=True, slots=True)
class SpamControls:
    """``max_per_minute`` events per sender per minute (0: off); the same content from the
    same sender again within ``duplicate_window`` seconds is refused (0: off)."""

    max_per_minute: int = 0
    duplicate_window: float = 0.0

    @property
    def on(self) -> bool:
        return bool(self.max_per_minute or self.duplicate_window)


def _attr_value(v: CloudEvent.CloudEventAttributeValue) -> object:
    kind = v.WhichOneof("attr")
    if kind == "ce_timestamp":
        return v.ce_timestamp.ToJsonString()
    return getattr(v, kind) if kind else None


class EventView(Mapping[str, object]):
    """The CloudEvents attributes of one event, read from the protobuf only when a rule asks
    (a rule set reads a few attributes; building a dict of all of them per event costs more
    than the decision)."""

    __slots__ = ("_ev",)

    def __init__(self, ev: CloudEvent) -> None:
        self._ev = ev

    def get(self, name: str, default: object = None) -> object:
        ev = self._ev
        if name == "type":
            return ev.type or default
        if name == "source":
            return ev.source or default
        if name == "id":
            return ev.id or default
        if name == "specversion":
            return ev.spec_version or default
        attrs = ev.attributes
        if name in attrs:
            return _attr_value(attrs[name])
        return default

    def __getitem__(self, name: str) -> object:
        value = self.get(name, _ABSENT)
        if value is _ABSENT:
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        ev = self._ev
        std = (("id", ev.id), ("source", ev.source), ("type", ev.type))
        yield from (k for k, v in std if v)
        if ev.spec_version:
            yield "specversion"
        yield from ev.attributes

    def __len__(self) -> int:
        return sum(1 for _ in self)


_ABSENT = object()


def event_attributes(ev: CloudEvent) -> dict[str, object]:
    """The CloudEvents attributes of ``ev`` as the engine's flat dict."""
    attrs: dict[str, object] = {
        "id": ev.id,
        "source": ev.source,
        "type": ev.type,
        "specversion": ev.spec_version,
    }
    for name, value in ev.attributes.items():
        attrs[name] = _attr_value(value)
    return attrs


def _payload(ev: CloudEvent) -> bytes:
    kind = ev.WhichOneof("data")
    if kind == "text_data":
        return ev.text_data.encode()
    if kind == "binary_data":
        return ev.binary_data
    if kind == "proto_data":
        return ev.proto_data.SerializeToString()
    return b""


def json_payload(ev: CloudEvent) -> bytes | None:
    ctype = ev.attributes["datacontenttype"].ce_string if "datacontenttype" in ev.attributes else ""
    if ctype and not (ctype.startswith(_JSON_TYPES) or ctype.endswith("+json")):
        return None
    return _payload(ev)


class PolicyGate:
    """The running policy set plus the state its effects need."""

    def __init__(
        self,
        policy_set: PolicySet | None = None,
        *,
        limiter: Limiter | None = None,
        spam: SpamControls = SpamControls(),
    ) -> None:
        self.policies = policy_set
        self.limiter: Limiter = limiter or LocalLimiter()
        self.spam = spam

    @property
    def active(self) -> bool:
        return self.policies is not None or self.spam.on

    @property
    def version(self) -> str:
        return self.policies.version if self.policies is not None else "none"

    def swap(self, policy_set: PolicySet | None) -> None:
        """Atomically replaces the running set (between two batches: one attribute store)."""
        self.policies = policy_set

    # -- publish, request -------------------------------------------------------------------

    async def admit(
        self,
        principal: Principal,
        subject: str,
        events: Sequence[CloudEvent],
        indexes: Sequence[int],
        action: str = "publish",
    ) -> tuple[dict[int, BrokerError], dict[int, list[tuple[str, str]]]]:
        """Decides each event at ``indexes``: rejections by index, and routes by index as
        ``(subject, "copy" | "redirect")``. Adds tags to the events in place."""
        rejected: dict[int, BrokerError] = {}
        routes: dict[int, list[tuple[str, str]]] = {}
        limits: dict[int, list[tuple[str, float, float]]] = {}
        dedups: dict[int, list[tuple[str, float]]] = {}
        ps = self.policies
        if ps is not None:
            from policy import DEDUP_BY_CONTENT, Request
            from policy import Principal as PolicyPrincipal

            who = PolicyPrincipal(principal.org, principal.agent, principal.roles)
            for i in indexes:
                ev = events[i]
                decision = ps.decide(
                    Request(action, subject, who, event_attributes(ev), data_bytes=json_payload(ev))
                )
                if not decision.allowed:
                    rejected[i] = _denial(decision, action, subject)
                    continue
                if decision.limits:
                    limits[i] = [
                        (lim.key, lim.rate_per_second, lim.burst) for lim in decision.limits
                    ]
                if decision.dedup:
                    # Key rules come keyed ("file:line|value"); content rules get the
                    # payload's hash under their rule.
                    dedups[i] = [
                        (
                            f"{d.rule}|{hashlib.sha256(_payload(ev)).hexdigest()}"
                            if d.key == DEDUP_BY_CONTENT
                            else d.key,
                            d.window_seconds,
                        )
                        for d in decision.dedup
                    ]
                for tag in decision.tags:
                    ev.attributes[tag.name].ce_string = tag.value
                if decision.routes:
                    routes[i] = [(r.subject, r.mode) for r in decision.routes]
        if self.spam.on:
            self._spam(principal, events, indexes, rejected, limits, dedups)
        if limits:
            await self._charge(limits, rejected)
        if dedups:
            await self._dedup(dedups, rejected)
        for i in rejected:
            routes.pop(i, None)
        return rejected, routes

    def _spam(
        self,
        principal: Principal,
        events: Sequence[CloudEvent],
        indexes: Sequence[int],
        rejected: dict[int, BrokerError],
        limits: dict[int, list[tuple[str, float, float]]],
        dedups: dict[int, list[tuple[str, float]]],
    ) -> None:
        sender = f"{principal.org}|{principal.agent}"
        per_min = self.spam.max_per_minute
        window = self.spam.duplicate_window
        for i in indexes:
            if i in rejected:
                continue
            if per_min:
                limits.setdefault(i, []).append(("spam|" + sender, per_min / 60.0, per_min))
            if window:
                digest = hashlib.sha256(_payload(events[i])).hexdigest()
                dedups.setdefault(i, []).append((f"spamdup|{sender}|{digest}", window))

    async def _charge(
        self, limits: dict[int, list[tuple[str, float, float]]], rejected: dict[int, BrokerError]
    ) -> None:
        wanted: dict[str, BucketRequest] = {}
        for items in limits.values():
            for key, rate, burst in items:
                r = wanted.get(key)
                wanted[key] = BucketRequest(key, rate, burst, (r.want if r else 0) + 1)
        grants = dict(zip(wanted, await self.limiter.take(list(wanted.values())), strict=True))
        left = {k: g.granted for k, g in grants.items()}
        for i in sorted(limits):
            short = [k for k, _, _ in limits[i] if left[k] <= 0]
            if short:
                retry = max(grants[k].retry_after for k in short)
                rule, _, value = short[0].partition("|")
                what = (
                    f"sender {value.replace('|', '/')} sent more than "
                    f"{self.spam.max_per_minute} events in a minute"
                    if rule == "spam"
                    else f"rate limit of {rule} reached" + (f" for {value!r}" if value else "")
                )
                rejected[i] = ResourceExhausted(
                    f"{what}; retry in {retry:.3g} s",
                    reason="RATE_LIMITED",
                    hint="slow down, or ask for a higher limit",
                    metadata={"retry_after": f"{retry:.3f}", "rule": rule},
                )
            # Tokens are taken for the whole batch up front; a refused event's other tokens
            # are not given back (a deliberate, conservative simplification).
            for k, _, _ in limits[i]:
                left[k] -= 1

    async def _dedup(
        self, dedups: dict[int, list[tuple[str, float]]], rejected: dict[int, BrokerError]
    ) -> None:
        order = [(i, key, w) for i in sorted(dedups) if i not in rejected for key, w in dedups[i]]
        hits = await self.limiter.seen([(k, w) for _, k, w in order])
        for (i, key, w), hit in zip(order, hits, strict=True):
            if hit and i not in rejected:
                what = "content" if key.startswith("spamdup|") else "key"
                rejected[i] = AlreadyExists(
                    f"a duplicate of an event with the same {what} seen within {w:g} s",
                    reason="DUPLICATE_CONTENT" if what == "content" else "DUPLICATE_KEY",
                    hint="do not resend the same content; vary it or wait for the window",
                    metadata={"rule": key.split("|")[0]},
                )

    # -- subscribe --------------------------------------------------------------------------

    def check_subscribe(self, principal: Principal, pattern: str) -> BrokerError | None:
        ps = self.policies
        if ps is None:
            return None

        who = PolicyPrincipal(principal.org, principal.agent, principal.roles)
        decision = ps.decide(Request("subscribe", pattern, who))
        return None if decision.allowed else _denial(decision, "subscribe", pattern)


def _denial(decision: Decision, action: str, subject: str) -> BrokerError:
    meta = {"rule": decision.rule, "effect": decision.effect}
    where = f" ({decision.rule})" if decision.rule else ""
    if decision.effect == "require":
        return FailedPrecondition(
            f"{action} on {subject!r} fails a policy requirement{where}: {decision.reason}",
            reason="POLICY_REQUIREMENT",
            hint="fix the event so that it meets the requirement",
            metadata=meta,
        )
    return PermissionDenied(
        f"{action} on {subject!r} denied by policy{where}: {decision.reason}",
        reason="POLICY_DENIED",
        hint="check the policy with `lockgate policy explain`",
        metadata=meta,
    )
