"""A missing integration server skips on a laptop and fails under CI, naming the variable."""

from __future__ import annotations

import socket

import pytest

from tests.support.servers import SERVERS, require_server

REDIS = next(s for s in SERVERS if s.marker == "redis")


def _closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"redis://127.0.0.1:{s.getsockname()[1]}/0"


def test_a_missing_server_skips_with_the_reason_on_a_laptop() -> None:
    url = _closed_url()
    with pytest.raises(
        pytest.skip.Exception, match=f"Redis is not reachable at {url}.*LOCKGATE_TEST_REDIS_URL"
    ):
        require_server(REDIS, {"LOCKGATE_TEST_REDIS_URL": url})


def test_a_missing_server_fails_under_ci() -> None:
    env = {"LOCKGATE_TEST_REDIS_URL": _closed_url(), "CI": "true"}
    with pytest.raises(
        pytest.fail.Exception, match="CI=true: integration servers must be installed"
    ):
        require_server(REDIS, env)


def test_a_reachable_server_gives_its_url() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
        assert require_server(REDIS, {"LOCKGATE_TEST_REDIS_URL": url, "CI": "true"}) == url


def test_the_defaults_are_the_local_servers() -> None:
    assert [s.url({}) for s in SERVERS] == [
        "postgresql://postgres@127.0.0.1:5432/test",
        "redis://127.0.0.1:6379/0",
        "nats://127.0.0.1:4222",
    ]


@pytest.mark.usefixtures("redis_url")
def test_a_server_fixture_marks_its_test(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("redis") is not None
