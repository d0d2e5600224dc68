"""Request/reply between services: answers, malformed requests and failures all get a reply."""

from typing import Any

import pytest
from nats.aio.client import Client as NATS
from pydantic import BaseModel

from runtime.context import ServiceContext
from runtime.rpc import Endpoint, RpcError, call, parse, serve


class Question(BaseModel):
    n: int


class Reply(BaseModel):
    doubled: int


async def double(_ctx: ServiceContext, data: bytes) -> bytes:
    question = parse(Question, data)
    if isinstance(question, bytes):
        return question
    if question.n < 0:
        raise ValueError("negative")
    return Reply(doubled=question.n * 2).model_dump_json().encode()


async def test_answers_errors_and_failures_all_come_back(nc: NATS, service_name: str) -> None:
    subject = f"rpc.{service_name}.double"
    context: Any = None
    subscriptions = await serve(nc, [Endpoint(subject, double)], context, queue=service_name)
    try:
        assert await call(nc, subject, Question(n=21), Reply) == Reply(doubled=42)
        with pytest.raises(RpcError, match="malformed request: n"):
            await call(nc, subject, Reply(doubled=1), Reply)
        with pytest.raises(RpcError, match="failed to answer"):
            await call(nc, subject, Question(n=-1), Reply)
        with pytest.raises(RpcError, match="no answer"):
            await call(nc, f"{subject}.nobody", Question(n=1), Reply, wait_s=0.3)
    finally:
        for subscription in subscriptions:
            await subscription.unsubscribe()


async def test_a_request_lost_on_the_way_is_sent_again_when_attempts_allow(
    nc: NATS, service_name: str
) -> None:
    """The first request vanishes (as with a NATS node that died); the second is answered."""
    subject = f"rpc.{service_name}.lossy"
    seen: list[bytes] = []

    async def lossy(msg: Any) -> None:
        seen.append(msg.data)
        if len(seen) % 2 == 0:
            await msg.respond(
                Reply(doubled=2 * Question.model_validate_json(msg.data).n)
                .model_dump_json()
                .encode()
            )

    subscription = await nc.subscribe(subject, cb=lossy)
    try:
        with pytest.raises(RpcError, match="no answer"):
            await call(nc, subject, Question(n=1), Reply, wait_s=0.4)
        seen.clear()
        assert await call(nc, subject, Question(n=4), Reply, wait_s=0.8, attempts=2) == Reply(
            doubled=8
        )
        assert len(seen) == 2  # the same request, twice
        assert seen[0] == seen[1]
    finally:
        await subscription.unsubscribe()
