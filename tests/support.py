"""Events, a projection and helpers that the runtime tests share."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from contracts.envelope import RawEnvelope
from contracts.events import Event, EventRegistry
from runtime.eventstore import Executor, RecordedEvent
from runtime.migrations import Migration
from runtime.streams import stream_name

notes = EventRegistry("notes")


@notes.register
class NoteTaken(Event):
    """A test event: a number noted in a stream."""

    n: int


@notes.register
class NoteStruck(Event):
    """A test event: a note struck out."""

    reason: str


NOTES_MIGRATION = Migration(
    "tests",
    1,
    "notes",
    """
    CREATE TABLE note_counts (
        stream_id text PRIMARY KEY,
        taken     integer NOT NULL DEFAULT 0,
        struck    integer NOT NULL DEFAULT 0,
        total     bigint  NOT NULL DEFAULT 0
    );
    -- What a consumer did, deliberately without a unique key, so a repeated effect shows.
    CREATE TABLE effects (
        id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event_id  uuid   NOT NULL,
        n         integer NOT NULL
    );
    """,
)


class NoteCounts:
    """A projection: per stream, how many notes were taken and struck, and their sum."""

    name = "note_counts"
    tables = ("note_counts",)

    async def apply(self, conn: Executor, event: RecordedEvent) -> None:
        if event.type == "NoteTaken":
            n = int(event.data["n"])
            if n == 666:
                raise ValueError("the projection refuses 666")
            await conn.execute(
                "INSERT INTO note_counts (stream_id, taken, total) VALUES ($1, 1, $2) "
                "ON CONFLICT (stream_id) DO UPDATE SET taken = note_counts.taken + 1, "
                "total = note_counts.total + $2",
                event.stream_id,
                n,
            )
        elif event.type == "NoteStruck":
            await conn.execute(
                "INSERT INTO note_counts (stream_id, struck) VALUES ($1, 1) "
                "ON CONFLICT (stream_id) DO UPDATE SET struck = note_counts.struck + 1",
                event.stream_id,
            )


async def record_effect(_ctx: Any, conn: Executor, event: NoteTaken, envelope: RawEnvelope) -> None:
    if event.n < 0:
        raise RuntimeError(f"negative notes are refused ({event.n})")
    await conn.execute(
        "INSERT INTO effects (event_id, n) VALUES ($1, $2)", envelope.event_id, event.n
    )


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 30.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout}s")


async def stream_count(js: JetStreamContext, service: str) -> int:
    try:
        info = await js.stream_info(stream_name(service))
    except NotFoundError:
        return 0
    return int(info.state.messages)


async def stream_messages(js: JetStreamContext, stream: str) -> list[Any]:
    """Every message in ``stream``, in stream order."""
    info = await js.stream_info(stream)
    first, last = info.state.first_seq, info.state.last_seq
    out: list[Any] = []
    for start in range(first, last + 1, 200):
        chunk = range(start, min(start + 200, last + 1))
        out.extend(await asyncio.gather(*(js.get_msg(stream, seq=s) for s in chunk)))
    return out
