"""The HTTP gateway against an in-process broker: publish modes, reads, polling, errors."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from lockgate.gateways.http import HttpSettings
from tests.gateways.gw_kit import (
    Local,
    accept_malformed,
    count_events,
    event,
    local_broker,
    malformed_event,
    unique,
)
from tests.support import eventually

CE_JSON = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


def ce(i: int, **extra: object) -> dict[str, object]:
    return {"specversion": "1.0", "id": f"id-{i}", "source": "/t", "type": "t.x", **extra}


async def post(env: Local, subject: str, body: object, ctype: str, **headers: str):  # type: ignore[no-untyped-def]
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await env.session.post(
        f"{env.url}/v1/subjects/{subject}/events",
        data=data,
        headers={"Content-Type": ctype, **headers},
    )


async def problem(resp, status: int, reason: str) -> dict[str, object]:  # type: ignore[no-untyped-def]
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    body = await resp.json(content_type=None)
    assert body["reason"] == reason and body["status"] == status
    assert body["title"] and body["detail"] and "hint" in body
    return body  # type: ignore[no-any-return]


async def test_binary_mode_publish_and_read_back(local: Local) -> None:
    subject = unique("bin.")
    resp = await post(
        local,
        subject,
        b'{"total": 3}',
        "application/json",
        **{
            "ce-specversion": "1.0",
            "ce-id": "b1",
            "ce-source": "/src",
            "ce-type": "inv.created",
            "ce-traceparent": "00-abc-def-01",
            "ce-time": "2024-05-01T12:00:00Z",
        },
    )
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["duplicates"] == [] and body["errors"] == []
    (event_id,) = body["ids"]
    got = await (await local.session.get(f"{local.url}/v1/events/{event_id}")).json()
    assert got["subject"] == subject and got["id"] == event_id
    ev = got["event"]
    assert ev["data"] == {"total": 3} and ev["datacontenttype"] == "application/json"
    assert ev["traceparent"] == "00-abc-def-01" and ev["time"] == "2024-05-01T12:00:00Z"


async def test_structured_and_duplicate(local: Local) -> None:
    subject = unique("st.")
    r1 = await (await post(local, subject, ce(1, data={"a": 1}), CE_JSON)).json()
    r2 = await (await post(local, subject, ce(1, data={"a": 1}), CE_JSON)).json()
    assert r1["ids"] == r2["ids"] and r2["duplicates"] == [0]
    assert await count_events(local.api, subject) == 1


async def test_batch_partial_failure_is_207(local: Local) -> None:
    subject = unique("ba.")
    bad = {"specversion": "1.0", "id": "x", "source": "/t"}  # no type
    weird = ce(9, ext=1.5)  # a float extension is not a CloudEvents type
    resp = await post(local, subject, [ce(1), bad, ce(2), weird], BATCH)
    assert resp.status == 207
    body = await resp.json()
    assert body["ids"][0] != "0" and body["ids"][1] == "0" and body["ids"][3] == "0"
    reasons = {e["index"]: e["reason"] for e in body["errors"]}
    assert reasons == {1: "MISSING_ATTRIBUTE", 3: "INVALID_EVENT"}
    assert await count_events(local.api, subject) == 2


async def test_all_rejected_is_a_problem_and_nothing_stored(local: Local) -> None:
    subject = unique("rej.")
    resp = await post(local, subject, [{"specversion": "1.0", "id": "1", "source": "s"}], BATCH)
    body = await problem(resp, 400, "MISSING_ATTRIBUTE")
    assert body["errors"][0]["index"] == 0
    resp = await post(local, "bad..subject", ce(1), CE_JSON)
    await problem(resp, 400, "INVALID_SUBJECT")
    assert await count_events(local.api) == 0


async def test_malformed_json_is_400(local: Local) -> None:
    resp = await post(local, unique("mj."), b'{"specversion": "1.0", ', CE_JSON)
    body = await problem(resp, 400, "MALFORMED_JSON")
    assert "line 1" in str(body["detail"])
    resp = await post(local, unique("mj."), b'{"not": "a list"}', BATCH)
    await problem(resp, 400, "MALFORMED_JSON")
    assert await count_events(local.api) == 0


async def test_wrong_content_type_is_415(local: Local) -> None:
    resp = await post(local, unique("ct."), ce(1), "application/json")
    body = await problem(resp, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert "ce-*" in str(body["hint"])
    assert await count_events(local.api) == 0


async def test_oversize_body_is_413(tmp_path: Path) -> None:
    async with local_broker(tmp_path, settings=HttpSettings(max_body_bytes=1000)) as env:
        resp = await post(env, unique("big."), ce(1, data="x" * 2000), CE_JSON)
        await problem(resp, 413, "BODY_TOO_LARGE")
        resp = await post(env, unique("ok."), ce(1, data="x" * 10), CE_JSON)
        assert resp.status == 200
        assert await count_events(env.api) == 1


async def test_unauthenticated_without_dev_mode(local: Local) -> None:
    local.auth.dev_mode = False
    resp = await post(local, unique("a."), ce(1), CE_JSON)
    await problem(resp, 401, "UNAUTHENTICATED")
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = await post(local, unique("a."), ce(1), CE_JSON, Authorization="Basic eDp5")
    await problem(resp, 401, "UNAUTHENTICATED")
    resp = await post(local, unique("a."), ce(1), CE_JSON, Authorization="Bearer lg_no_such")
    await problem(resp, 401, "UNAUTHENTICATED")
    local.auth.dev_mode = True
    assert await count_events(local.api) == 0


async def test_query_pagination_with_cursor(local: Local) -> None:
    subject = unique("q.")
    resp = await post(local, subject, [ce(i, data=i) for i in range(5)], BATCH)
    ids = (await resp.json())["ids"]
    seen: list[str] = []
    after = ""
    for _ in range(5):
        url = f"{local.url}/v1/events?subject={subject}&limit=2&after={after}"
        page = await (await local.session.get(url)).json()
        seen += [e["id"] for e in page["events"]]
        if page["next"] is None:
            break
        after = page["next"]
    assert seen == ids
    got = await local.session.get(f"{local.url}/v1/events?subject={subject}&since=yesterday")
    await problem(got, 400, "INVALID_PARAMETER")
    # The one time syntax (as on the command line): relative times, and an end before the
    # ids' epoch (2024) that is an end before everything.
    recent = await (
        await local.session.get(f"{local.url}/v1/events?subject={subject}&since=-1w")
    ).json()
    assert [e["id"] for e in recent["events"]] == ids
    old = await (
        await local.session.get(f"{local.url}/v1/events?subject={subject}&until=2023-06-01")
    ).json()
    assert old["events"] == []
    got = await local.session.get(f"{local.url}/v1/events/12345")
    await problem(got, 404, "NOT_FOUND")


async def test_unknown_durable_is_404(local: Local) -> None:
    resp = await local.session.get(f"{local.url}/v1/subscriptions/nope/events?wait=0s")
    await problem(resp, 404, "UNKNOWN_DURABLE")
    resp = await local.session.post(f"{local.url}/v1/subscriptions/nope/acks", json={"ack": ["1"]})
    await problem(resp, 404, "UNKNOWN_DURABLE")


async def test_poll_ack_nack_and_shared_state_with_streams(local: Local) -> None:
    subject, durable = unique("p."), unique("d")
    resp = await local.session.put(
        f"{local.url}/v1/subscriptions/{durable}",
        json={"pattern": f"{subject}.>", "ack_wait": "30s", "max_deliveries": 3},
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["max_deliveries"] == 3

    async def poll(wait: str = "2s") -> list[dict[str, object]]:
        url = f"{local.url}/v1/subscriptions/{durable}/events?wait={wait}&max=10"
        r = await local.session.get(url)
        assert r.status == 200, await r.text()
        return (await r.json())["events"]  # type: ignore[no-any-return]

    # A long poll that is waiting gets an event published after it started.
    waiter = asyncio.create_task(poll("5s"))
    await eventually(lambda: local.broker.consumers[("default", durable)].sessions)  # it waits
    await post(local, f"{subject}.a", [ce(1), ce(2)], BATCH)
    got = await waiter
    assert [e["attempt"] for e in got] == [1, 1]
    first, second = (str(e["id"]) for e in got)
    r = await local.session.post(
        f"{local.url}/v1/subscriptions/{durable}/acks",
        json={"ack": [first], "nack": [second], "nack_delay": "0s"},
    )
    assert r.status == 200 and (await r.json()) == {"acked": 1, "nacked": 1}
    again = await poll()
    assert [(e["id"], e["attempt"]) for e in again] == [(second, 2)]
    # The same durable over the stream API: an event it received is acked over HTTP.
    sub = await local.api.subscribe(None, f"{subject}.>", durable=durable)
    await post(local, f"{subject}.b", [ce(3)], BATCH)
    batch = await anext(aiter(sub))
    r = await local.session.post(
        f"{local.url}/v1/subscriptions/{durable}/acks",
        json={"ack": [str(batch[0].id), second]},
    )
    assert r.status == 200, await r.text()
    consumer = local.broker.consumers[("default", durable)]
    assert consumer.pending == {}
    await sub.close()
    r = await local.session.post(
        f"{local.url}/v1/subscriptions/{durable}/acks", json={"ack": [second]}
    )
    await problem(r, 409, "NOT_PENDING")


async def test_put_subscription_validation(local: Local) -> None:
    url = f"{local.url}/v1/subscriptions/{unique('d')}"
    await problem(
        await local.session.put(url, json={"pattern": "a.>", "x": 1}), 400, "INVALID_PARAMETER"
    )
    await problem(
        await local.session.put(url, data=b"{", headers={"Content-Type": "application/json"}),
        400,
        "MALFORMED_JSON",
    )
    await problem(
        await local.session.put(url, data=b"a", headers={"Content-Type": "text/plain"}),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    )
    await problem(
        await local.session.put(url, json={"pattern": "a.>", "endpoint_url": "ftp://x"}),
        400,
        "INVALID_ENDPOINT",
    )
    await problem(
        await local.session.put(url + "!", json={"pattern": "a.>"}), 400, "INVALID_DURABLE"
    )


async def test_reads_skip_an_unencodable_event(
    local: Local, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stored event that has no JSON form answers 422 alone and is skipped (and named)
    in a page, so one bad event does not fail the pages around it."""
    accept_malformed(monkeypatch)
    subject = unique("bad.")
    out = await local.api.publish(None, subject, [event(0), malformed_event(1), event(2)])
    good0, bad, good2 = (str(i) for i in out.ids)
    async with local.session.get(f"{local.url}/v1/events/{bad}") as resp:
        body = await resp.json()
        assert resp.status == 422 and resp.content_type == "application/problem+json"
        assert body["reason"] == "INVALID_EVENT" and "Nanos" in body["detail"]
    async with local.session.get(f"{local.url}/v1/events", params={"subject": subject}) as resp:
        assert resp.status == 200
        page = await resp.json()
    assert [e["id"] for e in page["events"]] == [good0, good2]
    assert page["skipped"] == [bad]


