"""RequestStream batches (``RequestStream`` in protos/broker/v1/broker.proto): the broker
announces them, reads several requests from one message, and puts answers that are ready at
once in one message only for a client that asked (an older client never sees ``more``)."""

from __future__ import annotations

import asyncio

import pytest

from lockgate.broker.rpc.broker_service import REQUEST_BATCHES
from lockgate.broker.v1 import broker_pb2
from tests.broker.e2e_kit import Metadata, Stubs, Sub, event, subscribe, unique

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]


def _request(rid: int, subject: str) -> broker_pb2.RequestStreamRequest:
    return broker_pb2.RequestStreamRequest(
        request_id=rid, request=broker_pb2.RequestRequest(subject=subject, event=event(f"q{rid}"))
    )


async def _answer(stubs: Stubs, sub: Sub, n: int) -> None:
    """Replies to ``n`` requests, all at once once all ``n`` arrived."""
    deliveries = await sub.collect(n, 10)
    assert len(deliveries) == n
    await asyncio.gather(
        *(
            stubs.broker.PublishOne(
                broker_pb2.PublishOneRequest(
                    subject=d.reply_to, event=event(f"re: {d.event.text_data}")
                ),
                timeout=10,
            )
            for d in deliveries
        )
    )


async def _ask(
    stubs: Stubs, metadata: Metadata
) -> tuple[tuple[tuple[str, str], ...], dict[int, str], list[broker_pb2.RequestStreamResponse]]:
    """Three requests in one message: the broker's initial metadata, the answers by request
    id and the messages they came in."""
    subject = unique("batch")
    sub = await subscribe(stubs.broker, pattern=subject)
    responder = asyncio.create_task(_answer(stubs, sub, 3))
    call = stubs.broker.RequestStream(metadata=metadata)
    first = _request(1, subject)
    first.more.extend([_request(2, subject), _request(3, subject)])
    await call.write(first)
    initial = tuple(await call.initial_metadata())
    messages: list[broker_pb2.RequestStreamResponse] = []
    answers: dict[int, str] = {}
    while len(answers) < 3:
        message = await asyncio.wait_for(call.read(), 10)
        messages.append(message)
        for a in (message, *message.more):
            answers[a.request_id] = a.event.text_data
    await responder
    call.cancel()
    await sub.close()
    return initial, answers, messages


async def test_one_message_carries_several_requests(stubs: Stubs) -> None:
    for metadata in ((), ((REQUEST_BATCHES, "1"),)):
        initial, answers, _ = await _ask(stubs, metadata)
        assert (REQUEST_BATCHES, "1") in initial
        assert answers == {1: "re: q1", 2: "re: q2", 3: "re: q3"}


async def test_a_client_that_did_not_ask_gets_one_answer_a_message(stubs: Stubs) -> None:
    _, answers, messages = await _ask(stubs, ())
    assert len(answers) == 3
    assert [len(m.more) for m in messages] == [0, 0, 0]
