"""Writes broker/v1/reasons.py: the ErrorReason enum of protos/broker/v1/errors.proto as a
Python ``StrEnum`` whose values are the names without the ``ERROR_REASON_`` prefix (the strings
that travel in ``ErrorInfo.reason``). Run by scripts/gen_protos.sh after protoc."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lockgate.broker.v1 import errors_pb2

PREFIX = "ERROR_REASON_"


def render() -> str:
    names = [
        v.name[len(PREFIX) :] for v in errors_pb2.ErrorReason.DESCRIPTOR.values if v.number != 0
    ]
    lines = [
        "# Generated from protos/ by scripts/gen_protos.sh; do not edit.",
        '"""The error reasons of ``broker.v1.ErrorReason`` as strings (the prefix dropped).',
        "",
        "Each value is what travels in ``google.rpc.ErrorInfo.reason``, ``PublishError.reason``",
        'and the gateways\' error bodies: ``Reason.POLICY_DENIED == "POLICY_DENIED"``.',
        '"""',
        "",
        "from enum import StrEnum",
        "",
        '__all__ = ["Reason"]',
        "",
        "",
        "class Reason(StrEnum):",
        '    """Why an error happened; see protos/broker/v1/errors.proto for each value."""',
        "",
    ]
    lines += [f'    {n} = "{n}"' for n in names]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    Path(sys.argv[1]).write_text(render(), encoding="utf-8")
