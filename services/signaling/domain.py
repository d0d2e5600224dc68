"""A room's waiting room and call, as an event-sourced aggregate (stream ``room-<room_id>``).

Who waits, who is on hold, who is in the call, whether the room is locked and knocks muted.
Commands check the rules and return events; ``evolve`` folds them. No I/O: the seat itself
comes from the media node (which enforces the cap too), the caller passes what it answered.
"""

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from uuid import UUID

from contracts.events import Event
from contracts.signaling import (
    CallRole,
    ChatMessageSent,
    ConsentStatus,
    EndedBecause,
    GuestKnocked,
    GuestPutOnHold,
    KnocksMuted,
    KnocksUnmuted,
    KnockWithdrawn,
    LeftBecause,
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
    RecordingConsent,
    RecordingConsentAsked,
    RecordingConsentDeclined,
    RecordingConsentGiven,
    RecordingRequestCancelled,
    RecordingRequested,
    RecordingRequestLapsed,
    RecordingStarted,
    RecordingStopped,
    RecordingStoppedBecause,
    RoomLocked,
    RoomUnlocked,
    ScreenShareStarted,
    ScreenShareStopped,
    ScreenShareStoppedBecause,
    SessionEnded,
    SessionStarted,
    WaitingGuestReplied,
    WaitingRoomMessaged,
)
from runtime.refusals import Conflict, Forbidden, NotFound, Refused


class Status(StrEnum):
    waiting = "waiting"
    on_hold = "on_hold"
    in_call = "in_call"


@dataclass(frozen=True)
class Person:
    participant_id: UUID
    role: CallRole
    display_name: str
    link_id: UUID | None
    status: Status
    since: datetime | None
    session_id: UUID | None = None
    muted: bool = False
    hold_message: str = ""
    disconnected_until: datetime | None = None
    media_node: str | None = None
    direct: bool = False
    """Came by a direct-admission link before any host: let in when the first host enters."""
    audio_on: bool = True
    """Their microphone, as their page last said (on until it says)."""
    video_on: bool = True
    muted_by: UUID | None = None
    """The host who muted their microphone, until they turn it on again themselves."""
    attended: bool = False
    """Waiting, and a host has turned to them since: written to them, or sent them back."""
    sent_back: bool = False
    """Waiting because a host sent them back from the call (``hold_message``: what they said)."""

    @property
    def waiting(self) -> bool:
        return self.status is not Status.in_call


@dataclass(frozen=True)
class Room:
    room_id: UUID
    session_id: UUID | None = None
    live: bool = False
    locked: bool = False
    knocks_muted: bool = False
    admitted_any: bool = False
    people: dict[UUID, Person] = field(default_factory=dict)
    recording: UUID | None = None
    """The recording under way, if any, and the media node that makes it."""
    recording_node: str = ""
    screen_share: UUID | None = None
    """Who shares their screen (at most one), and the media node that forwards it."""
    screen_share_node: str = ""
    chat_messages: int = 0
    """Chat messages sent in this call so far (``ChatMessageSent.count``)."""
    consent: "ConsentRequest | None" = None
    """The latest request to record, kept once settled so that hosts see how it ended."""

    def in_call(self) -> list[Person]:
        return [p for p in self.people.values() if p.status is Status.in_call]

    def waiting(self) -> list[Person]:
        return [p for p in self.people.values() if p.waiting]

    def hosts_present(self) -> bool:
        return any(p.role is CallRole.host and p.disconnected_until is None for p in self.in_call())

    def host_in_call(self) -> bool:
        """A host holds a place in the call (connected or within their rejoin grace)."""
        return any(p.role is CallRole.host for p in self.in_call())

    def waiting_in_order(self) -> list[Person]:
        """Everyone waiting (on hold too), in the order they came."""
        return sorted(self.waiting(), key=lambda p: (p.since is None, p.since))

    def let_in_on_arrival(self) -> list["Person"]:
        """Direct-admission guests who arrived before any host, in the order they came."""
        early = [p for p in self.people.values() if p.direct and p.status is Status.waiting]
        return sorted(early, key=lambda p: (p.since is None, p.since))


class RoomFull(Refused):
    status = 409


class Locked(Refused):
    status = 423


