"""Microphones and cameras in a call: each person's own state, seen by everyone in the call,
and a host's mute, which the media node enforces.

A person's page says how their microphone and camera are (``media_state``); a change is an
event (``ParticipantMediaChanged``) and everyone's participant list shows it. A host may mute
someone's microphone (``mute``): their page is told to turn it off, and the room's media node
forwards none of their audio until they turn it on again themselves, so a page that ignores
the mute is silent all the same. A host may ask them to turn it on (``ask_unmute``), never
turn it on for them. The node is told from the replica that appended the change, once.
"""

from functools import partial
from typing import Any
from uuid import UUID

import structlog

from contracts.events import Event
from contracts.media import MuteCommand, MuteReply, mute_subject
from contracts.signaling import MediaMoved, ParticipantMediaChanged
from contracts.signaling_protocol import MediaState, MutedByHost, UnmuteRequested
from runtime import refusals
from runtime.ratelimit import RateLimiter
from services.signaling import domain
from services.signaling.connection import Connection
from services.signaling.replica import Replica
from services.signaling.rooms import Rooms
from services.signaling.seats import MediaSeats

log = structlog.get_logger(__name__)

TOO_OFTEN = refusals.Refused(
    "media_state_rate_limited",
    "Your microphone and camera changed too often just now; the last change is sent shortly.",
)


class Microphones:
    def __init__(self, replica: Replica, seats: MediaSeats) -> None:
        self.replica = replica
        self.seats = seats
        settings = replica.settings
        self._changes = RateLimiter(settings.media_states_per_minute, settings.media_state_burst)

    async def media_state(self, conn: Connection, message: MediaState) -> None:
        """``conn``'s person says how their microphone and camera are."""
        me, room_id, clinic_id, _ = conn.place()
        if self._changes.retry_after(me.hex) is not None:
            raise TOO_OFTEN
        decide = partial(
            domain.media_state, participant_id=me, audio_on=message.audio, video_on=message.video
        )
        await self.replica.rooms.run(room_id, clinic_id, decide)

    async def mute(self, conn: Connection, participant_id: UUID) -> None:
        me, room_id, clinic_id, _ = conn.place()
        decide = partial(domain.mute, by=me, participant_id=participant_id)
        await self.replica.rooms.run(room_id, clinic_id, decide)

    async def ask_unmute(self, conn: Connection, participant_id: UUID) -> None:
        """Ask them, on whichever replica they are connected: nothing is recorded."""
        rooms = self.replica.rooms
        me, room_id, clinic_id, _ = conn.place()
        check = partial(domain.check_ask_unmute, by=me, participant_id=participant_id)
        await rooms.check(room_id, clinic_id, check)
        await rooms.announce_notice(
            room_id,
            {"kind": UNMUTE_REQUESTED, "participant_id": str(participant_id), "by": str(me)},
        )

    # --- the media node -------------------------------------------------------------------

    def after_append(self, room_id: UUID, clinic_id: str, events: list[Event]) -> None:
        """Tell the media node of a host's mute and of its end (the person turned their
        microphone on: a request whether or not a mute held, which costs the node nothing),
        and, when the call moved to another node, of the mutes that hold there."""
        for event in events:
            match event:
                case ParticipantMediaChanged(by=UUID()) | ParticipantMediaChanged(audio_on=True):
                    self._tell(clinic_id, room_id, [event.participant_id], moved=False)
                case MediaMoved():
                    self._tell(clinic_id, room_id, event.participant_ids, moved=True)

    def _tell(self, clinic_id: str, room_id: UUID, people: list[UUID], *, moved: bool) -> None:
        self.replica.spawn(self._mute_on_node(clinic_id, room_id, people, moved))

    async def _mute_on_node(
        self, clinic_id: str, room_id: UUID, participant_ids: list[UUID], moved: bool
    ) -> None:
        """Send the node whether a host's mute holds, as the room says once the append's lock
        is let go (not as the event said: of two quick changes, each sends what holds now)."""
        room = await self.replica.rooms.state(room_id, clinic_id)
        for pid in participant_ids:
            person = room.people.get(pid)
            if person is None or not person.media_node:
                continue
            muted = person.muted_by is not None
            if moved and not muted:
                continue  # the new node holds no mute unless told
            command = MuteCommand(
                clinic_id=clinic_id, room_id=room_id, participant_id=pid, muted=muted
            )
            try:
                reply = await self.seats.ask(mute_subject(person.media_node), command, MuteReply)
            except refusals.Refused as exc:
                # Their page was told and turned the microphone off; only a page that ignores
                # it is heard until the node answers again (a dead node's call moves, and the
                # mute is sent to the new one).
                log.warning("a mute did not reach the media node", error=exc.detail)
                continue
            if not reply.ok:
                log.warning("the media node did not apply a mute", reason=reply.reason)


# --- what the people concerned see (``views``) ------------------------------------------------

UNMUTE_REQUESTED = "unmute_requested"
"""The kind of the room notice that carries a host's request (names stay off NATS)."""
A_HOST = "A host"


def host_name(room: domain.Room, host: UUID) -> str:
    person = room.people.get(host)
    return person.display_name if person is not None else A_HOST


def muted_by_host(conn: Connection, room: domain.Room, event: ParticipantMediaChanged) -> None:
    """``conn`` is the person a host just muted."""
    if event.by is not None:
        conn.send(MutedByHost(by_name=host_name(room, event.by)))


async def deliver_request(
    rooms: Rooms, room_id: UUID, here: dict[UUID, Connection], notice: dict[str, Any]
) -> None:
    """A host's ``ask_unmute`` to its person, if they are connected here."""
    conn = here.get(UUID(notice["participant_id"]))
    if conn is None or conn.clinic_id is None:
        return
    room = await rooms.state(room_id, conn.clinic_id)
    conn.send(UnmuteRequested(by_name=host_name(room, UUID(notice["by"]))))
