"""The integrator credentials read model: what the clinic API lists, and what NATS must refuse."""

from collections.abc import Sequence
from datetime import datetime
from typing import Literal
from uuid import UUID

import asyncpg
from pydantic import BaseModel, Field

from contracts.envelope import SUBJECT_ROOT
from contracts.scheduling import (
    ConsumerStart,
    IntegratorCredentialIssued,
    IntegratorCredentialRevoked,
    scheduling_events,
)
from runtime.db import Executor, Queryable
from runtime.eventstore import RecordedEvent
from runtime.nats_permissions import inbox_prefix
from runtime.pagination import Page, time_and_id
from runtime.refusals import not_found
from runtime.streams import EVENT_STREAMS
from services.scheduling.integrator_consumers import ConsumerOwner
from services.scheduling.queries import _page


class CredentialView(BaseModel):
    """An integrator credential as the clinic sees it (never its seed)."""

    credential_id: UUID
    label: str
    nats_user: str = Field(description="The NATS user name the credential connects as.")
    public_key: str = Field(description="The user's public nkey (U...).")
    consumer_name: str = Field(
        description="The durable pull consumer made for it on each stream: bind to it "
        "(nats-py: `js.pull_subscribe_bind(durable=consumer_name, stream=...)`)."
    )
    inbox_prefix: str = Field(
        description="Connect with this inbox prefix (nats-py: inbox_prefix=...): replies to "
        "its requests arrive there, and it may read no other inbox."
    )
    subjects: list[str] = Field(description="What it may subscribe to: its clinic's events.")
    streams: list[str] = Field(
        description="The event streams, one per service, each with a consumer made for it."
    )
    start: ConsumerStart = Field(
        description="Where its consumers start: `all`, the clinic's first event in each stream; "
        "`new`, the events stored from its issuance on."
    )
    issued_at: datetime
    expires_at: datetime = Field(description="NATS refuses it, and closes its connections, then.")
    revoked_at: datetime | None
    status: Literal["active", "revoked", "expired"]


_COLUMNS = (
    "credential_id, clinic_id, label, nats_user, public_key, issued_at, expires_at, revoked_at, "
    "consumers_start"
)


def _view(row: asyncpg.Record, now: datetime) -> CredentialView:
    status: Literal["active", "revoked", "expired"] = (
        "revoked"
        if row["revoked_at"] is not None
        else "expired"
        if row["expires_at"] <= now
        else "active"
    )
    return CredentialView(
        credential_id=row["credential_id"],
        label=row["label"],
        nats_user=row["nats_user"],
        public_key=row["public_key"],
        consumer_name=row["nats_user"],
        inbox_prefix=inbox_prefix(row["nats_user"]),
        subjects=[f"{SUBJECT_ROOT}.{row['clinic_id']}.>"],
        streams=list(EVENT_STREAMS),
        start=ConsumerStart(row["consumers_start"]),
        issued_at=row["issued_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        status=status,
    )


async def credential(
    conn: Queryable, clinic_id: str, credential_id: UUID, now: datetime
) -> CredentialView:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM integrator_credentials "
        "WHERE clinic_id = $1 AND credential_id = $2",
        clinic_id,
        credential_id,
    )
    if row is None:
        raise not_found("integrator_credential")
    return _view(row, now)


async def credentials(
    conn: Queryable, clinic_id: str, after: list[str] | None, limit: int, now: datetime
) -> Page[CredentialView]:
    """Every credential the clinic issued, revoked and expired ones included, oldest first."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM integrator_credentials WHERE clinic_id = $1 "
        "AND ($2::timestamptz IS NULL OR (issued_at, credential_id) > ($2, $3::uuid)) "
        "ORDER BY issued_at, credential_id LIMIT $4",
        clinic_id,
        *time_and_id(after),
        limit + 1,
    )
    items, cursor = _page(list(rows), limit, "issued_at", "credential_id")
    return Page(items=[_view(r, now) for r in items], next_cursor=cursor)


async def refused_keys(conn: Queryable) -> dict[str, int]:
    """What NATS must refuse: the public key of every credential that is revoked or whose
    clinic is suspended, until it expires anyway (NATS refuses it for its ``exp`` from then).

    Each is given with its credential's expiry (Unix seconds): NATS refuses every JWT of that
    key issued before that time, which is the credential's one JWT whatever the clocks of the
    replicas that signed and revoked it. A reinstated clinic's keys leave the set, except those
    revoked one by one."""
    rows = await conn.fetch(
        "SELECT k.public_key, k.expires_at FROM integrator_credentials k "
        "JOIN clinics c USING (clinic_id) "
        "WHERE k.expires_at > clock_timestamp() AND (k.revoked_at IS NOT NULL OR c.suspended)"
    )
    return {row["public_key"]: int(row["expires_at"].timestamp()) for row in rows}


async def consumer_owners(conn: Queryable) -> list[ConsumerOwner]:
    """The credentials that keep consumers: every one neither revoked nor expired (a suspended
    clinic's too, so that reinstating it restores them where they were)."""
    rows = await conn.fetch(
        "SELECT nats_user, clinic_id, consumers_start, issued_at FROM integrator_credentials "
        "WHERE revoked_at IS NULL AND expires_at > clock_timestamp()"
    )
    return [
        ConsumerOwner(
            row["nats_user"],
            row["clinic_id"],
            ConsumerStart(row["consumers_start"]),
            row["issued_at"],
        )
        for row in rows
    ]


class IntegratorCredentialsReadModel:
    """``integrator_credentials``, kept in the append's transaction."""

    name = "integrator_credentials"
    tables: Sequence[str] = ("integrator_credentials",)

    async def apply(self, conn: Executor, recorded: RecordedEvent) -> None:
        if recorded.type not in _TYPES:  # every append runs every projection: stay cheap
            return
        event = scheduling_events.decode(recorded.type, recorded.schema_version, recorded.data)
        if isinstance(event, IntegratorCredentialIssued):
            await conn.execute(
                "INSERT INTO integrator_credentials (credential_id, clinic_id, nats_user, "
                "public_key, label, issued_at, expires_at, consumers_start) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                event.credential_id,
                recorded.clinic_id,
                event.nats_user,
                event.public_key,
                event.label,
                recorded.occurred_at,
                event.expires_at,
                event.start.value,
            )
        elif isinstance(event, IntegratorCredentialRevoked):
            await conn.execute(
                "UPDATE integrator_credentials SET revoked_at = $3 "
                "WHERE credential_id = $1 AND clinic_id = $2",
                event.credential_id,
                recorded.clinic_id,
                recorded.occurred_at,
            )


_TYPES = frozenset(
    {IntegratorCredentialIssued.event_type(), IntegratorCredentialRevoked.event_type()}
)
