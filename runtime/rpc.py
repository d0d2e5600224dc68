"""Request/reply between services over NATS, for answers needed now (resolve a link, check a key).

Subjects are ``rpc.<service>.<name>``: outside ``antechamber.>``, so no event stream captures
a request. Every replica of a service answers in one queue group; each request runs in its
own task (bounded), so one slow answer does not hold up the others. A request that cannot be
read is answered with an error body saying why, never left to time out.
"""

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from pydantic import BaseModel, ValidationError

from runtime.caller import Identity, NotTheCaller
from runtime.context import ServiceContext

log = structlog.get_logger(__name__)
R = TypeVar("R", bound=BaseModel)
MAX_IN_FLIGHT = 512

Answer = Callable[[ServiceContext, bytes], Awaitable[bytes]]


def rpc_subject(service: str, name: str) -> str:
    return f"rpc.{service}.{name}"


@dataclass(frozen=True)
class Endpoint:
    subject: str
    answer: Answer
    description: str = ""
    callers: frozenset[str] = frozenset()
    """The only services it answers, by their signed claim (:mod:`runtime.caller`); empty:
    whoever NATS lets publish to the subject."""

    @property
    def action(self) -> str:
        return self.subject.rsplit(".", 1)[-1]


class RpcError(RuntimeError):
    """The other service answered with an error, or not at all."""


def error_reply(reason: str) -> bytes:
    return json.dumps({"error": reason}).encode()


def parse(model: type[R], data: bytes) -> R | bytes:
    """The request as ``model``, or an error reply that says what is wrong with it."""
    try:
        return model.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return error_reply(f"malformed request: {where}: {first['msg']}")


def answering(model: type[R], handle: Callable[[ServiceContext, R], Awaitable[bytes]]) -> Answer:
    """An endpoint's answer that reads the request as ``model`` first; a request that cannot
    be read gets the error reply that :func:`parse` gives."""

    async def answer(ctx: ServiceContext, data: bytes) -> bytes:
        request = parse(model, data)
        return request if isinstance(request, bytes) else await handle(ctx, request)

    return answer


async def serve(
    nc: NATS, endpoints: list[Endpoint], context: ServiceContext, queue: str
) -> list[Subscription]:
    if any(e.callers for e in endpoints) and context.identity is None:
        log.warning(
            "NATS authentication is off: endpoints that serve named callers answer anyone",
            subjects=[e.subject for e in endpoints if e.callers],
        )
    slots = asyncio.Semaphore(MAX_IN_FLIGHT)
    tasks: set[asyncio.Task[None]] = set()

    async def run(endpoint: Endpoint, msg: Msg) -> None:
        try:
            refusal = _refusal(endpoint, context, msg)
            reply = refusal or await endpoint.answer(context, msg.data)
        except Exception as exc:
            log.error("rpc failed", subject=endpoint.subject, exc_info=exc)
            reply = error_reply(f"the {queue} service failed to answer ({type(exc).__name__})")
        finally:
            slots.release()
        if msg.reply:
            await msg.respond(reply)

    subscriptions = []
    for endpoint in endpoints:

        async def on_request(msg: Msg, endpoint: Endpoint = endpoint) -> None:
            await slots.acquire()
            task = asyncio.create_task(run(endpoint, msg))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        subscriptions.append(await nc.subscribe(endpoint.subject, queue=queue, cb=on_request))
    return subscriptions


def _refusal(endpoint: Endpoint, context: ServiceContext, msg: Msg) -> bytes | None:
    """An error reply when the endpoint serves named callers and this is not one of them."""
    if not endpoint.callers or context.identity is None:
        # Without a NATS identity of its own the service runs on a NATS without
        # authentication, where anyone can publish anything: a claim would prove nothing.
        return None
    try:
        caller = context.identity.caller(msg.headers, endpoint.action, msg.data)
    except NotTheCaller as exc:
        log.warning("rpc refused: no valid caller claim", subject=endpoint.subject, why=str(exc))
        return error_reply(f"refused: {exc}")
    if caller not in endpoint.callers:
        log.warning("rpc refused: caller not served", subject=endpoint.subject, caller=caller)
        return error_reply(f"refused: {endpoint.action} is not for {caller or 'this caller'}")
    return None


async def call(
    nc: NATS,
    subject: str,
    request: BaseModel,
    answer: type[R],
    wait_s: float = 2.0,
    *,
    attempts: int = 1,
    identity: Identity | None = None,
) -> R:
    """Ask and wait up to ``wait_s`` in all. With ``attempts`` > 1 (only for requests that may
    be answered twice: reads, and requests the other side de-duplicates), the wait is split
    and an unanswered request is sent again: a request lost with a NATS node that died, or
    sent while the responder was reconnecting, is answered by the next. With ``identity``,
    the request carries its signed claim (for endpoints that serve named callers)."""
    data = request.model_dump_json().encode()
    each = wait_s / attempts
    action = subject.rsplit(".", 1)[-1]
    for attempt in range(1, attempts + 1):
        headers = identity.headers(action, data) if identity is not None else None
        try:
            msg = await nc.request(subject, data, timeout=each, headers=headers)
            break
        except NoRespondersError as exc:
            if attempt == attempts:
                raise RpcError(f"no answer on {subject}: no service is listening") from exc
            await asyncio.sleep(min(0.2, each))
        except TimeoutError as exc:
            if attempt == attempts:
                raise RpcError(f"no answer on {subject} within {wait_s}s") from exc
    body = json.loads(msg.data)
    if isinstance(body, dict) and "error" in body:
        raise RpcError(str(body["error"]))
    return answer.model_validate(body)