class HostArrived(Refused):
    """A direct-admission guest decided to wait while no host was in, and meanwhile one came:
    the guest takes a seat instead (never sent to anyone)."""

    status = 409


class NoHostYet(Refused):
    """A direct-admission guest decided to enter while a host was in, and meanwhile the last
    host left: the guest waits instead (never sent to anyone)."""

    status = 409


ONLY_HOSTS = Forbidden("only_hosts", "Only a host can do that.")
NOT_HERE = NotFound("participant_not_found", "That person is not in this room.")
NOT_WAITING = Conflict("not_waiting", "That guest is no longer waiting.")
NOT_IN_CALL = Conflict("not_in_call", "That person is not in the call.")
ROOM_LOCKED = Locked(
    "room_locked", "The host has locked this room, so no one else can join right now."
)


def room_full(cap: int) -> RoomFull:
    return RoomFull(
        "room_full", f"This call is full: it already has {cap} participants, the most it allows."
    )


def _ids(room: Room, person: Person | None = None) -> dict[str, object]:
    session_id = (person.session_id if person else None) or room.session_id
    return {"room_id": room.room_id, "session_id": session_id}


def _host(room: Room, by: UUID) -> Person:
    host = room.people.get(by)
    if host is None or host.role is not CallRole.host or host.status is not Status.in_call:
        raise ONLY_HOSTS
    return host


def _waiting(room: Room, participant_id: UUID) -> Person:
    person = room.people.get(participant_id)
    if person is None:
        raise NOT_HERE
    if not person.waiting:
        raise NOT_WAITING
    return person


def _check_seat(room: Room, cap: int, role: CallRole) -> None:
    """The cap counts everyone; its last place is kept for a host, so guests hold at most
    ``cap - 1`` places and the practitioner can always enter their own call."""
    in_call = room.in_call()
    if len(in_call) >= cap:
        raise room_full(cap)
    guests = sum(p.role is CallRole.guest for p in in_call)
    if role is CallRole.guest and cap > 1 and guests >= cap - 1:
        raise RoomFull(
            "room_full",
            f"This call is full: it has {guests} guests, and its last place is kept for the host.",
        )


# --- arriving -------------------------------------------------------------------------------


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
    return [knocked, *_asked_on_arrival(room, participant_id, knocked.session_id)]


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
    _check_seat(room, cap, role)
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
    return events + _asked_on_arrival(room, participant_id, session_id)


# --- the call manager (hosts) ---------------------------------------------------------------


def admit(
    room: Room,
    by: UUID,
    participant_id: UUID,
    media_node: str,
    media_url: str | None,
    cap: int,
) -> list[Event]:
    _host(room, by)
    guest = _waiting(room, participant_id)
    _check_seat(room, cap, guest.role)
    events = _seated(room, guest, by, media_node, media_url)
    if not room.admitted_any and not room.knocks_muted:
        events.append(KnocksMuted(**_ids(room), by=None))
    return events


def check_admit(room: Room, by: UUID, participant_id: UUID, cap: int) -> None:
    """What ``admit`` would refuse, before a seat is asked for."""
    _host(room, by)
    guest = _waiting(room, participant_id)
    _check_seat(room, cap, guest.role)


def let_in(
    room: Room, participant_id: UUID, media_node: str, media_url: str | None, cap: int
) -> list[Event]:
    """A direct-admission guest who waited for the first host takes their seat (no ``by``)."""
    if not room.host_in_call():
        raise NoHostYet("no_host_yet", "No host is in the call yet: wait for one.")
    guest = _waiting(room, participant_id)
    if not guest.direct:
        raise NOT_WAITING
    _check_seat(room, cap, guest.role)
    return _seated(room, guest, None, media_node, media_url)


def _seated(
    room: Room, guest: Person, by: UUID | None, media_node: str, media_url: str | None
) -> list[Event]:
    """A waiting guest let in (by a host, or by no one for a direct link) and in the call."""
    ids = {**_ids(room, guest), "participant_id": guest.participant_id}
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


