"""Steps 3 and 4 of the publish path: the broker's side of the policy engine.

``PolicyGate`` holds the running global :class:`PolicySet` and each org's own set (swapped
atomically between two batches by rebinding attributes; ``broker.orgpolicies`` combines
them per org, with default deny), turns CloudEvents into the engine's ``Request``, turns
``Decision`` s into broker errors, and applies the effects that need state: limits (token
buckets, local or Redis), duplicate rules, tags, routes, and the spam controls (a per-minute
allowance per sender and duplicate-content detection per sender and content hash).

With no policy set, no default deny and no spam control ``active`` is False and the
publish path skips it. :meth:`PolicyGate.check_subscribe` answers "may this principal
subscribe to (or read) this subject or pattern" for every surface.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter
from typing import Protocol

from lockgate.broker.activity import RecentDenials
from lockgate.broker.audit import AuditLog
from lockgate.broker.auth import Principal
from lockgate.broker.cloudevents import timestamp_problem
from lockgate.broker.errors import (
    AlreadyExists,
    BrokerError,
    FailedPrecondition,
    PermissionDenied,
    ResourceExhausted,
)
from lockgate.broker.limits import BucketRequest, Grant, Limiter, LocalLimiter
from lockgate.broker.orgpolicies import Decider, OrgPolicies
from lockgate.broker.v1 import cloudevent_pb2
from lockgate.policy import DEDUP_BY_CONTENT, MISSING, Decision, PolicySet, Request, Tag
from lockgate.policy import Principal as PolicyPrincipal

__all__ = [
    "ConversationReads",
    "LiveLimits",
    "PolicyGate",
    "SpamControls",
    "Verdicts",
    "event_attributes",
    "json_payload",
]

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
        problem = timestamp_problem(v.ce_timestamp)
        if problem is None:
            return v.ce_timestamp.ToJsonString()
        # Not RFC 3339, so a rule that reads it fails closed (ingress refuses such events;
        # this covers events stored before it did, replayed through a policy).
        return f"invalid timestamp: {problem}"
    return getattr(v, kind) if kind else None


@dataclass(slots=True)
class Verdicts:
    """What :meth:`PolicyGate.admit` decided, by event index: rejections; routes as
    ``(subject, "copy" | "redirect")``; tags as encoded CloudEvent attribute entries to
    append to the serialized event (appending map entries is valid protobuf, and cheaper
    than changing the message)."""

    rejected: dict[int, BrokerError] = field(default_factory=dict)
    routes: dict[int, list[tuple[str, str]]] = field(default_factory=dict)
    tags: dict[int, bytes] = field(default_factory=dict)
    effects: dict[tuple[str, str], int] = field(default_factory=dict)
    """Events decided, by ``(effect, rule)``: the deciding rule as ``Decision.rule`` names it
    (``file:line``, ``org/file:line`` for an org's own set, ``""`` when no rule decided), for
    the decisions metric."""
    all_tags: bytes = b""
    """Set instead of ``tags`` when one decision covered the whole batch."""
    denials: list[tuple[BrokerError, int]] = field(default_factory=list)
    """Each policy denial and how many events it refused (for the audit log)."""


_TAG_CACHE: dict[tuple[Tag, ...], bytes] = {}
_READS_CAP = 65_536


def _tag_suffix(tags: tuple[Tag, ...]) -> bytes:
    hit = _TAG_CACHE.get(tags)
    if hit is None:
        ev = CloudEvent()
        for tag in tags:
            ev.attributes[tag.name].ce_string = tag.value
        hit = ev.SerializeToString()
        if len(_TAG_CACHE) < 4096:
            _TAG_CACHE[tags] = hit
    return hit


_STD_POS = {"id": 0, "source": 1, "type": 2}
_FIELDS = {"id": "id", "source": "source", "type": "type", "specversion": "spec_version"}


def _read(ev: CloudEvent, name: str) -> object:
    """One attribute of ``ev`` for a batch key (standard fields or extensions)."""
    field_name = _FIELDS.get(name)
    if field_name is not None:
        return getattr(ev, field_name)
    attrs = ev.attributes
    return _attr_value(attrs[name]) if name in attrs else None


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


class LiveLimits(Protocol):
    """The config store's rate limits (``broker.livesettings.LiveSettings``)."""

    @property
    def has_limits(self) -> bool: ...

    def buckets(self, org: str, subject: str) -> list[tuple[str, float, float]]:
        """``(key, rate per second, burst)`` of each bucket a publish on ``subject`` takes."""
        ...


class PolicyGate:
    """The running policy set plus the state its effects need."""

    def __init__(
        self,
        policy_set: PolicySet | None = None,
        *,
        limiter: Limiter | None = None,
        spam: SpamControls = SpamControls(),
        default_deny: str = "",
    ) -> None:
        self.policies = policy_set
        """The global set (the operator's)."""
        self.org_policies: dict[str, PolicySet] = {}
        """Each org's own set, by org."""
        self.limiter: Limiter = limiter or LocalLimiter()
        self.spam = spam
        self.audit = AuditLog(None)
        """Where denials are recorded (the node sets its own; without one, nowhere)."""
        self.denials = RecentDenials()
        """The last policy denials with their rule, in memory (the dashboard shows them)."""
        names = {o.strip() for o in default_deny.split(",") if o.strip()}
        self.deny_all = "*" in names
        self.deny_orgs = frozenset(names - {"*"})
        self.live: LiveLimits | None = None
        """The config store's per-pattern rate limits (the node sets its own)."""
        self.on_swap: list[Callable[[str], None]] = []
        """Called with the new version after every swap (the node tells the others)."""
        self._reads: dict[tuple[Principal, str], bool] = {}
        """Read decisions of the running sets by (principal, concrete subject); emptied by
        every swap, so a decision never outlives the set that made it."""
        self._decider: Decider | None = None
        self._deciders: dict[str, Decider] = {}
        self.conversations: ConversationReads | None = None
        """Who reads ``$conv.`` subjects: a conversation's participants, and no one else
        whatever the policies say (the node sets it)."""
        self._rebuild()

    @property
    def active(self) -> bool:
        return (
            self._decider is not None
            or bool(self._deciders)
            or self.spam.on
            or (self.live is not None and self.live.has_limits)
        )

    @property
    def version(self) -> str:
        """The global set's version."""
        return self.policies.version if self.policies is not None else "none"

    def version_of(self, org: str) -> str:
        """The version that decides ``org``'s events (the global set's, and the org's)."""
        d = self._deciders.get(org)
        return d.version if d is not None else self.version

    def decider(self, org: str) -> Decider | None:
        """What decides ``org``'s requests: the global set alone for most orgs (see
        ``broker.orgpolicies``); ``None`` when nothing does (everything is allowed)."""
        return self._deciders.get(org, self._decider)

    def _rebuild(self) -> None:
        g = self.policies
        self._decider = OrgPolicies(g, None, "", default_deny=True) if self.deny_all else g
        self._deciders = {
            org: OrgPolicies(
                g,
                self.org_policies.get(org),
                org,
                default_deny=self.deny_all or org in self.deny_orgs,
            )
            for org in set(self.org_policies) | self.deny_orgs
        }
        self._reads = {}

    def swap(self, policy_set: PolicySet | None) -> None:
        """Atomically replaces the running global set (between two batches)."""
        self.policies = policy_set
        self._rebuild()
        for hook in list(self.on_swap):
            hook(self.version)

    def swap_org(self, org: str, policy_set: PolicySet | None) -> None:
        """Atomically replaces ``org``'s own set (``None`` or an empty set: none)."""
        if policy_set is None or not policy_set.policy_names:
            self.org_policies.pop(org, None)
        else:
            self.org_policies[org] = policy_set
        self._rebuild()
        for hook in list(self.on_swap):
            hook(self.version_of(org))

    # -- publish, request -------------------------------------------------------------------

    async def admit(
        self,
        principal: Principal,
        subject: str,
        events: Sequence[CloudEvent],
        indexes: Sequence[int],
        action: str = "publish",
        *,
        std: Sequence[tuple[str, str, str, str, object]] | None = None,
    ) -> Verdicts:
        """Decides each event at ``indexes``: rejections, routes and tags by index.
        ``std`` may carry each event's (id, source, type, specversion, attributes), already
        read."""
        verdicts = Verdicts()
        rejected = verdicts.rejected
        # Limits come in groups (one list of buckets, the events it applies to), so a batch
        # decided alike is charged in one step rather than per event.
        limits: list[tuple[_Buckets, list[int]]] = []
        dedups: dict[int, list[tuple[str, float]]] = {}
        ps = self._deciders.get(principal.org, self._decider)
        if ps is not None:
            await _decide_batch(
                ps, principal, subject, events, indexes, action, verdicts, limits, dedups, std
            )
        if self.spam.on:
            self._spam(principal, events, indexes, rejected, limits, dedups)
        live = self.live
        if live is not None and live.has_limits and action == "publish":
            buckets = live.buckets(principal.org, subject)
            if buckets:
                limits.append((buckets, [i for i in indexes if i not in rejected]))
        if limits:
            await self._charge(limits, rejected)
        if dedups:
            await self._dedup(dedups, rejected)
        for i in rejected:
            verdicts.routes.pop(i, None)
            verdicts.tags.pop(i, None)
        for err, n in verdicts.denials:
            self._denied(principal, action, subject, err, n, self.version)
        return verdicts

    def _denied(
        self, principal: Principal, action: str, target: str, err: BrokerError, n: int, ver: str
    ) -> None:
        """Records a policy denial in the audit log and in the ring of recent denials."""
        self.audit.denied(action, target, err, n, principal=principal, policy_version=ver)
        meta = err.metadata
        self.denials.add(
            principal.org,
            principal.agent,
            action,
            target,
            n,
            reason=err.reason,
            rule=meta.get("rule", ""),
            effect=meta.get("effect", ""),
            message=err.message,
            policy_version=self.version_of(principal.org),
        )

    def _spam(
        self,
        principal: Principal,
        events: Sequence[CloudEvent],
        indexes: Sequence[int],
        rejected: dict[int, BrokerError],
        limits: list[tuple[_Buckets, list[int]]],
        dedups: dict[int, list[tuple[str, float]]],
    ) -> None:
        sender = f"{principal.org}|{principal.agent}"
        per_min = self.spam.max_per_minute
        window = self.spam.duplicate_window
        live = [i for i in indexes if i not in rejected]
        if per_min:
            limits.append(([("spam|" + sender, per_min / 60.0, per_min)], live))
        if window:
            for i in live:
                digest = hashlib.sha256(_payload(events[i])).hexdigest()
                dedups.setdefault(i, []).append((f"spamdup|{sender}|{digest}", window))

    async def _charge(
        self, groups: list[tuple[_Buckets, list[int]]], rejected: dict[int, BrokerError]
    ) -> None:
        wanted: dict[str, BucketRequest] = {}
        for buckets, idxs in groups:
            for key, rate, burst in buckets:
                r = wanted.get(key)
                wanted[key] = BucketRequest(key, rate, burst, (r.want if r else 0) + len(idxs))
        grants = dict(zip(wanted, await self.limiter.take(list(wanted.values())), strict=True))
        if all(g.granted == wanted[k].want for k, g in grants.items()):
            return  # the common case: every bucket had room for the whole batch
        per_event: dict[int, list[str]] = {}
        for buckets, idxs in groups:
            for i in idxs:
                per_event.setdefault(i, []).extend(k for k, _, _ in buckets)
        left = {k: g.granted for k, g in grants.items()}
        for i in sorted(per_event):
            keys = per_event[i]
            short = [k for k in keys if left[k] <= 0]
            if short:
                rejected[i] = self._limited(short, grants)
            # Tokens are taken for the whole batch up front; a refused event's other tokens
            # are not given back (a deliberate, conservative simplification).
            for k in keys:
                left[k] -= 1

    def _limited(self, short: list[str], grants: dict[str, Grant]) -> BrokerError:
        retry = max(grants[k].retry_after for k in short)
        rule, _, value = short[0].partition("|")
        what = (
            f"sender {value.replace('|', '/')} sent more than "
            f"{self.spam.max_per_minute} events in a minute"
            if rule == "spam"
            else f"rate limit of {rule} reached" + (f" for {value!r}" if value else "")
        )
        return ResourceExhausted(
            f"{what}; retry in {retry:.3g} s",
            reason="RATE_LIMITED",
            hint="slow down, or ask for a higher limit",
            metadata={"retry_after": f"{retry:.3f}", "rule": rule},
        )

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
        """``None`` when ``principal`` may subscribe to ``pattern`` (a subject or a pattern;
        for a subject, this is whether it may read that subject), else the refusal."""
        ps = self._deciders.get(principal.org, self._decider)
        if ps is None:
            return None
        who = PolicyPrincipal(principal.org, principal.agent, principal.roles)
        decision = ps.decide(Request("subscribe", pattern, who))
        if decision.allowed:
            return None
        err = _denial(decision, "subscribe", pattern)
        self._denied(principal, "subscribe", pattern, err, 1, ps.version)
        return err

    def may_read(self, principal: Principal, subject: str) -> bool:
        """Whether ``principal`` may receive an event stored on the concrete ``subject``:
        the subscribe decision on that subject. Every read surface asks this per delivered
        subject (live routing of wildcard subscriptions, replays, durables, history), so a
        wildcard never reaches past a deny. Memoized per (principal, subject) until the
        next swap: a publish batch or a page of history costs a dict lookup, not a policy
        evaluation (subscribe rules that test the clock are thus read once per set).
        A conversation's subject (``$conv.``) is read by its participants only."""
        if subject[:6] == "$conv.":
            convs = self.conversations
            return convs is not None and convs.may_read(principal, subject)
        ps = self._deciders.get(principal.org, self._decider)
        if ps is None:
            return True
        key = (principal, subject)
        hit = self._reads.get(key)
        if hit is None:
            who = PolicyPrincipal(principal.org, principal.agent, principal.roles)
            hit = ps.decide(Request("subscribe", subject, who)).allowed
            if len(self._reads) >= _READS_CAP:
                self._reads = {}  # bounded: many principals x subjects start it over
            self._reads[key] = hit
        return hit

    def reader(self, principal: Principal) -> Callable[[str], bool] | None:
        """``may_read`` bound to ``principal``, or None while no policy set runs (nothing
        to filter; callers skip the check)."""
        if self.decider(principal.org) is None and self.conversations is None:
            return None
        return lambda subject: self.may_read(principal, subject)


_Buckets = list[tuple[str, float, float]]


class ConversationReads(Protocol):
    """``broker.conversations.Conversations`` as the gate sees it."""

    def may_read(self, principal: Principal, subject: str) -> bool: ...

    def subscribe_problem(self, principal: Principal, pattern: str) -> BrokerError | None: ...


@dataclass(slots=True)
class _Outcome:
    """One decision with what the gate needs of it, and the events it applies to."""

    decision: Decision
    buckets: _Buckets
    suffix: bytes
    indexes: list[int] = field(default_factory=list)


def _outcome(
    ps: Decider, action: str, subject: str, who: PolicyPrincipal, ev: CloudEvent, now: float
) -> tuple[_Outcome, bool]:
    """Decides one event; the flag says whether the decision may be shared (the data was
    not read, so it depends only on attributes, principal, subject and time)."""
    request = Request(
        action, subject, who, event_attributes(ev), data_bytes=json_payload(ev), now=now
    )
    decision = ps.decide(request)
    buckets = [(x.key, x.rate_per_second, x.burst) for x in decision.limits]
    suffix = _tag_suffix(decision.tags) if decision.tags else b""
    return _Outcome(decision, buckets, suffix), request.data is MISSING


_SLICE = 0.01
"""Seconds of per-event decisions before the loop gets a turn. An org's administrator puts
its own set: 10,000 rules on ``>`` cost 0.6 ms a decision, so one batch of 5,000 distinct
events held every other org's publishes for 3 s when decided in one go."""


async def _decide_batch(
    ps: Decider,
    principal: Principal,
    subject: str,
    events: Sequence[CloudEvent],
    indexes: Sequence[int],
    action: str,
    verdicts: Verdicts,
    limits: list[tuple[_Buckets, list[int]]],
    dedups: dict[int, list[tuple[str, float]]],
    std: Sequence[tuple[str, str, str, str, object]] | None = None,
) -> None:
    """Decides each event, once per distinct combination of the attributes the covering
    policies read: a batch shares principal, subject and time, so events equal in those
    attributes get equal decisions unless a rule read the data (then it is per event)."""
    who = PolicyPrincipal(principal.org, principal.agent, principal.roles)
    now = time.time()
    everything = len(indexes) == len(events)
    picked = events if everything else [events[i] for i in indexes]
    keys = _batch_keys(ps.event_inputs(subject).names, picked, indexes, everything, std)
    if keys and keys.count(keys[0]) == len(keys):
        # The usual batch: every event alike in what the rules read. Decide once and apply
        # in bulk, unless the decision read the data (then fall through, per event).
        first, shareable = _outcome(ps, action, subject, who, picked[0], now)
        if shareable:
            first.indexes = list(indexes)
            _apply([first], events, action, subject, verdicts, limits, dedups)
            return
    outcomes: list[_Outcome] = []
    memo: dict[object, _Outcome] = {}
    clock = time.monotonic
    slice_end = clock() + _SLICE
    for i, ev, key in zip(indexes, picked, keys, strict=True):
        hit = memo.get(key)
        if hit is None:
            hit, shareable = _outcome(ps, action, subject, who, ev, now)
            outcomes.append(hit)
            if shareable:
                memo[key] = hit
            if clock() > slice_end:
                # Another batch decided meanwhile sees its own set; this one keeps ``ps``.
                await asyncio.sleep(0)
                slice_end = clock() + _SLICE
        hit.indexes.append(i)
    _apply(outcomes, events, action, subject, verdicts, limits, dedups)


def _batch_keys(
    read: Sequence[str],
    picked: Sequence[CloudEvent],
    indexes: Sequence[int],
    everything: bool,
    std: Sequence[tuple[str, str, str, str, object]] | None,
) -> list[object]:
    """Per event, the values of the attributes the rules read, built by C calls when they
    are standard ones. specversion is left out: the broker has checked it is "1.0"."""
    names = [n for n in read if n != "specversion"]
    if not names:
        return [()] * len(picked)
    if std is not None and all(n in _STD_POS for n in names):
        get = itemgetter(*(_STD_POS[n] for n in names))  # already read during validation
        return list(map(get, std)) if everything else [get(std[i]) for i in indexes]
    if all(n in _FIELDS for n in names):
        return list(map(attrgetter(*(_FIELDS[n] for n in names)), picked))
    return [tuple(_read(ev, n) for n in names) for ev in picked]


def _apply(
    outcomes: list[_Outcome],
    events: Sequence[CloudEvent],
    action: str,
    subject: str,
    verdicts: Verdicts,
    limits: list[tuple[_Buckets, list[int]]],
    dedups: dict[int, list[tuple[str, float]]],
) -> None:
    effects = verdicts.effects
    for out in outcomes:
        decision, idxs = out.decision, out.indexes
        key = (decision.effect, decision.rule)
        effects[key] = effects.get(key, 0) + len(idxs)
        if not decision.allowed:
            err = _denial(decision, action, subject)
            verdicts.rejected.update(dict.fromkeys(idxs, err))
            verdicts.denials.append((err, len(idxs)))
            continue
        if out.buckets:
            limits.append((out.buckets, idxs))
        if out.suffix:
            if len(outcomes) == 1:
                verdicts.all_tags = out.suffix  # one decision for the whole batch
            else:
                verdicts.tags.update(dict.fromkeys(idxs, out.suffix))
        if decision.routes:
            route = [(r.subject, r.mode) for r in decision.routes]
            verdicts.routes.update((i, route) for i in idxs)
        if decision.dedup:
            # Key rules come keyed ("identity|value"); content rules get the payload's hash
            # under their rule's identity (never its file:line, which moves with edits).
            for i in idxs:
                dedups[i] = [
                    (
                        f"{d.identity}|{hashlib.sha256(_payload(events[i])).hexdigest()}"
                        if d.key == DEDUP_BY_CONTENT
                        else d.key,
                        d.window_seconds,
                    )
                    for d in decision.dedup
                ]


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
