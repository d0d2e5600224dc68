"""Talking to the waiting room (the text itself never reaches the aggregate), admitting
everyone waiting, and sending a guest back to wait."""

from uuid import UUID

from contracts.events import Event
from contracts.signaling import (
    CallRole,
    ParticipantSentToWaitingRoom,
    ScreenShareStoppedBecause,
    WaitingGuestReplied,
    WaitingRoomMessaged,
)
from runtime.refusals import Conflict, Forbidden
from services.signaling.domain.room import (
    NOT_HERE,
    NOT_IN_CALL,
    Room,
    event_ids,
    host,
    waiting_guest,
)
from services.signaling.domain.screen_share import share_ends

NOBODY_WAITING = Conflict("nobody_waiting", "Nobody is waiting.")
REPLIES_OFF = Forbidden("replies_off", "This clinic does not take replies in the waiting room.")
YOU_ARE_IN = Conflict("not_waiting", "You are in the call: only people waiting can reply here.")
NO_HOST_TO_READ = Conflict(
    "no_host_in_call", "No host is in the call to read your reply yet; please keep waiting."
)


def message_waiting(room: Room, by: UUID, participant_id: UUID | None, canned: bool) -> list[Event]:
    """A host writes to one waiting guest, or (``participant_id`` None) to everyone waiting."""
    host(room, by)
    if participant_id is None:
        to = [p.participant_id for p in room.waiting_in_order()]
        if not to:
            raise NOBODY_WAITING
    else:
        to = [waiting_guest(room, participant_id).participant_id]
    return [WaitingRoomMessaged(**event_ids(room), by=by, participant_ids=to, canned=canned)]


def check_reply(room: Room, participant_id: UUID, allowed: bool) -> None:
    """What ``reply_waiting`` would refuse."""
    person = room.people.get(participant_id)
    if person is None:
        raise NOT_HERE
    if not allowed:
        raise REPLIES_OFF
    if not person.waiting:
        raise YOU_ARE_IN
    if not room.hosts_present():
        raise NO_HOST_TO_READ


def reply_waiting(room: Room, participant_id: UUID, allowed: bool) -> list[Event]:
    """A waiting guest answers the hosts, when the clinic allows replies (``allowed``)."""
    check_reply(room, participant_id, allowed)
    person = room.people[participant_id]
    return [WaitingGuestReplied(**event_ids(room, person), participant_id=participant_id)]


def to_admit_all(room: Room, by: UUID) -> list[UUID]:
    """Whom a host's "admit all" lets in, in the order they came: everyone waiting or on
    hold, except those whose connection is down (they could not take their seat now)."""
    host(room, by)
    queue = [p.participant_id for p in room.waiting_in_order() if p.disconnected_until is None]
    if not queue:
        raise NOBODY_WAITING
    return queue


def send_to_waiting_room(room: Room, by: UUID, participant_id: UUID, message: str) -> list[Event]:
    """A host moves a guest from the call back to the waiting room; hosts stay."""
    host(room, by)
    if participant_id == by:
        raise Conflict("send_back_self", "You cannot send yourself to the waiting room.")
    person = room.people.get(participant_id)
    if person is None:
        raise NOT_HERE
    if person.role is CallRole.host:
        raise Forbidden("cannot_send_back_host", "A host cannot be sent to the waiting room.")
    if person.waiting:
        raise NOT_IN_CALL
    return [
        *share_ends(room, participant_id, ScreenShareStoppedBecause.left),
        ParticipantSentToWaitingRoom(
            **event_ids(room, person), participant_id=participant_id, by=by, message=message
        ),
    ]
