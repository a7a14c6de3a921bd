"""BackboneLinks on its own (a stand-in opener, no servers): one link per pinned endpoint,
shared by its orgs, closed when none is left, bounded, retried, and refusals that name the
org and the backbone without the endpoint's credentials."""

from __future__ import annotations

import pytest

from lockgate.broker.backbone.links import BackboneLinks, seq_offset
from lockgate.broker.errors import Unavailable
from lockgate.broker.store import BackboneRecord
from tests.support import eventually

OWN = "nats://own:4222"


class Opener:
    """Opens a link per endpoint (failing ``fail`` times first); records what closed."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.opened: list[str] = []
        self.closed: list[str] = []

    async def open(self, endpoint: str) -> str:
        if self.fail:
            self.fail -= 1
            raise Unavailable(f"nobody answers at {endpoint.rpartition('@')[2]}")
        self.opened.append(endpoint)
        return f"link:{endpoint}"

    async def close(self, link: str) -> None:
        self.closed.append(link.removeprefix("link:"))


def pins(**orgs: str) -> dict[str, BackboneRecord]:
    return {org: BackboneRecord(f"bb-{url[-4:]}", url, orgs=(org,)) for org, url in orgs.items()}


async def test_one_link_per_endpoint_shared_by_its_orgs_and_closed_when_unused() -> None:
    o = Opener()
    links: BackboneLinks[str] = BackboneLinks(OWN, o.open, o.close, what="test")
    e1 = "nats://b1:4222"
    moved = links.follow_pins(pins(acme=e1, globex=e1, initech=OWN))
    assert moved == {"acme", "globex"}  # initech is pinned to the own backbone
    assert await links.ready("acme") == f"link:{e1}" == await links.ready("globex")
    assert await links.ready("initech") is None and links.get("other") is None
    assert o.opened == [e1]
    assert links.follow_pins(pins(globex=e1)) == {"acme"}
    assert links.opened(e1) == f"link:{e1}" and o.closed == []
    assert links.follow_pins({}) == {"globex"}
    await eventually(lambda: o.closed == [e1], what="the unused link closes")
    assert links.opened(e1) is None and not links.routed
    await links.close()


async def test_beyond_the_limit_an_orgs_backbone_is_unavailable() -> None:
    o = Opener()
    links: BackboneLinks[str] = BackboneLinks(OWN, o.open, o.close, what="test", max_links=1)
    links.follow_pins(pins(acme="nats://b1:4222", globex="nats://b2:4222"))
    assert await links.ready("acme") == "link:nats://b1:4222"
    with pytest.raises(Unavailable) as exc:
        await links.ready("globex")
    assert "at most 1 other backbones" in exc.value.message
    assert exc.value.metadata == {"org": "globex", "backbone": "bb-4222"}
    await links.close()


async def test_an_unreachable_backbone_fails_at_once_hides_credentials_and_is_retried() -> None:
    o = Opener(fail=1)
    links: BackboneLinks[str] = BackboneLinks(OWN, o.open, o.close, what="test")
    secret = "nats://s3cret-token@b9:4222"
    links.follow_pins(pins(acme=secret))
    with pytest.raises(Unavailable) as exc:
        await links.ready("acme")  # the first attempt's outcome
    assert exc.value.reason == "STORE_UNAVAILABLE"
    assert "nobody answers at b9:4222" in exc.value.message and "acme" in exc.value.message
    assert "s3cret" not in exc.value.message
    await eventually(lambda: links.opened(secret) is not None, what="the retry opens it")
    assert links.get("acme") == f"link:{secret}"
    await links.close()
    assert o.closed == [secret]


def test_a_log_position_names_its_backbone() -> None:
    assert seq_offset("") == 0
    a, b = seq_offset("nats://b1:4222"), seq_offset("nats://b2:4222")
    assert a != b and min(a, b) >= 1 << 40 and max(a, b) < 1 << 56
    assert a == seq_offset("nats://b1:4222")  # every node derives the same