async def test_poll_skips_and_dead_letters_an_unencodable_event(
    local: Local, monkeypatch: pytest.MonkeyPatch
) -> None:
    accept_malformed(monkeypatch)
    subject, durable = unique("badp."), unique("d")
    await local.api.create_durable(None, durable, subject)
    out = await local.api.publish(None, subject, [malformed_event(1), event(2)])
    url = f"{local.url}/v1/subscriptions/{durable}/events"
    async with local.session.get(url, params={"wait": "2s"}) as resp:
        page = await resp.json()
    assert [e["id"] for e in page["events"]] == [str(out.ids[1])]
    assert page["skipped"] == [str(out.ids[0])]
    dead, _ = await local.api.query(None, f"$dlq.{durable}")
    assert [d.event.attributes["lockgateoriginalid"].ce_string for d in dead] == [str(out.ids[0])]


_CE = {"specversion": "1.0", "id": "a1", "source": "/t", "type": "t"}
BAD_STRUCTURED = [
    ("time-month", {"time": "2024-13-01T00:00:00Z"}),
    ("time-year", {"time": "10000-01-01T00:00:00Z"}),
    ("content-type-integer", {"datacontenttype": 5}),
    ("content-type-shape", {"datacontenttype": "json"}),
    ("schema-not-uri", {"dataschema": "not a uri"}),
    ("control-char", {"note": "a\u0001b"}),
    ("subject-boolean", {"subject": True}),
    ("name-non-ascii", {"ü": "x"}),
    ("broker-marker", {"lockgateroutedfrom": "orders.paid"}),
]


