"""Progress bars of long CLI work on a real broker: ``lockgate history`` and ``lockgate dlq
redrive`` of many ids draw a bar on stderr when it is a terminal (a pty) and write none when
it is a pipe; their stdout is the same either way."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
from google.protobuf import duration_pb2

from lockgate.broker.testing import run_broker
from lockgate.broker.v1 import broker_pb2_grpc
from lockgate.clients import Client
from tests.broker.e2e_kit import event, publish_batches, run_cli, subscribe, unique
from tests.support.waiting import eventually


async def test_history_and_redrive_bars_only_on_a_terminal(tmp_path: Path) -> None:
    async with run_broker(data_dir=str(tmp_path)) as b, grpc.aio.insecure_channel(b.target) as ch:
        stub = broker_pb2_grpc.BrokerServiceStub(ch)
        subject = unique("prog")
        name = unique("d").replace(".", "-")
        doomed = await subscribe(
            stub,
            pattern=subject,
            durable=name,
            ack_wait=duration_pb2.Duration(nanos=100_000_000),
            max_deliveries=1,
        )
        await publish_batches(stub, subject, [[event(str(i)) for i in range(30)]])
        history = ["history", subject, "--since", "-1h", "--limit", "1000", "--server", b.target]
        code, piped_out, piped_err = await asyncio.to_thread(run_cli, history)
        assert code == 0, piped_err
        assert len(piped_out.splitlines()) == 30 and piped_err == ""
        code, tty_out, tty_err = await asyncio.to_thread(run_cli, history, tty="stderr")
        assert code == 0, tty_err
        assert tty_out == piped_out
        assert "\r\x1b[Khistory 30 " in tty_err

        async with Client(b.target) as c:

            async def dead() -> list[int] | None:
                letters = await c.admin.list_dead_letters(name)
                return [d.id for d in letters] if len(letters) == 30 else None

            ids = await eventually(dead, timeout=30)
        await doomed.close()
        # 30 dead letters and 600 ids that are none: two calls of 500 and one of 130.
        many = [*ids, *range(1, 601)]
        redrive = ["dlq", "redrive", name, "--server", b.target]
        half = [a for i in many[:315] for a in ("--id", str(i))]
        code, out, err = await asyncio.to_thread(run_cli, [*redrive, *half])
        assert (code, err) == (0, "")
        assert json.loads(out) == {"redriven": 30}
        code, out, err = await asyncio.to_thread(
            run_cli, [*redrive, *(a for i in many for a in ("--id", str(i)))], tty="stderr"
        )
        assert code == 0, err
        assert json.loads(out) == {"redriven": 0}  # redriven above already
        assert "redrive [" + "#" * 30 + "] 100% 630/630" in err
