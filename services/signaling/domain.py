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
    ParticipantReconnected,
    ParticipantRemoved,
    RecordingStarted,
    RecordingStopped,
    RecordingStoppedBecause,
    RoomLocked,
    RoomUnlocked,
    SessionEnded,
    SessionStarted,
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

    def in_call(self) -> list[Person]:
        return [p for p in self.people.values() if p.status is Status.in_call]

    def waiting(self) -> list[Person]:
        return [p for p in self.people.values() if p.waiting]

    def hosts_present(self) -> bool:
        return any(p.role is CallRole.host and p.disconnected_until is None for p in self.in_call())

    def host_in_call(self) -> bool:
        """A host holds a place in the call (connected or within their rejoin grace)."""
        return any(p.role is CallRole.host for p in self.in_call())

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
    return [
        GuestKnocked(
            room_id=room.room_id,
            session_id=session_id or room.session_id,
            participant_id=participant_id,
            display_name=display_name,
            link_id=link_id,
            muted=room.knocks_muted,
            knocked_at=now,
            direct=direct,
        )
    ]


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
    return events


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


def start_recording(room: Room, by: UUID, recording_id: UUID, media_node: str) -> list[Event]:
    check_start_recording(room, by)
    return [RecordingStarted(**_ids(room), recording_id=recording_id, media_node=media_node, by=by)]


def stop_recording(room: Room, by: UUID) -> list[Event]:
    _host(room, by)
    if room.recording is None:
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
    for person in room.people.values():
        ids = {**_ids(room, person), "participant_id": person.participant_id}
        if person.waiting:
            events.append(KnockWithdrawn(**ids, reason=LeftBecause.ended))
        else:
            events.append(ParticipantLeft(**ids, link_id=person.link_id, reason=LeftBecause.ended))
    events.append(
        SessionEnded(
            **_ids(room), because=EndedBecause.ended_for_all, ended_at=now, message=message
        )
    )
    return events


# --- leaving and dropping -------------------------------------------------------------------


def leave(room: Room, participant_id: UUID, reason: LeftBecause, now: datetime) -> list[Event]:
    """Leaving never ends the call for others; the last one out ends it (``last_left``)."""
    person = room.people.get(participant_id)
    if person is None:
        return []
    ids = {**_ids(room, person), "participant_id": participant_id}
    if person.waiting:
        return [KnockWithdrawn(**ids, reason=reason)]
    events: list[Event] = [ParticipantLeft(**ids, link_id=person.link_id, reason=reason)]
    others = [p for p in room.in_call() if p.participant_id != participant_id]
    if room.live and not others:
        events += _recording_ends(room)
        events.append(SessionEnded(**_ids(room), because=EndedBecause.last_left, ended_at=now))
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
        case RoomLocked():
            return replace(room, locked=True)
        case RoomUnlocked():
            return replace(room, locked=False)
        case RecordingStarted():
            return replace(room, recording=event.recording_id, recording_node=event.media_node)
        case RecordingStopped():
            return replace(room, recording=None, recording_node="")
        case KnocksMuted():
            return replace(room, knocks_muted=True)
        case KnocksUnmuted():
            return replace(room, knocks_muted=False)
        case SessionEnded():
            # The room outlives the call: whoever still waits keeps waiting for the next host,
            # and the next call starts unlocked, with knocks alerting again.
            return Room(
                room_id=room.room_id,
                people={k: p for k, p in room.people.items() if p.waiting},
            )
    return room
