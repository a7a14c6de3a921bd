"""TLS and mTLS on the gRPC port, end to end: ``lockgate serve`` with certificates made by the
test (tests/support/certs.py) and the real client; then the attacks on it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from lockgate.broker.auth import create_key
from lockgate.broker.store.sqlite import SqliteStore
from lockgate.broker.testing import RunningBroker, run_broker
from lockgate.clients import TLS, Client, TLSError, Unauthenticated
from tests.broker.e2e_kit import LOCKGATE
from tests.support import eventually
from tests.support.certs import CertAuthority, PemFiles, replace_files, served_certificate

pytestmark = [pytest.mark.e2e]


@dataclass
class Pki:
    dir: Path
    ca: CertAuthority
    ca_file: Path
    server: PemFiles

    def client(self, name: str, **kw: object) -> TLS:
        files = self.ca.issue(name, **kw).write(self.dir, name)  # type: ignore[arg-type]
        return TLS(str(self.ca_file), str(files.cert), str(files.key))


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = CertAuthority.create()
    return Pki(tmp_path, ca, ca.write(tmp_path / "ca.pem"), ca.server().write(tmp_path, "server"))


def _tls_args(pki: Pki, *, mutual: bool = False, extra: tuple[str, ...] = ()) -> list[str]:
    args = ["--tls-server-cert", str(pki.server.cert), "--tls-server-key", str(pki.server.key)]
    if mutual:
        args += ["--tls-client-ca", str(pki.ca_file)]
    return [*args, *extra]


@pytest_asyncio.fixture
async def tls_broker(pki: Pki) -> AsyncIterator[RunningBroker]:
    async with run_broker(extra_args=_tls_args(pki)) as b:
        yield b


async def test_tls_end_to_end_with_the_client(tls_broker: RunningBroker, pki: Pki) -> None:
    tls = TLS(ca_file=str(pki.ca_file))
    async with Client(tls_broker.target, tls=tls) as c:
        event_id = await c.publish("tls.hello", {"n": 1})
        stored = await c.get_event(event_id)
        assert stored.data == {"n": 1}
    # grpcs:// with the CA from the environment's way (TLS.from_env) gives the same.
    env = {"LOCKGATE_TLS_CA": str(pki.ca_file)}
    async with Client(f"grpcs://{tls_broker.target}", tls=TLS.from_env(env)) as c:
        assert (await c.get_event(event_id)).data == {"n": 1}


async def test_a_wrong_ca_is_refused_with_a_clear_error(tls_broker: RunningBroker) -> None:
    other = CertAuthority.create("another CA")
    path = Path(tls_broker.data_dir) / "other-ca.pem"
    other.write(path)
    started = time.monotonic()
    with pytest.raises(TLSError) as info:
        async with Client(tls_broker.target, tls=TLS(ca_file=str(path)), connect_timeout=20):
            pass
    assert "not trusted" in info.value.message and "--tls-ca" in info.value.hint
    assert time.monotonic() - started < 10  # named at the first failure, not after 20 s


async def test_a_plaintext_client_on_a_tls_port_gets_a_clear_error(
    tls_broker: RunningBroker,
) -> None:
    started = time.monotonic()
    with pytest.raises(TLSError) as info:
        async with Client(tls_broker.target, connect_timeout=20):
            pass
    assert (
        info.value.message
        == f"the broker at {tls_broker.target} speaks TLS and this client does not"
    )
    assert "grpcs://" in info.value.hint
    assert time.monotonic() - started < 10


async def test_a_tls_client_on_a_plaintext_port_gets_a_clear_error(pki: Pki) -> None:
    async with run_broker() as b:
        with pytest.raises(TLSError, match="does not speak TLS"):
            async with Client(b.target, tls=TLS(ca_file=str(pki.ca_file)), connect_timeout=20):
                pass


# -- mTLS -----------------------------------------------------------------------------------

_WHO = """
policy who on "who.>" {
  allow publish
  allow subscribe
  tag "agent" = principal.agent
  tag "org" = principal.org
}
"""


@pytest_asyncio.fixture
async def mtls_broker(pki: Pki) -> AsyncIterator[RunningBroker]:
    policies = pki.dir / "policies"
    policies.mkdir()
    (policies / "who.policy").write_text(_WHO)
    data = pki.dir / "data"
    store = SqliteStore(str(data), fsync="always")
    await store.open()
    try:  # keys exist: not the dev mode, so a caller is its certificate or its key
        keys = {
            org: (await create_key(store, org, "keyed", ["admin"]))[0] for org in ("acme", "evil")
        }
    finally:
        await store.close()
    extra = ("--policy-dir", str(policies), "--tls-client-orgs", "acme,globex")
    async with run_broker(str(data), _tls_args(pki, mutual=True, extra=extra)) as b:
        b.keys = keys  # type: ignore[attr-defined]
        yield b


async def test_the_mtls_principal_is_the_certificates_san(
    mtls_broker: RunningBroker, pki: Pki
) -> None:
    tls = pki.client("bot", uris=["lockgate://acme/bot"])
    async with Client(mtls_broker.target, tls=tls) as c:
        event_id = await c.publish("who.am.i", {})
        stored = await c.get_event(event_id)
    assert (stored.attributes["agent"], stored.attributes["org"]) == ("bot", "acme")
    # A key of the same org beside the certificate wins (its agent and roles)...
    key = mtls_broker.keys["acme"]  # type: ignore[attr-defined]
    async with Client(mtls_broker.target, api_key=key, tls=tls) as c:
        stored = await c.get_event(await c.publish("who.am.i", {}))
    assert stored.attributes["agent"] == "keyed"
    # ...and a key of another org is refused: the certificate proves the org.
    evil = mtls_broker.keys["evil"]  # type: ignore[attr-defined]
    async with Client(mtls_broker.target, api_key=evil, tls=tls) as c:
        with pytest.raises(Unauthenticated, match="of org 'evil' but the client certificate"):
            await c.publish("who.am.i", {})


async def test_a_dns_san_template_names_the_caller(pki: Pki) -> None:
    extra = ("--tls-client-identity", "{agent}.{org}.agents.example")
    async with run_broker(extra_args=_tls_args(pki, mutual=True, extra=extra)) as b:
        tls = pki.client("dnsbot", dns=["Worker.Acme.agents.example"])
        async with Client(b.target, tls=tls) as c:
            await c.publish("x.y", {})  # no policy here: the call itself shows it is admitted
        tls = pki.client("uribot", uris=["lockgate://acme/bot"])  # the wrong kind of SAN
        async with Client(b.target, tls=tls) as c:
            with pytest.raises(Unauthenticated, match="no DNS SAN of the form"):
                await c.publish("x.y", {})


async def test_no_client_certificate_is_refused(mtls_broker: RunningBroker, pki: Pki) -> None:
    with pytest.raises(TLSError, match=r"requires a client certificate .* sent none"):
        async with Client(mtls_broker.target, tls=TLS(str(pki.ca_file)), connect_timeout=20):
            pass


async def test_an_expired_client_certificate_is_refused(
    mtls_broker: RunningBroker, pki: Pki
) -> None:
    tls = pki.client("old", uris=["lockgate://acme/old"], expired=True)
    with pytest.raises(TLSError, match=r"refused this client's certificate .*old\.pem"):
        async with Client(mtls_broker.target, tls=tls, connect_timeout=20):
            pass


async def test_a_client_certificate_of_another_ca_is_refused(
    mtls_broker: RunningBroker, pki: Pki
) -> None:
    rogue = CertAuthority.create("rogue CA")
    files = rogue.issue("mallory", uris=["lockgate://acme/admin"]).write(pki.dir, "rogue")
    tls = TLS(str(pki.ca_file), str(files.cert), str(files.key))
    with pytest.raises(TLSError, match=r"refused this client's certificate .*rogue\.pem"):
        async with Client(mtls_broker.target, tls=tls, connect_timeout=20):
            pass


@pytest.mark.parametrize(
    ("sans", "expected"),
    [
        ({}, "no URI SAN of the form lockgate://{org}/{agent}"),
        ({"dns": ["bot.acme.example"]}, "no URI SAN"),
        ({"uris": ["lockgate://acme/bot/extra"]}, "no URI SAN"),
        ({"uris": ["lockgate://evil/bot"]}, "org 'evil', which tls_client_orgs does not allow"),
        ({"uris": ["lockgate://acme/a", "lockgate://globex/b"]}, "2 different callers"),
    ],
)
async def test_certificates_that_name_no_allowed_caller_are_refused(
    mtls_broker: RunningBroker, pki: Pki, sans: dict[str, list[str]], expected: str
) -> None:
    tls = pki.client("odd", **sans)  # type: ignore[arg-type]
    async with Client(mtls_broker.target, tls=tls) as c:
        with pytest.raises(Unauthenticated) as info:
            await c.publish("who.x", {})
        assert expected in info.value.message
        with pytest.raises(Unauthenticated):  # every call, streams and unary alike
            await c.get_event(1)


# -- rotation -------------------------------------------------------------------------------


async def test_a_rotated_certificate_reaches_new_connections_without_a_restart(
    tls_broker: RunningBroker, pki: Pki
) -> None:
    host, port = tls_broker.host, tls_broker.port
    before = await asyncio.to_thread(served_certificate, host, port, pki.ca_file)
    wanted = replace_files(pki.ca.server(), pki.server)
    assert wanted != before

    async def served() -> bool:
        return await asyncio.to_thread(served_certificate, host, port, pki.ca_file) == wanted

    await eventually(served, timeout=10, what="new connections get the new certificate")
    async with Client(tls_broker.target, tls=TLS(str(pki.ca_file))) as c:
        await c.publish("tls.after.rotation", {})


# -- the CLI --------------------------------------------------------------------------------


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cmd = [LOCKGATE] if os.path.exists(LOCKGATE) else [sys.executable, "-m", "lockgate.broker.cli"]
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=60, check=False, env=env
    )


async def test_the_cli_speaks_tls_and_mtls(mtls_broker: RunningBroker, pki: Pki) -> None:
    tls = pki.client("clibot", uris=["lockgate://acme/clibot"])
    base = {k: v for k, v in os.environ.items() if not k.startswith("LOCKGATE_")}
    env = {
        **base,
        "LOCKGATE_TLS_CA": str(tls.ca_file),
        "LOCKGATE_TLS_CERT": str(tls.cert_file),
        "LOCKGATE_TLS_KEY": str(tls.key_file),
    }
    target = f"grpcs://{mtls_broker.target}"
    out = await asyncio.to_thread(_cli, "pub", "--server", target, "who.cli", "{}", env=env)
    assert out.returncode == 0, out.stderr
    # Flags instead of variables, and a plain target: --tls-ca implies TLS.
    flags = ["--tls-ca", str(tls.ca_file), "--tls-cert", str(tls.cert_file)]
    flags += ["--tls-key", str(tls.key_file)]
    out = await asyncio.to_thread(
        _cli, "history", "who.cli", "--server", mtls_broker.target, *flags, env=base
    )
    assert out.returncode == 0, out.stderr
    (line,) = out.stdout.splitlines()
    async with Client(mtls_broker.target, tls=tls) as c:
        stored = await c.get_event(int(json.loads(line)["id"]))
    assert stored.attributes["agent"] == "clibot"  # the certificate's caller published it
    # Without TLS: one sentence naming TLS and a hint, exit code 1, no traceback.
    out = await asyncio.to_thread(
        _cli, "pub", "--server", mtls_broker.target, "who.x", "{}", env=base
    )
    assert out.returncode == 1
    assert out.stderr.startswith(
        f"lockgate: the broker at {mtls_broker.target} speaks TLS and this client does not"
    ), out.stderr
    assert "hint: connect with grpcs://" in out.stderr and "Traceback" not in out.stderr
