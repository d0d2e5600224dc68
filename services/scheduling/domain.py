"""Clinics, practitioners, clients and rooms: commands return events, ``evolve`` folds them.

No I/O here. Handlers read what a decision needs (from the stream and the read models) and
pass it in; a refusal is a ``runtime.refusals.Refused``: a machine code and a sentence.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from uuid import UUID

from contracts.events import Event
from contracts.scheduling import (
    ApiKeyIssued,
    ApiKeyRevoked,
    ClientAdded,
    ClientErased,
    ClientUpdated,
    ClinicRegistered,
    ClinicReinstated,
    ClinicSettings,
    ClinicSettingsChanged,
    ClinicSuspended,
    Contact,
    PractitionerAdded,
    RoomCreated,
    RoomDeleted,
    RoomKind,
    RoomRenamed,
)
from runtime.refusals import Conflict, Forbidden, Gone, Invalid, not_found


class NotInPlan(Forbidden):
    """The clinic's plan does not include what was asked for."""


def client_erased() -> Gone:
    return Gone(
        "client_erased",
        "This client's personal data was erased at the clinic's request; the client can no "
        "longer be read, changed, invited or booked.",
    )


# -- clinic ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clinic:
    name: str
    slug: str
    settings: ClinicSettings
    suspended: bool = False
    keys: dict[UUID, bool] = field(default_factory=dict)
    """Issued keys: id -> still valid."""


def evolve_clinic(state: Clinic | None, event: Event) -> Clinic | None:
    match event:
        case ClinicRegistered():
            return Clinic(event.name, event.slug, event.settings)
        case ClinicSettingsChanged() if state:
            return replace(state, settings=event.settings)
        case ClinicSuspended() if state:
            return replace(state, suspended=True)
        case ClinicReinstated() if state:
            return replace(state, suspended=False)
        case ApiKeyIssued() if state:
            return replace(state, keys={**state.keys, event.key_id: True})
        case ApiKeyRevoked() if state:
            return replace(state, keys={**state.keys, event.key_id: False})
    return state


def register_clinic(
    state: Clinic | None, name: str, slug: str, settings: ClinicSettings
) -> list[Event]:
    if state is not None:
        raise Conflict("clinic_exists", "That clinic is already registered.")
    return [ClinicRegistered(name=name, slug=slug, settings=settings)]


def registered(state: Clinic | None) -> Clinic:
    if state is None:
        raise not_found("clinic")
    return state


def change_settings(state: Clinic | None, settings: ClinicSettings) -> list[Event]:
    if registered(state).settings == settings:
        return []
    return [ClinicSettingsChanged(settings=settings)]


def suspend_clinic(state: Clinic | None, reason: str) -> list[Event]:
    return [] if registered(state).suspended else [ClinicSuspended(reason=reason)]


def reinstate_clinic(state: Clinic | None) -> list[Event]:
    return [ClinicReinstated()] if registered(state).suspended else []


def issue_api_key(state: Clinic | None, key_id: UUID, prefix: str, label: str) -> list[Event]:
    clinic = registered(state)
    if clinic.suspended:
        raise Conflict("clinic_suspended", "The clinic is suspended; reinstate it first.")
    return [ApiKeyIssued(key_id=key_id, prefix=prefix, label=label)]


def revoke_api_key(state: Clinic | None, key_id: UUID) -> list[Event]:
    clinic = registered(state)
    if key_id not in clinic.keys:
        raise not_found("api_key")
    return [ApiKeyRevoked(key_id=key_id)] if clinic.keys[key_id] else []


# -- practitioners and clients -----------------------------------------------------------------


def add_practitioner(
    practitioner_id: UUID, room_id: UUID, display_name: str, room_slug: str
) -> tuple[list[Event], list[Event]]:
    """The practitioner's events and their room's, which are appended together."""
    added = PractitionerAdded(
        practitioner_id=practitioner_id,
        display_name=display_name,
        room_id=room_id,
        room_slug=room_slug,
    )
    room = RoomCreated(
        room_id=room_id,
        kind=RoomKind.practitioner,
        practitioner_id=practitioner_id,
        slug=room_slug,
        title=f"{display_name}'s room",
    )
    return [added], [room]


