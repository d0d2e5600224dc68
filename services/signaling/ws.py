"""The WebSocket endpoint: one connection per browser, read frame by frame, written by a queue.

Bad frames (not JSON, unknown type, too big, too many, not allowed for the role) get an error
frame with the reason; after ``strikes`` of them the socket is closed with 1008. Nothing a
browser sends can end the process: an unexpected failure is logged and reported as an error
frame.
"""

import asyncio
import contextlib
import json

import asyncpg
import structlog
from fastapi import APIRouter, WebSocket
from pydantic import ValidationError

from contracts.signaling import CallRole
from contracts.signaling_protocol import (
    HOST_ONLY,
    WEBSOCKET_PATH,
    Check,
    Error,
    Join,
    NetworkTest,
    NetworkTestReport,
    Ping,
    Pong,
    Refused,
    Signal,
    client_messages,
)
from runtime.client_address import client_address_of
from runtime.ratelimit import RateLimiter
from services.signaling.calls import Signaling
from services.signaling.connection import Connection

log = structlog.get_logger(__name__)
router = APIRouter()
WRITER_GRACE_S = 2.0
GOING_AWAY = 1001
"""The close code a browser sends for the sockets of a page that is unloading (RFC 6455)."""
DATABASE_AWAY = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up
)
"""What a frame's handling raises while Postgres restarts or fails over."""
BRIEFLY_UNAVAILABLE = "The service is briefly unavailable; please try again in a moment."


@router.websocket(WEBSOCKET_PATH)
async def signaling_socket(websocket: WebSocket) -> None:
    signaling: Signaling = websocket.app.state.signaling
    if not signaling.ready.is_set():
        # Accepted, then closed with 1013 (try again later), so the client sees why: a close
        # before the accept is answered with a bare HTTP 403, which says "forbidden".
        await websocket.accept()
        await websocket.close(1013, "the service is starting; try again")
        return
    await websocket.accept()
    conn = Connection(websocket, address=client_address_of(websocket) or "unknown")
    writer = asyncio.create_task(_write(conn))
    try:
        await _read(signaling, conn)
    finally:
        conn.close(1000, done=False)  # a no-op when it was already closing
        with contextlib.suppress(Exception):
            async with asyncio.timeout(WRITER_GRACE_S):
                await writer
        writer.cancel()
        try:
            await signaling.dropped(conn)
        except Exception:
            log.exception("a dropped connection could not be recorded")


async def _write(conn: Connection) -> None:
    try:
        while (text := await conn.outbox.get()) is not None:
            await conn.websocket.send_text(text)
        await conn.websocket.close(conn.close_code, conn.close_reason)
    except Exception:  # noqa: S110 - the browser went away; the reader notices
        pass


async def _read(signaling: Signaling, conn: Connection) -> None:
    s = signaling.settings
    frames = RateLimiter(s.frames_per_second * 60, s.frame_burst)  # this connection's only
    strikes = 0
    # One deadline from the accept: a per-frame timeout would let pings keep a client that
    # never joins connected for ever.
    join_by = asyncio.get_running_loop().time() + s.join_timeout_s

    def strike(code: str, message: str) -> None:
        nonlocal strikes
        strikes += 1
        conn.send(Error(code=code, message=message))
        if strikes >= s.strikes:
            conn.close(1008, "too many bad frames", done=False)

    while not conn.closing:
        try:
            async with asyncio.timeout_at(_deadline(conn, join_by)):
                received = await conn.websocket.receive()
        except TimeoutError:
            if conn.network_test is not None:
                conn.send(Error(code="test_timeout", message="The network test was not reported."))
                conn.close(1008, "no report", done=False)
                await signaling.network_tests.abandoned(conn)
                return
            conn.send(Error(code="join_timeout", message="Send a join first, within seconds."))
            conn.close(1008, "no join", done=False)
            return
        if received["type"] == "websocket.disconnect":
            conn.page_gone = received.get("code") == GOING_AWAY
            return
        text = received.get("text")
        if text is None:
            strike("binary_frame", "Frames must be JSON text.")
            continue
        if len(text.encode()) > s.max_frame_bytes:
            strike("frame_too_large", f"Frames may be at most {s.max_frame_bytes} bytes.")
            continue
        if frames.retry_after("frames") is not None:
            strike("too_many_messages", "Too many messages; slow down.")
            continue
        try:
            message = client_messages.validate_python(json.loads(text))
        except (json.JSONDecodeError, RecursionError):  # RecursionError: nested too deep
            strike("malformed_json", "That frame is not valid JSON.")
            continue
        except ValidationError as exc:
            strike("invalid_message", _explain(exc))
            continue
        except ValueError:  # valid JSON Python will not read: an integer of over 4300 digits
            strike("invalid_message", "That message holds a number too long to read.")
            continue
        if isinstance(message, Ping):
            conn.send(Pong())
            continue
        if conn.participant_id is None:
            if conn.network_test is not None:
                if not isinstance(message, Signal | NetworkTestReport):
                    strike("test_running", "Only the network test's frames, until it ends.")
                    continue
                try:
                    await signaling.network_tests.step(conn, message)
                except Exception:
                    log.exception("a network test frame could not be handled", type=message.type)
                    conn.send(Error(code="internal", message="The network test failed here."))
                    conn.close(1011, "network test failed", done=False)
                continue
            if isinstance(message, Check):
                await signaling.check(conn, message)
                continue
            if isinstance(message, NetworkTest):
                await signaling.network_tests.start(conn, message)
                continue
            if not isinstance(message, Join):
                strike("join_first", "Send a join (or a check) before anything else.")
                continue
        elif isinstance(message, Join | Check | NetworkTest | NetworkTestReport):
            strike("already_joined", "This connection has already joined.")
            continue
        elif message.type in HOST_ONLY and conn.role is not CallRole.host:
            strike("only_hosts", "Only a host can do that.")
            continue
        try:
            if isinstance(message, Join):
                await signaling.join(conn, message)
            else:
                await signaling.command(conn, message)
        except DATABASE_AWAY as exc:
            # Not a fault of the frame: the client sends it again in a moment, as with any 503.
            log.warning("a frame waits for Postgres", type=message.type, error=repr(exc))
            if isinstance(message, Join):
                conn.send(
                    Refused(
                        reason="unavailable",
                        status=503,
                        message=BRIEFLY_UNAVAILABLE,
                        retry_after_s=1.0,
                    )
                )
                conn.close(done=False)
            else:
                conn.send(Error(code="unavailable", message=BRIEFLY_UNAVAILABLE))
        except Exception:
            log.exception("a frame could not be handled", type=message.type)
            conn.send(Error(code="internal", message="Something went wrong here; try again."))


def _deadline(conn: Connection, join_by: float) -> float | None:
    """A joined socket has none; a network test's is its report's; any other, the join's."""
    if conn.participant_id is not None:
        return None
    return conn.network_test.deadline if conn.network_test is not None else join_by


def _explain(exc: ValidationError) -> str:
    first = exc.errors()[0]
    if first["type"] == "union_tag_invalid" or first["type"] == "union_tag_not_found":
        return "Unknown message type; see the protocol's message types."
    where = ".".join(str(p) for p in first["loc"][1:]) or "message"
    return f"That message is not valid: {where}: {first['msg']}."
