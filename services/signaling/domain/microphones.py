"""Microphone and camera: what each page says of its own, and a host's mute."""

from uuid import UUID

from contracts.events import Event
from contracts.signaling import ParticipantMediaChanged
from runtime.refusals import Conflict
from services.signaling.domain.room import NOT_HERE, NOT_IN_CALL, Person, Room, event_ids, host

MUTE_SELF = Conflict("mute_self", "To turn your own microphone off, use your microphone button.")
ASK_SELF = Conflict("ask_self", "To turn your own microphone on, use your microphone button.")
MICROPHONE_ON = Conflict("microphone_on", "That person's microphone is already on.")
STATE_IN_CALL = Conflict(
    "not_in_call", "Your microphone and camera are shown to others once you are in the call."
)


def _in_call(room: Room, participant_id: UUID) -> Person:
    person = room.people.get(participant_id)
    if person is None:
        raise NOT_HERE
    if person.waiting:
        raise NOT_IN_CALL
    return person


def media_state(room: Room, participant_id: UUID, audio_on: bool, video_on: bool) -> list[Event]:
    """Someone in the call says how their microphone and camera are; nothing when unchanged.
    Turning the microphone on lifts a host's mute (only they can)."""
    person = room.people.get(participant_id)
    if person is None:
        raise NOT_HERE
    if person.waiting:
        raise STATE_IN_CALL
    if (person.audio_on, person.video_on) == (audio_on, video_on):
        return []
    return [
        ParticipantMediaChanged(
            **event_ids(room, person),
            participant_id=participant_id,
            audio_on=audio_on,
            video_on=video_on,
        )
    ]


def mute(room: Room, by: UUID, participant_id: UUID) -> list[Event]:
    """A host mutes someone else's microphone (a host's too); it holds on the media node
    until they turn it on again. Nothing when a host's mute holds already."""
    host(room, by)
    if participant_id == by:
        raise MUTE_SELF
    person = _in_call(room, participant_id)
    if person.muted_by is not None:
        return []
    # Also when their page says it is off already: the page's word is not what silences them.
    return [
        ParticipantMediaChanged(
            **event_ids(room, person),
            participant_id=participant_id,
            audio_on=False,
            video_on=person.video_on,
            by=by,
        )
    ]


def check_ask_unmute(room: Room, by: UUID, participant_id: UUID) -> None:
    """Whether ``by`` may ask ``participant_id`` to turn their microphone on (no event: only
    they can, and the request is not part of the call's record)."""
    host(room, by)
    if participant_id == by:
        raise ASK_SELF
    if _in_call(room, participant_id).audio_on:
        raise MICROPHONE_ON
