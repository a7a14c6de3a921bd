"""The Helm charts (deploy/helm): `helm lint` passes, and `helm template` renders manifests
that start what the README promises: broker nodes in cluster mode with gRPC health probes,
a Service, the node's TOML (accepted by Lockgate's own loader), a Secret for the store URL,
a PodDisruptionBudget; and a NATS JetStream backbone whose configuration nats-server itself
accepts. No Kubernetes cluster runs here: these tests check what helm renders."""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from lockgate.broker.config_load import load_config
from tests.support.tools import require_tool

CHARTS = Path(__file__).resolve().parents[2] / "deploy" / "helm"
LOCKGATE = CHARTS / "lockgate"
BACKBONE = CHARTS / "nats-backbone"
Manifest = dict[str, Any]


@pytest.fixture(scope="module")
def helm() -> str:
    return require_tool("helm", "LOCKGATE_TEST_HELM")


def render(helm: str, chart: Path, *sets: str, values: bool = True) -> list[Manifest]:
    args = [helm, "template", "rel", str(chart)]
    if values:
        args += ["-f", str(chart / "ci" / "cluster-values.yaml")]
    for s in sets:
        args += ["--set", s]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def refusal(helm: str, chart: Path, *sets: str) -> str:
    args = [helm, "template", "rel", str(chart)]
    for s in sets:
        args += ["--set", s]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0, done.stdout
    return done.stderr


def one(docs: list[Manifest], kind: str, suffix: str = "") -> Manifest:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, [d["metadata"]["name"] for d in docs if d["kind"] == kind]
    return found[0]


