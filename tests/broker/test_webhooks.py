"""The webhook SSRF guard (``broker.webhooks.check_endpoint_url``): which URLs a durable may
POST to. Every refusal is an ``InvalidArgument`` with a reason, never a traceback."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from lockgate.broker.auth import DEV_PRINCIPAL as ADMIN
from lockgate.broker.config import Config
from lockgate.broker.durables import DurableOptions
from lockgate.broker.errors import InvalidArgument
from lockgate.broker.node import Broker
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.broker.v1 import admin_pb2
from lockgate.broker.webhooks import check_endpoint_url
from tests.broker.e2e_kit import Stubs, error_info, unique


def refused(url: str, **kw: bool) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as info:
        check_endpoint_url(url, **kw)
    return info.value


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "gopher://example.com:70/_",
        "javascript:alert(1)",
        "example.com/hook",  # no scheme
        "http://",  # no host
        "https:///path",
        "",
        "http://[::1",  # a broken IPv6 literal
        "http://example.com:99999/",  # port out of range
        "http://example.com:abc/",
    ],
)
def test_only_http_urls_with_a_host(url: str) -> None:
    err = refused(url, allow_private=True)  # refused even where private addresses are allowed
    assert err.reason == "INVALID_ENDPOINT"
    assert "http(s)" in err.message


@pytest.mark.parametrize(
    "url",
    [
        "https://user:secret@93.184.216.34/hook",
        "https://user@93.184.216.34/hook",
        "https://:secret@93.184.216.34/hook",
    ],
)
def test_credentials_in_the_url_are_refused_and_not_echoed(url: str) -> None:
    err = refused(url, allow_private=True)
    assert err.reason == "INVALID_ENDPOINT"
    assert "secret" not in err.message and "user" not in err.message.split("(")[0]


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.1",  # short form
        "2130706433",  # 127.0.0.1 as one decimal number
        "0x7f000001",  # ... as hex
        "017700000001",  # ... as octal
        "localhost",
        "0.0.0.0",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata (link-local)
        "100.100.100.200",  # a cloud metadata service in the shared 100.64/10 range
        "100.64.0.1",
        "198.18.0.1",  # benchmarking
        "224.0.0.1",  # multicast
        "255.255.255.255",
        "240.0.0.1",  # reserved
        "[::1]",
        "[::]",
        "[fe80::1]",  # link-local
        "[fc00::1]",  # unique local
        "[ff02::1]",  # multicast
        "[::ffff:127.0.0.1]",  # IPv4-mapped
        "[::ffff:169.254.169.254]",
        "[::ffff:10.0.0.1]",
        "[2002:7f00:1::]",  # 6to4 of 127.0.0.1
        "[64:ff9b::7f00:1]",  # NAT64 of 127.0.0.1
    ],
)
def test_non_public_addresses_are_refused(host: str) -> None:
    err = refused(f"http://{host}:8080/hook")
    assert err.reason == "PRIVATE_ENDPOINT", err.message
    assert err.hint and "webhook_allow_private" in err.hint


@pytest.mark.parametrize(
    "url", ["http://93.184.216.34/hook", "https://[2606:4700:4700::1111]:8443/x", "https://1.1.1.1"]
)
def test_public_addresses_are_accepted(url: str) -> None:
    check_endpoint_url(url)


def test_ipv4_mapped_public_address_is_judged_as_its_ipv4() -> None:
    check_endpoint_url("http://[::ffff:93.184.216.34]/hook")


def test_allow_private_lets_private_addresses_through() -> None:
    check_endpoint_url("http://127.0.0.1:9000/hook", allow_private=True)
    check_endpoint_url("http://[::1]/hook", allow_private=True)


def _resolving_to(*addresses: str) -> Callable[..., list[tuple[object, ...]]]:
    def getaddrinfo(host: str, port: int, *args: object, **kw: object) -> list[tuple[object, ...]]:
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in addresses
        ]

    return getaddrinfo


# No DNS server here answers with chosen records, so these stand the resolver in.
def test_a_name_with_any_private_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", _resolving_to("93.184.216.34", "10.0.0.5"))
    assert refused("https://hooks.example.com/x").reason == "PRIVATE_ENDPOINT"
    monkeypatch.setattr(socket, "getaddrinfo", _resolving_to("fe80::1%eth0"))  # scoped
    assert refused("https://hooks.example.com/x").reason == "PRIVATE_ENDPOINT"


def test_a_name_with_public_addresses_only_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        socket, "getaddrinfo", _resolving_to("93.184.216.34", "2606:4700:4700::1111")
    )
    check_endpoint_url("https://hooks.example.com/x")


def test_a_name_that_does_not_resolve_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def fails(*args: object, **kw: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fails)
    err = refused("https://nowhere.invalid/x")
    assert err.reason == "INVALID_ENDPOINT" and "does not resolve" in err.message


# -- through the broker: CreateDurable refuses, and creates nothing ------------------------


@pytest.mark.e2e
@pytest.mark.asyncio(loop_scope="session")
@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "PRIVATE_ENDPOINT"),
        ("http://[::ffff:127.0.0.1]:50051/", "PRIVATE_ENDPOINT"),
        ("file:///etc/passwd", "INVALID_ENDPOINT"),
        ("https://u:p@93.184.216.34/", "INVALID_ENDPOINT"),
    ],
)
async def test_create_durable_refuses_and_creates_nothing(
    stubs: Stubs, url: str, reason: str
) -> None:
    name = unique("hook").replace(".", "-")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs.admin.CreateDurable(
            admin_pb2.CreateDurableRequest(name=name, pattern=unique("h"), endpoint_url=url),
            timeout=10,
        )
    assert error_info(exc.value)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, reason)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs.admin.GetDurable(admin_pb2.GetDurableRequest(name=name), timeout=10)
    assert error_info(exc.value)[:2] == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_DURABLE")


async def test_a_slow_dns_answer_does_not_stall_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creating a webhook durable resolves its host off the event loop: while a resolver
    takes 0.5 s, the loop keeps turning (it stalled for the whole lookup before)."""
    resolve = _resolving_to("93.184.216.34")

    def slow(*args: object, **kw: object) -> list[tuple[object, ...]]:
        time.sleep(0.5)
        return resolve(*args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    broker = Broker(Config(data_dir=str(tmp_path), fsync="never"), SqliteStore(tmp_path))
    await broker.start()
    try:
        gaps: list[float] = []

        async def ticker() -> None:
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        options = DurableOptions(endpoint_url="https://hooks.example.com/in")
        await broker.create_durable(ADMIN, "hooked", "jobs.>", options)
        tick.cancel()
        assert gaps and max(gaps) < 0.4, f"the loop stalled for {max(gaps):.2f} s"
    finally:
        await broker.stop()
