"""Arriving: a guest knocks and waits, or someone enters the call at once."""

from datetime import datetime
from uuid import UUID

from contracts.events import Event
from contracts.signaling import (
    CallRole,
    GuestKnocked,
    ParticipantAdmitted,
    ParticipantJoined,
    SessionStarted,
)
from services.signaling.domain.consent import asked_on_arrival
from services.signaling.domain.room import ROOM_LOCKED, HostArrived, NoHostYet, Room, check_seat


def knock(
    room: Room,
    participant_id: UUID,
    display_name: str,
    link_id: UUID | None,
    session_id: UUID | None,
    now: datetime,
    *,
    direct: bool = False,
) -> list[Event]:
    """A guest waits: always by a waiting-room link, and by a direct-admission link while no
    host is in the call (``direct``: they are let in when the first host enters)."""
    if participant_id in room.people:
        return []
    if room.locked:
        raise ROOM_LOCKED
    if direct and room.host_in_call():
        raise HostArrived("host_arrived", "A host is in: take a seat instead of waiting.")
    knocked = GuestKnocked(
        room_id=room.room_id,
        session_id=session_id or room.session_id,
        participant_id=participant_id,
        display_name=display_name,
        link_id=link_id,
        muted=room.knocks_muted,
        knocked_at=now,
        direct=direct,
    )
    return [knocked, *asked_on_arrival(room, participant_id, knocked.session_id)]


def enter(
    room: Room,
    participant_id: UUID,
    role: CallRole,
    display_name: str,
    link_id: UUID | None,
    session_id: UUID | None,
    media_node: str,
    media_url: str | None,
    cap: int,
    now: datetime,
) -> list[Event]:
    """A host enters (the first one starts the call), or a guest of a direct-admission room
    while a host is in the call."""
    if participant_id in room.people:
        return []
    if role is CallRole.guest and room.locked:
        raise ROOM_LOCKED
    if role is CallRole.guest and not room.host_in_call():
        raise NoHostYet("no_host_yet", "No host is in the call yet: wait for one.")
    check_seat(room, cap, role)
    events: list[Event] = []
    session_id = session_id or room.session_id
    if role is CallRole.host and not room.live:
        events.append(SessionStarted(room_id=room.room_id, session_id=session_id, started_at=now))
    ids = {"room_id": room.room_id, "session_id": session_id, "participant_id": participant_id}
    if role is CallRole.guest:
        events.append(
            ParticipantAdmitted(**ids, by=None, media_node=media_node, media_url=media_url)
        )
    events.append(
        ParticipantJoined(
            **ids,
            role=role,
            display_name=display_name,
            link_id=link_id,
            media_node=media_node,
            media_url=media_url,
        )
    )
    return events + asked_on_arrival(room, participant_id, session_id)
