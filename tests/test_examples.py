"""Every script in examples/ runs against a real broker, so the docs cannot rot."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from lockgate.broker.testing import run_broker

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))
EXPECTED = {
    "quickstart.py": "True warn disk 91% full",
    "request_reply.py": "{'sum': 42}",
    "encrypted_group.py": "bob reads: {'text': 'hello, both of you'}\n"
    "cy reads (epoch 1): {'text': 'hello, both of you'}\n"
    "cy reads (epoch 2): {'text': 'bob has left'}\n"
    "bob cannot decrypt what was sent after it left",
    "trace_one_event.py": "subscriber got {'step': 1} with traceparent "
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n"
    "span 'publish demo.traced' in trace 4bf92f3577b34da6a3ce929d0e0e4736, "
    "child of 00f067aa0ba902b7, 1 event(s)",
}


@pytest.mark.e2e
@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
async def test_example_runs(script: Path) -> None:
    async with run_broker() as b:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            env=dict(os.environ, LOCKGATE_SERVER=b.target, LOCKGATE_DATA_DIR=b.data_dir),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == EXPECTED[script.name]
