"""The room and the people in it: the aggregate's state, the refusals its commands share,
and the rules every concept checks (who is a host, who waits, whether a seat is free)."""

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING
from uuid import UUID

from contracts.signaling import CallRole
from runtime.refusals import Conflict, Forbidden, NotFound, Refused

if TYPE_CHECKING:
    from services.signaling.domain.consent import ConsentRequest


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


def event_ids(room: Room, person: Person | None = None) -> dict[str, object]:
    """The room and session an event names (the person's own session when they have one)."""
    session_id = (person.session_id if person else None) or room.session_id
    return {"room_id": room.room_id, "session_id": session_id}


def host(room: Room, by: UUID) -> Person:
    """``by``, a host in the call; anyone else is refused (``only_hosts``)."""
    host = room.people.get(by)
    if host is None or host.role is not CallRole.host or host.status is not Status.in_call:
        raise ONLY_HOSTS
    return host


def waiting_guest(room: Room, participant_id: UUID) -> Person:
    """``participant_id``, waiting or on hold; refused when not here or in the call."""
    person = room.people.get(participant_id)
    if person is None:
        raise NOT_HERE
    if not person.waiting:
        raise NOT_WAITING
    return person


def check_seat(room: Room, cap: int, role: CallRole) -> None:
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
