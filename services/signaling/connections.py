"""The places of the people connected to this replica, kept in Postgres so any replica can
take them over: recorded on joining, given a rejoin grace when a socket drops (or when a
replica's heartbeat stops), and ended when that grace runs out."""

import asyncio
import contextlib
import time
from datetime import timedelta
from functools import partial
from uuid import UUID

from nats.aio.msg import Msg

from contracts.media import participant_subject, quality_subject
from contracts.signaling import LeftBecause
from runtime.sealing import secret_digest
from services.signaling import domain
from services.signaling.connection import Connection
from services.signaling.negotiation import MediaNegotiation
from services.signaling.quality import relay_quality
from services.signaling.replica import Replica
from services.signaling.rooms import Decide

RECORD_CONNECTION = (
    # A connection's row lives only as long as its person is here (and their grace), so its
    # commit does not wait for the WAL to reach the disk (SET LOCAL, as a single statement
    # can). It is never lost alone: the knock or entry appended next commits synchronously,
    # and flushing that commit flushes this earlier one too.
    "WITH asynchronous AS (SELECT set_config('synchronous_commit', 'off', true)) "
    "INSERT INTO connections (participant_id, clinic_id, room_id, resume_digest, grace_s, "
    "cap, loudest_speakers, replica_id, call_features) "
    "SELECT $1::uuid, $2::text, $3::uuid, $4::bytea, $5::real, $6::smallint, $7::smallint, "
    "$8::text, $9::jsonb FROM asynchronous"
)


