"""Folding: ``evolve`` applies one event of any concept to the room."""

from collections.abc import Callable
from dataclasses import replace
from uuid import UUID

from contracts.events import Event
from contracts.signaling import (
    CallRole,
    ChatMessageSent,
    GuestKnocked,
    GuestPutOnHold,
    KnocksMuted,
    KnocksUnmuted,
    KnockWithdrawn,
    MediaMoved,
    ParticipantAdmitted,
    ParticipantDenied,
    ParticipantDisconnected,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantMediaChanged,
    ParticipantReconnected,
    ParticipantRemoved,
    ParticipantSentToWaitingRoom,
    RecordingConsentAsked,
    RecordingConsentDeclined,
    RecordingConsentGiven,
    RecordingRequestCancelled,
    RecordingRequested,
    RecordingRequestLapsed,
    RecordingStarted,
    RecordingStopped,
    RoomLocked,
    RoomUnlocked,
    ScreenShareStarted,
    ScreenShareStopped,
    SessionEnded,
    SessionStarted,
    WaitingGuestReplied,
    WaitingRoomMessaged,
)
from services.signaling.domain.consent import consent_folded
from services.signaling.domain.room import Person, Room, Status


def _with(room: Room, person: Person) -> Room:
    return replace(room, people={**room.people, person.participant_id: person})


def _without(room: Room, participant_id: UUID) -> Room:
    if room.screen_share == participant_id:  # a sharer who leaves takes the share along
        room = replace(room, screen_share=None, screen_share_node="")
    return replace(room, people={k: v for k, v in room.people.items() if k != participant_id})


def _changed(room: Room, participant_id: UUID, change: Callable[[Person], Person]) -> Room:
    person = room.people.get(participant_id)
    return room if person is None else _with(room, change(person))


def evolve(room: Room | None, event: Event) -> Room:
    room = room or Room(room_id=event.room_id)  # type: ignore[attr-defined]
    match event:
        case SessionStarted():
            return replace(room, live=True, session_id=event.session_id)
        case GuestKnocked():
            return _with(
                room,
                Person(
                    participant_id=event.participant_id,
                    role=CallRole.guest,
                    display_name=event.display_name,
                    link_id=event.link_id,
                    status=Status.waiting,
                    since=event.knocked_at,
                    session_id=event.session_id,
                    muted=event.muted,
                    direct=event.direct,
                ),
            )
        case GuestPutOnHold():
            return _changed(
                room,
                event.participant_id,
                lambda p: replace(p, status=Status.on_hold, hold_message=event.message),
            )
        case ParticipantAdmitted():
            return replace(room, admitted_any=room.admitted_any or event.by is not None)
        case ParticipantJoined():
            before = room.people.get(event.participant_id)
            return _with(
                room,
                Person(
                    participant_id=event.participant_id,
                    role=event.role,
                    display_name=event.display_name,
                    link_id=event.link_id,
                    status=Status.in_call,
                    since=before.since if before else None,
                    session_id=event.session_id,
                    media_node=event.media_node,
                    # Admitted while their connection is down: the grace still runs, or they
                    # would never expire and keep a seat in the call for good.
                    disconnected_until=before.disconnected_until if before else None,
                ),
            )
        case ParticipantDisconnected():
            return _changed(
                room,
                event.participant_id,
                lambda p: replace(p, disconnected_until=event.grace_until),
            )
        case ParticipantReconnected():
            return _changed(
                room, event.participant_id, lambda p: replace(p, disconnected_until=None)
            )
        case MediaMoved():
            for pid in event.participant_ids:
                room = _changed(room, pid, lambda p: replace(p, media_node=event.media_node))
            return room
        case ParticipantDenied() | KnockWithdrawn() | ParticipantLeft():
            return _without(room, event.participant_id)
        case ParticipantRemoved():
            return room  # the ParticipantLeft that follows takes them out
        case WaitingRoomMessaged():
            for pid in event.participant_ids:
                room = _changed(room, pid, lambda p: replace(p, attended=True))
            return room
        case WaitingGuestReplied():
            return room
        case ParticipantSentToWaitingRoom():
            # Waiting again with the arrival time they had, no seat, no alert for the hosts.
            return _changed(
                room,
                event.participant_id,
                lambda p: replace(
                    p,
                    status=Status.waiting,
                    media_node=None,
                    direct=False,
                    attended=True,
                    sent_back=True,
                    hold_message=event.message,
                ),
            )
        case ParticipantMediaChanged():
            # A host's mute holds while the microphone stays off, whatever else changes.
            return _changed(
                room,
                event.participant_id,
                lambda p: replace(
                    p,
                    audio_on=event.audio_on,
                    video_on=event.video_on,
                    muted_by=None if event.audio_on else (event.by or p.muted_by),
                ),
            )
        case RoomLocked():
            return replace(room, locked=True)
        case RoomUnlocked():
            return replace(room, locked=False)
        case RecordingStarted():
            room = replace(room, recording=event.recording_id, recording_node=event.media_node)
            return consent_folded(room, event)
        case RecordingStopped():
            return consent_folded(replace(room, recording=None, recording_node=""), event)
        case (
            RecordingRequested()
            | RecordingConsentAsked()
            | RecordingConsentGiven()
            | RecordingConsentDeclined()
            | RecordingRequestLapsed()
            | RecordingRequestCancelled()
        ):
            return consent_folded(room, event)
        case ScreenShareStarted():
            return replace(
                room, screen_share=event.participant_id, screen_share_node=event.media_node
            )
        case ScreenShareStopped():
            return replace(room, screen_share=None, screen_share_node="")
        case KnocksMuted():
            return replace(room, knocks_muted=True)
        case KnocksUnmuted():
            return replace(room, knocks_muted=False)
        case ChatMessageSent():
            return replace(room, chat_messages=event.count)
        case SessionEnded():
            # The room outlives the call: whoever still waits keeps waiting for the next host,
            # and the next call starts unlocked, with knocks alerting again.
            return Room(
                room_id=room.room_id,
                people={k: p for k, p in room.people.items() if p.waiting},
            )
    return room
