"""Writes held back and sent together: runs of one statement as one pipelined round trip.

Projections (per group of appends) and consumers' handlers (per batch of events) write one
row at a time, one statement per event. Given a :class:`HeldWrites` in place of their
connection, those writes wait until ``flush``, which sends each run of the same statement as
one ``executemany`` (asyncpg pipelines it: one round trip for the run). A read flushes first,
so it sees every write made before it; ``execute`` therefore returns no status.

A write that fails, fails at ``flush``, still inside the caller's transaction: the caller
(the append, the consumer's batch) fails as a whole and retries each part on its own.
"""

from collections.abc import Iterable, Sequence
from typing import Any, cast

import asyncpg

from runtime.db import Executor


class HeldWrites:
    def __init__(self, conn: Executor) -> None:
        self.conn = conn
        self.pending: list[tuple[str, tuple[Any, ...]]] = []

    def executor(self) -> Executor:
        """This, typed as the connection it stands in for (it offers what handlers use:
        execute, executemany, fetch, fetchrow, fetchval, fetchmany)."""
        return cast("Executor", self)

    async def execute(self, query: str, *args: Any) -> str:
        self.pending.append((query, args))
        return ""

    async def executemany(self, query: str, args: Iterable[Sequence[Any]]) -> None:
        self.pending += [(query, tuple(a)) for a in args]

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        await self.flush()
        return await self.conn.fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        await self.flush()
        return await self.conn.fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        await self.flush()
        return await self.conn.fetchval(query, *args)

    async def fetchmany(self, query: str, args: Iterable[Sequence[Any]]) -> list[asyncpg.Record]:
        await self.flush()
        return await self.conn.fetchmany(query, args)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"a handler's or projection's connection holds its writes back and offers only "
            f"execute, executemany and fetch*, not {name!r}"
        )

    async def flush(self) -> None:
        pending, self.pending = self.pending, []
        i = 0
        while i < len(pending):
            query, args = pending[i]
            end = i + 1
            if args:  # a statement without parameters may hold several: sent on its own
                while end < len(pending) and pending[end][0] == query and pending[end][1]:
                    end += 1
            if end - i == 1:
                await self.conn.execute(query, *args)
            else:
                await self.conn.executemany(query, [a for _, a in pending[i:end]])
            i = end
