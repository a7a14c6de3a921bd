"""A webhook durable's ``endpoint_url`` with a secret in its query: every read (HTTP, the
dashboard) shows it ``<redacted>``, refusals and logs too, while the in-process dispatcher
POSTs with the stored secret and a create that sends the URL back as it reads keeps it. gRPC,
the CLI, the audit log and the standalone dispatcher: tests/gateways/test_e2e.py."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
import yarl
from aiohttp import web

from lockgate.broker.api import DurableOptions
from lockgate.broker.errors import FailedPrecondition, InvalidArgument
from lockgate.gateways._site import start_site
from lockgate.gateways._webhook_guard import failure_text
from lockgate.gateways.webhook import WebhookDispatcher, WebhookSettings
from tests.gateways.gw_kit import Local, event, unique
from tests.support import eventually

TOKEN = "s3cr3t-tok"


@pytest_asyncio.fixture
async def hook() -> AsyncIterator[tuple[str, list[str]]]:
    """A receiver on loopback: its URL (with the token) and the query strings it got."""
    queries: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        queries.append(request.query_string)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", handle)
    runner, port = await start_site(app, "127.0.0.1:0")
    yield f"http://127.0.0.1:{port}/hook?v=2&token={TOKEN}", queries
    await runner.cleanup()


def shown(url: str) -> str:
    return url.split("?")[0] + "?v=<redacted>&token=<redacted>"


async def test_reads_hide_the_token_and_delivery_uses_it(
    local: Local, hook: tuple[str, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url, queries = hook
    name, subject = unique("r"), unique("red.")
    put = f"{local.url}/v1/subscriptions/{name}"
    async with local.session.put(put, json={"pattern": subject, "endpoint_url": url}) as resp:
        created = await resp.json()
    assert resp.status == 200, created
    assert created["endpoint_url"] == shown(url)
    # The URL as it reads back names the stored one: the create is idempotent, the token kept.
    doc = {"pattern": subject, "endpoint_url": created["endpoint_url"]}
    async with local.session.put(put, json=doc) as resp:
        assert resp.status == 200 and (await resp.json())["endpoint_url"] == shown(url)
    assert local.broker.consumers[("default", name)].rec.endpoint_url == url
    # The dashboard's listing.
    async with local.session.get(f"{local.url}/v1/activity/subscriptions") as resp:
        subs = (await resp.json())["subscriptions"]
    (view,) = [s for s in subs if s["name"] == name]
    assert view["endpoint_url"] == shown(url)

    dispatcher = WebhookDispatcher(local.api, WebhookSettings(allow_private=True, timeout=2.0))
    await dispatcher.start()
    try:
        await local.api.publish(None, subject, [event(1)])
        await eventually(lambda: len(queries) == 1)
    finally:
        await dispatcher.stop()
    assert queries == [f"v=2&token={TOKEN}"]  # the POST carried the stored token

    # Refusals name the URL without it: another URL for this durable, and <redacted> sent
    # for a durable that has no stored URL to stand for.
    other = url.replace(TOKEN, "other-tok")
    with pytest.raises(FailedPrecondition) as mismatch:
        await local.api.create_durable(None, name, subject, DurableOptions(endpoint_url=other))
    assert TOKEN not in mismatch.value.message and "other-tok" not in mismatch.value.message
    with pytest.raises(InvalidArgument) as refused:
        options = DurableOptions(endpoint_url=shown(url))
        await local.api.create_durable(None, unique("r"), subject, options)
    assert refused.value.reason == "INVALID_ENDPOINT"

    assert TOKEN not in caplog.text


def test_a_failed_post_names_the_url_without_its_token() -> None:
    """aiohttp repeats the URL in some errors (a connect timeout): the outcome, which the
    retry's log line carries, shows it redacted, as given and as yarl spells it."""
    url = f"https://hooks.example/in?token={TOKEN}"
    for spelled in (url, str(yarl.URL(url))):
        exc = aiohttp.ServerTimeoutError(f"Connection timeout to host {spelled}")
        text = failure_text(exc, url)
        assert TOKEN not in text and "hooks.example/in?token=<redacted>" in text
    assert failure_text(TimeoutError(), url) == "TimeoutError: "