@dataclass(frozen=True)
class Client:
    client_id: UUID
    display_name: str
    email: str | None
    phone: str | None
    linked_accounts: tuple[Contact, ...] = ()
    alternate_contacts: tuple[Contact, ...] = ()
    erased: bool = False
    """Their personal data was erased: what is left is sealed under a key that is gone."""

    def contact(self, contact_id: UUID) -> Contact | None:
        for contact in (*self.linked_accounts, *self.alternate_contacts):
            if contact.contact_id == contact_id:
                return contact
        return None


_PROFILE = (
    "client_id",
    "display_name",
    "email",
    "phone",
    "linked_accounts",
    "alternate_contacts",
)
"""What ``ClientAdded`` and ``ClientUpdated`` carry."""


def evolve_client(state: Client | None, event: Event) -> Client | None:
    if isinstance(event, ClientAdded | ClientUpdated):
        return Client(**{name: getattr(event, name) for name in _PROFILE})
    if isinstance(event, ClientErased) and state:
        return replace(state, erased=True)
    return state


def _check_contacts(contacts: Iterable[Contact]) -> None:
    seen: set[UUID] = set()
    for contact in contacts:
        if contact.contact_id in seen:
            raise Invalid("duplicate_contact", "Two contacts have the same contact_id.")
        seen.add(contact.contact_id)


def add_client(state: Client | None, client: Client) -> list[Event]:
    if state is not None:
        raise Conflict("client_exists", "That client already exists.")
    _check_contacts((*client.linked_accounts, *client.alternate_contacts))
    return [ClientAdded(**_fields(client))]


def existing_client(state: Client | None) -> Client:
    if state is None:
        raise not_found("client")
    if state.erased:
        raise client_erased()
    return state


def update_client(state: Client | None, updated: Client) -> list[Event]:
    if existing_client(state) == updated:
        return []
    _check_contacts((*updated.linked_accounts, *updated.alternate_contacts))
    return [ClientUpdated(**_fields(updated))]


def erase_client(state: Client | None, attendee_ids: Iterable[UUID]) -> list[Event]:
    """Erase the client's personal data (with their contacts' invitations); again: nothing."""
    if state is None:
        raise not_found("client")
    if state.erased:
        return []
    return [ClientErased(client_id=state.client_id, attendee_ids=tuple(sorted(attendee_ids)))]


def _fields(client: Client) -> dict[str, object]:
    return {name: getattr(client, name) for name in _PROFILE}


# -- rooms -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Room:
    room_id: UUID
    kind: RoomKind
    practitioner_id: UUID
    client_id: UUID | None
    title: str
    deleted: bool = False


def evolve_room(state: Room | None, event: Event) -> Room | None:
    match event:
        case RoomCreated():
            return Room(
                event.room_id, event.kind, event.practitioner_id, event.client_id, event.title
            )
        case RoomRenamed() if state:
            return replace(state, title=event.title)
        case RoomDeleted() if state:
            return replace(state, deleted=True)
    return state


def create_client_room(
    state: Room | None, room_id: UUID, practitioner_id: UUID, client_id: UUID, title: str
) -> list[Event]:
    if state is not None:
        raise Conflict("room_exists", "That room already exists.")
    return [
        RoomCreated(
            room_id=room_id,
            kind=RoomKind.client,
            practitioner_id=practitioner_id,
            client_id=client_id,
            title=title,
        )
    ]


def existing_room(state: Room | None) -> Room:
    if state is None or state.deleted:
        raise not_found("room")
    return state


def rename_room(state: Room | None, title: str) -> list[Event]:
    room = existing_room(state)
    if room.title == title:
        return []
    return [RoomRenamed(room_id=room.room_id, client_id=room.client_id, title=title)]


def delete_room(state: Room | None) -> list[Event]:
    room = existing_room(state)
    if room.kind is RoomKind.practitioner:
        raise Conflict(
            "practitioner_room",
            "A practitioner's own room cannot be deleted; it is their permanent link.",
        )
    return [RoomDeleted(room_id=room.room_id)]
