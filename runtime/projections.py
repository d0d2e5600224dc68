"""Rebuilding read models from the events."""

from collections.abc import Sequence

import structlog

from runtime.eventstore import EventStore, Projection, read_all

log = structlog.get_logger(__name__)


async def rebuild(store: EventStore, projections: Sequence[Projection] | None = None) -> int:
    """Empty the projections' tables and fold every event into them again; returns the count.

    Runs in one transaction holding the store's append lock, so no event commits half-way
    through and the result equals what the live projections would hold. Appends wait
    (up to their lock timeout) while it runs.
    """
    chosen = tuple(store.projections if projections is None else projections)
    count = 0
    async with store.transaction() as conn:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", store.lock_key)
        tables = [table for projection in chosen for table in projection.tables]
        if tables:
            await conn.execute(f"TRUNCATE {', '.join(tables)}")
        after = 0
        while batch := await read_all(conn, after, 1000):
            for event in batch:
                for projection in chosen:
                    await projection.apply(conn, event)
            count += len(batch)
            after = batch[-1].position
    log.info("projections rebuilt", projections=[p.name for p in chosen], events=count)
    return count
