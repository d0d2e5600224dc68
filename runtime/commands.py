"""Running a command on one aggregate: read its stream, decide, append with the version read.

When another writer appended first, the command decides again on the new state. A stream of
another clinic reads as absent, so its objects answer "not found" like unknown ones. With
``keys`` (``runtime.personal_data``), personal values are opened before the decision and the
decided events sealed before they are appended: the domain sees plain values only.
"""

from collections.abc import Callable
from typing import TypeVar

from contracts.events import Event, EventRegistry
from runtime.db import Executor
from runtime.eventstore import Cause, ConcurrencyError, EventStore, RecordedEvent
from runtime.personal_data import PersonKeys
from runtime.refusals import Conflict, NotFound

S = TypeVar("S")
Evolve = Callable[[S | None, Event], S | None]
Decide = Callable[[S | None], list[Event]]
CONFLICT_RETRIES = 5


async def load(
    store: EventStore,
    stream_id: str,
    clinic_id: str,
    registry: EventRegistry,
    evolve: Evolve[S],
    absent: NotFound,
    conn: Executor | None = None,
    keys: PersonKeys | None = None,
) -> tuple[S | None, int]:
    """The state and version of a stream; another clinic's stream raises ``absent``."""
    recorded = await store.read_stream(stream_id, conn=conn)
    if recorded and recorded[0].clinic_id != clinic_id:
        raise absent
    payloads = [r.data for r in recorded]
    if keys is not None and payloads:
        payloads = list(await keys.open(conn or store.pool, clinic_id, payloads))
    state: S | None = None
    for r, payload in zip(recorded, payloads, strict=True):
        state = evolve(state, registry.decode(r.type, r.schema_version, payload))
    return state, recorded[-1].version if recorded else 0


async def execute(
    store: EventStore,
    stream_id: str,
    clinic_id: str,
    registry: EventRegistry,
    evolve: Evolve[S],
    decide: Decide[S],
    *,
    absent: NotFound,
    cause: Cause | None = None,
    conn: Executor | None = None,
    keys: PersonKeys | None = None,
) -> list[RecordedEvent]:
    for _ in range(CONFLICT_RETRIES):
        state, version = await load(
            store, stream_id, clinic_id, registry, evolve, absent, conn=conn, keys=keys
        )
        events = decide(state)
        if not events:
            return []
        if keys is not None:
            events = list(await keys.seal(conn or store.pool, clinic_id, events))
        try:
            return await store.append(
                stream_id, version, events, clinic_id=clinic_id, cause=cause, conn=conn
            )
        except ConcurrencyError:
            continue
    raise Conflict("changed_concurrently", "It was changed by another request just now; retry.")
