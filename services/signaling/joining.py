"""Joining a call: a link checked with the links service, then a knock in the waiting room or
(for hosts and direct admission) a seat and a place in the call; and resuming a place with
the resume token after a dropped connection."""

import secrets
from dataclasses import dataclass
from functools import partial
from uuid import UUID, uuid4

import structlog

from contracts.events import Event
from contracts.links import RESOLVE_SUBJECT, Decision, ResolveRequest
from contracts.signaling import CallFeatures, CallRole
from contracts.signaling_protocol import Check, Join, LinkReady, NetworkTest, Refused, Welcome
from runtime import refusals
from runtime.ratelimit import RateLimiter
from runtime.rpc import RpcError, call
from runtime.sealing import secret_digest
from services.signaling import domain
from services.signaling.connection import Connection
from services.signaling.connections import Connections
from services.signaling.domain import Status
from services.signaling.negotiation import MediaNegotiation
from services.signaling.replica import Replica
from services.signaling.seats import MediaSeats, Unavailable, announce_seat_refused
from services.signaling.views import refresh

log = structlog.get_logger(__name__)

RESUME_LAPSED = Refused(
    reason="resume_expired",
    status=410,
    message="Your place in this call has lapsed; open your link again to rejoin.",
)


@dataclass(frozen=True)
class Arrival:
    """Someone joining with a link, before they wait or enter."""

    participant_id: UUID
    role: CallRole
    name: str
    link_id: UUID | None
    session_id: UUID | None


def call_role(decision: Decision) -> CallRole:
    """The role a link gives in the call: a host link's is host, every other is a guest."""
    return CallRole.host if decision.role == "host" else CallRole.guest


def refused_frame(decision: Decision) -> Refused:
    return Refused(
        reason=decision.reason.value if decision.reason else "refused",
        status=decision.status,
        message=decision.message,
        opens_at=decision.opens_at,
        closes_at=decision.closes_at,
        retry_after_s=decision.retry_after_s,
        replaced_by_hint=decision.replaced_by_hint,
        warning=decision.warning,
    )


def refusal_frame(exc: refusals.Refused) -> Refused:
    return Refused(reason=exc.code, status=exc.status, message=exc.detail)