@pytest.mark.parametrize(("label", "extra"), BAD_STRUCTURED, ids=[b[0] for b in BAD_STRUCTURED])
async def test_bad_attribute_values_are_refused(
    local: Local, label: str, extra: dict[str, object]
) -> None:
    subject = unique("hba.")
    url = f"{local.url}/v1/subjects/{subject}/events"
    headers = {"Content-Type": "application/cloudevents+json"}
    async with local.session.post(url, data=json.dumps({**_CE, **extra}), headers=headers) as r:
        body = await r.json()
        assert r.status == 400 and r.content_type == "application/problem+json"
        assert body["reason"] == "INVALID_EVENT" and body["hint"]
    batch = [{**_CE, "id": "ok"}, {**_CE, **extra}]
    headers = {"Content-Type": "application/cloudevents-batch+json"}
    async with local.session.post(url, data=json.dumps(batch), headers=headers) as r:
        body = await r.json()
        assert r.status == 207
        assert [(e["index"], e["reason"]) for e in body["errors"]] == [(1, "INVALID_EVENT")]
    assert await count_events(local.api, subject) == 1


BAD_HEADERS = [
    ("time", {"ce-time": "10000-01-01T00:00:00Z"}),
    ("schema", {"ce-dataschema": "no scheme"}),
    ("utf8", {"ce-note": "%C0%A0"}),
    ("name", {"ce-no_underscores": "x"}),
    ("broker-marker", {"ce-lockgateoriginalsubject": "orders.paid"}),
]