def seat_lapsed(room: Room, participant_ids: list[UUID], now: datetime) -> list[Event]:
    """The media node no longer holds a seat for these people in the call (their media never
    connected and the reservation lapsed): their places end, so the call and the seats agree."""
    events: list[Event] = []
    for participant_id in participant_ids:
        person = room.people.get(participant_id)
        if person is None or person.waiting:
            continue
        left = leave(room, participant_id, LeftBecause.seat_lapsed, now)
        for event in left:
            room = evolve(room, event)
        events += left
    return events


def on_dead_nodes(room: Room, live: set[str]) -> set[str]:
    """The media nodes people in the call hold seats on that are not among ``live``."""
    return {p.media_node for p in room.in_call() if p.media_node and p.media_node not in live}


def move_media(room: Room, from_node: str, media_node: str, media_url: str | None) -> list[Event]:
    """The call's node ``from_node`` died and the media service placed the room on
    ``media_node``: everyone in the call on the dead node moves there, keeping their place.
    Nothing when nobody is on ``from_node`` any more (another replica moved them first)."""
    moved = [p.participant_id for p in room.in_call() if p.media_node == from_node]
    if not moved or media_node == from_node:
        return []
    events: list[Event] = [
        MediaMoved(
            **_ids(room),
            from_node=from_node,
            media_node=media_node,
            media_url=media_url,
            participant_ids=moved,
        )
    ]
    if room.screen_share is not None and room.screen_share_node == from_node:
        events += _share_ends(room, room.screen_share, ScreenShareStoppedBecause.media_node_lost)
    if room.recording is not None and room.recording_node == from_node:
        events.append(
            RecordingStopped(
                **_ids(room),
                recording_id=room.recording,
                media_node=from_node,
                because=RecordingStoppedBecause.media_node_lost,
            )
        )
    return events


def deny(room: Room, by: UUID, participant_id: UUID, message: str) -> list[Event]:
    _host(room, by)
    guest = _waiting(room, participant_id)
    return [
        ParticipantDenied(
            **_ids(room, guest), participant_id=participant_id, message=message, by=by
        )
    ]


def hold(room: Room, by: UUID, participant_id: UUID, message: str) -> list[Event]:
    _host(room, by)
    guest = _waiting(room, participant_id)
    return [
        GuestPutOnHold(**_ids(room, guest), participant_id=participant_id, message=message, by=by)
    ]


def remove(room: Room, by: UUID, participant_id: UUID, message: str, now: datetime) -> list[Event]:
    _host(room, by)
    if participant_id == by:
        raise Conflict("remove_self", "To leave the call yourself, leave it; do not remove.")
    person = room.people.get(participant_id)
    if person is None:
        raise NOT_HERE
    if person.waiting:
        raise NOT_IN_CALL
    ids = {**_ids(room, person), "participant_id": participant_id}
    return [
        *_share_ends(room, participant_id, ScreenShareStoppedBecause.left),
        ParticipantRemoved(**ids, message=message, by=by),
        ParticipantLeft(**ids, link_id=person.link_id, reason=LeftBecause.removed),
    ]


def lock(room: Room, by: UUID) -> list[Event]:
    _host(room, by)
    return [] if room.locked else [RoomLocked(**_ids(room), by=by)]


def unlock(room: Room, by: UUID) -> list[Event]:
    _host(room, by)
    return [RoomUnlocked(**_ids(room), by=by)] if room.locked else []


def mute_knocks(room: Room, by: UUID) -> list[Event]:
    _host(room, by)
    return [] if room.knocks_muted else [KnocksMuted(**_ids(room), by=by)]


def unmute_knocks(room: Room, by: UUID) -> list[Event]:
    _host(room, by)
    return [KnocksUnmuted(**_ids(room), by=by)] if room.knocks_muted else []


NOT_LIVE = Conflict("not_live", "The call has not started.")
ALREADY_RECORDING = Conflict("already_recording", "This call is already being recorded.")
NOT_RECORDING = Conflict("not_recording", "This call is not being recorded.")


def check_start_recording(room: Room, by: UUID) -> None:
    """Whether ``by`` may start a recording now (before the media node is asked)."""
    _host(room, by)
    if not room.live:
        raise NOT_LIVE
    if room.recording is not None:
        raise ALREADY_RECORDING
    if room.consent is not None and room.consent.status is ConsentStatus.asking:
        raise CONSENT_PENDING


