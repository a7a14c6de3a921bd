"""The audit log's JSON is written twice: by the HTTP gateway (``GET /v1/audit``, from the
store's record) and by ``lockgate audit --json`` (from the client's record, which may not
import the gateways). The same stored record, taken down the client's real path (the
AuditService message, then the client's record), must come out as the same JSON in both."""

from __future__ import annotations

import json

import pytest

from lockgate.broker.rpc.audit_service import audit_message
from lockgate.broker.store import AuditRecord as StoredAudit
from lockgate.clients._admin_models import AuditRecord as ClientAudit
from lockgate.clients._cli_audit import audit_json as cli_audit_json
from lockgate.gateways._web import audit_json as http_audit_json

RECORDS = [
    StoredAudit(time_ms=1_700_000_000_000, action="publish", id=1),
    StoredAudit(
        time_ms=1_700_000_000_007,
        action="policy.put",
        outcome="denied",
        org="acme",
        agent="ops-bot",
        credential="k_1a2b",
        target="orders.>",
        surface="http",
        peer="10.0.0.7:51234",
        count=5,
        detail={"rule": "deny-all", "version": "v3"},
        id=386148354192572416,
    ),
    StoredAudit(time_ms=1_799_999_999_999, action="durable.delete", surface="cli", id=2**63 - 1),
]


@pytest.mark.parametrize("stored", RECORDS, ids=lambda r: r.action)
def test_the_cli_and_the_gateway_write_the_same_audit_json(stored: StoredAudit) -> None:
    cli = cli_audit_json(ClientAudit._of(audit_message(stored)))
    http = http_audit_json(stored)
    assert list(cli) == list(http)  # same keys, same order
    assert {k: type(v) for k, v in cli.items()} == {k: type(v) for k, v in http.items()}
    # sort_keys: ``detail`` comes through a protobuf map on the client's side, whose order
    # protobuf leaves open (so the two may list its keys in another order).
    assert json.dumps(cli, sort_keys=True) == json.dumps(http, sort_keys=True)
