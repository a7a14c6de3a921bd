"""``PolicyGate`` on batches, without a broker process: decisions become broker errors by
event index, and limits, duplicate rules, tags, routes and the spam controls apply per event
even when the gate decides a batch of alike events once."""

from __future__ import annotations

import json
import socket

import pytest

from lockgate.broker.auth import Principal
from lockgate.broker.errors import BrokerError
from lockgate.broker.limits import LocalLimiter, RedisLimiter
from lockgate.broker.policyhook import PolicyGate, SpamControls, Verdicts
from lockgate.broker.v1 import cloudevent_pb2
from lockgate.policy import compile_policies

CloudEvent = cloudevent_pb2.CloudEvent

POLICIES = """\
policy orders on "orders.>" {
  allow publish when "writer" in principal.roles
  allow subscribe when "reader" in principal.roles
  deny publish when event.type == "order.forged" because "forged orders are refused"
  require event.source != "" because "orders name their source"
  deny publish when event.data.amount > 1000 because "large orders go elsewhere"
  limit publish 3 per minute by principal.agent
  route copy to "audit.orders" when event.type == "order.paid"
  route redirect to "orders.review" when event.data.amount > 500
  tag "region" = subject[1]
  reject duplicates of event.data.order within 1 minute
}
"""

WRITER = Principal("acme", "w1", frozenset({"writer"}))
OTHER_WRITER = Principal("acme", "w2", frozenset({"writer"}))
NOBODY = Principal("acme", "n1", frozenset())


def ev(order: int | None = None, *, type: str = "order.created", amount: int = 1) -> CloudEvent:
    e = CloudEvent(id=f"e{order}", source="shop", spec_version="1.0", type=type)
    e.attributes["datacontenttype"].ce_string = "application/json"
    e.text_data = json.dumps({"order": order, "amount": amount})
    return e


def gate(source: str = POLICIES, **kw: object) -> PolicyGate:
    return PolicyGate(compile_policies({"orders.policy": source}), **kw)  # type: ignore[arg-type]


async def admit(
    g: PolicyGate,
    who: Principal,
    subject: str,
    events: list[CloudEvent],
    idx: list[int] | None = None,
) -> Verdicts:
    return await g.admit(who, subject, events, list(range(len(events))) if idx is None else idx)


def reasons(v: Verdicts) -> dict[int, str]:
    return {i: err.reason for i, err in v.rejected.items()}


def tag(v: Verdicts, i: int, event: CloudEvent, name: str) -> str | None:
    """Tag ``name`` of event ``i`` as stored: the gate's entries appended to its encoding."""
    suffix = v.tags.get(i, v.all_tags)
    attrs = CloudEvent.FromString(event.SerializeToString() + suffix).attributes
    return attrs[name].ce_string if name in attrs else None


async def test_no_policies_and_no_spam_controls_is_inactive() -> None:
    g = PolicyGate()
    assert not g.active and g.version == "none"
    v = await admit(g, NOBODY, "any.thing", [ev(1), ev(2)])
    assert (v.rejected, v.routes, v.tags, v.all_tags) == ({}, {}, {}, b"")


async def test_an_alike_batch_is_decided_once_and_tagged_as_a_whole() -> None:
    g = gate('policy t on "t.>" {\n  allow publish\n  tag "region" = subject[1]\n}\n')
    assert g.active
    events = [ev(1), ev(2), ev(3)]
    v = await admit(g, NOBODY, "t.eu", events)
    assert v.rejected == {} and v.routes == {}
    assert v.effects == {("allow", "orders.policy:2"): 3}
    assert v.tags == {} and v.all_tags  # one decision covered the batch
    assert tag(v, 2, events[2], "region") == "eu"


async def test_rules_that_read_the_data_decide_each_event() -> None:
    events = [ev(1), ev(2, amount=600), ev(3)]
    v = await admit(gate(), WRITER, "orders.eu", events)
    assert v.rejected == {}
    assert v.routes == {1: [("orders.review", "redirect")]}
    assert [tag(v, i, e, "region") for i, e in enumerate(events)] == ["eu"] * 3