def start_recording(room: Room, by: UUID, recording_id: UUID, media_node: str) -> list[Event]:
    check_start_recording(room, by)
    return [RecordingStarted(**_ids(room), recording_id=recording_id, media_node=media_node, by=by)]


def stop_recording(room: Room, by: UUID) -> list[Event]:
    """Stop the recording; before it started, withdraw the request that waits for answers."""
    _host(room, by)
    if room.recording is None:
        asking = room.consent
        if asking is not None and asking.status is ConsentStatus.asking:
            return [RecordingRequestCancelled(**_ids(room), request_id=asking.request_id, by=by)]
        raise NOT_RECORDING
    return [
        RecordingStopped(
            **_ids(room),
            recording_id=room.recording,
            media_node=room.recording_node,
            because=RecordingStoppedBecause.host_stopped,
            by=by,
        )
    ]


def _recording_ends(room: Room) -> list[Event]:
    if room.recording is None:
        return []
    return [
        RecordingStopped(
            **_ids(room),
            recording_id=room.recording,
            media_node=room.recording_node,
            because=RecordingStoppedBecause.session_ended,
        )
    ]


def end_for_all(room: Room, by: UUID, message: str, now: datetime) -> list[Event]:
    """Only ever a host's explicit act: the server never ends a meeting for all by itself."""
    _host(room, by)
    events: list[Event] = _recording_ends(room)
    if room.screen_share is not None:
        events += _share_ends(room, room.screen_share, ScreenShareStoppedBecause.session_ended)
    for person in room.people.values():
        ids = {**_ids(room, person), "participant_id": person.participant_id}
        if person.waiting:
            events.append(KnockWithdrawn(**ids, reason=LeftBecause.ended))
        else:
            events.append(ParticipantLeft(**ids, link_id=person.link_id, reason=LeftBecause.ended))
    events.append(
        SessionEnded(
            **_ids(room),
            because=EndedBecause.ended_for_all,
            ended_at=now,
            message=message,
            chat_messages=room.chat_messages,
        )
    )
    return events


# --- recording consent ----------------------------------------------------------------------


@dataclass(frozen=True)
class ConsentRequest:
    """A host's request to record, and the answers so far."""

    request_id: UUID
    by: UUID
    policy: RecordingConsent
    answer_by: datetime
    asked: dict[UUID, str]
    """Who was asked (the asking host is not: asking is consenting), with their name then."""
    by_name: str = ""
    given: frozenset[UUID] = frozenset()
    declined: frozenset[UUID] = frozenset()
    status: ConsentStatus = ConsentStatus.asking
    started: bool = False
    """The recording it asked for started (a decline then stopped it)."""

    @property
    def open(self) -> bool:
        """Asking, or recording: whoever arrives is asked too."""
        return self.status in (ConsentStatus.asking, ConsentStatus.recording)

    def pending(self) -> list[UUID]:
        return [p for p in self.asked if p not in self.given and p not in self.declined]


CONSENT_PENDING = Conflict(
    "consent_pending",
    "A request to record is still waiting for answers: it starts once everyone has "
    "consented, or stop it first.",
)
NOT_ASKED = Conflict("consent_not_asked", "There is no request to record for you to answer.")


def _asked_on_arrival(room: Room, participant_id: UUID, session_id: UUID | None) -> list[Event]:
    """Whoever arrives while a recording is asked for or on (policy ``all``) is asked too,
    in the same append as their arrival: nobody enters unasked."""
    asking = room.consent
    if asking is None or not asking.open or asking.policy is not RecordingConsent.all:
        return []
    if participant_id in asking.asked or participant_id == asking.by:
        return []
    return [
        RecordingConsentAsked(
            room_id=room.room_id,
            session_id=session_id or room.session_id,
            participant_id=participant_id,
            request_id=asking.request_id,
        )
    ]


def request_recording(room: Room, by: UUID, request_id: UUID, answer_by: datetime) -> list[Event]:
    """A host asks to record under the policy ``all``: everyone else in the room, in the call
    or waiting, is asked (those in the call must all consent before it starts)."""
    check_start_recording(room, by)
    asked = [pid for pid in room.people if pid != by]
    return [
        RecordingRequested(
            **_ids(room),
            request_id=request_id,
            by=by,
            policy=RecordingConsent.all,
            asked=asked,
            answer_by=answer_by,
        )
    ]