@pytest.mark.parametrize(("label", "extra"), BAD_HEADERS, ids=[b[0] for b in BAD_HEADERS])
async def test_bad_binary_headers_are_refused(
    local: Local, label: str, extra: dict[str, str]
) -> None:
    subject = unique("hbb.")
    headers = {**{f"ce-{k}": v for k, v in _CE.items()}, **extra}
    headers["Content-Type"] = "application/json"
    url = f"{local.url}/v1/subjects/{subject}/events"
    async with local.session.post(url, data=b"{}", headers=headers) as r:
        body = await r.json()
        assert r.status == 400 and r.content_type == "application/problem+json"
        assert body["reason"] == "INVALID_EVENT"
    assert await count_events(local.api, subject) == 0


@pytest.mark.parametrize("name", ["lockgateroutedfrom", "lockgateoriginalsubject"])
async def test_broker_attribute_names_are_refused(local: Local, name: str) -> None:
    subject = unique("hforged.")
    url = f"{local.url}/v1/subjects/{subject}/events"
    structured = json.dumps({**_CE, name: "orders.paid"})
    async with local.session.post(url, data=structured, headers={"Content-Type": CE_JSON}) as r:
        body = await problem(r, 400, "INVALID_EVENT")
        assert body["metadata"] == {"attribute": name}
    headers = {**{f"ce-{k}": v for k, v in _CE.items()}, f"ce-{name}": "orders.paid"}
    async with local.session.post(url, data=b"{}", headers=headers) as r:
        body = await problem(r, 400, "INVALID_EVENT")
        assert body["metadata"] == {"attribute": name}
    assert await count_events(local.api, subject) == 0


async def test_structured_body_with_ce_headers_is_structured(local: Local) -> None:
    subject = unique("hsm.")
    headers = {
        "Content-Type": "application/cloudevents+json; charset=utf-8",
        "ce-specversion": "1.0",
        "ce-id": "from-header",
        "ce-source": "/h",
        "ce-type": "h",
    }
    url = f"{local.url}/v1/subjects/{subject}/events"
    async with local.session.post(url, data=json.dumps({**_CE, "data": 1}), headers=headers) as r:
        assert r.status == 200, await r.text()
    events, _ = await local.api.query(None, subject)
    assert [e.event.id for e in events] == ["a1"] and events[0].event.text_data == "1"


