"""Takes the README's screenshots of the dashboard: a real ``lockgate serve`` with its HTTP
gateway, some traffic (events on a few subjects, policy denials, a dead letter, two policy
versions), and Debian's Chromium driven by Playwright.

    .venv/bin/python scripts/dashboard_screenshots.py [OUT_DIR]   # default docs/dashboard

Needs /usr/bin/chromium (``apt-get install chromium``) or LOCKGATE_TEST_CHROMIUM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import tempfile
from pathlib import Path

import aiohttp
from playwright.async_api import Page, async_playwright

from lockgate.broker.auth import create_key
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.broker.testing import run_broker
from lockgate.clients import Client

V1 = """\
policy secrets on "secret.>" {
  closed: deny publish because "secrets are closed"
  allow subscribe when "admin" in principal.roles
}
"""
V2 = """\
policy secrets on "secret.>" {
  closed: deny publish because "secrets are closed to agents"
  allow subscribe when "admin" in principal.roles
}

policy audit on "audit.>" {
  writers: deny publish unless "audit" in principal.roles because "only auditors write here"
  allow subscribe when "admin" in principal.roles
}
"""
SUBJECTS = {"orders.created": 40, "orders.paid": 25, "sensors.t1": 60, "sensors.t2": 12}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _keys(data_dir: str) -> dict[str, str]:
    store = SqliteStore(data_dir, fsync="never")
    await store.open()
    try:
        admin, _ = await create_key(store, "default", "ops", ("admin",))
        agent, _ = await create_key(store, "default", "pricing-bot", ())
        return {"admin": admin, "agent": agent}
    finally:
        await store.close()


async def _traffic(target: str, key: str, rounds: int) -> None:
    async with Client(target, api_key=key) as c:
        for r in range(rounds):
            for subject, n in SUBJECTS.items():
                await c.publish_batch(
                    subject, [{"round": r, "i": i} for i in range(n * (1 + r % 3))]
                )
            for denied in ("secret.plans", "audit.trail"):
                with contextlib.suppress(Exception):  # what the denials panel shows
                    await c.publish(denied, {"round": r})
            await asyncio.sleep(1)


async def _dead_letter(http: aiohttp.ClientSession, base: str, key: str) -> None:
    h = {"Authorization": f"Bearer {key}"}
    url = f"{base}/v1/subscriptions/invoicer"
    async with http.put(url, json={"pattern": "orders.paid", "max_deliveries": 1}, headers=h):
        pass
    async with http.get(url + "/events?wait=5s&max=1", headers=h) as resp:
        events = (await resp.json())["events"]
    async with http.post(url + "/acks", json={"nack": [events[0]["id"]]}, headers=h):
        pass
    async with http.get(url + "/events?wait=0s&max=1", headers=h):
        pass  # finds the nacked event due with its deliveries spent: dead-lettered


async def _shoot(page: Page, out: Path, name: str) -> None:
    await page.wait_for_timeout(400)  # the panel's first read has drawn
    await page.screenshot(path=str(out / f"{name}.png"))
    print(out / f"{name}.png", (out / f"{name}.png").stat().st_size, "bytes")


async def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    chromium = os.environ.get("LOCKGATE_TEST_CHROMIUM", "/usr/bin/chromium")
    with tempfile.TemporaryDirectory(prefix="lockgate-shots-") as data_dir:
        keys = await _keys(data_dir)
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        async with (
            run_broker(data_dir=data_dir, extra_args=["--http", f"127.0.0.1:{port}"]) as b,
            aiohttp.ClientSession() as http,
            Client(b.target, api_key=keys["admin"]) as admin,
            async_playwright() as pw,
        ):
            await admin.admin.put_policies({"secrets.policy": V1})
            await admin.admin.put_policies({"secrets.policy": V2})
            browser = await pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = await browser.new_page(viewport={"width": 1000, "height": 560})
            await page.goto(base + "/dashboard/")
            await page.fill("input[name=key]", keys["admin"])
            await page.click("#sign-in")
            await page.locator("#feed-status", has_text="live").wait_for()
            traffic = asyncio.create_task(_traffic(b.target, keys["agent"], 16))
            await _dead_letter(http, base, keys["admin"])
            await page.wait_for_timeout(3000)
            await page.click("#pause")
            await page.locator("table.events tbody tr").nth(2).click()
            await _shoot(page, out, "feed")
            await traffic
            await page.click("#tab-subjects")
            await page.locator("#subjects .uplot").wait_for()
            await _shoot(page, out, "subjects")
            await page.click("#tab-queues")
            await page.locator("#dead-letters button.redrive").first.wait_for()
            await _shoot(page, out, "queues")
            await page.click("#tab-policies")
            await page.locator("#denials tbody tr").first.wait_for()
            await _shoot(page, out, "policies")
            await browser.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/dashboard")))