def record_with_notice(
    room: Room, by: UUID, request_id: UUID, recording_id: UUID, media_node: str, now: datetime
) -> list[Event]:
    """A host records at once under the policy ``notice``: everyone is told, nobody asked."""
    check_start_recording(room, by)
    ids = _ids(room)
    return [
        RecordingRequested(
            **ids,
            request_id=request_id,
            by=by,
            policy=RecordingConsent.notice,
            asked=[],
            answer_by=now,
        ),
        RecordingStarted(
            **ids, recording_id=recording_id, media_node=media_node, by=by, request_id=request_id
        ),
    ]


def unanswered(room: Room) -> list[Person]:
    """People in the call asked to consent who have not answered (those waiting do not hold
    a recording back: they are asked again by their page before their media connects)."""
    asking = room.consent
    if asking is None or not asking.open:
        return []
    pending = set(asking.pending())
    return [p for p in room.in_call() if p.participant_id in pending]


def awaiting_consent(room: Room, participant_id: UUID) -> bool:
    """A recording is on under the policy ``all`` and this person, asked, has not answered:
    their media may not connect yet (a page asks first; signaling refuses their offers)."""
    asking = room.consent
    return (
        room.recording is not None
        and asking is not None
        and asking.policy is RecordingConsent.all
        and asking.status is ConsentStatus.recording
        and participant_id in asking.pending()
    )


CONSENT_NEEDED = Conflict(
    "consent_needed",
    "This call is being recorded: answer whether you consent before your camera and "
    "microphone connect.",
)


def ready_to_record(room: Room) -> bool:
    """Everyone in the call has consented to the request that asks: it may start now."""
    asking = room.consent
    return (
        asking is not None
        and asking.status is ConsentStatus.asking
        and room.live
        and room.recording is None
        and room.host_in_call()
        and not unanswered(room)
    )


def start_consented_recording(
    room: Room, request_id: UUID, recording_id: UUID, media_node: str
) -> list[Event]:
    asking = room.consent
    if (
        asking is None
        or asking.request_id != request_id
        or asking.status is not ConsentStatus.asking
    ):
        raise NOT_ASKED
    if room.recording is not None:
        raise ALREADY_RECORDING
    if not ready_to_record(room):
        raise CONSENT_PENDING
    return [
        RecordingStarted(
            **_ids(room),
            recording_id=recording_id,
            media_node=media_node,
            by=asking.by,
            request_id=request_id,
        )
    ]


def answer_consent(room: Room, participant_id: UUID, request_id: UUID, given: bool) -> list[Event]:
    """Someone asked answers. A decline ends the request, and stops the recording if it is on
    (someone who consented may still decline later)."""
    person = room.people.get(participant_id)
    if person is None:
        raise NOT_HERE
    asking = room.consent
    if (
        asking is None
        or asking.request_id != request_id
        or not asking.open
        or participant_id not in asking.asked
    ):
        raise NOT_ASKED
    ids = {**_ids(room, person), "participant_id": participant_id, "request_id": request_id}
    if given:
        return [] if participant_id in asking.given else [RecordingConsentGiven(**ids)]
    events: list[Event] = [RecordingConsentDeclined(**ids)]
    if room.recording is not None:
        events.append(
            RecordingStopped(
                **_ids(room),
                recording_id=room.recording,
                media_node=room.recording_node,
                because=RecordingStoppedBecause.consent_declined,
                by=participant_id,
            )
        )
    return events


def lapse_consent(room: Room, now: datetime) -> list[Event]:
    """The request's time is up and someone in the call has not answered: it lapses."""
    asking = room.consent
    if asking is None or asking.status is not ConsentStatus.asking or asking.answer_by > now:
        return []
    late = unanswered(room)
    if not late:
        return []  # everyone in the call consented: it starts instead
    return [
        RecordingRequestLapsed(
            **_ids(room),
            request_id=asking.request_id,
            unanswered=[p.participant_id for p in late],
        )
    ]


