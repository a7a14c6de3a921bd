"""The TLS settings without a server: files that fail the start, the SAN-to-caller mapping,
a torn rotation, and the plain-text rule of ``lockgate serve``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lockgate.broker import tls as tls_module
from lockgate.broker.auth import Principal
from lockgate.broker.config import Config, ConfigError
from lockgate.broker.config_load import load_config
from lockgate.broker.errors import Unauthenticated
from lockgate.broker.tls import ClientIdentities, PeerCertificate, ServerTLS
from tests.support.certs import CertAuthority


@pytest.fixture
def ca() -> CertAuthority:
    return CertAuthority.create()


def test_files_that_cannot_serve_fail_the_start(tmp_path: Path, ca: CertAuthority) -> None:
    server = ca.server().write(tmp_path, "server")
    other = ca.server().write(tmp_path, "other")
    with pytest.raises(ConfigError, match="needs both tls_server_cert and tls_server_key"):
        ServerTLS.from_settings(cert=str(server.cert), key="")
    with pytest.raises(ConfigError, match="tls_client_ca is set but"):
        ServerTLS.from_settings(cert="", key="", client_ca=str(server.cert))
    with pytest.raises(ConfigError, match="the key does not belong to the certificate"):
        ServerTLS.from_settings(cert=str(server.cert), key=str(other.key))
    with pytest.raises(ConfigError, match="cannot use the TLS files"):
        ServerTLS.from_settings(cert=str(tmp_path / "missing.pem"), key=str(server.key))
    assert ServerTLS.from_settings(cert="", key="") is None
    ok = ServerTLS.from_settings(cert=str(server.cert), key=str(server.key))
    assert ok is not None and not ok.mutual and ok.identities is None


def _touch(path: Path) -> None:
    """A modification time that differs from the last read's, however coarse the clock."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_a_torn_rotation_keeps_the_previous_pair(
    tmp_path: Path, ca: CertAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tls_module, "_CHECK_SECONDS", 0.0)
    first = ca.server()
    files = first.write(tmp_path, "server")
    served = ServerTLS.from_settings(cert=str(files.cert), key=str(files.key))
    assert served is not None
    pair, changed = served.files.current()
    assert pair.cert == first.cert_pem and not changed
    second = ca.server()
    files.cert.write_bytes(second.cert_pem)  # the new certificate, the old key: not whole yet
    _touch(files.cert)
    pair, changed = served.files.current()
    assert pair.cert == first.cert_pem and not changed
    files.key.write_bytes(second.key_pem)
    _touch(files.key)
    pair, changed = served.files.current()
    assert pair.cert == second.cert_pem and changed
    assert served.files.generation == 1


def test_the_identity_template_must_name_org_and_agent() -> None:
    for bad in ("lockgate://{org}", "{agent}", "x://{org}/{org}/{agent}"):
        with pytest.raises(ConfigError, match="must contain"):
            ClientIdentities(bad)


@pytest.mark.parametrize(
    ("template", "peer", "expected"),
    [
        (
            "lockgate://{org}/{agent}",
            PeerCertificate(uris=("lockgate://acme/bot",)),
            ("acme", "bot"),
        ),
        (
            "lockgate://{org}/{agent}",
            PeerCertificate(uris=("spiffe://x/y", "lockgate://acme/bot"), dns=("a.b",)),
            ("acme", "bot"),
        ),
        (
            "{agent}.{org}.agents.example",
            PeerCertificate(dns=("Bot.ACME.agents.example",)),
            ("acme", "bot"),
        ),
        (
            "spiffe://corp/ns/{org}/sa/{agent}",
            PeerCertificate(uris=("spiffe://corp/ns/acme/sa/bot",)),
            ("acme", "bot"),
        ),
    ],
)
def test_a_san_names_the_caller(
    template: str, peer: PeerCertificate, expected: tuple[str, str]
) -> None:
    ids = ClientIdentities(template, roles=["reader"])
    assert ids.principal(peer) == Principal(*expected, frozenset({"reader"}))


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        (PeerCertificate(), "no URI SAN"),
        (PeerCertificate(dns=("lockgate://acme/bot",)), "no URI SAN"),  # a DNS SAN is no URI
        (PeerCertificate(uris=("lockgate://acme/bot/admin",)), "no URI SAN"),
        (PeerCertificate(uris=("lockgate://ac.me/bot",)), "no URI SAN"),
        (PeerCertificate(uris=("lockgate://acme/" + "b" * 65,)), "no URI SAN"),
        (PeerCertificate(uris=("LOCKGATE://acme/bot",)), "no URI SAN"),
        (PeerCertificate(uris=("lockgate://evil/bot",)), "org 'evil', which tls_client_orgs"),
        (PeerCertificate(uris=("lockgate://acme/a", "lockgate://acme/b")), "2 different"),
    ],
)
def test_certificates_that_name_no_allowed_caller(peer: PeerCertificate, expected: str) -> None:
    ids = ClientIdentities(orgs=["acme"])
    with pytest.raises(Unauthenticated, match=expected):
        ids.principal(peer)


def test_the_tls_lists_read_from_variables_and_toml(tmp_path: Path) -> None:
    env = {"LOCKGATE_TLS_CLIENT_ORGS": "acme, globex", "LOCKGATE_TLS_CLIENT_ROLES": ""}
    cfg = load_config(env=env)
    assert cfg.tls_client_orgs == ["acme", "globex"] and cfg.tls_client_roles == []
    toml = tmp_path / "l.toml"
    toml.write_text('[broker]\ntls_client_roles = ["reader"]\n')
    assert load_config(config_file=str(toml), env={}).tls_client_roles == ["reader"]
    toml.write_text("[broker]\ntls_client_roles = [1]\n")
    with pytest.raises(ConfigError, match="is not a list of names"):
        load_config(config_file=str(toml), env={})
    assert load_config({"insecure_plaintext": "true"}, env={}).insecure_plaintext


def test_which_listeners_would_serve_plain_text_on_the_network(tmp_path: Path) -> None:
    from lockgate.broker.app import _plaintext_network_listens

    ca = CertAuthority.create()
    files = ca.server().write(tmp_path, "server")
    tls = ServerTLS.from_settings(cert=str(files.cert), key=str(files.key))
    gateways: dict[str, dict[str, object]] = {
        "http": {"listen": "0.0.0.0:8080"},
        "ws": {"listen": "[::]:8081", "tls_server_cert": str(files.cert)},
        "nats": {"url": "nats://x"},
    }
    config = Config(listen="10.0.0.5:50051", gateways=gateways)
    assert _plaintext_network_listens(config, None) == ["10.0.0.5:50051", "0.0.0.0:8080"]
    assert _plaintext_network_listens(config, tls) == []
    loopback = Config(listen="127.0.0.1:1", gateways={"http": {"listen": "[::1]:2"}})
    assert _plaintext_network_listens(loopback, None) == []