class Joining:
    def __init__(
        self,
        replica: Replica,
        connections: Connections,
        seats: MediaSeats,
        negotiation: MediaNegotiation,
    ) -> None:
        self.replica = replica
        self.connections = connections
        self.seats = seats
        self.negotiation = negotiation
        s = replica.settings
        self.knocks_by_address = RateLimiter(
            s.knocks_per_address_per_minute, s.knocks_per_address_burst
        )
        self.knocks_by_link = RateLimiter(s.knocks_per_link_per_minute, s.knocks_per_link_burst)

    async def join(self, conn: Connection, message: Join) -> None:
        if message.resume:
            await self._resume(conn, message.resume)
            return
        decision = await self.allowed(conn, message)
        if decision is None:
            return
        room_id = decision.room_id or decision.session_id
        if room_id is None or decision.clinic_id is None:
            conn.send(Refused(reason="unknown", status=404, message=decision.message))
            conn.close()
            return
        role = call_role(decision)
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
        conn.features = decision.call or CallFeatures()
        conn.grace_s = float((decision.rejoin_grace_minutes or 0) * 60)
        conn.resume_token = secrets.token_urlsafe(32)
        await self.connections.attach(conn, new=True)
        conn.send(
            Welcome(
                participant_id=conn.participant_id,
                role=role,
                room_id=room_id,
                session_id=decision.session_id,
                resume_token=conn.resume_token,
                rejoin_grace_s=conn.grace_s,
                warning=decision.warning,
                room_title=decision.room_title,
                call=conn.features,
            )
        )
        pid, clinic_id = conn.participant_id, decision.clinic_id
        arrival = Arrival(pid, role, name, decision.link_id, decision.session_id)
        try:
            if role is CallRole.host:
                await self._enter(conn, arrival)
                try:
                    await self.let_in_early_guests(conn)
                except refusals.Refused as exc:  # the host is in; the guests keep waiting
                    log.warning("early guests not let in", reason=exc.code)
            elif direct:
                await self._arrive_direct(conn, arrival)
            else:
                await self._knock(conn, arrival, direct=False)
        except refusals.Refused as exc:
            self.replica.spawn(self.seats.release(clinic_id, room_id, pid))
            conn.send(refusal_frame(exc))
            conn.close()

    async def _enter(self, conn: Connection, who: "Arrival") -> None:
        """A seat from the media node, then a place in the call. When the call is full only by
        signaling's count (people whose reservation lapsed before their media connected), their
        places end and this entry goes ahead."""
        _, room_id, clinic_id, _ = conn.place()
        rooms, now = self.replica.rooms, self.replica.clock()
        before = await rooms.state(room_id, clinic_id)
        seat = await self.seats.seat(conn, who.participant_id, who.role)
        if not seat.granted:
            raise domain.RoomFull(seat.reason or "room_full", seat.message)

        def enter(room: domain.Room) -> list[Event]:
            return domain.enter(
                room,
                who.participant_id,
                who.role,
                who.name,
                who.link_id,
                who.session_id,
                seat.node_id or "",
                seat.media_url,
                conn.cap,
                now,
            )

        try:
            await rooms.run(room_id, clinic_id, enter)
        except domain.RoomFull:
            if not await self.seats.free_lapsed(room_id, clinic_id, before, seat, now):
                raise
            await rooms.run(room_id, clinic_id, enter)

    async def _knock(self, conn: Connection, who: "Arrival", *, direct: bool) -> None:
        _, room_id, clinic_id, _ = conn.place()
        now = self.replica.clock()
        await self.replica.rooms.run(
            room_id,
            clinic_id,
            lambda r: domain.knock(
                r, who.participant_id, who.name, who.link_id, who.session_id, now, direct=direct
            ),
        )

    async def _arrive_direct(self, conn: Connection, who: "Arrival") -> None:
        """A guest of a direct-admission link goes straight into the call while a host is in
        it; before any host has arrived they wait, and the first host lets them in."""
        _, room_id, clinic_id, _ = conn.place()
        room = await self.replica.rooms.state(room_id, clinic_id)
        if room.host_in_call():
            try:
                await self._enter(conn, who)
                return
            except domain.NoHostYet:
                self.replica.spawn(self.seats.release(clinic_id, room_id, who.participant_id))
        try:
            await self._knock(conn, who, direct=True)
        except domain.HostArrived:
            await self._enter(conn, who)

    async def let_in_early_guests(self, conn: Connection) -> None:
        """A host entered: whoever came by a direct-admission link before them is let in, in
        the order they came, while seats last (the rest keep waiting, as for a full call)."""
        _, room_id, clinic_id, _ = conn.place()
        rooms = self.replica.rooms
        early = (await rooms.state(room_id, clinic_id)).let_in_on_arrival()
        for n, guest in enumerate(early):
            gid = guest.participant_id
            seat = await self.seats.seat(conn, gid, CallRole.guest)
            full = None if seat.granted else seat.message
            if seat.granted:
                try:
                    await rooms.run(
                        room_id,
                        clinic_id,
                        partial(
                            domain.let_in,
                            participant_id=gid,
                            media_node=seat.node_id or "",
                            media_url=seat.media_url,
                            cap=conn.cap,
                        ),
                    )
                except refusals.Refused as exc:
                    await self.seats.release(clinic_id, room_id, gid)
                    if isinstance(exc, domain.RoomFull):
                        full = exc.detail
            if full is not None:  # they and everyone after them keep waiting, and are told
                for rest in early[n:]:
                    await announce_seat_refused(rooms, room_id, rest.participant_id, full)
                return

    async def check(self, conn: Connection, message: Check) -> None:
        """Whether a link may join now, without a knock; the socket closes after the answer.
        It counts towards the address's join limit, as the join that follows does."""
        decision = await self.allowed(conn, message)
        if decision is not None:
            conn.send(
                LinkReady(
                    role=call_role(decision),
                    admission="direct" if decision.admission == "direct" else "waiting_room",
                    live=decision.live,
                    closes_at=decision.closes_at,
                    warning=decision.warning,
                    room_title=decision.room_title,
                )
            )
        conn.close()

    async def allowed(
        self, conn: Connection, message: Join | Check | NetworkTest
    ) -> Decision | None:
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

    async def _resolve(
        self, conn: Connection, message: Join | Check | NetworkTest
    ) -> Decision | None:
        request = ResolveRequest(
            token=message.token,
            clinic_slug=message.clinic,
            room_slug=message.room,
            session_id=message.session_id,
            client_address=conn.address,
        )
        try:
            return await call(
                self.replica.ctx.nats,
                RESOLVE_SUBJECT,
                request,
                Decision,
                self.replica.settings.rpc_wait_s,
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

    async def _resume(self, conn: Connection, token: str) -> None:
        replica = self.replica
        row = await replica.ctx.pool.fetchrow(
            "UPDATE connections SET replica_id = $2, grace_until = NULL, updated_at = now() "
            "WHERE resume_digest = $1 "
            "RETURNING participant_id, clinic_id, room_id, grace_s, cap, loudest_speakers, "
            "call_features",
            secret_digest(token),
            replica.replica_id,
        )
        if row is None:
            conn.send(RESUME_LAPSED)
            conn.close()
            return
        pid, room_id, clinic_id = row["participant_id"], row["room_id"], row["clinic_id"]
        room = await replica.rooms.state(room_id, clinic_id)
        person = room.people.get(pid)
        if person is None:
            await self.connections.forget(pid)
            conn.send(RESUME_LAPSED)
            conn.close()
            return
        conn.participant_id, conn.room_id, conn.clinic_id = pid, room_id, clinic_id
        conn.role, conn.grace_s, conn.resume_token = person.role, row["grace_s"], token
        conn.cap = row["cap"]
        conn.loudest_speakers = row["loudest_speakers"]
        if row["call_features"] is not None:
            conn.features = CallFeatures.model_validate(row["call_features"])
        await self.connections.attach(conn, new=False)
        await replica.rooms.announce_notice(
            room_id, {"kind": "superseded", "participant_id": str(pid), "by": replica.replica_id}
        )
        conn.send(
            Welcome(
                participant_id=pid,
                role=person.role,
                room_id=room_id,
                session_id=person.session_id or room.session_id,
                resume_token=token,
                rejoin_grace_s=conn.grace_s,
                call=conn.features,
            )
        )
        if person.status is Status.in_call and person.media_node:
            await self._readmit(conn, person.media_node)
        await replica.rooms.run(room_id, clinic_id, lambda r: domain.reconnected(r, pid))
        refresh(conn, await replica.rooms.state(room_id, clinic_id))

    async def _readmit(self, conn: Connection, node_id: str) -> None:
        """A token for someone back in the call, for their seat asked for again: that renews a
        reservation that lapsed while they were away, and names the node's address."""
        pid, _, _, role = conn.place()
        try:
            seat = await self.seats.seat(conn, pid, role)
        except Unavailable:
            seat = None
        if seat is not None and seat.granted and seat.node_id:
            self.negotiation.send_admitted(conn, seat.node_id, seat.media_url)
        else:
            log.warning("a resumed participant's seat could not be renewed", node=node_id)
            self.negotiation.send_admitted(conn, node_id, None)
