"""The public surface is pinned, and importing the client never drags in the server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lockgate import clients

EXPECTED = [
    "Admin",
    "AgentKey",
    "AlreadyExists",
    "AttributeValue",
    "AuditRecord",
    "Backbone",
    "BackboneDeployer",
    "Backoff",
    "Client",
    "ClusterAdmin",
    "ClusterNode",
    "ConfigChange",
    "ConfigSetting",
    "ConfigVersion",
    "Conversation",
    "ConversationMessage",
    "Conversations",
    "DeadLetter",
    "DecryptionError",
    "Deployment",
    "DurableInfo",
    "DurableState",
    "DurableStatus",
    "Event",
    "FailedPrecondition",
    "HelmError",
    "InvalidArgument",
    "InvalidEvent",
    "InvalidSubject",
    "KeyMismatch",
    "Keystore",
    "LockgateError",
    "Message",
    "MessageBatch",
    "NoResponders",
    "NodeStatus",
    "NotFound",
    "Participant",
    "PendingDelivery",
    "PermissionDenied",
    "PolicyProblem",
    "PolicySet",
    "PolicyUpdate",
    "PolicyVersion",
    "Presence",
    "PublishResult",
    "QuotaExceeded",
    "RateLimited",
    "Receipt",
    "RequestTimeout",
    "SendResult",
    "SlowConsumer",
    "StartSpec",
    "StoredEvent",
    "Subscription",
    "TLS",
    "TLSError",
    "Unauthenticated",
    "Unavailable",
    "UnsafeKeystore",
    "WebhookSecrets",
    "WebhookSignatureError",
    "decode_data",
    "from_rpc_error",
    "to_cloudevent",
    "verify_webhook",
]


def test_public_names_are_pinned() -> None:
    assert sorted(clients.__all__) == EXPECTED
    for name in clients.__all__:
        assert getattr(clients, name) is not None


# The server's dependencies and our other packages: an agent installs the client without them.
FORBIDDEN = (
    "lark",
    "re2",
    "opentelemetry",
    "uvloop",
    "asyncpg",
    "nats",
    "redis",
    "aiohttp",
    "pydantic",
    "policy",
    "gateways",
)
# All of the broker the client may load: the package itself, the stubs and the wire codec.
ALLOWED_BROKER = ("lockgate.broker", "lockgate.broker.v1", "lockgate.broker.wire")


def test_importing_clients_does_not_import_the_server() -> None:
    code = (
        "import sys, json, lockgate.clients, lockgate.clients._cli; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    ).stdout
    loaded = set(json.loads(out))
    assert {
        "lockgate.clients._client",
        "grpc",
        "lockgate.broker.v1.broker_pb2",
        "lockgate.broker.wire",
    } <= loaded
    forbidden = {m for m in loaded if m.removeprefix("lockgate.").split(".")[0] in FORBIDDEN}
    assert not forbidden, forbidden
    server_modules = {
        m
        for m in loaded
        if m.removeprefix("lockgate.").split(".")[0] == "broker"
        and m not in ALLOWED_BROKER
        and not m.startswith("lockgate.broker.v1.")
    }
    assert not server_modules, server_modules
