"""Screen sharing: one at a time; the media node takes a screen from the sharer alone."""

from uuid import UUID

from contracts.events import Event
from contracts.signaling import (
    CallRole,
    ScreenShareStarted,
    ScreenShareStopped,
    ScreenShareStoppedBecause,
)
from runtime.refusals import Conflict, Forbidden
from services.signaling.domain.room import NOT_IN_CALL, Room, event_ids, host

GUESTS_MAY_NOT_SHARE = Forbidden(
    "screen_share_not_allowed", "This clinic does not let guests share their screen."
)
NOT_SHARING = Conflict("not_sharing", "That person is not sharing their screen.")
YOU_ARE_NOT_SHARING = Conflict("not_sharing", "You are not sharing your screen.")


def check_start_screen_share(room: Room, by: UUID, guests_may_share: bool) -> None:
    """Whether ``by`` may share their screen now (before the media node is asked)."""
    person = room.people.get(by)
    if person is None or person.waiting:
        raise NOT_IN_CALL
    if person.role is CallRole.guest and not guests_may_share:
        raise GUESTS_MAY_NOT_SHARE
    sharer = room.people.get(room.screen_share) if room.screen_share is not None else None
    if sharer is not None and sharer.participant_id != by:
        raise Conflict(
            "screen_share_busy",
            f"{sharer.display_name or 'Someone'} is sharing their screen; ask them to stop first.",
        )


def start_screen_share(
    room: Room, by: UUID, guests_may_share: bool, media_node: str
) -> list[Event]:
    check_start_screen_share(room, by, guests_may_share)
    if room.screen_share == by:
        return []
    person = room.people[by]
    return [ScreenShareStarted(**event_ids(room, person), participant_id=by, media_node=media_node)]


def stop_screen_share(room: Room, by: UUID, participant_id: UUID | None) -> list[Event]:
    """The sharer stops their own share; a host stops anyone's."""
    sharer = participant_id or by
    if sharer != by:
        host(room, by)
    if room.screen_share != sharer:
        raise YOU_ARE_NOT_SHARING if sharer == by else NOT_SHARING
    because = (
        ScreenShareStoppedBecause.stopped
        if sharer == by
        else ScreenShareStoppedBecause.host_stopped
    )
    return share_ends(room, sharer, because, by=by)


def share_ends(
    room: Room, participant_id: UUID, because: ScreenShareStoppedBecause, by: UUID | None = None
) -> list[Event]:
    """The share ends if ``participant_id`` is the one sharing (before they leave the call)."""
    if room.screen_share != participant_id:
        return []
    person = room.people.get(participant_id)
    return [
        ScreenShareStopped(
            **event_ids(room, person),
            participant_id=participant_id,
            by=by,
            because=because,
            media_node=room.screen_share_node,
        )
    ]