@pytest.mark.parametrize("chart", [LOCKGATE, BACKBONE], ids=["lockgate", "nats-backbone"])
def test_helm_lint_passes(helm: str, chart: Path) -> None:
    done = subprocess.run(
        [helm, "lint", "--strict", str(chart), "-f", str(chart / "ci" / "cluster-values.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_broker_nodes_start_in_cluster_mode_with_health_probes(helm: str) -> None:
    docs = render(helm, LOCKGATE)
    deploy = one(docs, "Deployment")
    assert deploy["spec"]["replicas"] == 3
    pod = deploy["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    assert c["args"][0] == "serve"
    assert "--listen=0.0.0.0:50051" in c["args"]
    assert "--insecure-plaintext" in c["args"]  # asked for explicitly in the CI values
    env = {e["name"]: e for e in c["env"]}
    assert env["LOCKGATE_BACKBONE"]["value"].startswith("nats://")
    assert env["LOCKGATE_LIMITER"]["value"].startswith("redis://")
    assert env["LOCKGATE_BACKBONE_REPLICAS"]["value"] == "3"
    ref = env["LOCKGATE_STORE"]["valueFrom"]["secretKeyRef"]
    secret = one(docs, "Secret")
    assert ref["name"] == secret["metadata"]["name"]
    assert secret["stringData"][ref["key"]].startswith("postgresql://")
    # grpc.health.v1 on the gRPC port decides readiness and liveness.
    assert c["readinessProbe"]["grpc"]["port"] == 50051
    assert c["livenessProbe"]["grpc"]["port"] == 50051
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True


def test_service_and_disruption_budget_select_the_broker_pods(helm: str) -> None:
    docs = render(helm, LOCKGATE)
    labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    service = one(docs, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {
        "grpc": 50051,
        "http": 8080,
    }
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_the_rendered_toml_is_accepted_by_lockgates_own_loader(helm: str, tmp_path: Path) -> None:
    docs = render(helm, LOCKGATE, "settings.max_deliveries=7")
    toml = one(docs, "ConfigMap", "lockgate")["data"]["lockgate.toml"]
    tomllib.loads(toml)
    path = tmp_path / "lockgate.toml"
    path.write_text(toml)
    config = load_config(config_file=str(path), env={})
    assert config.max_deliveries == 7
    assert config.policy_dir == "/etc/lockgate/policies"
    policies = one(docs, "ConfigMap", "policies")["data"]
    assert "billing.policy" in policies


def test_tls_mounts_the_secret_and_never_serves_plain_text(helm: str) -> None:
    docs = render(
        helm,
        LOCKGATE,
        "insecurePlaintext=false",
        "tls.enabled=true",
        "tls.secretName=lg-tls",
        "tls.verifyClients=true",
    )
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "--insecure-plaintext" not in c["args"]
    assert "--tls-server-cert=/etc/lockgate/tls/tls.crt" in c["args"]
    assert "--tls-client-ca=/etc/lockgate/tls/ca.crt" in c["args"]
    # The kubelet's gRPC probe cannot speak TLS: a TCP probe instead.
    assert "tcpSocket" in c["readinessProbe"]
    volumes = one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tls", "secret": {"secretName": "lg-tls"}} in volumes


@pytest.mark.parametrize(
    ("sets", "says"),
    [
        (("insecurePlaintext=true",), "store.url or store.existingSecret is required"),
        (("store.url=postgresql://x@pg/db",), "tls.enabled is false"),
        (("store.url=postgresql://x@pg/db", "tls.enabled=true"), "needs tls.secretName"),
        (
            ("store.url=postgresql://x@pg/db", "insecurePlaintext=true", "cluster.limiter="),
            "cluster.limiter is required",
        ),
    ],
)
def test_a_chart_that_could_not_work_or_would_be_open_is_refused(
    helm: str, sets: tuple[str, ...], says: str
) -> None:
    assert says in refusal(helm, LOCKGATE, *sets)


def test_an_existing_secret_is_used_and_none_is_created(helm: str) -> None:
    docs = render(helm, LOCKGATE, "store.url=", "store.existingSecret=pg-creds")
    assert not [d for d in docs if d["kind"] == "Secret"]
    (c,) = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    store = next(e for e in c["env"] if e["name"] == "LOCKGATE_STORE")
    assert store["valueFrom"]["secretKeyRef"]["name"] == "pg-creds"


def test_the_backbone_is_a_three_server_jetstream_cluster(helm: str) -> None:
    docs = render(helm, BACKBONE)
    sts = one(docs, "StatefulSet")
    assert sts["spec"]["replicas"] == 3
    headless = one(docs, "Service", "headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert sts["spec"]["serviceName"] == headless["metadata"]["name"]
    conf = one(docs, "ConfigMap")["data"]["nats.conf"]
    routes = [line.strip() for line in conf.splitlines() if line.strip().startswith("nats://")]
    assert routes == [
        f"nats://rel-nats-backbone-{i}.rel-nats-backbone-headless.default.svc:6222"
        for i in range(3)
    ]
    assert "jetstream" in conf
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1  # an R3 stream keeps its quorum
    assert sts["metadata"]["labels"]["lockgate.dev/backbone"] == "backbone-eu-1"


def test_nats_server_accepts_the_rendered_configuration(helm: str, tmp_path: Path) -> None:
    server = require_tool("nats-server", "LOCKGATE_TEST_NATS_SERVER")
    conf = one(render(helm, BACKBONE), "ConfigMap")["data"]["nats.conf"]
    conf = conf.replace("/data/jetstream", str(tmp_path / "js"))
    conf = conf.replace("/var/run/nats", str(tmp_path))
    (tmp_path / "nats.conf").write_text(conf)
    done = subprocess.run(
        [server, "-c", str(tmp_path / "nats.conf"), "-t"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "SERVER_NAME": "rel-nats-backbone-0"},
    )
    assert done.returncode == 0 and "is valid" in done.stdout + done.stderr, done.stderr


def test_one_server_backbone_has_no_cluster_block(helm: str) -> None:
    conf = one(render(helm, BACKBONE, "replicas=1"), "ConfigMap")["data"]["nats.conf"]
    assert "cluster {" not in conf
    assert "replicas must be at least 1" in refusal(helm, BACKBONE, "replicas=0")
