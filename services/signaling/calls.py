"""The signaling service at work: the people connected to this replica and what they are told.

``Signaling`` joins a browser (resolving its link with the links service, asking the media
node for a seat), runs the hosts' commands on the room aggregate, and turns every change of a
room, made here or on another replica, into frames for the people of that room connected
here. A background loop keeps this replica's heartbeat and ends the places of people whose
connection dropped and who did not come back within the rejoin grace (also for a replica
that died: its heartbeat stops).
"""

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar
from uuid import UUID, uuid4

import structlog
from fastapi import WebSocket
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import BaseModel, ValidationError

from contracts.events import Event
from contracts.links import RESOLVE_SUBJECT, Decision, ResolveRequest
from contracts.media import (
    RELEASE_SUBJECT,
    SEAT_SUBJECT,
    MediaSignal,
    MediaSignalReply,
    Negotiation,
    RecordingAction,
    RecordingCommand,
    RecordingReply,
    SeatAnswer,
    SeatRelease,
    SeatReleased,
    SeatRequest,
    participant_subject,
    record_subject,
    signal_subject,
)
from contracts.signaling import (
    CallRole,
    EndedBecause,
    GuestKnocked,
    GuestPutOnHold,
    KnockWithdrawn,
    LeftBecause,
    ParticipantDenied,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantRemoved,
    RecordingStopped,
    SessionEnded,
)
from contracts.signaling_protocol import (
    Admit,
    Admitted,
    Check,
    Denied,
    Deny,
    Ended,
    EndForAll,
    Error,
    Hold,
    Join,
    Knock,
    Leave,
    LinkReady,
    Lock,
    MuteKnocks,
    Participants,
    Present,
    Recording,
    Refused,
    Remove,
    Removed,
    RoomView,
    SeatRefused,
    Signal,
    StartRecording,
    StopRecording,
    Unlock,
    UnmuteKnocks,
    Waiting,
    WaitingGuest,
    WaitingState,
    Welcome,
)
from runtime import refusals
from runtime.clock import Clock, system_clock
from runtime.context import ServiceContext
from runtime.participant_tokens import ParticipantKeySettings, mint
from runtime.ratelimit import RateLimiter
from runtime.rpc import RpcError, call
from runtime.sealing import secret_digest
from services.signaling import domain
from services.signaling.config import SignalingSettings
from services.signaling.domain import Person, Room, Status
from services.signaling.rooms import Decide, Rooms

log = structlog.get_logger(__name__)
A = TypeVar("A", bound=BaseModel)
NEGOTIATION = set(Negotiation.model_fields)

RESUME_LAPSED = Refused(
    reason="resume_expired",
    status=410,
    message="Your place in this call has lapsed; open your link again to rejoin.",
)
UNAVAILABLE = "The video service is not available right now; please try again in a minute."
HOLD_MESSAGE = "The host asked you to wait a little longer."
DENIED_MESSAGE = "The host could not let you in this time."
REMOVED_MESSAGE = "The host removed you from the call."
ENDED_MESSAGE = "The host ended the meeting for everyone."
RECORDING_ON = "This call is being recorded."
RECORDING_OFF = "The recording has stopped."
WAITING_MESSAGES = {
    WaitingState.waiting_for_host: "Waiting for the host: you will be let in when they arrive.",
    WaitingState.host_notified: "The host has been notified and will let you in shortly.",
}


MAX_QUEUED = 1000
"""Frames waiting for a browser that does not read them, before it is disconnected."""

RECORD_CONNECTION = (
    # A connection's row lives only as long as its person is here (and their grace), so its
    # commit does not wait for the WAL to reach the disk (SET LOCAL, as a single statement
    # can). It is never lost alone: the knock or entry appended next commits synchronously,
    # and flushing that commit flushes this earlier one too.
    "WITH asynchronous AS (SELECT set_config('synchronous_commit', 'off', true)) "
    "INSERT INTO connections (participant_id, clinic_id, room_id, resume_digest, grace_s, "
    "cap, loudest_speakers, replica_id) "
    "SELECT $1::uuid, $2::text, $3::uuid, $4::bytea, $5::real, $6::smallint, $7::smallint, "
    "$8::text FROM asynchronous"
)


class Unavailable(refusals.Refused):
    status = 503