async def test_denials_and_requirements_land_on_their_events_only() -> None:
    g = gate()
    no_source = ev(3)
    no_source.source = ""
    v = await admit(
        g,
        WRITER,
        "orders.us",
        [ev(1), ev(2, type="order.forged"), no_source, ev(4, amount=5000), ev(5)],
    )
    assert reasons(v) == {1: "POLICY_DENIED", 2: "POLICY_REQUIREMENT", 3: "POLICY_DENIED"}
    assert "forged orders are refused" in v.rejected[1].message
    assert "orders name their source" in v.rejected[2].message
    assert "large orders go elsewhere" in v.rejected[3].message
    assert v.rejected[1].metadata["effect"] == "deny"
    # Mixed decisions: the allowed events are tagged one by one, the refused ones not at all.
    assert v.all_tags == b"" and sorted(v.tags) == [0, 4]
    assert tag(v, 4, ev(5), "region") == "us"


async def test_a_principal_without_an_allow_is_denied_by_default() -> None:
    v = await admit(gate(), NOBODY, "orders.eu", [ev(1), ev(2)])
    assert reasons(v) == {0: "POLICY_DENIED", 1: "POLICY_DENIED"}
    assert v.rejected[0].metadata["effect"] == "default"
    assert v.effects == {("default", ""): 2}


async def test_decisions_are_counted_by_effect_and_deciding_rule() -> None:
    events = [ev(1), ev(2, type="order.forged"), ev(3)]
    v = await admit(gate(), WRITER, "orders.eu", events)
    assert v.effects == {("allow", "orders.policy:2"): 2, ("deny", "orders.policy:4"): 1}


async def test_only_the_given_indexes_are_decided() -> None:
    # Events the broker already refused (validation) are not decided, charged or tagged.
    v = await admit(gate(), WRITER, "orders.eu", [ev(1), ev(2, type="order.forged"), ev(3)], [0, 2])
    assert v.rejected == {} and v.effects == {("allow", "orders.policy:2"): 2}


async def test_the_limit_refuses_the_events_beyond_it_per_agent() -> None:
    g = gate()
    v = await admit(g, WRITER, "orders.eu", [ev(i) for i in range(5)])
    assert reasons(v) == {3: "RATE_LIMITED", 4: "RATE_LIMITED"}
    err = v.rejected[3]
    assert float(err.metadata["retry_after"]) > 0 and "rate limit" in err.message
    assert sorted(v.tags) == [0, 1, 2]  # refused events carry no tags
    # The bucket is the agent's: another agent still has its own three.
    v = await admit(g, OTHER_WRITER, "orders.eu", [ev(10 + i) for i in range(3)])
    assert v.rejected == {}
    v = await admit(g, WRITER, "orders.eu", [ev(20)])
    assert reasons(v) == {0: "RATE_LIMITED"}


async def test_duplicate_keys_are_refused_within_a_batch_and_across_batches() -> None:
    g = gate()
    v = await admit(g, WRITER, "orders.eu", [ev(7), ev(7)])
    assert reasons(v) == {1: "DUPLICATE_KEY"}
    v = await admit(g, OTHER_WRITER, "orders.eu", [ev(7)])  # the key is the order, not the agent
    assert reasons(v) == {0: "DUPLICATE_KEY"}


async def test_routes_copy_and_redirect_by_event() -> None:
    g = gate()
    v = await admit(
        g,
        WRITER,
        "orders.eu",
        [ev(1, type="order.paid"), ev(2), ev(3, amount=600), ev(4, type="order.forged")],
    )
    assert reasons(v) == {3: "POLICY_DENIED"}
    assert v.routes == {0: [("audit.orders", "copy")], 2: [("orders.review", "redirect")]}


