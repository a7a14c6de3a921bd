"""The cluster log's message format (broker.backbone.logformat): pure round trips, and the
refusals a reader relies on to skip a foreign message instead of stopping."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lockgate.broker import wire
from lockgate.broker.backbone.logformat import (
    BadLogMessage,
    decode_batch,
    encode_batch,
    log_filter,
    log_subject,
    org_of_token,
    org_token,
)
from lockgate.broker.publisher import encode_publisher
from lockgate.broker.store import Batch
from lockgate.policy.subjects import match


def batch(org: str = "acme", subject: str = "orders.eu", publisher: str = "") -> Batch:
    ids = [1 << 60, (1 << 60) + 1]
    body = b"".join(wire.delivery_frames(ids, wire.subject_field(subject), [b"a", b"b"]))
    return Batch(ids[0], ids[1], org, subject, 2, "v1:abc", body, publisher, seq=0)


def test_a_batch_round_trips_with_its_stream_sequence() -> None:
    b = batch(publisher=encode_publisher("bot é|1", {"ops", "a,b"}))
    subject, headers, body = encode_batch(b)
    assert subject == "lglog.acme.orders.eu"
    assert headers["Nats-Msg-Id"] == str(b.first_id)
    assert all(v.isascii() and "\n" not in v for v in headers.values())
    back = decode_batch(subject, headers, body, 7)
    assert back == Batch(
        b.first_id, b.last_id, "acme", "orders.eu", 2, "v1:abc", body, b.publisher, seq=7
    )


@given(st.text(max_size=40))
def test_any_org_is_one_nats_token_and_comes_back(org: str) -> None:
    token = org_token(org)
    assert token and token.isascii()
    assert not any(c in token for c in ".*> \t\r\n")
    assert org_of_token(token) == org


def test_orgs_that_differ_never_share_a_token() -> None:
    orgs = ["", "~", "%7E", "a.b", "a%2Eb", "a_b", "a-b", "A"]
    assert len({org_token(o) for o in orgs}) == len(orgs)


def test_a_filter_matches_the_subjects_of_its_org_only() -> None:
    f = log_filter("acme", "orders.*")
    assert match(f, log_subject("acme", "orders.eu"))
    assert not match(f, log_subject("acme", "orders.eu.x"))
    assert not match(f, log_subject("acme2", "orders.eu"))


@pytest.mark.parametrize(
    ("subject", "headers"),
    [
        ("other.acme.x", {"Lg-First": "1", "Lg-Last": "1", "Lg-Count": "1"}),
        ("lglog.acme", {"Lg-First": "1", "Lg-Last": "1", "Lg-Count": "1"}),
        ("lglog.acme.x", None),
        ("lglog.acme.x", {"Lg-First": "x", "Lg-Last": "1", "Lg-Count": "1"}),
        ("lglog.acme.x", {"Lg-First": "²", "Lg-Last": "1", "Lg-Count": "1"}),
        ("lglog.acme.x", {"Lg-First": "5", "Lg-Last": "1", "Lg-Count": "1"}),
        ("lglog.acme.x", {"Lg-First": "1", "Lg-Last": "1", "Lg-Count": "0"}),
        ("lglog.%FF.x", {"Lg-First": "1", "Lg-Last": "1", "Lg-Count": "1"}),
    ],
)
def test_what_is_not_a_batch_is_refused(subject: str, headers: dict[str, str] | None) -> None:
    with pytest.raises(BadLogMessage):
        decode_batch(subject, headers, b"")
