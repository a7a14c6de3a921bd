"""The roster's rules: a card survives its trip as text, nodes drop out after the expiry,
a notice without a card keeps the last card, and the roster holds at most its size."""

from __future__ import annotations

import json

from lockgate.broker.roster import NodeCard, Roster


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def card(node_id: str, worker_id: int = 1) -> NodeCard:
    return NodeCard(node_id, worker_id, "0.1.0", "127.0.0.1:50051", 5, "local", 2.5, 3, 1)


def test_a_card_survives_its_trip_as_text_and_junk_is_no_card() -> None:
    c = card("n-1")
    assert NodeCard.decode(c.encode()) == c
    for junk in ("", "{", "[]", '{"node_id": "x"}', '{"node_id":"x","worker_id":"a"}'):
        assert NodeCard.decode(junk) is None


def test_a_card_whose_numbers_its_status_fields_cannot_hold_is_no_card() -> None:
    """GetStatus copies a card into uint32/int64 fields: one node's out-of-range number
    must not fail every status read."""
    for field, value in [
        ("worker_id", 1 << 32),
        ("subscriptions", -1),
        ("durables", 1 << 40),
        ("started_ms", 1 << 63),
    ]:
        doc = json.loads(card("n-1").encode()) | {field: value}
        assert NodeCard.decode(json.dumps(doc)) is None, field


def test_a_node_not_heard_from_within_the_expiry_drops_out() -> None:
    clock = Clock()
    roster = Roster(expiry=15.0, clock=clock)
    roster.heard("a", card("a"))
    clock.now += 10
    roster.heard("b", card("b"))
    assert [e.node_id for e in roster.alive()] == ["a", "b"]
    clock.now += 6  # a: 16 s, b: 6 s
    assert [e.node_id for e in roster.alive()] == ["b"]
    roster.heard("a")  # back (any notice), its old card is gone with it
    entries = {e.node_id: e for e in roster.alive()}
    assert entries["a"].card is None and entries["b"].card == card("b")
    assert entries["a"].last_heard_ms == 1_016_000


def test_a_notice_without_a_card_keeps_the_last_card() -> None:
    clock = Clock()
    roster = Roster(clock=clock)
    roster.heard("a", card("a", worker_id=7))
    clock.now += 1
    roster.heard("a")
    (entry,) = roster.alive()
    assert entry.card == card("a", worker_id=7) and entry.last_heard_ms == 1_001_000


def test_the_roster_keeps_the_nodes_heard_from_last_within_its_size() -> None:
    clock = Clock()
    roster = Roster(size=2, clock=clock)
    for node in ("a", "b", "c"):
        clock.now += 1
        roster.heard(node, card(node))
    clock.now += 1
    roster.heard("b")
    assert [e.node_id for e in roster.alive()] == ["b", "c"]