@dataclass(eq=False)
class Connection:
    """One browser's WebSocket on this replica."""

    websocket: WebSocket
    address: str
    participant_id: UUID | None = None
    room_id: UUID | None = None
    clinic_id: str | None = None
    role: CallRole | None = None
    cap: int = 16
    loudest_speakers: int | None = None
    grace_s: float = 0.0
    resume_token: str | None = None
    outbox: "asyncio.Queue[str | None]" = field(default_factory=asyncio.Queue)
    close_code: int = 1000
    close_reason: str = ""
    closing: bool = False
    done: bool = False
    """Gone for good (left, denied, removed, ended, replaced): no rejoin grace on close."""
    last_sent: dict[str, str] = field(default_factory=dict)
    media: Subscription | None = None

    def place(self) -> tuple[UUID, UUID, str, CallRole]:
        """(participant, room, clinic, role) of a joined connection."""
        if not (self.participant_id and self.room_id and self.clinic_id and self.role):
            raise RuntimeError("this connection has not joined")
        return self.participant_id, self.room_id, self.clinic_id, self.role

    def send(self, message: BaseModel) -> None:
        if self.outbox.qsize() > MAX_QUEUED:
            self.close(1008, "not reading its messages", done=False)
        if not self.closing:
            self.outbox.put_nowait(message.model_dump_json())

    def send_once(self, key: str, message: BaseModel) -> None:
        """Send unless the same frame of this kind was the last one sent."""
        text = message.model_dump_json()
        if self.last_sent.get(key) != text and not self.closing:
            self.last_sent[key] = text
            self.outbox.put_nowait(text)

    def close(self, code: int = 1000, reason: str = "", *, done: bool = True) -> None:
        if self.closing:
            return
        self.done = self.done or done
        self.closing = True
        self.close_code, self.close_reason = code, reason
        self.outbox.put_nowait(None)


def refused_frame(decision: Decision) -> Refused:
    return Refused(
        reason=decision.reason.value if decision.reason else "refused",
        status=decision.status,
        message=decision.message,
        opens_at=decision.opens_at,
        closes_at=decision.closes_at,
        retry_after_s=decision.retry_after_s,
        replaced_by_hint=decision.replaced_by_hint,
    )


def refusal_frame(exc: refusals.Refused) -> Refused:
    return Refused(reason=exc.code, status=exc.status, message=exc.detail)


