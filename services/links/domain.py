"""A link slot: one purpose a link serves (a session's guest link, a client room's link...).

A slot's stream holds every link issued for that purpose. At most one link is current; a
regenerated link is replaced at once, a retired (deprecated) one keeps working until its
sunset next to its successor, a revoked one is dead. Commands return events; no I/O.
"""

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from uuid import UUID

from contracts.events import Event
from contracts.links import (
    LinkDeprecated,
    LinkIssued,
    LinkKind,
    LinkRegenerated,
    LinkRevoked,
    RevokedBecause,
    Role,
)
from runtime.refusals import Conflict, NotFound

REGENERABLE = frozenset({LinkKind.guest, LinkKind.client_room})
RETIRABLE = frozenset(LinkKind) - {LinkKind.practitioner_room}
"""A readable room link is an address, not a secret: there is nothing to rotate."""


class State(StrEnum):
    active = "active"
    deprecated = "deprecated"
    replaced = "replaced"
    revoked = "revoked"


@dataclass(frozen=True)
class Link:
    link_id: UUID
    kind: LinkKind
    state: State = State.active


@dataclass(frozen=True)
class Slot:
    links: dict[UUID, Link] = field(default_factory=dict)
    current: UUID | None = None

    def working(self) -> list[Link]:
        return [x for x in self.links.values() if x.state in (State.active, State.deprecated)]


@dataclass(frozen=True)
class NewLink:
    """A link about to be issued: the handler made its token and sealed its URL."""

    link_id: UUID
    kind: LinkKind
    role: Role
    url_sealed: str
    path: str | None = None
    session_id: UUID | None = None
    room_id: UUID | None = None
    client_id: UUID | None = None
    attendee_id: UUID | None = None
    practitioner_id: UUID | None = None

    def fields(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def evolve(state: Slot | None, event: Event) -> Slot:
    slot = state or Slot()
    match event:
        case LinkIssued() | LinkRegenerated():
            links = dict(slot.links)
            if isinstance(event, LinkRegenerated) and event.replaces_link_id in links:
                old = links[event.replaces_link_id]
                links[old.link_id] = replace(old, state=State.replaced)
            links[event.link_id] = Link(event.link_id, event.kind)
            return Slot(links, event.link_id)
        case LinkRevoked() if event.link_id in slot.links:
            link = replace(slot.links[event.link_id], state=State.revoked)
            current = None if slot.current == event.link_id else slot.current
            return Slot({**slot.links, link.link_id: link}, current)
        case LinkDeprecated() if event.link_id in slot.links:
            link = replace(slot.links[event.link_id], state=State.deprecated)
            return replace(slot, links={**slot.links, link.link_id: link})
    return slot


def issue(state: Slot | None, new: NewLink) -> list[Event]:
    """Issue the slot's link, unless a working one is already current (a repeated reaction)."""
    slot = state or Slot()
    current = slot.links.get(slot.current) if slot.current else None
    if current is not None and current.state is State.active:
        return []
    return [LinkIssued(**new.fields())]


def regenerate(state: Slot | None, new: NewLink) -> list[Event]:
    slot = state or Slot()
    current = slot.links.get(slot.current) if slot.current else None
    if current is None or current.state is not State.active:
        raise NotFound("link_not_active", "That link no longer works; there is nothing to replace.")
    if current.kind not in REGENERABLE:
        raise Conflict(
            "not_regenerable",
            "Only guest links and client room links can be regenerated; retire others instead.",
        )
    return [LinkRegenerated(**new.fields(), replaces_link_id=current.link_id)]


def revoke(state: Slot | None, because: RevokedBecause) -> list[Event]:
    """Every working link of the slot stops working."""
    slot = state or Slot()
    return [LinkRevoked(link_id=link.link_id, because=because) for link in slot.working()]


def retire(state: Slot | None, link_id: UUID, sunset_at: datetime, new: NewLink) -> list[Event]:
    """The link keeps working until ``sunset_at``; its successor works from now on."""
    slot = state or Slot()
    link = slot.links.get(link_id)
    if link is None or link.state is not State.active or link.kind not in RETIRABLE:
        return []
    if slot.current != link_id:
        return [LinkDeprecated(link_id=link_id, sunset_at=sunset_at)]
    return [
        LinkDeprecated(link_id=link_id, sunset_at=sunset_at, replaced_by=new.link_id),
        LinkIssued(**new.fields(), replaces_link_id=link_id, replaces_link_sunset_at=sunset_at),
    ]
