"""Each person's key, kept only here: events carry their personal values sealed under it.

Scheduling seals, before they are appended, the personal values about a client (their
profile, their contacts, their rooms' titles, a contact invited to a session) under the
client's key, and an attendee invited by address under the attendee's own. A key is made on
first use and deleted when the person is erased; ``erased_people`` remembers who was, so no
key is made for them again and a request to open their values is answered "erased".

Practitioners' and clinics' names, and a cancellation's reason, are not about a client and
stay plain (:data:`PLAIN`).
"""

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from contracts.events import Event
from contracts.scheduling import (
    AttendeeInvited,
    ClientAdded,
    ClientUpdated,
    OpenedValue,
    OpenedValues,
    Opening,
    RoomCreated,
    RoomRenamed,
    SealedValues,
)
from runtime.db import Queryable
from runtime.personal_data import (
    new_person_key,
    open_data,
    people_in,
    person_of,
    seal_model,
    unseal,
)
from runtime.sealing import SealingError
from services.scheduling.domain import client_erased

SEALED: Mapping[type[Event], str] = {
    ClientAdded: "the client",
    ClientUpdated: "the client",
    AttendeeInvited: "the client whose contact it is, else the attendee",
    RoomCreated: "the client, for a client's room",
    RoomRenamed: "the client, for a client's room",
}
"""Events whose personal values are sealed, and for whom."""

PLAIN: Mapping[str, str] = {
    "ClinicRegistered": "a clinic's name: the operator's customer, not a client",
    "PractitionerAdded": "a practitioner's name: staff, shown on the booking page",
    "SessionCancelled": "the reason, free text about the appointment rather than one person",
}
"""Events with personal fields that stay plain, and why."""


def owner(event: Event) -> UUID | None:
    """The person ``event``'s personal values are sealed for; None: nothing to seal."""
    match event:
        case ClientAdded() | ClientUpdated():
            return event.client_id
        case AttendeeInvited():
            return event.client_id or event.attendee_id
        case RoomCreated() | RoomRenamed():
            return event.client_id  # None for a practitioner's room
    return None


async def key_for(conn: Queryable, clinic_id: str, person_id: UUID) -> bytes:
    """The person's key, made on first use. A person erased gets no key: ``client_erased``."""
    made = await conn.fetchval(
        "WITH made AS (INSERT INTO person_keys (clinic_id, person_id, key) "
        "SELECT $1, $2, $3 WHERE NOT EXISTS "
        "(SELECT 1 FROM erased_people WHERE clinic_id = $1 AND person_id = $2) "
        "ON CONFLICT DO NOTHING RETURNING key) "
        "SELECT coalesce((SELECT key FROM made), "
        "(SELECT key FROM person_keys WHERE clinic_id = $1 AND person_id = $2))",
        clinic_id,
        person_id,
        new_person_key(),
    )
    if made is None:
        # Erased, or made by a transaction that committed after this statement began.
        made = await conn.fetchval(
            "SELECT key FROM person_keys WHERE clinic_id = $1 AND person_id = $2",
            clinic_id,
            person_id,
        )
    if made is None:
        raise client_erased()
    return bytes(made)


async def keys_of(conn: Queryable, clinic_id: str, people: Iterable[UUID]) -> dict[UUID, bytes]:
    """The keys of those of ``people`` who have one (not the erased)."""
    wanted = list(set(people))
    if not wanted:
        return {}
    rows = await conn.fetch(
        "SELECT person_id, key FROM person_keys WHERE clinic_id = $1 AND person_id = ANY($2)",
        clinic_id,
        wanted,
    )
    return {r["person_id"]: bytes(r["key"]) for r in rows}


def opened(value: str | None, key: bytes | None, clinic_id: str) -> str | None:
    """A value from a read model as a reader may see it: plain, opened, or None when its key
    is gone."""
    if value is None or person_of(value) is None:
        return value
    if key is None:
        return None
    try:
        return unseal(value, key, clinic_id)
    except SealingError:
        return None


class SchedulingKeys:
    """Seals the events scheduling appends and opens those it decides on
    (``runtime.personal_data.PersonKeys``)."""

    async def seal(
        self, conn: Queryable, clinic_id: str, events: Sequence[Event]
    ) -> Sequence[Event]:
        sealed = []
        for event in events:
            person = owner(event)
            if person is not None:
                key = await key_for(conn, clinic_id, person)
                event = seal_model(event, key, clinic_id, person)
            sealed.append(event)
        return sealed

    async def open(
        self, conn: Queryable, clinic_id: str, payloads: Sequence[dict[str, Any]]
    ) -> Sequence[dict[str, Any]]:
        people = set().union(*(people_in(p) for p in payloads))
        if not people:
            return payloads
        keys = await keys_of(conn, clinic_id, people)
        return [open_data(p, keys, clinic_id) for p in payloads]


KEYS = SchedulingKeys()


async def erase(conn: Queryable, clinic_id: str, person_id: UUID, at: datetime) -> datetime:
    """Delete the person's key and remember that they were erased; when they were."""
    await conn.execute(
        "DELETE FROM person_keys WHERE clinic_id = $1 AND person_id = $2", clinic_id, person_id
    )
    erased_at: datetime = await conn.fetchval(
        "WITH noted AS (INSERT INTO erased_people (clinic_id, person_id, erased_at) "
        "VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING erased_at) "
        "SELECT coalesce((SELECT erased_at FROM noted), (SELECT erased_at FROM erased_people "
        "WHERE clinic_id = $1 AND person_id = $2))",
        clinic_id,
        person_id,
        at,
    )
    return erased_at


# -- opening values for another service --------------------------------------------------------


def answer(
    request: SealedValues, keys: Mapping[UUID, bytes], erased: Iterable[UUID]
) -> OpenedValues:
    """What the unseal endpoint answers, given the keys and the erased among the people asked
    about (the clinic's only)."""
    gone = set(erased)
    values = []
    for value in request.values:
        person = person_of(value)
        key = keys.get(person) if person is not None else None
        if person is None:
            values.append(OpenedValue(outcome=Opening.refused))
        elif key is None:
            outcome = Opening.erased if person in gone else Opening.refused
            values.append(OpenedValue(outcome=outcome, person_id=person))
        else:
            try:
                plain = unseal(value, key, request.clinic_id)
            except SealingError:
                values.append(OpenedValue(outcome=Opening.refused, person_id=person))
            else:
                values.append(OpenedValue(outcome=Opening.opened, person_id=person, value=plain))
    return OpenedValues(values=values)


async def open_values(conn: Queryable, request: SealedValues) -> OpenedValues:
    """The values of ``request`` opened with the clinic's keys: one read for the batch."""
    people = list({p for v in request.values if (p := person_of(v)) is not None})
    rows = await conn.fetch(
        "SELECT p.person_id, k.key, e.erased_at IS NOT NULL AS erased "
        "FROM unnest($2::uuid[]) AS p(person_id) "
        "LEFT JOIN person_keys k ON k.clinic_id = $1 AND k.person_id = p.person_id "
        "LEFT JOIN erased_people e ON e.clinic_id = $1 AND e.person_id = p.person_id",
        request.clinic_id,
        people,
    )
    keys = {r["person_id"]: bytes(r["key"]) for r in rows if r["key"] is not None}
    return answer(request, keys, [r["person_id"] for r in rows if r["erased"]])
