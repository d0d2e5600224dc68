"""What a clinic asks of its links: regenerate one, retire many."""

from datetime import datetime
from uuid import UUID

from contracts.events import Event
from contracts.links import LinkKind, ResolveRequest, Role
from runtime.context import ServiceContext
from runtime.refusals import NotFound
from runtime.rpc import parse
from services.links import domain
from services.links.handlers import Links, Minted, in_slot, mint, store_secrets
from services.links.resolver import resolve

_SUCCESSOR_FIELDS = (
    "SELECT link_id, slot, kind, role, path, session_id, room_id, client_id, attendee_id, "
    "practitioner_id FROM links"
)


async def _row_ids(ctx: ServiceContext, clinic_id: str, link_id: UUID) -> dict[str, object]:
    row = await ctx.pool.fetchrow(
        f"{_SUCCESSOR_FIELDS} WHERE link_id = $1 AND clinic_id = $2", link_id, clinic_id
    )
    if row is None:
        raise NotFound("link_not_found", "There is no link with that id.")
    return dict(row)


def _successor(links: Links, row: dict[str, object]) -> Minted:
    ids = {k: row[k] for k in ("session_id", "room_id", "client_id", "attendee_id")}
    ids["practitioner_id"] = row["practitioner_id"]
    path = row["path"] if isinstance(row["path"], str) else None
    return mint(links, LinkKind(str(row["kind"])), Role(str(row["role"])), path, **ids)


async def regenerate(ctx: ServiceContext, links: Links, clinic_id: str, link_id: UUID) -> UUID:
    row = await _row_ids(ctx, clinic_id, link_id)
    minted = _successor(links, row)

    def decide(slot: domain.Slot | None) -> list[Event]:
        if slot is None or slot.current != link_id:
            raise NotFound("link_not_active", "That link was already replaced or revoked.")
        return domain.regenerate(slot, minted.link)

    async with ctx.store.transaction() as conn:
        appended = await in_slot(ctx.store, str(row["slot"]), clinic_id, decide, conn=conn)
        await store_secrets(conn, [minted], appended)
    return minted.link.link_id


async def retire(
    ctx: ServiceContext,
    links: Links,
    clinic_id: str,
    sunset_at: datetime,
    kind: LinkKind | None,
    issued_before: datetime | None,
) -> int:
    # A host link is retired only when asked for by kind: it is the practitioner's own way
    # in, mailed to nobody, so a successor made as a side effect would go unnoticed.
    rows = await ctx.pool.fetch(
        f"{_SUCCESSOR_FIELDS} WHERE clinic_id = $1 AND state = 'active' "
        "AND kind <> 'practitioner_room' "
        "AND ($2::text IS NULL AND kind <> 'host' OR kind = $2) "
        "AND ($3::timestamptz IS NULL OR issued_at < $3) ORDER BY issued_at",
        clinic_id,
        kind.value if kind else None,
        issued_before,
    )
    retired = 0
    for r in rows:
        row = dict(r)
        minted = _successor(links, row)
        link_id: UUID = r["link_id"]

        def decide(
            slot: domain.Slot | None, link_id: UUID = link_id, m: Minted = minted
        ) -> list[Event]:
            return domain.retire(slot, link_id, sunset_at, m.link)

        async with ctx.store.transaction() as conn:
            appended = await in_slot(ctx.store, str(row["slot"]), clinic_id, decide, conn=conn)
            await store_secrets(conn, [minted], appended)
        retired += bool(appended)
    return retired


async def answer_resolve(links: Links, ctx: ServiceContext, data: bytes) -> bytes:
    """NATS request/reply: the same decision as ``GET /v1/links/resolve``."""
    request = parse(ResolveRequest, data)
    if isinstance(request, bytes):
        return request
    decision = await resolve(links, ctx, ctx.pool, request)
    return decision.model_dump_json().encode()
