"""The dashboard in a real browser: Debian's Chromium driven by Playwright against a real
``lockgate serve`` with its HTTP gateway. The page loads, the feed shows an event published
by the test within a second, a redrive from the page moves a dead letter back, and a bad
credential (or a key without the admin role) is refused.

Chromium is the system's (``/usr/bin/chromium``, or ``LOCKGATE_TEST_CHROMIUM``): missing, these
tests skip on a laptop and FAIL under ``CI=true`` (``.ci/run`` installs it).
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
import pytest
import pytest_asyncio

from lockgate.broker.testing import run_broker
from tests.gateways.test_serve import free_port
from tests.support import eventually
from tests.support.tools import require_tool

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

WHO = {"admin": ("default", "ops", ("admin",)), "agent": ("acme", "worker", ())}
SHOWN_WITHIN_MS = 1000
"""The issue's promise: an event published now is on the page within a second."""


@dataclass
class Served:
    url: str
    keys: dict[str, str]
    http: aiohttp.ClientSession

    def h(self, who: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}

    async def publish(self, subject: str, data: object) -> str:
        headers = {
            **self.h(),
            "ce-specversion": "1.0",
            "ce-id": uuid.uuid4().hex,
            "ce-source": "/browser-test",
            "ce-type": "test.published",
            "Content-Type": "application/json",
        }
        url = f"{self.url}/v1/subjects/{subject}/events"
        async with self.http.post(url, json=data, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            (event_id,) = (await resp.json())["ids"]
            return str(event_id)

    async def get(self, path: str) -> dict[str, object]:
        async with self.http.get(self.url + path, headers=self.h()) as resp:
            doc: dict[str, object] = await resp.json()
            assert resp.status == 200, doc
            return doc


async def _keys(data_dir: str) -> dict[str, str]:
    from lockgate.broker.auth import create_key
    from lockgate.broker.store.sqlite import SqliteStore

    store = SqliteStore(data_dir, fsync="never")
    await store.open()
    try:
        return {name: (await create_key(store, *spec))[0] for name, spec in WHO.items()}
    finally:
        await store.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def served() -> AsyncIterator[Served]:
    with tempfile.TemporaryDirectory(prefix="lockgate-dashboard-") as data_dir:
        keys = await _keys(data_dir)
        port = free_port()
        async with (
            run_broker(data_dir=data_dir, extra_args=["--http", f"127.0.0.1:{port}"]),
            aiohttp.ClientSession() as http,
        ):
            yield Served(f"http://127.0.0.1:{port}", keys, http)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    chromium = require_tool("chromium", "LOCKGATE_TEST_CHROMIUM")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            yield b
        finally:
            await b.close()


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    p = await context.new_page()
    p.set_default_timeout(10_000)
    try:
        yield p
    finally:
        await context.close()


async def sign_in(page: Page, served: Served, key: str) -> None:
    await page.goto(served.url + "/dashboard/")
    await page.fill("input[name=key]", key)
    await page.click("#sign-in")


async def test_the_feed_shows_a_published_event_within_a_second(served: Served, page: Page) -> None:
    await sign_in(page, served, served.keys["admin"])
    prefix = "feed" + uuid.uuid4().hex[:8]
    await page.fill("input[name=pattern]", f"{prefix}.>")
    await page.click("#feed button[type=submit]")
    status = page.locator("#feed-status")
    await status.filter(has_text="live").wait_for()

    event_id = await served.publish(f"{prefix}.orders", {"total": 42})
    published = time.monotonic()
    row = page.locator("table.events tbody tr", has_text=event_id)
    await row.wait_for(timeout=SHOWN_WITHIN_MS)
    assert (time.monotonic() - published) * 1000 <= SHOWN_WITHIN_MS

    # Open it: its attributes and its data.
    await row.click()
    detail = page.locator("#event-detail")
    await detail.wait_for()
    text = await detail.inner_text()
    assert "test.published" in text and "/browser-test" in text and '"total": 42' in text

    # Paused, an event is counted and not shown; resumed, the next one shows.
    await page.click("#pause")
    hidden = await served.publish(f"{prefix}.orders", {"n": 1})
    await status.filter(has_text="1 not shown").wait_for()
    assert await page.locator("table.events tbody tr", has_text=hidden).count() == 0
    await page.click("#resume")
    shown = await served.publish(f"{prefix}.orders", {"n": 2})
    await page.locator("table.events tbody tr", has_text=shown).wait_for()

    # The filter: an event outside it never shows (proved after one inside it did).
    outside = await served.publish(f"other{prefix}.orders", {"n": 3})
    inside = await served.publish(f"{prefix}.more", {"n": 4})
    await page.locator("table.events tbody tr", has_text=inside).wait_for()
    assert await page.locator("table.events tbody tr", has_text=outside).count() == 0


async def test_a_redrive_from_the_page_moves_a_dead_letter_back(served: Served, page: Page) -> None:
    durable, subject = "dl" + uuid.uuid4().hex[:8], "dl" + uuid.uuid4().hex[:8] + ".jobs"
    base = f"{served.url}/v1/subscriptions/{durable}"
    async with served.http.put(
        base, json={"pattern": subject, "max_deliveries": 1}, headers=served.h()
    ) as resp:
        assert resp.status == 200, await resp.text()
    first = await served.publish(subject, {"job": 1})
    second = await served.publish(subject, {"job": 2})
    polled = await served.get(f"/v1/subscriptions/{durable}/events?wait=5s")
    assert [e["id"] for e in polled["events"]] == [first, second]  # type: ignore[attr-defined]
    nack = {"nack": [first, second]}
    async with served.http.post(base + "/acks", json=nack, headers=served.h()) as r:
        assert r.status == 200, await r.text()

    async def dead() -> list[str]:
        doc = await served.get(f"/v1/deadletters?durable={durable}")
        return sorted(d["id"] for d in doc["dead_letters"])  # type: ignore[attr-defined]

    async def fetched_and_dead() -> bool:
        # A fetch finds the nacked events due with their deliveries spent: dead-lettered.
        await served.get(f"/v1/subscriptions/{durable}/events?wait=0s")
        return await dead() == sorted([first, second])

    await eventually(fetched_and_dead, what="the nacked events are dead-lettered")

    await sign_in(page, served, served.keys["admin"])
    await page.click("#tab-queues")
    await page.fill("input[name=dl-durable]", durable)
    await page.press("input[name=dl-durable]", "Enter")
    await page.locator(f"#dead-letters button.redrive[data-id='{first}']").click()
    await page.locator("#redrive-note", has_text="redriven: 1").wait_for()
    assert await dead() == [second]
    again = await served.get(f"/v1/subscriptions/{durable}/events?wait=5s")
    assert [e["id"] for e in again["events"]] == [first]  # type: ignore[attr-defined]

    # Redrive all of the durable's: the other one goes back too.
    await page.locator(f"#dead-letters button.redrive[data-id='{first}']").wait_for(
        state="detached"  # the list was read again
    )
    await page.click("#redrive-all")

    async def none_dead() -> bool:
        return await dead() == []

    await eventually(none_dead, what="no dead letter is left")
    last = await served.get(f"/v1/subscriptions/{durable}/events?wait=5s")
    assert [e["id"] for e in last["events"]] == [second]  # type: ignore[attr-defined]


async def test_a_bad_credential_and_a_non_admin_are_refused(served: Served, page: Page) -> None:
    await sign_in(page, served, "lg_not_a_key")
    alert = page.locator("[role=alert]")
    await alert.wait_for()
    assert "401" in await alert.inner_text()
    assert await page.locator("#tab-feed").count() == 0  # still on the sign-in form

    await page.fill("input[name=key]", served.keys["agent"])
    await page.click("#sign-in")
    await page.locator("[role=alert]", has_text="403").wait_for()
    assert await page.locator("#tab-feed").count() == 0


async def test_every_panel_shows_its_data(served: Served, page: Page) -> None:
    subject = "panel" + uuid.uuid4().hex[:8] + ".ticks"
    await served.publish(subject, {"n": 1})
    await sign_in(page, served, served.keys["admin"])
    await page.click("#tab-subjects")
    await page.locator("#subjects td", has_text=f"default/{subject}").wait_for()
    assert await page.locator("#subjects .uplot").count() == 1
    await page.click("#tab-policies")
    await page.locator("#denials").wait_for()
    await page.click("#tab-cluster")
    await page.locator("#nodes", has_text="this one").wait_for()
