"""The call manager: hosts admit, deny, hold and remove people, lock the room and mute
knocks; a direct-admission guest is let in without a host's act."""

from datetime import datetime
from uuid import UUID

from contracts.events import Event
from contracts.signaling import (
    GuestPutOnHold,
    KnocksMuted,
    KnocksUnmuted,
    LeftBecause,
    ParticipantAdmitted,
    ParticipantDenied,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantRemoved,
    RoomLocked,
    RoomUnlocked,
    ScreenShareStoppedBecause,
)
from runtime.refusals import Conflict
from services.signaling.domain.room import (
    NOT_HERE,
    NOT_IN_CALL,
    NOT_WAITING,
    NoHostYet,
    Person,
    Room,
    check_seat,
    event_ids,
    host,
    waiting_guest,
)
from services.signaling.domain.screen_share import share_ends


def admit(
    room: Room,
    by: UUID,
    participant_id: UUID,
    media_node: str,
    media_url: str | None,
    cap: int,
) -> list[Event]:
    host(room, by)
    guest = waiting_guest(room, participant_id)
    check_seat(room, cap, guest.role)
    events = _seated(room, guest, by, media_node, media_url)
    if not room.admitted_any and not room.knocks_muted:
        events.append(KnocksMuted(**event_ids(room), by=None))
    return events


def check_admit(room: Room, by: UUID, participant_id: UUID, cap: int) -> None:
    """What ``admit`` would refuse, before a seat is asked for."""
    host(room, by)
    guest = waiting_guest(room, participant_id)
    check_seat(room, cap, guest.role)


def let_in(
    room: Room, participant_id: UUID, media_node: str, media_url: str | None, cap: int
) -> list[Event]:
    """A direct-admission guest who waited for the first host takes their seat (no ``by``)."""
    if not room.host_in_call():
        raise NoHostYet("no_host_yet", "No host is in the call yet: wait for one.")
    guest = waiting_guest(room, participant_id)
    if not guest.direct:
        raise NOT_WAITING
    check_seat(room, cap, guest.role)
    return _seated(room, guest, None, media_node, media_url)


def _seated(
    room: Room, guest: Person, by: UUID | None, media_node: str, media_url: str | None
) -> list[Event]:
    """A waiting guest let in (by a host, or by no one for a direct link) and in the call."""
    ids = {**event_ids(room, guest), "participant_id": guest.participant_id}
    return [
        ParticipantAdmitted(**ids, by=by, media_node=media_node, media_url=media_url),
        ParticipantJoined(
            **ids,
            role=guest.role,
            display_name=guest.display_name,
            link_id=guest.link_id,
            media_node=media_node,
            media_url=media_url,
        ),
    ]


def deny(room: Room, by: UUID, participant_id: UUID, message: str) -> list[Event]:
    host(room, by)
    guest = waiting_guest(room, participant_id)
    return [
        ParticipantDenied(
            **event_ids(room, guest), participant_id=participant_id, message=message, by=by
        )
    ]


def hold(room: Room, by: UUID, participant_id: UUID, message: str) -> list[Event]:
    host(room, by)
    guest = waiting_guest(room, participant_id)
    return [
        GuestPutOnHold(
            **event_ids(room, guest), participant_id=participant_id, message=message, by=by
        )
    ]


def remove(room: Room, by: UUID, participant_id: UUID, message: str, now: datetime) -> list[Event]:
    host(room, by)
    if participant_id == by:
        raise Conflict("remove_self", "To leave the call yourself, leave it; do not remove.")
    person = room.people.get(participant_id)
    if person is None:
        raise NOT_HERE
    if person.waiting:
        raise NOT_IN_CALL
    ids = {**event_ids(room, person), "participant_id": participant_id}
    return [
        *share_ends(room, participant_id, ScreenShareStoppedBecause.left),
        ParticipantRemoved(**ids, message=message, by=by),
        ParticipantLeft(**ids, link_id=person.link_id, reason=LeftBecause.removed),
    ]


def lock(room: Room, by: UUID) -> list[Event]:
    host(room, by)
    return [] if room.locked else [RoomLocked(**event_ids(room), by=by)]


def unlock(room: Room, by: UUID) -> list[Event]:
    host(room, by)
    return [RoomUnlocked(**event_ids(room), by=by)] if room.locked else []


def mute_knocks(room: Room, by: UUID) -> list[Event]:
    host(room, by)
    return [] if room.knocks_muted else [KnocksMuted(**event_ids(room), by=by)]


def unmute_knocks(room: Room, by: UUID) -> list[Event]:
    host(room, by)
    return [KnocksUnmuted(**event_ids(room), by=by)] if room.knocks_muted else []
