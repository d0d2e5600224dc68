"""Leaving and dropping: people leave, drop and come back within their grace, or a host
ends the call for all."""

from datetime import datetime
from uuid import UUID

from contracts.events import Event
from contracts.signaling import (
    EndedBecause,
    KnockWithdrawn,
    LeftBecause,
    ParticipantDisconnected,
    ParticipantLeft,
    ParticipantReconnected,
    ScreenShareStoppedBecause,
    SessionEnded,
)
from services.signaling.domain.recording import recording_ends
from services.signaling.domain.room import NOT_HERE, Room, event_ids, host
from services.signaling.domain.screen_share import share_ends


def leave(room: Room, participant_id: UUID, reason: LeftBecause, now: datetime) -> list[Event]:
    """Leaving never ends the call for others; the last one out ends it (``last_left``)."""
    person = room.people.get(participant_id)
    if person is None:
        return []
    ids = {**event_ids(room, person), "participant_id": participant_id}
    if person.waiting:
        return [KnockWithdrawn(**ids, reason=reason)]
    events: list[Event] = share_ends(room, participant_id, ScreenShareStoppedBecause.left)
    events.append(ParticipantLeft(**ids, link_id=person.link_id, reason=reason))
    others = [p for p in room.in_call() if p.participant_id != participant_id]
    if room.live and not others:
        events += recording_ends(room)
        events.append(
            SessionEnded(
                **event_ids(room),
                because=EndedBecause.last_left,
                ended_at=now,
                chat_messages=room.chat_messages,
            )
        )
    return events


def disconnected(room: Room, participant_id: UUID, grace_until: datetime) -> list[Event]:
    person = room.people.get(participant_id)
    if person is None or person.disconnected_until is not None:
        return []
    return [
        ParticipantDisconnected(
            **event_ids(room, person), participant_id=participant_id, grace_until=grace_until
        )
    ]


def reconnected(room: Room, participant_id: UUID) -> list[Event]:
    person = room.people.get(participant_id)
    if person is None:
        raise NOT_HERE
    if person.disconnected_until is None:
        return []
    return [ParticipantReconnected(**event_ids(room, person), participant_id=participant_id)]


def expire(room: Room, participant_id: UUID, now: datetime) -> list[Event]:
    """The rejoin grace is over: whoever has not come back has left."""
    person = room.people.get(participant_id)
    if person is None or person.disconnected_until is None or person.disconnected_until > now:
        return []
    return leave(room, participant_id, LeftBecause.disconnected, now)


def end_for_all(room: Room, by: UUID, message: str, now: datetime) -> list[Event]:
    """Only ever a host's explicit act: the server never ends a meeting for all by itself."""
    host(room, by)
    events: list[Event] = recording_ends(room)
    if room.screen_share is not None:
        events += share_ends(room, room.screen_share, ScreenShareStoppedBecause.session_ended)
    for person in room.people.values():
        ids = {**event_ids(room, person), "participant_id": person.participant_id}
        if person.waiting:
            events.append(KnockWithdrawn(**ids, reason=LeftBecause.ended))
        else:
            events.append(ParticipantLeft(**ids, link_id=person.link_id, reason=LeftBecause.ended))
    events.append(
        SessionEnded(
            **event_ids(room),
            because=EndedBecause.ended_for_all,
            ended_at=now,
            message=message,
            chat_messages=room.chat_messages,
        )
    )
    return events