async def test_a_swap_changes_the_decisions_of_the_next_batch() -> None:
    g = gate()
    before = g.version
    assert reasons(await admit(g, NOBODY, "orders.eu", [ev(1)])) == {0: "POLICY_DENIED"}
    g.swap(compile_policies({"open.policy": 'policy open on "orders.>" { allow publish }\n'}))
    assert g.version != before
    assert (await admit(g, NOBODY, "orders.eu", [ev(1)])).rejected == {}
    g.swap(None)
    assert not g.active


def test_subscribe_is_decided_on_the_pattern() -> None:
    g = gate()
    assert g.check_subscribe(Principal("acme", "r", frozenset({"reader"})), "orders.>") is None
    err = g.check_subscribe(WRITER, "orders.>")
    assert isinstance(err, BrokerError) and err.reason == "POLICY_DENIED"


async def test_spam_controls_without_policies() -> None:
    g = PolicyGate(spam=SpamControls(max_per_minute=2, duplicate_window=60))
    assert g.active
    v = await admit(g, NOBODY, "any.x", [ev(1), ev(1)])  # the same content twice
    assert reasons(v) == {1: "DUPLICATE_CONTENT"}
    v = await admit(g, NOBODY, "any.x", [ev(2), ev(3)])
    assert reasons(v) == {0: "RATE_LIMITED", 1: "RATE_LIMITED"}  # 2 per minute were taken
    assert "more than 2 events in a minute" in v.rejected[0].message
    v = await admit(g, OTHER_WRITER, "any.x", [ev(1)])  # per sender: another one starts afresh
    assert v.rejected == {}


async def test_a_limiter_that_is_down_fails_the_batch_closed() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    limiter = RedisLimiter(f"redis://127.0.0.1:{port}/0")
    try:
        g = gate(limiter=limiter)
        with pytest.raises(BrokerError) as info:
            await admit(g, WRITER, "orders.eu", [ev(1)])
        assert info.value.reason == "LIMITER_UNAVAILABLE"
        # Denied events need no limiter: a batch refused by the rules alone is decided.
        v = await admit(g, NOBODY, "orders.eu", [ev(1)])
        assert reasons(v) == {0: "POLICY_DENIED"}
    finally:
        await limiter.close()


def test_the_local_limiter_is_the_default() -> None:
    assert isinstance(gate().limiter, LocalLimiter)


@pytest.mark.parametrize(("seconds", "nanos"), [(253_402_300_800, 0), (-(10**15), 0), (0, -1)])
async def test_an_out_of_range_timestamp_fails_closed(seconds: int, nanos: int) -> None:
    # Ingress refuses these; events stored before it did reach the policy on replay.
    source = """\
policy orders on "orders.>" {
  allow publish when "writer" in principal.roles
  deny publish when event.time < timestamp("2000-01-01T00:00:00Z") because "too old"
}
"""
    e = ev(1)
    e.attributes["time"].ce_timestamp.seconds = seconds
    e.attributes["time"].ce_timestamp.nanos = nanos
    verdicts = await admit(gate(source), WRITER, "orders.eu", [e, ev(2)])
    assert list(verdicts.rejected) == [0]
    err = verdicts.rejected[0]
    assert err.reason == "POLICY_DENIED", err
    assert "orders.policy:3" in str(err.metadata) + err.message, err


def test_read_decisions_are_memoized_per_principal_and_subject_until_a_swap() -> None:
    src = (
        'policy s on "secret.>" { allow publish allow subscribe when "auditor" in principal.roles }'
    )
    g = PolicyGate(compile_policies({"s.policy": src}))
    plain = Principal("o", "bot", frozenset())
    auditor = Principal("o", "aud", frozenset({"auditor"}))
    assert not g.may_read(plain, "secret.payroll") and g.may_read(auditor, "secret.payroll")
    assert g.may_read(plain, "public.x")  # no policy covers it: the default allow
    assert len(g._reads) == 3
    g.swap(compile_policies({"s.policy": 'policy s on "secret.>" { allow subscribe }'}))
    assert not g._reads and g.may_read(plain, "secret.payroll")
    g.swap(None)
    assert g.reader(plain) is None and g.may_read(plain, "secret.payroll")
