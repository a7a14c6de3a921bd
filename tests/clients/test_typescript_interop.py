"""One broker, two languages: the TypeScript client (clients/typescript) and the Python client
write the same CloudEvents and read each other's, attribute for attribute and for every kind of
data; and the npm package installs from its tarball and runs the README's Node agent.

The TypeScript side is tests/clients/ts_interop.mjs, run with node on the built client
(``npm ci && npm run build`` in clients/typescript; .ci/run does it). Without node or the build
these tests skip, and FAIL under CI=true.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import any_pb2, duration_pb2

from lockgate.broker.testing import run_broker
from lockgate.broker.v1 import cloudevent_pb2
from lockgate.broker.v1.reasons import Reason
from lockgate.clients import TLS, Client
from lockgate.clients._codec import AttributeValue, decode_attributes, to_cloudevent
from lockgate.clients._errors import error_for_reason
from lockgate.clients._wire import EventEncoder
from tests.support.certs import CertAuthority
from tests.support.tools import require_tool

pytestmark = [pytest.mark.e2e]

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "clients" / "typescript"
SCRIPT = Path(__file__).with_name("ts_interop.mjs")

ATTRIBUTES: dict[str, list[Any]] = {
    "tenant": ["str", "acme"],
    "count": ["int", -7],
    "flag": ["bool", False],
    "raw": ["bytes", "00ff10"],
    "when": ["time", "2026-01-02T03:04:05.123Z"],
}
PROTO = duration_pb2.Duration(seconds=5, nanos=7)
CASES: list[dict[str, Any]] = [
    {"kind": "json", "value": {"a": [1, "x", None, True], "u": "é ✓", "n": -3}},
    {"kind": "json", "value": [1, 2.5, {"deep": {"er": []}}]},
    {"kind": "text", "value": "héllo, world"},
    {"kind": "binary", "value": bytes(range(256)).hex()},
    {
        "kind": "proto",
        "value": {
            "typeUrl": "type.googleapis.com/google.protobuf.Duration",
            "hex": PROTO.SerializeToString().hex(),
        },
    },
]


def cases(*, attributes: bool) -> list[dict[str, Any]]:
    return [
        {
            **c,
            "type": f"com.example.{c['kind']}",
            "source": "agent://interop",
            "id": f"ev-{i}",
            "attributes": ATTRIBUTES if attributes else {},
        }
        for i, c in enumerate(CASES)
    ]


def typed(kind: str, value: Any) -> AttributeValue:
    if kind == "bytes":
        return bytes.fromhex(value)
    if kind == "time":
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value  # type: ignore[no-any-return]


def data_of(case: dict[str, Any]) -> object:
    if case["kind"] == "binary":
        return bytes.fromhex(case["value"])
    return case["value"]


def python_event(case: dict[str, Any]) -> cloudevent_pb2.CloudEvent:
    """The event the Python client publishes for ``case``."""
    attrs = {k: typed(*v) for k, v in case["attributes"].items()}
    if case["kind"] == "proto":
        event = cloudevent_pb2.CloudEvent(
            id=case["id"], source=case["source"], spec_version="1.0", type=case["type"]
        )
        event.proto_data.CopyFrom(
            any_pb2.Any(type_url=case["value"]["typeUrl"], value=PROTO.SerializeToString())
        )
        for key, value in attrs.items():
            event.attributes[key].CopyFrom(
                to_cloudevent("", attributes={key: value}).attributes[key]
            )
        return event
    return to_cloudevent(
        data_of(case), type=case["type"], source=case["source"], id=case["id"], attributes=attrs
    )


@pytest.fixture(scope="module")
def node() -> str:
    path = require_tool("node", "LOCKGATE_TEST_NODE")
    if not (PACKAGE / "dist" / "index.js").exists():
        reason = (
            "the TypeScript client is not built (npm ci && npm run build in clients/typescript)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true: .ci/run builds it")
        pytest.skip(reason)
    return path


async def run_node(node: str, *args: str, stdin: object = None, timeout: float = 60) -> str:
    proc = await asyncio.create_subprocess_exec(
        node,
        str(SCRIPT),
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ, LOCKGATE_TS_CLIENT=str(PACKAGE / "dist" / "index.js")),
    )
    feed = json.dumps(stdin).encode() if stdin is not None else b""
    out, err = await asyncio.wait_for(proc.communicate(feed), timeout)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_both_clients_write_the_same_bytes(node: str) -> None:
    plain = cases(attributes=False)
    out = (await run_node(node, "encode", stdin=plain)).split()
    encoder = EventEncoder()
    for case, ts_hex in zip(plain, out, strict=True):
        if case["kind"] == "proto":
            python = python_event(case).SerializeToString()
        else:
            python = encoder.encode(
                data_of(case), type=case["type"], source=case["source"], id=case["id"]
            )
        assert bytes.fromhex(ts_hex) == python, case["kind"]


async def test_with_attributes_both_clients_write_the_same_event(node: str) -> None:
    # Protobuf leaves the order of map entries open (Python's writes them in hash order), so
    # with extension attributes the events are equal as messages, field for field.
    with_attrs = cases(attributes=True)
    out = (await run_node(node, "encode", stdin=with_attrs)).split()
    for case, ts_hex in zip(with_attrs, out, strict=True):
        assert cloudevent_pb2.CloudEvent.FromString(bytes.fromhex(ts_hex)) == python_event(case)


def expected_attributes(case: dict[str, Any]) -> dict[str, AttributeValue]:
    attrs = {k: typed(*v) for k, v in case["attributes"].items()}
    if case["kind"] != "proto":
        attrs["datacontenttype"] = {
            "json": "application/json",
            "text": "text/plain",
            "binary": "application/octet-stream",
        }[case["kind"]]
    return attrs


async def test_typescript_publishes_and_python_reads_every_attribute_and_kind(node: str) -> None:
    subject = f"interop.ts2py.{uuid.uuid4().hex[:8]}"
    sent = cases(attributes=True)
    async with run_broker() as b:
        ids = json.loads(await run_node(node, "publish", b.target, subject, stdin=sent))
        async with Client(b.target) as c, c.subscribe(subject, start="all") as sub:
            got = []
            async for msg in sub:
                got.append(msg)
                if len(got) == len(sent):
                    break
    assert sorted(m.id for m in got) == sorted(int(i) for i in ids)
    by_id = {m.event_id: m for m in got}
    for case in sent:
        msg = by_id[case["id"]]
        assert (msg.type, msg.source, msg.subject) == (case["type"], case["source"], subject)
        assert decode_attributes(msg.event) == expected_attributes(case)
        if case["kind"] == "proto":
            assert msg.event.proto_data.type_url == case["value"]["typeUrl"]
            assert msg.event.proto_data.value == PROTO.SerializeToString()
        else:
            assert msg.data == data_of(case)


async def test_python_publishes_and_typescript_reads_every_attribute_and_kind(node: str) -> None:
    subject = f"interop.py2ts.{uuid.uuid4().hex[:8]}"
    sent = cases(attributes=True)
    async with run_broker() as b:
        async with Client(b.target) as c:
            ids = []
            for case in sent:
                attrs = {k: typed(*v) for k, v in case["attributes"].items()}
                if case["kind"] == "proto":
                    ids.append(await c.publish(subject, python_event(case)))
                else:
                    ids.append(
                        await c.publish(
                            subject,
                            data_of(case),
                            type=case["type"],
                            source=case["source"],
                            id=case["id"],
                            attributes=attrs,
                        )
                    )
        out = await run_node(node, "subscribe", b.target, subject, str(len(sent)))
    got = {m["eventId"]: m for m in map(json.loads, out.splitlines())}
    assert sorted(int(m["id"]) for m in got.values()) == sorted(ids)
    for case in sent:
        msg = got[case["id"]]
        assert (msg["type"], msg["source"], msg["subject"]) == (
            case["type"],
            case["source"],
            subject,
        )
        want = {**case["attributes"]}
        ctype = expected_attributes(case).get("datacontenttype")
        if ctype is not None:
            want["datacontenttype"] = ["str", ctype]
        assert msg["attributes"] == want
        assert msg["data"] == {"kind": case["kind"], "value": case["value"]}


async def test_both_clients_raise_the_same_class_for_every_reason(node: str) -> None:
    ts = json.loads(await run_node(node, "reasons"))
    python = {r.value: type(error_for_reason(r.value, "x")).__name__ for r in Reason}
    assert ts == python


async def test_typescript_client_speaks_mtls_and_names_a_failed_handshake(
    node: str, tmp_path: Path
) -> None:
    ca = CertAuthority.create()
    ca_file = ca.write(tmp_path / "ca.pem")
    server = ca.server().write(tmp_path, "server")
    bot = ca.issue("tsbot", uris=["lockgate://default/tsbot"]).write(tmp_path, "tsbot")
    other_ca = CertAuthority.create("another CA").write(tmp_path / "other.pem")
    args = ["--tls-server-cert", str(server.cert), "--tls-server-key", str(server.key)]
    args += ["--tls-client-ca", str(ca_file)]
    subject = f"interop.tls.{uuid.uuid4().hex[:8]}"
    async with run_broker(extra_args=args) as b:
        tls = ["tls", b.target, subject, str(ca_file)]
        ok = json.loads(await run_node(node, *tls, str(bot.cert), str(bot.key)))
        no_cert = json.loads(await run_node(node, *tls))
        wrong_ca = json.loads(await run_node(node, "tls", b.target, subject, str(other_ca)))
        async with Client(b.target, tls=TLS(str(ca_file), str(bot.cert), str(bot.key))) as c:
            stored = await c.get_event(int(ok["id"]))
    assert stored.data == {"tls": True}
    assert (no_cert["error"], no_cert["reason"]) == ("TLSError", "TLS_HANDSHAKE_FAILED")
    assert (wrong_ca["error"], wrong_ca["reason"]) == ("TLSError", "TLS_HANDSHAKE_FAILED")


def test_npm_pack_installs_and_runs_the_readme_agent(node: str, tmp_path: Path) -> None:
    """The tarball of ``npm pack`` installs into an empty project and runs
    examples/agent.mjs (the README's ten-line Node agent) against a real broker. The pack
    skips ``prepack`` (the build): the fixture's build is used, and rebuilding dist/ here
    would race the other tests that import it."""
    npm = require_tool("npm", "LOCKGATE_TEST_NPM")
    quiet = ["--no-audit", "--no-fund", "--loglevel=error"]
    packed = subprocess.run(
        [npm, "pack", "--ignore-scripts", "--pack-destination", str(tmp_path), *quiet],
        cwd=PACKAGE,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    tarball = tmp_path / packed.stdout.strip().splitlines()[-1]
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text('{"name": "agent", "private": true}')
    subprocess.run(
        [npm, "install", "--prefer-offline", *quiet, str(tarball)],
        cwd=app,
        capture_output=True,
        check=True,
        timeout=300,
    )
    shutil.copy(ROOT / "examples" / "agent.mjs", app / "agent.mjs")

    async def run() -> subprocess.CompletedProcess[str]:
        async with run_broker() as b:
            return await asyncio.to_thread(
                subprocess.run,
                [node, "agent.mjs"],
                cwd=app,
                env=dict(os.environ, LOCKGATE_SERVER=b.target),
                capture_output=True,
                text=True,
                timeout=60,
            )

    done = asyncio.run(run())
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "true warn disk 91% full"