class Signaling:
    def __init__(
        self,
        settings: SignalingSettings | None = None,
        key_source: Callable[[], str] | None = None,
        clock: Clock = system_clock,
    ) -> None:
        self.settings = settings or SignalingSettings()
        self._key_source = key_source or (lambda: ParticipantKeySettings().key())
        self._key: str | None = None
        self.clock = clock
        self.replica_id = self.settings.replica_id
        self.local: dict[UUID, dict[UUID, Connection]] = {}
        self.ready = asyncio.Event()
        self._ctx: ServiceContext | None = None
        self._rooms: Rooms | None = None
        self._background: set[asyncio.Task[Any]] = set()
        s = self.settings
        self.knocks_by_address = RateLimiter(
            s.knocks_per_address_per_minute, s.knocks_per_address_burst
        )
        self.knocks_by_link = RateLimiter(s.knocks_per_link_per_minute, s.knocks_per_link_burst)

    @property
    def key(self) -> str:
        if self._key is None:
            self._key = self._key_source()
        return self._key

    @property
    def ctx(self) -> ServiceContext:
        assert self._ctx is not None, "the signaling service has not started"
        return self._ctx

    @property
    def rooms(self) -> Rooms:
        assert self._rooms is not None, "the signaling service has not started"
        return self._rooms

    # --- running ----------------------------------------------------------------------------

    async def run(self, ctx: ServiceContext) -> None:
        """The service's background task: start, then sweep until cancelled."""
        self._ctx = ctx
        self._rooms = Rooms(
            ctx, self.replica_id, self.react, self.on_notice, self.settings.room_linger_s
        )
        self._rooms.after_append(self._after_append)
        await self.heartbeat()
        await self._disown_an_earlier_life()
        self.ready.set()
        sweeps = 0
        while True:
            await asyncio.sleep(self.settings.sweep_s)
            sweeps += 1
            try:
                await self.sweep()
                if sweeps % 5 == 0:
                    await self.rooms.resync()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sweeping lapsed places failed; trying again")

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def heartbeat(self) -> None:
        await self.ctx.pool.execute(
            "INSERT INTO replicas (replica_id, seen_at) VALUES ($1, now()) "
            "ON CONFLICT (replica_id) DO UPDATE SET seen_at = now()",
            self.replica_id,
        )

    async def sweep(self) -> None:
        """Heartbeat; take over the places of dead replicas; end places whose grace ran out."""
        await self.heartbeat()
        now = self.clock()
        await self._drop_places(
            "c.replica_id <> $2 AND NOT EXISTS (SELECT 1 FROM replicas r"
            " WHERE r.replica_id = c.replica_id AND r.seen_at > now() - make_interval(secs => $3))",
            self.settings.replica_timeout_s,
        )
        lapsed = await self.ctx.pool.fetch(
            "SELECT participant_id, clinic_id, room_id FROM connections "
            "WHERE replica_id IS NULL AND grace_until <= $1",
            now,
        )
        for row in lapsed:
            await self._end_place(
                row["room_id"],
                row["clinic_id"],
                row["participant_id"],
                partial(domain.expire, participant_id=row["participant_id"], now=now),
            )

    async def _disown_an_earlier_life(self) -> None:
        """Before this replica serves anyone, places recorded under its name are an earlier
        process's (restarted with the same ``replica_id``, so never silent for long): their
        sockets are gone, so their grace starts now instead of never."""
        await self._drop_places("c.replica_id = $2")

    async def _drop_places(self, which: str, *arguments: object) -> None:
        """The connections ``which`` (SQL over ``c``, with $2 this replica) are gone: their
        rejoin grace starts now."""
        rows = await self.ctx.pool.fetch(
            "UPDATE connections c SET replica_id = NULL, updated_at = now(), "
            "grace_until = $1::timestamptz + make_interval(secs => c.grace_s) "
            f"WHERE c.replica_id IS NOT NULL AND {which} "
            "RETURNING participant_id, clinic_id, room_id, grace_until",
            self.clock(),
            self.replica_id,
            *arguments,
        )
        for row in rows:
            pid, until = row["participant_id"], row["grace_until"]
            await self.rooms.run(
                row["room_id"],
                row["clinic_id"],
                partial(domain.disconnected, participant_id=pid, grace_until=until),
            )

    async def _end_place(
        self, room_id: UUID, clinic_id: str, participant_id: UUID, decide: Decide
    ) -> None:
        """Take someone out of the room; when that records nothing (they were gone already),
        forget their connection here, as the after-append hook does otherwise."""
        if not await self.rooms.run(room_id, clinic_id, decide):
            await self._forget(participant_id)

    # --- joining ----------------------------------------------------------------------------

    async def join(self, conn: Connection, message: Join) -> None:
        if message.resume:
            await self._resume(conn, message.resume)
            return
        decision = await self._allowed(conn, message)
        if decision is None:
            return
        room_id = decision.room_id or decision.session_id
        if room_id is None or decision.clinic_id is None:
            conn.send(Refused(reason="unknown", status=404, message=decision.message))
            conn.close()
            return
        role = CallRole.host if decision.role == "host" else CallRole.guest
        direct = role is CallRole.host or decision.admission == "direct"
        if role is CallRole.guest and decision.link_id is not None:
            wait = self.knocks_by_link.retry_after(str(decision.link_id))
            if wait is not None:
                self._rate_limited(conn, wait)
                return
        name = " ".join(message.name.split()) or ("Host" if role is CallRole.host else "Guest")
        conn.participant_id, conn.room_id, conn.clinic_id = uuid4(), room_id, decision.clinic_id
        conn.role = role
        conn.cap = min(decision.max_participants or 16, 16)
        conn.loudest_speakers = decision.loudest_speakers
        conn.grace_s = float((decision.rejoin_grace_minutes or 0) * 60)
        conn.resume_token = secrets.token_urlsafe(32)
        await self._attach(conn, new=True)
        conn.send(
            Welcome(
                participant_id=conn.participant_id,
                role=role,
                room_id=room_id,
                session_id=decision.session_id,
                resume_token=conn.resume_token,
                rejoin_grace_s=conn.grace_s,
                warning=decision.warning,
            )
        )
        pid, clinic_id, now = conn.participant_id, decision.clinic_id, self.clock()
        try:
            if direct:
                seat = await self._seat(conn, pid, role)
                if not seat.granted:
                    raise domain.RoomFull(seat.reason or "room_full", seat.message)
                await self.rooms.run(
                    room_id,
                    clinic_id,
                    lambda r: domain.enter(
                        r,
                        pid,
                        role,
                        name,
                        decision.link_id,
                        decision.session_id,
                        seat.node_id or "",
                        seat.media_url,
                        conn.cap,
                        now,
                    ),
                )
            else:
                await self.rooms.run(
                    room_id,
                    clinic_id,
                    lambda r: domain.knock(
                        r, pid, name, decision.link_id, decision.session_id, now
                    ),
                )
        except refusals.Refused as exc:
            self._spawn(self._release(clinic_id, room_id, pid))
            conn.send(refusal_frame(exc))
            conn.close()

    async def check(self, conn: Connection, message: Check) -> None:
        """Whether a link may join now, without a knock; the socket closes after the answer.
        It counts towards the address's join limit, as the join that follows does."""
        decision = await self._allowed(conn, message)
        if decision is not None:
            conn.send(
                LinkReady(
                    role=CallRole.host if decision.role == "host" else CallRole.guest,
                    admission="direct" if decision.admission == "direct" else "waiting_room",
                    live=decision.live,
                    closes_at=decision.closes_at,
                    warning=decision.warning,
                )
            )
        conn.close()

    async def _allowed(self, conn: Connection, message: Join | Check) -> Decision | None:
        """The links service's yes to a link; None once the browser has been told no."""
        wait = self.knocks_by_address.retry_after(conn.address)
        if wait is not None:
            self._rate_limited(conn, wait)
            return None
        decision = await self._resolve(conn, message)
        if decision is not None and not decision.allowed:
            conn.send(refused_frame(decision))
            conn.close()
            return None
        return decision

    def _rate_limited(self, conn: Connection, wait: float) -> None:
        seconds = max(1, round(wait))
        conn.send(
            Refused(
                reason="rate_limited",
                status=429,
                message=f"Too many attempts to join from here; wait {seconds} seconds.",
                retry_after_s=wait,
            )
        )
        conn.close()

    async def _resolve(self, conn: Connection, message: Join | Check) -> Decision | None:
        request = ResolveRequest(
            token=message.token,
            clinic_slug=message.clinic,
            room_slug=message.room,
            session_id=message.session_id,
            client_address=conn.address,
        )
        try:
            return await call(
                self.ctx.nats,
                RESOLVE_SUBJECT,
                request,
                Decision,
                self.settings.rpc_wait_s,
                attempts=2,  # a resolve only reads
            )
        except RpcError as exc:
            log.warning("links did not answer a join", error=str(exc))
            conn.send(
                Refused(
                    reason="links_unavailable",
                    status=503,
                    message="Links cannot be checked right now; please try again in a minute.",
                )
            )
            conn.close(1011, "links unavailable")
            return None

    async def _attach(self, conn: Connection, *, new: bool) -> None:
        pid, room_id, clinic_id, _ = conn.place()
        old = self.local.setdefault(room_id, {}).get(pid)
        if old is not None and old is not conn:
            old.close(4001, "replaced by a newer connection")  # a resume, here
        self.local[room_id][pid] = conn
        if not new:
            await self.rooms.watch(room_id)
        else:  # at once: reading the room (unless it is followed here), recording the connection
            await asyncio.gather(
                self.rooms.watch(room_id),
                self.ctx.pool.execute(
                    RECORD_CONNECTION,
                    pid,
                    clinic_id,
                    room_id,
                    secret_digest(conn.resume_token or ""),
                    conn.grace_s,
                    conn.cap,
                    conn.loudest_speakers,
                    self.replica_id,
                ),
            )

        async def from_media(msg: Msg) -> None:
            await self._from_media(conn, msg)

        conn.media = await self.ctx.nats.subscribe(participant_subject(pid), cb=from_media)

    async def _resume(self, conn: Connection, token: str) -> None:
        row = await self.ctx.pool.fetchrow(
            "UPDATE connections SET replica_id = $2, grace_until = NULL, updated_at = now() "
            "WHERE resume_digest = $1 "
            "RETURNING participant_id, clinic_id, room_id, grace_s, cap, loudest_speakers",
            secret_digest(token),
            self.replica_id,
        )
        if row is None:
            conn.send(RESUME_LAPSED)
            conn.close()
            return
        pid, room_id, clinic_id = row["participant_id"], row["room_id"], row["clinic_id"]
        room = await self.rooms.state(room_id, clinic_id)
        person = room.people.get(pid)
        if person is None:
            await self._forget(pid)
            conn.send(RESUME_LAPSED)
            conn.close()
            return
        conn.participant_id, conn.room_id, conn.clinic_id = pid, room_id, clinic_id
        conn.role, conn.grace_s, conn.resume_token = person.role, row["grace_s"], token
        conn.cap = row["cap"]
        conn.loudest_speakers = row["loudest_speakers"]
        await self._attach(conn, new=False)
        await self.rooms.announce_notice(
            room_id, {"kind": "superseded", "participant_id": str(pid), "by": self.replica_id}
        )
        conn.send(
            Welcome(
                participant_id=pid,
                role=person.role,
                room_id=room_id,
                session_id=person.session_id or room.session_id,
                resume_token=token,
                rejoin_grace_s=conn.grace_s,
            )
        )
        if person.status is Status.in_call and person.media_node:
            await self._readmit(conn, person.media_node)
        await self.rooms.run(room_id, clinic_id, lambda r: domain.reconnected(r, pid))
        self._refresh(conn, await self.rooms.state(room_id, clinic_id))

    async def _readmit(self, conn: Connection, node_id: str) -> None:
        """A token for someone back in the call, for their seat asked for again: that renews a
        reservation that lapsed while they were away, and names the node's address."""
        pid, _, _, role = conn.place()
        try:
            seat = await self._seat(conn, pid, role)
        except Unavailable:
            seat = None
        if seat is not None and seat.granted and seat.node_id:
            self._send_admitted(conn, seat.node_id, seat.media_url)
        else:
            log.warning("a resumed participant's seat could not be renewed", node=node_id)
            self._send_admitted(conn, node_id, None)

    async def _forget(self, participant_id: UUID) -> None:
        await self.ctx.pool.execute(
            "DELETE FROM connections WHERE participant_id = $1", participant_id
        )

    # --- seats ------------------------------------------------------------------------------

    async def _seat(self, conn: Connection, participant_id: UUID, role: CallRole) -> SeatAnswer:
        _, room_id, clinic_id, _ = conn.place()
        request = SeatRequest(
            clinic_id=clinic_id,
            room_id=room_id,
            participant_id=participant_id,
            role=role,
            cap=conn.cap,
            loudest_speakers=conn.loudest_speakers,
        )
        # Asking again for the same participant returns the same seat: safe to send twice.
        return await self._ask_media(SEAT_SUBJECT, request, SeatAnswer, attempts=2)

    async def _ask_media(
        self, subject: str, request: BaseModel, answer: type[A], attempts: int = 1
    ) -> A:
        """A media request; a media service that does not answer is ``media_unavailable``."""
        try:
            return await call(
                self.ctx.nats,
                subject,
                request,
                answer,
                self.settings.rpc_wait_s,
                attempts=attempts,
                identity=self.ctx.identity,  # media serves signaling alone
            )
        except RpcError as exc:
            log.warning("the media service did not answer", subject=subject, error=str(exc))
            raise Unavailable("media_unavailable", UNAVAILABLE) from exc

    async def _release(self, clinic_id: str, room_id: UUID, participant_id: UUID | None) -> None:
        request = SeatRelease(clinic_id=clinic_id, room_id=room_id, participant_id=participant_id)
        try:
            await call(
                self.ctx.nats,
                RELEASE_SUBJECT,
                request,
                SeatReleased,
                self.settings.rpc_wait_s,
                attempts=2,  # releasing twice frees nothing more
                identity=self.ctx.identity,
            )
        except RpcError as exc:
            # The node lets an unclaimed reservation lapse on its own; a held seat is freed
            # when the media connection goes.
            log.warning("a seat could not be released", error=str(exc))

    def _after_append(self, room_id: UUID, clinic_id: str, events: list[Event]) -> None:
        """Free the seats and resume tokens of whoever is gone for good."""
        gone = [
            e.participant_id
            for e in events
            if isinstance(e, ParticipantLeft | KnockWithdrawn | ParticipantDenied)
        ]
        if gone:
            self._spawn(
                self.ctx.pool.execute(
                    "DELETE FROM connections WHERE participant_id = ANY($1::uuid[])", gone
                )
            )
        for event in events:
            if isinstance(event, ParticipantLeft) and event.reason is not LeftBecause.ended:
                self._spawn(self._release(clinic_id, room_id, event.participant_id))
            elif isinstance(event, SessionEnded) and event.because is EndedBecause.ended_for_all:
                self._spawn(self._release(clinic_id, room_id, None))
            elif isinstance(event, RecordingStopped):
                self._spawn(self._stop_recording(clinic_id, event))

    # --- what a connected person asks for ----------------------------------------------------

    async def command(self, conn: Connection, message: BaseModel) -> None:
        """Run one frame of a joined person; the domain's refusals become error frames."""
        me, room_id, clinic_id, _ = conn.place()
        now = self.clock()
        decide: Decide
        try:
            match message:
                case Admit():
                    await self._admit(conn, message.participant_id)
                    return
                case Leave():
                    await self.leave(conn)
                    return
                case Signal():
                    await self._signal(conn, message)
                    return
                case StartRecording():
                    await self._start_recording(conn)
                    return
                case StopRecording():
                    decide = partial(domain.stop_recording, by=me)
                case Deny(participant_id=guest, message=text):
                    decide = partial(domain.deny, by=me, participant_id=guest, message=text)
                case Hold(participant_id=guest, message=text):
                    decide = partial(domain.hold, by=me, participant_id=guest, message=text)
                case Remove(participant_id=person, message=text):
                    decide = partial(
                        domain.remove, by=me, participant_id=person, message=text, now=now
                    )
                case EndForAll(message=text):
                    decide = partial(domain.end_for_all, by=me, message=text, now=now)
                case Lock():
                    decide = partial(domain.lock, by=me)
                case Unlock():
                    decide = partial(domain.unlock, by=me)
                case MuteKnocks():
                    decide = partial(domain.mute_knocks, by=me)
                case UnmuteKnocks():
                    decide = partial(domain.unmute_knocks, by=me)
                case _:
                    return
            await self.rooms.run(room_id, clinic_id, decide)
        except refusals.Refused as exc:
            conn.send(Error(code=exc.code, message=exc.detail))

    async def _admit(self, conn: Connection, guest: UUID) -> None:
        me, room_id, clinic_id, _ = conn.place()
        try:
            await self.rooms.check(
                room_id, clinic_id, lambda r: domain.check_admit(r, me, guest, conn.cap)
            )
        except domain.RoomFull as exc:
            # Full by the room's own count (the usual case: the seats are all in use), not
            # only by the media node's: the guest keeps their place and both sides are told.
            await self._seat_refused(room_id, guest, exc.detail)
            return
        seat = await self._seat(conn, guest, CallRole.guest)
        if not seat.granted:
            await self._seat_refused(room_id, guest, seat.message)
            return
        try:
            await self.rooms.run(
                room_id,
                clinic_id,
                lambda r: domain.admit(r, me, guest, seat.node_id or "", seat.media_url, conn.cap),
            )
        except refusals.Refused as exc:
            # Another host may have let them in meanwhile (media answered both of us with
            # the same seat): their seat is then in use, not ours to give back.
            person = (await self.rooms.state(room_id, clinic_id)).people.get(guest)
            if person is None or person.status is not Status.in_call:
                await self._release(clinic_id, room_id, guest)
            if not isinstance(exc, domain.RoomFull):
                raise
            await self._seat_refused(room_id, guest, exc.detail)

    async def _seat_refused(self, room_id: UUID, guest: UUID, message: str) -> None:
        await self.rooms.announce_notice(
            room_id, {"kind": "seat_refused", "participant_id": str(guest), "message": message}
        )

    async def _start_recording(self, conn: Connection) -> None:
        """Check, ask the room's media node to record, then record that it is on; if the
        room changed meanwhile, the node is told to stop again."""
        me, room_id, clinic_id, _ = conn.place()
        await self.rooms.check(room_id, clinic_id, partial(domain.check_start_recording, by=me))
        host = (await self.rooms.state(room_id, clinic_id)).people.get(me)
        node = host.media_node if host is not None else None
        if not node:
            raise refusals.Conflict("not_in_call", "Join the call before recording it.")
        recording_id = uuid4()
        await self._record(node, clinic_id, room_id, recording_id, RecordingAction.start)
        try:
            await self.rooms.run(
                room_id,
                clinic_id,
                partial(domain.start_recording, by=me, recording_id=recording_id, media_node=node),
            )
        except refusals.Refused:
            with contextlib.suppress(refusals.Refused):
                await self._record(node, clinic_id, room_id, recording_id, RecordingAction.stop)
            raise

    async def _record(
        self,
        node: str,
        clinic_id: str,
        room_id: UUID,
        recording_id: UUID,
        action: RecordingAction,
    ) -> None:
        command = RecordingCommand(
            clinic_id=clinic_id, room_id=room_id, recording_id=recording_id, action=action
        )
        reply = await self._ask_media(record_subject(node), command, RecordingReply)
        if not reply.ok:
            raise refusals.Conflict(reply.reason or "recording_refused", reply.message)

    async def _stop_recording(self, clinic_id: str, event: RecordingStopped) -> None:
        """Tell the node that records (if that fails, the node stops when the room ends)."""
        try:
            await self._record(
                event.media_node,
                clinic_id,
                event.room_id,
                event.recording_id,
                RecordingAction.stop,
            )
        except refusals.Refused as exc:
            log.warning("recording not stopped on its node", error=exc.detail)

    async def leave(self, conn: Connection) -> None:
        pid, room_id, clinic_id, _ = conn.place()
        now = self.clock()
        conn.done = True
        await self._end_place(
            room_id, clinic_id, pid, lambda r: domain.leave(r, pid, LeftBecause.left, now)
        )
        conn.close()

    async def dropped(self, conn: Connection) -> None:
        """The socket is closed; unless they are gone for good, keep their place for the grace."""
        if conn.participant_id is None or conn.room_id is None or conn.clinic_id is None:
            return
        pid, room_id, clinic_id = conn.participant_id, conn.room_id, conn.clinic_id
        if conn.media is not None:
            with contextlib.suppress(Exception):
                await conn.media.unsubscribe()
        here = self.local.get(room_id, {})
        if here.get(pid) is conn:
            del here[pid]
            if not here:
                self.local.pop(room_id, None)
        try:
            if conn.done:
                return
            now = self.clock()
            until = now + timedelta(seconds=conn.grace_s)
            row = await self.ctx.pool.fetchrow(
                "UPDATE connections SET replica_id = NULL, grace_until = $3, updated_at = now() "
                "WHERE participant_id = $1 AND replica_id = $2 RETURNING participant_id",
                pid,
                self.replica_id,
                until,
            )
            if row is None:
                return  # they came back elsewhere already
            if conn.grace_s <= 0:
                await self._end_place(
                    room_id,
                    clinic_id,
                    pid,
                    lambda r: domain.leave(r, pid, LeftBecause.disconnected, now),
                )
            else:
                await self.rooms.run(
                    room_id, clinic_id, lambda r: domain.disconnected(r, pid, until)
                )
        finally:
            await self.rooms.unwatch(room_id)

    # --- media negotiation ------------------------------------------------------------------

    def _token(self, conn: Connection, node_id: str) -> tuple[str, datetime]:
        pid, room_id, clinic_id, role = conn.place()
        token, expires = mint(
            self.key,
            participant_id=str(pid),
            room_id=str(room_id),
            clinic_id=clinic_id,
            role=role,
            node_id=node_id,
            ttl_s=self.settings.token_ttl_s,
        )
        return token, datetime.fromtimestamp(expires, UTC)

    def _send_admitted(self, conn: Connection, node_id: str, media_url: str | None) -> None:
        token, expires = self._token(conn, node_id)
        conn.send(
            Admitted(
                participant_token=token,
                media_node=node_id,
                media_url=media_url,
                expires_at=expires,
            )
        )

    async def _signal(self, conn: Connection, message: Signal) -> None:
        pid, room_id, clinic_id, _ = conn.place()
        room = await self.rooms.state(room_id, clinic_id)
        me = room.people.get(pid)
        if me is None or me.status is not Status.in_call or not me.media_node:
            raise refusals.Conflict("not_in_call", "Media can only be set up once you are in.")
        token, _ = self._token(conn, me.media_node)
        request = MediaSignal(
            participant_token=token,
            participant_id=pid,
            room_id=room_id,
            **message.model_dump(include=NEGOTIATION),
        )
        reply = await self._ask_media(signal_subject(me.media_node), request, MediaSignalReply)
        if not reply.ok:
            raise refusals.Invalid(reply.reason or "media_refused", reply.message)
        if reply.answer is not None:
            conn.send(_signal_frame(reply.answer))

    async def _from_media(self, conn: Connection, msg: Msg) -> None:
        try:
            signal = MediaSignal.model_validate_json(msg.data)
        except ValidationError:
            log.warning("a media node sent a signal that cannot be read")
            return
        conn.send(_signal_frame(signal))

    # --- telling people what changed --------------------------------------------------------

    async def react(self, room_id: UUID, room: Room, events: list[Event]) -> None:
        here = self.local.get(room_id)
        if not here:
            return
        for event in events:
            pid = getattr(event, "participant_id", None)
            conn = here.get(pid) if pid is not None else None
            match event:
                case GuestKnocked() if not event.muted:
                    for host in self._hosts(here, room):
                        host.send(Knock(participant_id=pid, display_name=event.display_name))
                case GuestPutOnHold() if conn is not None:
                    conn.send_once(
                        "waiting",
                        Waiting(state=WaitingState.on_hold, message=event.message or HOLD_MESSAGE),
                    )
                case ParticipantJoined() if conn is not None and event.media_node:
                    self._send_admitted(conn, event.media_node, event.media_url)
                case ParticipantDenied() if conn is not None:
                    conn.send(Denied(message=event.message or DENIED_MESSAGE))
                    conn.close()
                case ParticipantRemoved() if conn is not None:
                    conn.send(Removed(message=event.message or REMOVED_MESSAGE))
                    conn.close()
                case SessionEnded() if event.because is EndedBecause.ended_for_all:
                    for other in list(here.values()):
                        other.send(
                            Ended(because=event.because, message=event.message or ENDED_MESSAGE)
                        )
                        other.close()
        for conn in list(here.values()):
            self._refresh(conn, room)

    def _hosts(self, here: dict[UUID, Connection], room: Room) -> list[Connection]:
        out = []
        for pid, conn in here.items():
            person = room.people.get(pid)
            if person is not None and person.role is CallRole.host and not person.waiting:
                out.append(conn)
        return out

    def _refresh(self, conn: Connection, room: Room) -> None:
        """Send what this person sees of the room, where it changed."""
        person = room.people.get(conn.participant_id) if conn.participant_id else None
        if person is None or conn.closing:
            return
        if room.recording is not None or "recording" in conn.last_sent:
            # Everyone in the room, waiting or not, knows whether they are being recorded.
            on = room.recording is not None
            conn.send_once(
                "recording", Recording(on=on, message=RECORDING_ON if on else RECORDING_OFF)
            )
        if person.waiting:
            if person.status is Status.on_hold:
                return  # the hold message stays until the host acts
            state = (
                WaitingState.host_notified
                if room.hosts_present()
                else WaitingState.waiting_for_host
            )
            conn.send_once("waiting", Waiting(state=state, message=WAITING_MESSAGES[state]))
            return
        present = [_present(p) for p in room.in_call()]
        if person.role is CallRole.host:
            conn.send_once(
                "room",
                RoomView(
                    live=room.live,
                    locked=room.locked,
                    knocks_muted=room.knocks_muted,
                    max_participants=conn.cap,
                    waiting=[_waiting(p) for p in room.waiting()],
                    participants=present,
                ),
            )
        else:
            conn.send_once("participants", Participants(participants=present))

    async def on_notice(self, room_id: UUID, notice: dict[str, Any]) -> None:
        here = self.local.get(room_id)
        if not here:
            return
        pid = UUID(notice["participant_id"])
        match notice.get("kind"):
            case "seat_refused":
                message = str(notice["message"])
                if (guest := here.get(pid)) is not None:
                    guest.send(Waiting(state=WaitingState.room_full, message=message))
                    guest.last_sent.pop("waiting", None)
                for conn in here.values():
                    if conn.role is CallRole.host and conn is not guest:
                        conn.send(
                            SeatRefused(participant_id=pid, reason="room_full", message=message)
                        )
            case "superseded" if notice.get("by") != self.replica_id:
                if (stale := here.get(pid)) is not None:
                    stale.close(4001, "replaced by a newer connection")


def _signal_frame(signal: MediaSignal) -> Signal:
    return Signal(**signal.model_dump(include=NEGOTIATION))


def _present(p: Person) -> Present:
    return Present(
        participant_id=p.participant_id,
        display_name=p.display_name,
        role=p.role,
        disconnected=p.disconnected_until is not None,
    )


def _waiting(p: Person) -> WaitingGuest:
    return WaitingGuest(
        participant_id=p.participant_id,
        display_name=p.display_name,
        waiting_since=p.since or datetime.now(UTC),
        muted=p.muted,
        on_hold=p.status is Status.on_hold,
        disconnected=p.disconnected_until is not None,
    )