class Connections:
    def __init__(self, replica: Replica, negotiation: MediaNegotiation) -> None:
        self.replica = replica
        self.negotiation = negotiation
        self._beat_at: float | None = None
        self._steady_since: float | None = None

    async def heartbeat(self) -> None:
        await self.replica.ctx.pool.execute(
            "INSERT INTO replicas (replica_id, seen_at) VALUES ($1, now()) "
            "ON CONFLICT (replica_id) DO UPDATE SET seen_at = now()",
            self.replica.replica_id,
        )
        now = time.monotonic()
        if self._beat_at is None or now - self._beat_at > self.replica.settings.replica_timeout_s:
            # Starting, or back after being unable to write a heartbeat for longer than the
            # timeout (Postgres away): the other replicas could not write theirs either.
            self._steady_since = now
        self._beat_at = now

    def judges_others(self) -> bool:
        """Whether this replica has written its heartbeat without a gap for the whole
        timeout: only then does another's silence mean that one died. After Postgres was
        away, every replica's heartbeat is old, and none is dead for that."""
        steady = self._steady_since
        timeout = self.replica.settings.replica_timeout_s
        return steady is not None and time.monotonic() - steady >= timeout

    async def sweep(self) -> None:
        """Heartbeat; take over the places of dead replicas; end places whose grace ran out."""
        await self.heartbeat()
        now = self.replica.clock()
        if self.judges_others():
            await self._drop_places(
                "c.replica_id <> $2 AND NOT EXISTS (SELECT 1 FROM replicas r WHERE "
                "r.replica_id = c.replica_id AND r.seen_at > now() - make_interval(secs => $3))",
                self.replica.settings.replica_timeout_s,
            )
        lapsed = await self.replica.ctx.pool.fetch(
            "SELECT participant_id, clinic_id, room_id FROM connections "
            "WHERE replica_id IS NULL AND grace_until <= $1",
            now,
        )
        for row in lapsed:
            await self.end_place(
                row["room_id"],
                row["clinic_id"],
                row["participant_id"],
                partial(domain.expire, participant_id=row["participant_id"], now=now),
            )

    async def disown_an_earlier_life(self) -> None:
        """Before this replica serves anyone, places recorded under its name are an earlier
        process's (restarted with the same ``replica_id``, so never silent for long): their
        sockets are gone, so their grace starts now instead of never."""
        await self._drop_places("c.replica_id = $2")

    async def _drop_places(self, which: str, *arguments: object) -> None:
        """The connections ``which`` (SQL over ``c``, with $2 this replica) are gone: their
        rejoin grace starts now."""
        rows = await self.replica.ctx.pool.fetch(
            "UPDATE connections c SET replica_id = NULL, updated_at = now(), "
            "grace_until = $1::timestamptz + make_interval(secs => c.grace_s) "
            f"WHERE c.replica_id IS NOT NULL AND {which} "
            "RETURNING participant_id, clinic_id, room_id, grace_until",
            self.replica.clock(),
            self.replica.replica_id,
            *arguments,
        )
        for row in rows:
            pid, until = row["participant_id"], row["grace_until"]
            await self.replica.rooms.run(
                row["room_id"],
                row["clinic_id"],
                partial(domain.disconnected, participant_id=pid, grace_until=until),
            )

    async def end_place(
        self, room_id: UUID, clinic_id: str, participant_id: UUID, decide: Decide
    ) -> None:
        """Take someone out of the room; when that records nothing (they were gone already),
        forget their connection here, as the after-append hook does otherwise."""
        if not await self.replica.rooms.run(room_id, clinic_id, decide):
            await self.forget(participant_id)

    async def forget(self, participant_id: UUID) -> None:
        await self.replica.ctx.pool.execute(
            "DELETE FROM connections WHERE participant_id = $1", participant_id
        )

    async def attach(self, conn: Connection, *, new: bool) -> None:
        replica = self.replica
        pid, room_id, clinic_id, _ = conn.place()
        old = replica.local.setdefault(room_id, {}).get(pid)
        if old is not None and old is not conn:
            old.close(4001, "replaced by a newer connection")  # a resume, here
        replica.local[room_id][pid] = conn
        if not new:
            await replica.rooms.watch(room_id)
        else:  # at once: reading the room (unless it is followed here), recording the connection
            await asyncio.gather(
                replica.rooms.watch(room_id),
                replica.ctx.pool.execute(
                    RECORD_CONNECTION,
                    pid,
                    clinic_id,
                    room_id,
                    secret_digest(conn.resume_token or ""),
                    conn.grace_s,
                    conn.cap,
                    conn.loudest_speakers,
                    replica.replica_id,
                    conn.features.model_dump(mode="json"),
                ),
            )

        async def from_media(msg: Msg) -> None:
            await self.negotiation.from_media(conn, msg)

        conn.media = await replica.ctx.nats.subscribe(participant_subject(pid), cb=from_media)

        async def from_quality(msg: Msg) -> None:
            relay_quality(conn, msg)

        conn.quality = await replica.ctx.nats.subscribe(quality_subject(room_id), cb=from_quality)

    async def leave(self, conn: Connection) -> None:
        pid, room_id, clinic_id, _ = conn.place()
        now = self.replica.clock()
        conn.done = True
        await self.end_place(
            room_id, clinic_id, pid, lambda r: domain.leave(r, pid, LeftBecause.left, now)
        )
        conn.close()

    async def dropped(self, conn: Connection) -> None:
        """The socket is closed; unless they are gone for good, keep their place for the grace."""
        if conn.participant_id is None or conn.room_id is None or conn.clinic_id is None:
            return
        replica = self.replica
        pid, room_id, clinic_id = conn.participant_id, conn.room_id, conn.clinic_id
        for subscription in (conn.media, conn.quality):
            if subscription is not None:
                with contextlib.suppress(Exception):
                    await subscription.unsubscribe()
        here = replica.local.get(room_id, {})
        if here.get(pid) is conn:
            del here[pid]
            if not here:
                replica.local.pop(room_id, None)
        try:
            if conn.done:
                return
            now = replica.clock()
            grace_s = conn.grace_s
            if conn.page_gone:  # a reload comes back within seconds; a closed tab never does
                grace_s = min(grace_s, replica.settings.page_gone_grace_s)
            until = now + timedelta(seconds=grace_s)
            row = await replica.ctx.pool.fetchrow(
                "UPDATE connections SET replica_id = NULL, grace_until = $3, updated_at = now() "
                "WHERE participant_id = $1 AND replica_id = $2 RETURNING participant_id",
                pid,
                replica.replica_id,
                until,
            )
            if row is None:
                return  # they came back elsewhere already
            if grace_s <= 0:
                await self.end_place(
                    room_id,
                    clinic_id,
                    pid,
                    lambda r: domain.leave(r, pid, LeftBecause.disconnected, now),
                )
            else:
                await replica.rooms.run(
                    room_id, clinic_id, lambda r: domain.disconnected(r, pid, until)
                )
        finally:
            await replica.rooms.unwatch(room_id)