def _consent_folded(room: Room, event: Event) -> Room:
    asking = room.consent
    match event:
        case RecordingRequested():
            names = {pid: p.display_name for pid, p in room.people.items()}
            asked = {pid: names.get(pid, "") for pid in event.asked}
            request = ConsentRequest(
                event.request_id,
                event.by,
                event.policy,
                event.answer_by,
                asked,
                by_name=names.get(event.by, ""),
            )
            return replace(room, consent=request)
    # RecordingStopped names no request: it ends whichever recording is on.
    if asking is None or getattr(event, "request_id", asking.request_id) != asking.request_id:
        return room
    match event:
        case RecordingConsentAsked():
            person = room.people.get(event.participant_id)
            name = person.display_name if person else ""
            asking = replace(asking, asked={**asking.asked, event.participant_id: name})
        case RecordingConsentGiven():
            asking = replace(asking, given=asking.given | {event.participant_id})
        case RecordingConsentDeclined():
            asking = replace(
                asking,
                given=asking.given - {event.participant_id},
                declined=asking.declined | {event.participant_id},
                status=ConsentStatus.declined,
            )
        case RecordingRequestLapsed():
            asking = replace(asking, status=ConsentStatus.lapsed)
        case RecordingRequestCancelled():
            asking = replace(asking, status=ConsentStatus.cancelled)
        case RecordingStarted():
            asking = replace(asking, status=ConsentStatus.recording, started=True)
        case RecordingStopped() if asking.status is ConsentStatus.recording:
            asking = replace(asking, status=ConsentStatus.stopped)
    return replace(room, consent=asking)


# --- talking to the waiting room (the text itself never reaches the aggregate) ---------------

NOBODY_WAITING = Conflict("nobody_waiting", "Nobody is waiting.")
REPLIES_OFF = Forbidden("replies_off", "This clinic does not take replies in the waiting room.")
YOU_ARE_IN = Conflict("not_waiting", "You are in the call: only people waiting can reply here.")
NO_HOST_TO_READ = Conflict(
    "no_host_in_call", "No host is in the call to read your reply yet; please keep waiting."
)


def message_waiting(room: Room, by: UUID, participant_id: UUID | None, canned: bool) -> list[Event]:
    """A host writes to one waiting guest, or (``participant_id`` None) to everyone waiting."""
    _host(room, by)
    if participant_id is None:
        to = [p.participant_id for p in room.waiting_in_order()]
        if not to:
            raise NOBODY_WAITING
    else:
        to = [_waiting(room, participant_id).participant_id]
    return [WaitingRoomMessaged(**_ids(room), by=by, participant_ids=to, canned=canned)]


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
    return [WaitingGuestReplied(**_ids(room, person), participant_id=participant_id)]


def to_admit_all(room: Room, by: UUID) -> list[UUID]:
    """Whom a host's "admit all" lets in, in the order they came: everyone waiting or on
    hold, except those whose connection is down (they could not take their seat now)."""
    _host(room, by)
    queue = [p.participant_id for p in room.waiting_in_order() if p.disconnected_until is None]
    if not queue:
        raise NOBODY_WAITING
    return queue


def send_to_waiting_room(room: Room, by: UUID, participant_id: UUID, message: str) -> list[Event]:
    """A host moves a guest from the call back to the waiting room; hosts stay."""
    _host(room, by)
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
        *_share_ends(room, participant_id, ScreenShareStoppedBecause.left),
        ParticipantSentToWaitingRoom(
            **_ids(room, person), participant_id=participant_id, by=by, message=message
        ),
    ]


# --- in-call chat (the text itself never reaches the aggregate) -----------------------------

CHAT_NOT_IN_CALL = Conflict(
    "not_in_call", "You can chat once you are in the call; the waiting room has no chat."
)


def chat(room: Room, by: UUID, message_id: UUID) -> list[Event]:
    """Someone in the call sends a chat message: counted, never recorded."""
    person = room.people.get(by)
    if person is None or person.waiting:
        raise CHAT_NOT_IN_CALL
    return [
        ChatMessageSent(
            **_ids(room, person),
            participant_id=by,
            message_id=message_id,
            count=room.chat_messages + 1,
        )
    ]


# --- screen sharing (one at a time; the media node takes a screen from the sharer alone) -----

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
    return [ScreenShareStarted(**_ids(room, person), participant_id=by, media_node=media_node)]


