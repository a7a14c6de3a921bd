"""``policy replay`` decides each stored event for the principal that published it: the
publisher record survives any character in agent and role names."""

from __future__ import annotations

import pytest

from lockgate.broker import wire
from lockgate.broker.publisher import decode_publisher, encode_publisher
from lockgate.broker.replay import requests_from_batches
from lockgate.broker.store import Batch
from lockgate.broker.v1 import cloudevent_pb2


@pytest.mark.parametrize(
    ("agent", "roles"),
    [
        ("bot", frozenset({"billing", "ops"})),
        ("bot|admin", frozenset({"a,b", "c|d"})),
        ('quo"te', frozenset({"[x]", "é"})),
        ("", frozenset()),
    ],
)
def test_publisher_round_trip(agent: str, roles: frozenset[str]) -> None:
    assert decode_publisher(encode_publisher(agent, roles)) == (agent, roles)


def test_legacy_publisher_text_still_reads() -> None:
    assert decode_publisher("bot|billing,ops") == ("bot", frozenset({"billing", "ops"}))
    assert decode_publisher("") == ("", frozenset())


def _batch(subject: str, publisher: str) -> Batch:
    ev = cloudevent_pb2.CloudEvent(id="1", source="s", spec_version="1.0", type="t")
    frames = wire.delivery_frames([7], wire.subject_field(subject), [ev.SerializeToString()])
    return Batch(7, 7, "acme", subject, 1, "v1", b"".join(frames), publisher)


def test_replay_requests_carry_the_real_principal() -> None:
    publisher = encode_publisher("agent|with,bars", frozenset({"fin,ance", "ops|x"}))
    batches = [_batch("billing.eu", publisher), _batch("$dlq.d", publisher)]
    [req] = list(requests_from_batches(batches))  # the $ subject is the broker's: skipped
    assert req.subject == "billing.eu"
    assert req.principal.org == "acme"
    assert req.principal.agent == "agent|with,bars"
    assert req.principal.roles == frozenset({"fin,ance", "ops|x"})