async def test_creating_a_durable_needs_what_subscribing_needs(local: Local) -> None:
    """The same permission as gRPC: an agent without the admin role may create a durable on a
    pattern it may read; a webhook durable (the broker calls out) needs the admin role."""
    from lockgate.broker.auth import create_key

    key, _ = await create_key(local.broker.store, "default", "worker", ["reader"])
    headers = {"Authorization": f"Bearer {key}"}
    name = unique("d")
    url = f"{local.url}/v1/subscriptions/{name}"
    resp = await local.session.put(url, json={"pattern": "jobs.>"}, headers=headers)
    assert resp.status in (200, 201), await resp.text()
    hook = {"pattern": "jobs.>", "endpoint_url": "http://127.0.0.1:9/hook"}
    resp = await local.session.put(f"{url}-hook", json=hook, headers=headers)
    assert resp.status == 403
    problem = await resp.json()
    assert problem["reason"] == "PERMISSION_DENIED" and "webhook" in problem["detail"]
    assert [n for _, n in local.broker.consumers] == [name]


@pytest.mark.parametrize(
    "path",
    [
        f"/v1/events/{2**63}",
        f"/v1/events/{2**64 - 1}",
        f"/v1/events/{2**64}",
        f"/v1/events?since={10**20}",
        f"/v1/events?until={10**20}",
        f"/v1/events?after={2**64 - 1}",
        f"/v1/events?after={2**63}",
    ],
)
async def test_out_of_range_reads_are_problems(local: Local, path: str) -> None:
    resp = await local.session.get(local.url + path)
    assert resp.status in (400, 404), await resp.text()
    await problem(resp, resp.status, "INVALID_PARAMETER" if resp.status == 400 else "NOT_FOUND")


async def test_since_after_the_id_space_is_an_empty_page(local: Local) -> None:
    # Ids end in 2093: a later time has no events (it overflowed the store's integers).
    for query in ("since=2200-01-01T00:00:00Z", "until=2200-01-01T00:00:00Z&since=2199-01-01"):
        resp = await local.session.get(f"{local.url}/v1/events?{query}")
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["events"] == []


async def test_deeply_nested_json_is_a_problem(local: Local) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    resp = await post(local, unique("deep."), deep, CE_JSON)
    await problem(resp, 400, "MALFORMED_JSON")
    resp = await local.session.put(
        f"{local.url}/v1/subscriptions/deep",
        data=b'{"pattern":' + deep + b"}",
        headers={"Content-Type": "application/json"},
    )
    await problem(resp, 400, "MALFORMED_JSON")


async def test_wrong_method_and_unknown_path_are_problems(local: Local) -> None:
    resp = await local.session.delete(f"{local.url}/v1/events")
    body = await problem(resp, 405, "METHOD_NOT_ALLOWED")
    assert resp.headers["Allow"] == "GET,HEAD"
    assert "DELETE" in str(body["detail"])
    resp = await local.session.get(f"{local.url}/v2/nothing")
    await problem(resp, 404, "NOT_FOUND")


@pytest.mark.parametrize(
    "path",
    [
        "/v1/audit?after=%C2%B2",  # "²": a digit to str.isdigit, not to int (was a 500)
        "/v1/audit?after=%D9%A1%D9%A2",  # Arabic-Indic "12": digits, but not ours
        f"/v1/audit?after={'9' * 5000}",  # more digits than int reads (was a 500)
        f"/v1/audit?after={2**63}",
        "/v1/audit?since=%C2%B2",
        f"/v1/audit?since={'9' * 5000}",
        "/v1/audit?until=10000-01-01",
        "/v1/audit?since=-99999999999999999999d",
        "/v1/audit?limit=100000",
        "/v1/audit?limit=-1",
        "/v1/audit?limit=1e3",
        "/v1/events/%C2%B2",
        "/v1/events?after=%C2%B2",
        f"/v1/events?since={'9' * 5000}",
    ],
)
async def test_bad_query_parameters_are_problems(local: Local, path: str) -> None:
    resp = await local.session.get(local.url + path)
    assert resp.status == 400, await resp.text()
    body = await problem(resp, 400, "INVALID_PARAMETER")
    assert len(str(body)) < 2000  # the bad value is not echoed whole


async def test_audit_far_ahead_is_an_empty_page(local: Local) -> None:
    resp = await local.session.get(f"{local.url}/v1/audit?since=9999-12-31T00:00:00Z&limit=1000")
    assert resp.status == 200, await resp.text()
    assert (await resp.json()) == {"records": [], "next": None}
