"""The NATS backbone's subjects and headers, without a server: every org and subject maps
to valid NATS and back, the ``$`` subjects stay apart, and a hostile ids header is refused."""

from __future__ import annotations

import pytest

from lockgate.broker.backbone.natsformat import (
    BadMessage,
    Names,
    decode_ids,
    encode_ids,
    node_of_inbox,
)
from lockgate.policy.subjects import pattern_problem, subject_problem

ORGS = ["acme", "", "a.b c", "~", "%41", "ünï", "*", ">", "tab\there"]
SUBJECTS = ["orders.created", "ünï.cödé", "a%b.~c", "x-y_z.1", "$dlq.orders", "$inbox.n-1.ab"]


def _valid_nats(subject: str) -> bool:
    """What nats-server accepts: no whitespace or control byte, no empty token, wildcards
    only as whole tokens and ``>`` last."""
    tokens = subject.split(".")
    return (
        all(
            t
            and not any(c.isspace() or ord(c) < 32 for c in t)
            and (t in ("*", ">") or ("*" not in t and ">" not in t))
            for t in tokens
        )
        and ">" not in tokens[:-1]
    )


@pytest.mark.parametrize("org", ORGS)
@pytest.mark.parametrize("subject", SUBJECTS)
def test_every_org_and_subject_is_valid_nats_and_comes_back(org: str, subject: str) -> None:
    assert subject_problem(subject) is None  # a valid Lockgate subject
    names = Names("lg")
    for kind in (names.fan, names.req):
        nats_subject = kind(org, subject)
        assert _valid_nats(nats_subject)
        assert names.parse(nats_subject) == (org, subject)
        assert nats_subject.count(".") == subject.count(".") + 2  # the org is one token


def test_patterns_keep_nats_wildcards_and_the_dollar_rule() -> None:
    names = Names("lg")
    for pattern in (">", "*.x", "orders.*.eu", "$dlq.>"):
        assert pattern_problem(pattern) is None
        assert _valid_nats(names.fan("acme", pattern))
    assert names.fan("acme", ">") == "lgfan.acme.>"
    # A wildcard-first pattern never reaches the broker's own subjects, on NATS too.
    assert names.fan("acme", "$dlq.orders").startswith("lgsysfan.")
    assert names.req("acme", "$inbox.n.x").startswith("lgsysreq.")
    assert names.fan("acme", "$dlq.>") == "lgsysfan.acme.$dlq.>"


def test_queue_groups_of_two_orgs_never_meet() -> None:
    assert Names.queue("a", "b.c") != Names.queue("a.b", "c")
    assert Names.queue("", "g") != Names.queue("g", "")
    assert " " not in Names.queue("a b", "g h")


def test_replies_and_inboxes() -> None:
    names = Names("lg")
    subject = names.reply("3-ab", "a.b", "$inbox.3-ab.ff00")
    assert subject.startswith("lgreply.3-ab.")
    assert names.parse_reply(subject) == ("a.b", "$inbox.3-ab.ff00")
    assert node_of_inbox("$inbox.3-ab.ff00") == "3-ab"
    assert node_of_inbox("$inbox.1") == "" and node_of_inbox("orders.x.y") == ""
    with pytest.raises(BadMessage):
        names.parse_reply("lgreply.node")


@pytest.mark.parametrize(
    "ids", [[1], [41, 42, 43, 47], list(range(10, 510)), [5, 3], [(1 << 63) - 1]]
)
def test_ids_header_round_trip(ids: list[int]) -> None:
    assert decode_ids(encode_ids(ids), len(ids)) == ids
    assert encode_ids(list(range(10, 510))) == "10-509"  # a batch is one run
    assert encode_ids([7]) == "7"
    assert encode_ids([1, 2, 4, 5]) == "1-2,4-5"


@pytest.mark.parametrize("text", ["1-99999999999", "x", "5-3", "1,,2", "-1", "1-2-3", "٣"])
def test_a_hostile_ids_header_is_refused_unread(text: str) -> None:
    with pytest.raises(BadMessage):
        decode_ids(text, 10)


def test_a_bad_org_escape_is_refused() -> None:
    with pytest.raises(BadMessage):
        Names("lg").parse("lgfan.%ff.orders")