def stop_screen_share(room: Room, by: UUID, participant_id: UUID | None) -> list[Event]:
    """The sharer stops their own share; a host stops anyone's."""
    sharer = participant_id or by
    if sharer != by:
        _host(room, by)
    if room.screen_share != sharer:
        raise YOU_ARE_NOT_SHARING if sharer == by else NOT_SHARING
    because = (
        ScreenShareStoppedBecause.stopped
        if sharer == by
        else ScreenShareStoppedBecause.host_stopped
    )
    return _share_ends(room, sharer, because, by=by)


def _share_ends(
    room: Room, participant_id: UUID, because: ScreenShareStoppedBecause, by: UUID | None = None
) -> list[Event]:
    """The share ends if ``participant_id`` is the one sharing (before they leave the call)."""
    if room.screen_share != participant_id:
        return []
    person = room.people.get(participant_id)
    return [
        ScreenShareStopped(
            **_ids(room, person),
            participant_id=participant_id,
            by=by,
            because=because,
            media_node=room.screen_share_node,
        )
    ]


# --- microphone and camera -------------------------------------------------------------------

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
            **_ids(room, person),
            participant_id=participant_id,
            audio_on=audio_on,
            video_on=video_on,
        )
    ]


def mute(room: Room, by: UUID, participant_id: UUID) -> list[Event]:
    """A host mutes someone else's microphone (a host's too); it holds on the media node
    until they turn it on again. Nothing when a host's mute holds already."""
    _host(room, by)
    if participant_id == by:
        raise MUTE_SELF
    person = _in_call(room, participant_id)
    if person.muted_by is not None:
        return []
    # Also when their page says it is off already: the page's word is not what silences them.
    return [
        ParticipantMediaChanged(
            **_ids(room, person),
            participant_id=participant_id,
            audio_on=False,
            video_on=person.video_on,
            by=by,
        )
    ]


def check_ask_unmute(room: Room, by: UUID, participant_id: UUID) -> None:
    """Whether ``by`` may ask ``participant_id`` to turn their microphone on (no event: only
    they can, and the request is not part of the call's record)."""
    _host(room, by)
    if participant_id == by:
        raise ASK_SELF
    if _in_call(room, participant_id).audio_on:
        raise MICROPHONE_ON


# --- leaving and dropping -------------------------------------------------------------------


def leave(room: Room, participant_id: UUID, reason: LeftBecause, now: datetime) -> list[Event]:
    """Leaving never ends the call for others; the last one out ends it (``last_left``)."""
    person = room.people.get(participant_id)
    if person is None:
        return []
    ids = {**_ids(room, person), "participant_id": participant_id}
    if person.waiting:
        return [KnockWithdrawn(**ids, reason=reason)]
    events: list[Event] = _share_ends(room, participant_id, ScreenShareStoppedBecause.left)
    events.append(ParticipantLeft(**ids, link_id=person.link_id, reason=reason))
    others = [p for p in room.in_call() if p.participant_id != participant_id]
    if room.live and not others:
        events += _recording_ends(room)
        events.append(
            SessionEnded(
                **_ids(room),
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
            **_ids(room, person), participant_id=participant_id, grace_until=grace_until
        )
    ]


def reconnected(room: Room, participant_id: UUID) -> list[Event]:
    person = room.people.get(participant_id)
    if person is None:
        raise NOT_HERE
    if person.disconnected_until is None:
        return []
    return [ParticipantReconnected(**_ids(room, person), participant_id=participant_id)]


def expire(room: Room, participant_id: UUID, now: datetime) -> list[Event]:
    """The rejoin grace is over: whoever has not come back has left."""
    person = room.people.get(participant_id)
    if person is None or person.disconnected_until is None or person.disconnected_until > now:
        return []
    return leave(room, participant_id, LeftBecause.disconnected, now)


# --- folding --------------------------------------------------------------------------------


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
            return _consent_folded(room, event)
        case RecordingStopped():
            return _consent_folded(replace(room, recording=None, recording_node=""), event)
        case (
            RecordingRequested()
            | RecordingConsentAsked()
            | RecordingConsentGiven()
            | RecordingConsentDeclined()
            | RecordingRequestLapsed()
            | RecordingRequestCancelled()
        ):
            return _consent_folded(room, event)
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
